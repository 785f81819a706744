//! Departures: listings one of ours removed lately, kept out of answers that may
//! still hold a stale copy of them.
//!
//! The original coordinator has no withdrawal: a publisher that closed stays
//! listed there until its listing expires, three missed heartbeats later, on a
//! sweep of the original's own. One of ours that restarted with nobody of ours to
//! copy from copies the original's listings, that stale one among them. A feed
//! that followed ours saw the listing go; when it fails over to the original's
//! coordinator, or to another run of ours (every one of ours restarted at once,
//! say), it must not take the listing back.
//!
//! So a feed remembers, for [`STALE_HEARTBEATS`] of the cluster's heartbeat
//! intervals (at most [`MAX_WINDOW`]), each listing that a run of ours listed and
//! then did not, and which run that was. An answer of the original's, or of
//! another run of ours, that holds such a listing meanwhile has it taken out. The
//! run that removed it listing it again means its publisher is back: it is
//! forgotten at once. A publisher that comes back while the feed is with another
//! coordinator is seen at the latest when the memory ends (the price of never
//! handing out a listing that is gone).
//!
//! Only what one run listed and then did not counts as removed: a run of ours
//! lacking what another listed may just be behind (a restart, a partition).
//!
//! Pure logic: the caller passes the time.

use crate::listing::Listing;
use crate::remote::Answer;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// For how many heartbeat intervals a removal is remembered: the original reaps
/// a listing three missed heartbeats after the last one, on a sweep of its own.
pub(crate) const STALE_HEARTBEATS: u32 = 4;

/// The longest a removal is remembered, whatever the interval.
const MAX_WINDOW: Duration = Duration::from_secs(600);

/// How many removals a feed remembers at most; further ones are not remembered.
const MAX_DEPARTED: usize = 10_000;

/// Of how many runs of ours a feed keeps the last answer, to see what each
/// removes even when answers alternate between coordinators.
const RUNS: usize = 4;

/// Which run of which coordinator of ours gave an answer.
type Run = (String, u64);

/// An answer as the feed hands it on.
pub(crate) type Shared = Arc<Answer<Vec<Listing>>>;

/// What one feed remembers (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Departures {
    /// The last answer of each of the last [`RUNS`] runs of ours, oldest first.
    last: Vec<(Run, Shared)>,
    /// Removed listings by host: which run removed each, and until when.
    gone: HashMap<String, (Run, Instant)>,
}

impl Departures {
    /// `answer` (from `host`), less the listings removed lately by another run
    /// than the one answering; learns what it removes. `interval` is the cluster's
    /// heartbeat interval.
    pub fn screen(
        &mut self,
        host: &str,
        mut answer: Answer<Vec<Listing>>,
        interval: Duration,
        now: Instant,
    ) -> Shared {
        self.gone.retain(|_, (_, until)| *until > now);
        let run = answer.instance.map(|instance| (host.to_owned(), instance));
        if !self.gone.is_empty() {
            let gone = &mut self.gone;
            answer
                .value
                .retain(|listing| match gone.get(listing.host()) {
                    None => true,
                    Some((by, _)) if Some(by) == run.as_ref() => {
                        gone.remove(listing.host());
                        true
                    }
                    Some(_) => false,
                });
        }
        let answer = Arc::new(answer);
        // The original's answers remove nothing: it may be behind ours.
        let Some(run) = run else {
            return answer;
        };
        let before = match self.last.iter().position(|(r, _)| *r == run) {
            Some(i) => Some(self.last.remove(i).1),
            None => {
                if self.last.len() == RUNS {
                    self.last.remove(0);
                }
                None
            }
        };
        if let Some(before) = before.filter(|b| b.index.is_none() || b.index != answer.index) {
            let now_listed: HashSet<&str> = answer.value.iter().map(Listing::host).collect();
            let until = now + interval.saturating_mul(STALE_HEARTBEATS).min(MAX_WINDOW);
            for removed in before.value.iter().map(Listing::host) {
                let known = self.gone.contains_key(removed);
                if now_listed.contains(removed) || (!known && self.gone.len() >= MAX_DEPARTED) {
                    continue;
                }
                self.gone.insert(removed.to_owned(), (run.clone(), until));
            }
        }
        self.last.push((run, answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(1);

    fn answer(instance: Option<u64>, index: u64, hosts: &[&str]) -> Answer<Vec<Listing>> {
        Answer {
            value: hosts
                .iter()
                .map(|h| Listing::new("s", *h).unwrap())
                .collect(),
            index: instance.map(|_| index),
            heartbeat_interval: None,
            coordinator: None,
            complete: instance.map(|_| true),
            wait: None,
            instance,
            departed: Vec::new(),
        }
    }

    /// What `departures` lets through of `host`'s answer at `t0 + at`.
    fn through(
        departures: &mut Departures,
        t0: Instant,
        at: Duration,
        host: &str,
        answer: Answer<Vec<Listing>>,
    ) -> Vec<String> {
        let answer = departures.screen(host, answer, H, t0 + at);
        answer.value.iter().map(|l| l.host().to_owned()).collect()
    }

    #[test]
    fn what_ours_removed_is_kept_out_of_stale_answers_for_four_heartbeats() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        assert_eq!(through(&mut d, t0, s(0), "x", answer(Some(1), 1, ab)), ab);
        // b withdrew: ours (x, run 1) removes it.
        assert_eq!(
            through(&mut d, t0, s(1), "x", answer(Some(1), 2, &["a:1"])),
            ["a:1"]
        );
        // Every one of ours goes; the original still lists b, and a new one.
        let abc = &["a:1", "b:1", "c:1"];
        assert_eq!(
            through(&mut d, t0, s(2), "o", answer(None, 0, abc)),
            ["a:1", "c:1"]
        );
        // Other runs of ours that copied the original's listings: likewise.
        assert_eq!(
            through(&mut d, t0, s(3), "x", answer(Some(2), 1, abc)),
            ["a:1", "c:1"]
        );
        assert_eq!(
            through(&mut d, t0, s(3), "y", answer(Some(7), 1, abc)),
            ["a:1", "c:1"]
        );
        // Just before the memory ends, still out; after, b is its publisher's again.
        let just = s(5) - Duration::from_millis(1);
        assert_eq!(
            through(&mut d, t0, just, "o", answer(None, 0, abc)),
            ["a:1", "c:1"]
        );
        assert_eq!(through(&mut d, t0, s(5), "o", answer(None, 0, abc)), abc);
    }

    #[test]
    fn the_run_that_removed_a_listing_brings_it_back_at_once() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        through(&mut d, t0, s(0), "x", answer(Some(1), 1, ab));
        through(&mut d, t0, s(1), "x", answer(Some(1), 2, &["a:1"]));
        // b's publisher is back: x lists it again, and nothing is kept out.
        assert_eq!(through(&mut d, t0, s(2), "x", answer(Some(1), 3, ab)), ab);
        assert_eq!(through(&mut d, t0, s(2), "o", answer(None, 0, ab)), ab);
        assert!(d.gone.is_empty());
    }

    #[test]
    fn only_what_one_run_listed_and_then_did_not_counts_as_removed() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        through(&mut d, t0, s(0), "x", answer(Some(1), 1, ab));
        // Another run lacking b (behind, say) removes nothing.
        through(&mut d, t0, s(1), "y", answer(Some(2), 1, &["a:1"]));
        assert!(d.gone.is_empty());
        assert_eq!(through(&mut d, t0, s(1), "o", answer(None, 0, ab)), ab);
        // Answers alternating between runs: each run's removals still count.
        through(&mut d, t0, s(2), "x", answer(Some(1), 2, &["a:1"]));
        assert_eq!(through(&mut d, t0, s(3), "o", answer(None, 0, ab)), ["a:1"]);
        // The original's answers never count as removals.
        through(&mut d, t0, s(4), "o", answer(None, 0, &[]));
        assert_eq!(d.gone.len(), 1);
        // A huge interval is cut to the longest window.
        let mut d = Departures::default();
        d.screen("x", answer(Some(1), 1, ab), Duration::MAX, t0);
        d.screen("x", answer(Some(1), 2, &[]), Duration::MAX, t0);
        assert_eq!(d.gone["a:1"].1, t0 + MAX_WINDOW);
    }
}
