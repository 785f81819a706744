//! Warnings of what may repeat many times a second (a client retrying at a cap,
//! a flood of connections): one at most a minute, saying how many times it
//! happened since, so that the log stays readable. Pure: the caller says when.

use std::time::Duration;
use tokio::time::Instant;

/// How often at most one thing is warned of.
pub(crate) const WARNING_PERIOD: Duration = Duration::from_secs(60);

/// Counts one thing between its warnings.
#[derive(Debug, Default)]
pub(crate) struct WarnEvery {
    last_warned: Option<Instant>,
    since: u64,
}

impl WarnEvery {
    /// Counts it once more at `now`: `Some(n)` when it is to be warned of now,
    /// `n` being how many times since the last warning, this one included.
    pub fn happened(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self
            .last_warned
            .is_some_and(|at| now.saturating_duration_since(at) < WARNING_PERIOD)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warned_of_at_first_then_once_a_period_with_the_count_since() {
        let mut warn = WarnEvery::default();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(warn.happened(t0), Some(1));
        for i in 1..=5 {
            assert_eq!(warn.happened(t0 + second * i), None);
        }
        assert_eq!(warn.happened(t0 + WARNING_PERIOD), Some(6));
        assert_eq!(warn.happened(t0 + WARNING_PERIOD + second), None);
    }
}
