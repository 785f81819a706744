//! The client's table of known coordinators: pure bookkeeping, no I/O.
//!
//! Coordinators enter when `host` or a known coordinator lists them, and leave after
//! `failures_before_drop` rounds in a row (heartbeat rounds, coordinator polls) found
//! them broken, by the one rule of
//! [`RemoteError::is_broken`](crate::remote::RemoteError::is_broken); a refusal
//! (`4xx`, `503`) clears their strikes like any answer. The configured `host` is not
//! a member (it may be a load balancer); it is where every call goes while the table
//! is empty, so the client always has a way back — together with the few
//! coordinators dropped most recently, in case `host` stays down while one of them
//! returns.
//!
//! A dropped coordinator stays on probation for a while: it is probed until it
//! answers (and is taken back) or its probation ends. A coordinator that restarts
//! quickly comes back before its peers have dropped it, so no coordinator list
//! changes and nothing else would tell the client it is back; the probation is
//! long enough for its peers to drop it (a coordinator that returns after that
//! announces itself, and the lists the client follows change). The table also
//! remembers the heartbeat interval each coordinator
//! announced, for clients that adopt it. The tasks that fill it live in
//! [`discovery`](super::discovery).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Most coordinators known at once: a bound against a runaway or hostile answer.
pub(crate) const MAX_COORDINATORS: usize = 1_000;

/// How many dropped coordinators are remembered as fallbacks.
pub(crate) const MAX_RECENT: usize = 16;

/// What the table keeps of one known coordinator.
#[derive(Debug, Clone, Default)]
struct Known {
    /// The heartbeat interval it announced, if any.
    interval: Option<Duration>,
    /// Rounds in a row (heartbeats, polls) that found it broken.
    strikes: u32,
    /// Some other call (a held query) failed since it last answered.
    suspect: bool,
    /// Its last answer said it is not complete (it started with nobody to copy
    /// listings from).
    partial: bool,
    /// The run of it that answered last (`X-Hakken-Instance`).
    instance: Option<u64>,
    /// It was taken back from probation and has taken no write since: dropped
    /// again, it gets no new probation (a coordinator that answers probes but
    /// fails every write is not taken back over and over).
    probation_spent: bool,
}

/// A coordinator dropped recently: a fallback, and probed until `probe_until`.
#[derive(Debug, Clone)]
struct Dropped {
    host: String,
    probe_until: Instant,
}

/// What a failed round did to a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strike {
    /// It has this many strikes now and stays known.
    Struck(u32),
    /// That was its last strike: it is forgotten (and kept as a fallback).
    Dropped,
    /// It was not known.
    Unknown,
}

/// Known coordinators, keyed by their announced `host`.
#[derive(Debug)]
pub(crate) struct Coordinators {
    /// The way in: used while `known` is empty.
    configured: String,
    known: BTreeMap<String, Known>,
    /// Broken rounds in a row before a coordinator is dropped (at least 1).
    failures_before_drop: u32,
    /// The last interval announced by anyone (the configured host included).
    last_announced: Option<Duration>,
    /// Coordinators dropped most recently (newest last), tried with the configured
    /// host while none is known, and probed while on probation (the configured
    /// host is never: it is always the way in), and asked by `close`.
    recent: VecDeque<Dropped>,
}

impl Coordinators {
    /// An empty table whose fallback is `configured`; a coordinator is dropped
    /// after `failures_before_drop` broken rounds in a row.
    pub fn new(configured: impl Into<String>, failures_before_drop: u32) -> Self {
        Coordinators {
            configured: configured.into(),
            known: BTreeMap::new(),
            failures_before_drop: failures_before_drop.max(1),
            last_announced: None,
            recent: VecDeque::new(),
        }
    }

    /// Adds a coordinator that answered on probation; true when it was not known.
    /// Dropped again, it is not probed again.
    pub fn take_back(&mut self, host: &str) -> bool {
        let added = self.add(host);
        if let Some(known) = self.known.get_mut(host) {
            known.probation_spent = true;
        }
        added
    }

    /// Adds a coordinator; true when it was not known.
    pub fn add(&mut self, host: &str) -> bool {
        if self.known.contains_key(host) || self.known.len() >= MAX_COORDINATORS {
            return false;
        }
        self.known.insert(host.to_owned(), Known::default());
        self.recent.retain(|d| d.host != host);
        true
    }

    /// Forgets a coordinator, remembering it as a fallback, probed until
    /// `probe_until`; true when it was known.
    pub fn remove(&mut self, host: &str, probe_until: Instant) -> bool {
        let removed = self.known.remove(host);
        let probe_until = match &removed {
            Some(known) if known.probation_spent => Instant::now(),
            _ => probe_until,
        };
        let removed = removed.is_some();
        if removed {
            self.recent.retain(|d| d.host != host);
            if self.recent.len() >= MAX_RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(Dropped {
                host: host.to_owned(),
                probe_until,
            });
        }
        removed
    }

    /// Records a round that found `host` broken; drops it at the last strike, to be
    /// probed until `probe_until`.
    pub fn failed(&mut self, host: &str, probe_until: Instant) -> Strike {
        let Some(known) = self.known.get_mut(host) else {
            return Strike::Unknown;
        };
        known.strikes += 1;
        if known.strikes < self.failures_before_drop {
            return Strike::Struck(known.strikes);
        }
        self.remove(host, probe_until);
        Strike::Dropped
    }

    /// The coordinators dropped most recently (at most [`MAX_RECENT`]), on
    /// probation or not.
    pub fn recently_dropped(&self) -> Vec<String> {
        self.recent.iter().map(|d| d.host.clone()).collect()
    }

    /// The dropped coordinators still on probation at `now`: probed, and taken
    /// back (with [`Coordinators::add`]) when they answer.
    pub fn on_probation(&self, now: Instant) -> Vec<String> {
        self.recent
            .iter()
            .filter(|d| d.probe_until > now && d.host != self.configured)
            .map(|d| d.host.clone())
            .collect()
    }

    /// Records that a call to `host` failed: no strike, but it counts as failing
    /// until it answers. True when it is known and was not suspected already: a
    /// new failure of a write or a held query, to retry soon (one suspected
    /// already is retried on its backoff). A poll's strike suspects nothing: a
    /// write that fails after it is new.
    pub fn suspect(&mut self, host: &str) -> bool {
        self.known
            .get_mut(host)
            .is_some_and(|known| !std::mem::replace(&mut known.suspect, true))
    }

    /// Records that `host` answered (even with a refusal): its strikes are cleared.
    /// True when it was failing: it is back after a failure.
    pub fn answered(&mut self, host: &str) -> bool {
        self.known.get_mut(host).is_some_and(|known| {
            let failing = known.strikes > 0 || known.suspect;
            known.strikes = 0;
            known.suspect = false;
            failing
        })
    }

    /// Records that `host` took a write (a publish, heartbeat or withdrawal): it
    /// works again after it was taken back, and gets probation again should it be
    /// dropped later (another partition, another restart). One that answers probes
    /// but fails every write never gets here.
    pub fn took_a_write(&mut self, host: &str) {
        if let Some(known) = self.known.get_mut(host) {
            known.probation_spent = false;
        }
    }

    /// Records whether `host` said it is complete; true when it just said it is
    /// not (it restarted with nobody to copy listings from).
    pub fn note_complete(&mut self, host: &str, complete: Option<bool>) -> bool {
        let partial = complete == Some(false);
        self.known.get_mut(host).is_some_and(|known| {
            let was_partial = std::mem::replace(&mut known.partial, partial);
            partial && !was_partial
        })
    }

    /// Records which run of `host` answered; true when it is another run than the
    /// one that answered before: it restarted.
    pub fn note_instance(&mut self, host: &str, instance: Option<u64>) -> bool {
        let (Some(known), Some(instance)) = (self.known.get_mut(host), instance) else {
            return false;
        };
        known
            .instance
            .replace(instance)
            .is_some_and(|before| before != instance)
    }

    /// The known coordinators whose last answer said they are not complete.
    pub fn partial(&self) -> Vec<String> {
        self.known
            .iter()
            .filter(|(_, known)| known.partial)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// The known coordinators that said which run of theirs answered: ours, which
    /// hold blocking queries (the original's say nothing of the kind).
    pub fn ours(&self) -> Vec<String> {
        self.known
            .iter()
            .filter(|(_, known)| known.instance.is_some())
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// The known coordinators that failed since they last answered.
    pub fn failing(&self) -> Vec<String> {
        self.known
            .iter()
            .filter(|(_, known)| known.strikes > 0 || known.suspect)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// The known coordinators, sorted.
    pub fn hosts(&self) -> Vec<String> {
        self.known.keys().cloned().collect()
    }

    /// Where calls go: the known coordinators, or when none is, the configured
    /// host and the coordinators dropped most recently.
    pub fn targets(&self) -> Vec<String> {
        if self.known.is_empty() {
            std::iter::once(self.configured.clone())
                .chain(
                    self.recent
                        .iter()
                        .rev()
                        .filter(|d| d.host != self.configured)
                        .map(|d| d.host.clone()),
                )
                .collect()
        } else {
            self.hosts()
        }
    }

    /// True when no coordinator is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Records the heartbeat interval `host` announced.
    pub fn announced(&mut self, host: &str, interval: Option<Duration>) {
        let Some(interval) = interval else { return };
        self.last_announced = Some(interval);
        if let Some(known) = self.known.get_mut(host) {
            known.interval = Some(interval);
        }
    }

    /// The interval to adopt: the shortest a known coordinator announced (a listing
    /// must outlive the strictest TTL), else the last one anybody announced.
    pub fn announced_interval(&self) -> Option<Duration> {
        self.known
            .values()
            .filter_map(|known| known.interval)
            .min()
            .or(self.last_announced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn falls_back_to_the_configured_host() {
        let mut c = Coordinators::new("lb:1", 1);
        assert_eq!(c.targets(), ["lb:1"]);
        assert!(c.add("a:1"));
        assert!(!c.add("a:1"));
        assert!(c.add("b:1"));
        assert_eq!(c.targets(), ["a:1", "b:1"]);
        assert!(c.remove("a:1", later()));
        assert!(!c.remove("a:1", later()));
        assert!(c.remove("b:1", later()));
        assert!(c.is_empty());
        // The configured host first, then the most recently dropped.
        assert_eq!(c.targets(), ["lb:1", "b:1", "a:1"]);
        // A coordinator known again is no fallback any more.
        assert!(c.add("a:1"));
        assert_eq!(c.targets(), ["a:1"]);
        assert!(c.remove("a:1", later()));
        assert_eq!(c.targets(), ["lb:1", "a:1", "b:1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn probation_is_given_once_until_it_is_learned_again() {
        let mut c = Coordinators::new("lb:1", 1);
        c.add("a:1");
        assert_eq!(c.failed("a:1", later()), Strike::Dropped);
        assert_eq!(c.on_probation(Instant::now()), ["a:1"]);
        // It answered a probe and was taken back; its rounds fail again.
        assert!(c.take_back("a:1"));
        assert_eq!(c.failed("a:1", later()), Strike::Dropped);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            c.on_probation(Instant::now()).is_empty(),
            "no second probation"
        );
        assert!(c.targets().contains(&"a:1".to_owned()), "still a fallback");
        // Learned again from a coordinator list, it has probation again.
        assert!(c.add("a:1"));
        assert_eq!(c.failed("a:1", later()), Strike::Dropped);
        assert_eq!(c.on_probation(Instant::now()), ["a:1"]);
        // Taken back, and it takes writes again: probation again at the next drop
        // (a second partition soon after the first).
        assert!(c.take_back("a:1"));
        c.took_a_write("a:1");
        assert_eq!(c.failed("a:1", later()), Strike::Dropped);
        assert_eq!(c.on_probation(Instant::now()), ["a:1"]);
    }

    #[test]
    fn remembers_a_bounded_number_of_fallbacks() {
        let mut c = Coordinators::new("lb:1", 1);
        for i in 0..MAX_RECENT + 5 {
            let host = format!("h{i}:1");
            c.add(&host);
            c.remove(&host, later());
        }
        let targets = c.targets();
        assert_eq!(targets.len(), 1 + MAX_RECENT);
        assert_eq!(targets[1], format!("h{}:1", MAX_RECENT + 4));
    }

    #[test]
    fn adopts_the_shortest_announced_interval() {
        let mut c = Coordinators::new("lb:1", 1);
        assert_eq!(c.announced_interval(), None);
        c.announced("lb:1", Some(Duration::from_secs(9)));
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(9)));
        c.add("a:1");
        c.add("b:1");
        c.announced("a:1", Some(Duration::from_secs(3)));
        c.announced("b:1", Some(Duration::from_secs(5)));
        c.announced("b:1", None);
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(3)));
        c.remove("a:1", later());
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn dropped_after_consecutive_broken_rounds() {
        let mut c = Coordinators::new("lb:1", 3);
        c.add("a:1");
        assert_eq!(c.failed("a:1", later()), Strike::Struck(1));
        assert_eq!(c.failed("a:1", later()), Strike::Struck(2));
        assert_eq!(c.failing(), ["a:1"]);
        assert!(c.answered("a:1"), "back after a failure");
        assert!(!c.answered("a:1"));
        assert!(c.failing().is_empty());
        // A failed held query makes it suspect: failing, without a strike.
        assert!(c.suspect("a:1"));
        assert!(!c.suspect("a:1"), "suspected already: not a new failure");
        assert!(!c.suspect("b:1"));
        assert_eq!(c.failing(), ["a:1"]);
        assert!(c.answered("a:1"));
        assert!(c.failing().is_empty());
        for strike in 1..3 {
            assert_eq!(c.failed("a:1", later()), Strike::Struck(strike));
        }
        // A write that fails after a strike (a poll's) is a new failure.
        assert!(c.suspect("a:1"));
        assert_eq!(c.failed("a:1", later()), Strike::Dropped);
        assert_eq!(c.failed("a:1", later()), Strike::Unknown);
        assert!(c.is_empty());
        assert_eq!(c.targets(), ["lb:1", "a:1"], "kept as a fallback");
    }

    #[test]
    fn a_dropped_coordinator_is_probed_until_its_probation_ends() {
        let mut c = Coordinators::new("lb:1", 1);
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        for host in ["a:1", "b:1", "lb:1"] {
            c.add(host);
        }
        assert_eq!(c.failed("a:1", soon), Strike::Dropped);
        assert_eq!(c.failed("b:1", now), Strike::Dropped);
        assert_eq!(c.failed("lb:1", soon), Strike::Dropped);
        // The configured host is never on probation: it is always the way in.
        assert_eq!(c.on_probation(now), ["a:1"], "b's probation is over");
        assert_eq!(c.recently_dropped(), ["a:1", "b:1", "lb:1"]);
        assert_eq!(c.targets(), ["lb:1", "b:1", "a:1"], "the way in once");
        assert!(c.on_probation(soon).is_empty(), "a's is over too");
        // Taken back when it answers: no longer on probation.
        assert!(c.add("a:1"));
        assert!(c.on_probation(now).is_empty());
    }

    #[test]
    fn notices_when_a_coordinator_turns_partial() {
        let mut c = Coordinators::new("lb:1", 3);
        c.add("a:1");
        assert!(!c.note_complete("a:1", Some(true)));
        assert!(!c.note_complete("a:1", None));
        assert!(c.note_complete("a:1", Some(false)), "turned partial");
        assert!(!c.note_complete("a:1", Some(false)), "still partial");
        assert!(!c.note_complete("a:1", Some(true)));
        assert!(c.note_complete("a:1", Some(false)), "partial again");
        assert!(!c.note_complete("z:1", Some(false)), "unknown");
    }

    #[test]
    fn notices_a_restart_by_its_instance() {
        let mut c = Coordinators::new("lb:1", 3);
        c.add("a:1");
        assert!(!c.note_instance("a:1", Some(7)), "first seen");
        assert!(!c.note_instance("a:1", Some(7)));
        assert!(!c.note_instance("a:1", None), "the original says nothing");
        assert!(c.note_instance("a:1", Some(9)), "restarted");
        assert!(!c.note_instance("a:1", Some(9)));
        assert!(!c.note_instance("z:1", Some(1)), "unknown");
        c.add("b:1");
        assert_eq!(c.ours(), ["a:1"], "b never said which run it is");
    }

    #[test]
    fn is_bounded() {
        let mut c = Coordinators::new("lb:1", 1);
        for i in 0..MAX_COORDINATORS + 10 {
            c.add(&format!("h{i}:1"));
        }
        assert_eq!(c.hosts().len(), MAX_COORDINATORS);
    }
}
