//! Whether this coordinator holds what its cluster holds: the phases of a start.
//!
//! A coordinator starts `Syncing`: it copies the listings of a peer (`sync.rs`) and
//! listing reads wait for that. It then becomes `Complete` when the copy came from a
//! complete peer, or `Partial` when there was nobody to copy from (a whole-cluster
//! restart, a single coordinator, every peer unreachable). A partial coordinator
//! answers reads, flagged `X-Hakken-Complete: false`, and becomes complete after one
//! heartbeat interval (by then every live publisher has sent it its listings) or as
//! soon as a later copy from a complete peer succeeds. Phases only move forward.

use std::time::Duration;
use tokio::sync::watch;

/// Where a coordinator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Copying from a peer: listing reads wait, `/ready` answers `503`.
    Syncing,
    /// Serving, but maybe without some listings its cluster holds.
    Partial,
    /// Serving everything its cluster holds.
    Complete,
}

/// The current phase, and a way to wait for the next.
pub(crate) struct Readiness {
    phase: watch::Sender<Phase>,
}

impl Readiness {
    /// A coordinator that has yet to sync.
    pub fn new() -> Self {
        Readiness {
            phase: watch::Sender::new(Phase::Syncing),
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// True once the coordinator answers reads.
    pub fn is_ready(&self) -> bool {
        self.phase() > Phase::Syncing
    }

    /// Moves to `to` if that is forward; returns whether the phase changed.
    pub fn advance(&self, to: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            let forward = to > *phase;
            if forward {
                *phase = to;
            }
            forward
        })
    }

    /// Waits until the coordinator is ready, at most `bound`; returns whether it is.
    pub async fn wait_ready(&self, bound: Duration) -> bool {
        let mut phase = self.phase.subscribe();
        let ready = tokio::time::timeout(bound, phase.wait_for(|p| *p > Phase::Syncing)).await;
        matches!(ready, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_only_move_forward_and_readers_wait_for_the_first_step() {
        let readiness = std::sync::Arc::new(Readiness::new());
        assert!(!readiness.is_ready());
        assert!(
            !readiness.wait_ready(Duration::from_secs(1)).await,
            "bounded"
        );
        let waiting = {
            let readiness = readiness.clone();
            tokio::spawn(async move { readiness.wait_ready(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(readiness.advance(Phase::Partial));
        assert!(waiting.await.unwrap());
        assert_eq!(readiness.phase(), Phase::Partial);
        assert!(!readiness.advance(Phase::Syncing), "never back");
        assert!(readiness.advance(Phase::Complete));
        assert!(!readiness.advance(Phase::Partial));
        assert_eq!(readiness.phase(), Phase::Complete);
    }
}
