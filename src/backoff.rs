//! Retry delays: exponential backoff with jitter, capped. Pure, no clock.
//!
//! Used wherever something is tried again — a client finding a coordinator, a
//! watch with nothing to ask, a coordinator that a load balancer routed back to
//! itself — so that many of them do not come back in lockstep.

use std::time::Duration;

/// Delays that double from `min` up to `max`, each drawn in `[d/2, d]`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `min` (at least 1 ms) up to `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let full = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let half = full / 2;
        half + jitter(full - half)
    }

    /// Starts over from `min` (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A random duration in `[0, span]`.
pub(crate) fn jitter(span: Duration) -> Duration {
    let span_us = span.as_micros().min(u64::MAX as u128) as u64;
    Duration::from_micros(fastrand::u64(0..=span_us))
}

/// `interval` less up to a tenth of it, so periodic work does not synchronize.
pub(crate) fn jittered(interval: Duration) -> Duration {
    interval - jitter(interval / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for max in bounds {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(max / 2), "{d:?} >= {max}/2");
            assert!(d <= Duration::from_millis(max), "{d:?} <= {max}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jittered_stays_within_a_tenth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(10));
        }
    }
}
