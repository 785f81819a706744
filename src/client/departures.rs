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
//! So a feed remembers, for [`STALE_HEARTBEATS`] heartbeat intervals, each listing
//! an answer of ours removed, and which run of which coordinator removed it. An
//! answer of the original's, or of another run of ours, that holds such a listing
//! meanwhile has it taken out. The run that removed it listing it again means its
//! publisher is back: it is forgotten at once. A publisher that comes back while
//! the feed is with another coordinator is seen at the latest when the memory
//! ends (the price of never handing out a listing that is gone).
//!
//! Pure logic: the caller passes the time.

use crate::listing::Listing;
use crate::remote::Answer;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// For how many heartbeat intervals a removal is remembered: the original reaps
/// a listing three missed heartbeats after the last one, on a sweep of its own.
pub(crate) const STALE_HEARTBEATS: u32 = 4;

/// How many removals a feed remembers at most; further ones are not remembered
/// (each entry is a host name and a few words).
const MAX_DEPARTED: usize = 10_000;

/// Which run of which coordinator of ours gave an answer.
type Run = (String, u64);

/// What one feed remembers (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Departures {
    /// The hosts of the last answer of ours, and which run gave it.
    last: Option<(Run, HashSet<String>)>,
    /// Removed listings by host: which run removed each, and until when.
    gone: HashMap<String, (Run, Instant)>,
}

impl Departures {
    /// Takes out of `answer` (from `host`) the listings removed lately by another
    /// run than the one answering, and learns the removals `answer` makes. `interval`
    /// is the cluster's heartbeat interval.
    pub fn screen(
        &mut self,
        host: &str,
        answer: &mut Answer<Vec<Listing>>,
        interval: Duration,
        now: Instant,
    ) {
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
        // The original's answers remove nothing: it may be behind ours.
        let Some(run) = run else {
            return;
        };
        let hosts: HashSet<String> = answer.value.iter().map(|l| l.host().to_owned()).collect();
        // A run of ours that is not complete yet removes only what it listed itself.
        let removes = |from: &Run| answer.complete != Some(false) || *from == run;
        if let Some((_, last)) = self.last.take().filter(|(from, _)| removes(from)) {
            let until = now + interval * STALE_HEARTBEATS;
            for removed in last.into_iter().filter(|h| !hosts.contains(h)) {
                if self.gone.len() < MAX_DEPARTED || self.gone.contains_key(&removed) {
                    self.gone.insert(removed, (run.clone(), until));
                }
            }
        }
        self.last = Some((run, hosts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(1);

    fn answer(instance: Option<u64>, complete: bool, hosts: &[&str]) -> Answer<Vec<Listing>> {
        Answer {
            value: hosts
                .iter()
                .map(|h| Listing::new("s", *h).unwrap())
                .collect(),
            index: instance.map(|_| 1),
            heartbeat_interval: None,
            coordinator: None,
            complete: instance.map(|_| complete),
            wait: None,
            instance,
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
        let mut answer = answer;
        departures.screen(host, &mut answer, H, t0 + at);
        answer.value.iter().map(|l| l.host().to_owned()).collect()
    }

    #[test]
    fn what_ours_removed_is_kept_out_of_stale_answers_for_four_heartbeats() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        assert_eq!(
            through(&mut d, t0, s(0), "x", answer(Some(1), true, ab)),
            ab
        );
        // b withdrew: ours (x, run 1) removes it.
        assert_eq!(
            through(&mut d, t0, s(1), "x", answer(Some(1), true, &["a:1"])),
            ["a:1"]
        );
        // Every one of ours goes; the original still lists b, and a new one.
        let abc = &["a:1", "b:1", "c:1"];
        assert_eq!(
            through(&mut d, t0, s(2), "o", answer(None, true, abc)),
            ["a:1", "c:1"]
        );
        // Another run of ours that copied the original's listings: likewise.
        assert_eq!(
            through(&mut d, t0, s(3), "x", answer(Some(2), true, abc)),
            ["a:1", "c:1"]
        );
        assert_eq!(
            through(&mut d, t0, s(3), "y", answer(Some(7), false, abc)),
            ["a:1", "c:1"]
        );
        // Just before the memory ends, still out; after, b is its publisher's again.
        let just = s(5) - Duration::from_millis(1);
        assert_eq!(
            through(&mut d, t0, just, "o", answer(None, true, abc)),
            ["a:1", "c:1"]
        );
        assert_eq!(through(&mut d, t0, s(5), "o", answer(None, true, abc)), abc);
    }

    #[test]
    fn the_run_that_removed_a_listing_brings_it_back_at_once() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        through(&mut d, t0, s(0), "x", answer(Some(1), true, ab));
        through(&mut d, t0, s(1), "x", answer(Some(1), true, &["a:1"]));
        // b's publisher is back: x lists it again, and nothing is kept out.
        assert_eq!(
            through(&mut d, t0, s(2), "x", answer(Some(1), true, ab)),
            ab
        );
        assert_eq!(through(&mut d, t0, s(2), "o", answer(None, true, ab)), ab);
        assert!(d.gone.is_empty());
    }

    #[test]
    fn a_run_that_is_not_complete_removes_only_what_it_listed() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        let ab = &["a:1", "b:1"];
        let s = Duration::from_secs;
        through(&mut d, t0, s(0), "x", answer(Some(1), true, ab));
        // A restarted y that has heard from nobody yet: b is not gone.
        through(&mut d, t0, s(1), "y", answer(Some(2), false, &["a:1"]));
        assert!(d.gone.is_empty());
        assert_eq!(through(&mut d, t0, s(1), "o", answer(None, true, ab)), ab);
        // y listed b, then not: y removed it.
        through(&mut d, t0, s(2), "y", answer(Some(2), false, ab));
        through(&mut d, t0, s(3), "y", answer(Some(2), false, &["a:1"]));
        assert_eq!(
            through(&mut d, t0, s(3), "o", answer(None, true, ab)),
            ["a:1"]
        );
        // The original's answers never count as removals.
        through(&mut d, t0, s(4), "o", answer(None, true, &[]));
        assert_eq!(d.gone.len(), 1);
    }
}
