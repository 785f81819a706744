//! The client's table of known coordinators: pure bookkeeping, no I/O.
//!
//! Coordinators enter when `host` or a known coordinator lists them, and leave when
//! a call to them fails. The configured `host` is not a member (it may be a load
//! balancer); it is where every call goes while the table is empty, so the client
//! always has a way back — together with the few coordinators dropped most
//! recently, in case `host` stays down while one of them returns. The table also remembers the heartbeat interval each
//! coordinator announced, for clients that adopt it. The tasks that fill it live in
//! [`discovery`](super::discovery).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most coordinators known at once: a bound against a runaway or hostile answer.
pub(crate) const MAX_COORDINATORS: usize = 1_000;

/// How many dropped coordinators are remembered as fallbacks.
pub(crate) const MAX_RECENT: usize = 16;

/// Known coordinators, keyed by their announced `host`.
#[derive(Debug)]
pub(crate) struct Coordinators {
    /// The way in: used while `known` is empty.
    configured: String,
    /// Host → the heartbeat interval it announced, if any.
    known: BTreeMap<String, Option<Duration>>,
    /// The last interval announced by anyone (the configured host included).
    last_announced: Option<Duration>,
    /// Coordinators dropped most recently (newest last), tried with the configured
    /// host while none is known.
    recent: VecDeque<String>,
}

impl Coordinators {
    /// An empty table whose fallback is `configured`.
    pub fn new(configured: impl Into<String>) -> Self {
        Coordinators {
            configured: configured.into(),
            known: BTreeMap::new(),
            last_announced: None,
            recent: VecDeque::new(),
        }
    }

    /// Adds a coordinator; true when it was not known.
    pub fn add(&mut self, host: &str) -> bool {
        if self.known.contains_key(host) || self.known.len() >= MAX_COORDINATORS {
            return false;
        }
        self.known.insert(host.to_owned(), None);
        self.recent.retain(|h| h != host);
        true
    }

    /// Forgets a coordinator, remembering it as a fallback; true when it was known.
    pub fn remove(&mut self, host: &str) -> bool {
        let removed = self.known.remove(host).is_some();
        if removed && host != self.configured {
            self.recent.retain(|h| h != host);
            if self.recent.len() >= MAX_RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(host.to_owned());
        }
        removed
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
                .chain(self.recent.iter().rev().cloned())
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
        if let Some(slot) = self.known.get_mut(host) {
            *slot = Some(interval);
        }
    }

    /// The interval to adopt: the shortest a known coordinator announced (a listing
    /// must outlive the strictest TTL), else the last one anybody announced.
    pub fn announced_interval(&self) -> Option<Duration> {
        self.known
            .values()
            .flatten()
            .min()
            .copied()
            .or(self.last_announced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_the_configured_host() {
        let mut c = Coordinators::new("lb:1");
        assert_eq!(c.targets(), ["lb:1"]);
        assert!(c.add("a:1"));
        assert!(!c.add("a:1"));
        assert!(c.add("b:1"));
        assert_eq!(c.targets(), ["a:1", "b:1"]);
        assert!(c.remove("a:1"));
        assert!(!c.remove("a:1"));
        assert!(c.remove("b:1"));
        assert!(c.is_empty());
        // The configured host first, then the most recently dropped.
        assert_eq!(c.targets(), ["lb:1", "b:1", "a:1"]);
        // A coordinator known again is no fallback any more.
        assert!(c.add("a:1"));
        assert_eq!(c.targets(), ["a:1"]);
        assert!(c.remove("a:1"));
        assert_eq!(c.targets(), ["lb:1", "a:1", "b:1"]);
    }

    #[test]
    fn remembers_a_bounded_number_of_fallbacks() {
        let mut c = Coordinators::new("lb:1");
        for i in 0..MAX_RECENT + 5 {
            let host = format!("h{i}:1");
            c.add(&host);
            c.remove(&host);
        }
        let targets = c.targets();
        assert_eq!(targets.len(), 1 + MAX_RECENT);
        assert_eq!(targets[1], format!("h{}:1", MAX_RECENT + 4));
    }

    #[test]
    fn adopts_the_shortest_announced_interval() {
        let mut c = Coordinators::new("lb:1");
        assert_eq!(c.announced_interval(), None);
        c.announced("lb:1", Some(Duration::from_secs(9)));
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(9)));
        c.add("a:1");
        c.add("b:1");
        c.announced("a:1", Some(Duration::from_secs(3)));
        c.announced("b:1", Some(Duration::from_secs(5)));
        c.announced("b:1", None);
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(3)));
        c.remove("a:1");
        assert_eq!(c.announced_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn is_bounded() {
        let mut c = Coordinators::new("lb:1");
        for i in 0..MAX_COORDINATORS + 10 {
            c.add(&format!("h{i}:1"));
        }
        assert_eq!(c.hosts().len(), MAX_COORDINATORS);
    }
}
