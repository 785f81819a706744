//! The membership table: which other coordinators this one knows, and which it shuns.
//!
//! Plain data, no I/O. The gossip tasks (`gossip.rs`) feed it what they hear
//! and ask it whom to poll; the HTTP layer feeds it explicit announcements. The rules
//! are the original's, with failures counted instead of taken at their word:
//!
//! - An explicit add (`POST /v1/coordinator`, or the discovery host's answer at a
//!   resync) always adds, and lifts a blacklist entry.
//! - A coordinator learned from another coordinator's list is added unless it is
//!   blacklisted.
//! - A poll that fails because the coordinator is broken (see
//!   [`RemoteError::is_broken`](crate::remote::RemoteError::is_broken)) is a strike;
//!   after `failures_before_drop` strikes in a row it is removed and blacklisted.
//!   Any answer, even a refusal, clears its strikes: it is alive.
//! - Blacklist entries expire after `blacklist_for`. Until then the dropped
//!   coordinator is on probation: asked directly every round, and taken back as
//!   soon as it answers. A coordinator that restarted and whose announcement was
//!   lost (the original's, routed back to itself by a load balancer) is then known
//!   again within a heartbeat, not a resync period.
//! - This coordinator is always in its own list, never polled, never removed.
//!
//! The table is bounded: past `max_peers` known coordinators, new ones are refused,
//! and the blacklist holds at most as many entries.

use crate::listing::Peer;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// What the table remembers of one known coordinator.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// The descriptor as it was announced.
    pub peer: Peer,
    /// When it was added.
    pub added: Instant,
    /// When a poll of it last succeeded.
    pub last_ok: Option<Instant>,
    /// Polls in a row that found it broken.
    pub strikes: u32,
}

/// Why a coordinator could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The table already holds `max` coordinators.
    #[error("coordinator limit reached ({max} coordinators)")]
    Full {
        /// The limit.
        max: usize,
    },
}

/// What a failed poll did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The coordinator has this many strikes now and stays.
    Struck(u32),
    /// That was its last strike: it is removed and blacklisted.
    Dropped,
    /// It was not known (removed meanwhile).
    Unknown,
}

/// How strictly failures are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Most coordinators known, oneself included.
    pub max_peers: usize,
    /// Broken polls in a row before a coordinator is dropped (at least 1).
    pub failures_before_drop: u32,
    /// How long a dropped coordinator stays blacklisted.
    pub blacklist_for: Duration,
}

/// Known coordinators and the blacklist.
#[derive(Debug)]
pub struct Membership {
    me: Peer,
    peers: BTreeMap<String, PeerState>,
    /// Hosts dropped after failed polls, with when their entry expires.
    blacklist: HashMap<String, Instant>,
    rules: Rules,
    /// Changes whenever the list of coordinators changes.
    index: u64,
}

impl Membership {
    /// A table holding only `me`, the descriptor this coordinator announces; its
    /// index starts at `first_index` (see the registry's).
    pub fn new(me: Peer, rules: Rules, first_index: u64) -> Self {
        Membership {
            me,
            peers: BTreeMap::new(),
            blacklist: HashMap::new(),
            rules: Rules {
                max_peers: rules.max_peers.max(1),
                failures_before_drop: rules.failures_before_drop.max(1),
                ..rules
            },
            index: first_index.max(1),
        }
    }

    /// This coordinator's own descriptor.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// Adds a coordinator on explicit request, lifting any blacklist entry.
    /// Returns whether it was new. Adding oneself changes nothing.
    pub fn add(&mut self, peer: Peer, now: Instant) -> Result<bool, MembershipError> {
        if peer.host() == self.me.host() {
            return Ok(false);
        }
        self.blacklist.remove(peer.host());
        self.insert(peer, now)
    }

    /// Adds a coordinator heard of from another one, unless it is blacklisted,
    /// oneself, or the table is full. Returns whether it was new.
    pub fn learn(&mut self, peer: Peer, now: Instant) -> bool {
        if peer.host() == self.me.host() || self.is_blacklisted(peer.host(), now) {
            return false;
        }
        self.insert(peer, now).unwrap_or(false)
    }

    fn insert(&mut self, peer: Peer, now: Instant) -> Result<bool, MembershipError> {
        if let Some(state) = self.peers.get_mut(peer.host()) {
            if state.peer != peer {
                state.peer = peer;
                self.index += 1;
            }
            return Ok(false);
        }
        if self.peers.len() + 1 >= self.rules.max_peers {
            return Err(MembershipError::Full {
                max: self.rules.max_peers,
            });
        }
        self.peers.insert(
            peer.host().to_owned(),
            PeerState {
                peer,
                added: now,
                last_ok: None,
                strikes: 0,
            },
        );
        self.index += 1;
        Ok(true)
    }

    /// Records a successful poll of `host` that answered `list`; learns the new ones.
    /// Returns the hosts that were new.
    pub fn poll_succeeded(&mut self, host: &str, list: Vec<Peer>, now: Instant) -> Vec<String> {
        if let Some(state) = self.peers.get_mut(host) {
            state.last_ok = Some(now);
            state.strikes = 0;
        }
        list.into_iter()
            .filter_map(|peer| {
                let host = peer.host().to_owned();
                self.learn(peer, now).then_some(host)
            })
            .collect()
    }

    /// Records that `host` answered with a refusal (a `4xx`, a `503`): alive, so
    /// its strikes are cleared, but nothing was learned.
    pub fn poll_refused(&mut self, host: &str) {
        if let Some(state) = self.peers.get_mut(host) {
            state.strikes = 0;
        }
    }

    /// Records a poll that found `host` broken: a strike, and at the last one it
    /// is removed and blacklisted.
    pub fn poll_failed(&mut self, host: &str, now: Instant) -> Failure {
        let Some(state) = self.peers.get_mut(host) else {
            return Failure::Unknown;
        };
        state.strikes += 1;
        if state.strikes < self.rules.failures_before_drop {
            return Failure::Struck(state.strikes);
        }
        self.peers.remove(host);
        self.index += 1;
        self.blacklist(host, now);
        Failure::Dropped
    }

    fn blacklist(&mut self, host: &str, now: Instant) {
        if self.blacklist.len() >= self.rules.max_peers {
            self.blacklist.retain(|_, until| *until > now);
        }
        if self.blacklist.len() >= self.rules.max_peers {
            // Full of live entries: the one expiring soonest makes room.
            if let Some(soonest) = self
                .blacklist
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(host, _)| host.clone())
            {
                self.blacklist.remove(&soonest);
            }
        }
        self.blacklist
            .insert(host.to_owned(), now + self.rules.blacklist_for);
    }

    /// The dropped coordinators to probe: every one still blacklisted (at most
    /// `max_peers`).
    pub fn hosts_to_probe(&self, now: Instant) -> Vec<String> {
        self.blacklist
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// A dropped coordinator answered a probe with `list`: it is alive, so it is
    /// taken back (as it describes itself in `list`, else by its host alone) and
    /// the others in its list are learned. Returns whether it was taken back, and
    /// the other hosts that were new. Nothing changes for a host no longer
    /// blacklisted.
    pub fn take_back(&mut self, host: &str, list: Vec<Peer>, now: Instant) -> (bool, Vec<String>) {
        // Added again meanwhile (its own polls count), or its entry expired.
        if !self.is_blacklisted(host, now) {
            return (false, Vec::new());
        }
        let own = list
            .iter()
            .find(|peer| peer.host() == host)
            .cloned()
            .or_else(|| Peer::new(host).ok());
        let Some(own) = own else {
            return (false, Vec::new());
        };
        // No room: it stays blacklisted, and nothing is learned from it.
        if self.peers.len() + 1 >= self.rules.max_peers {
            return (false, Vec::new());
        }
        self.blacklist.remove(host);
        let back = self.insert(own, now).unwrap_or(false);
        (back, self.poll_succeeded(host, list, now))
    }

    /// Whether `host` is currently shunned.
    pub fn is_blacklisted(&self, host: &str, now: Instant) -> bool {
        self.blacklist.get(host).is_some_and(|until| *until > now)
    }

    /// Whether `host` is known (oneself included).
    #[cfg(test)]
    pub fn contains(&self, host: &str) -> bool {
        host == self.me.host() || self.peers.contains_key(host)
    }

    /// The hosts to poll: every known coordinator but oneself.
    pub fn hosts_to_poll(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// Every known coordinator, oneself first: the answer to `GET /v1/coordinator`.
    pub fn list(&self) -> Vec<Peer> {
        std::iter::once(self.me.clone())
            .chain(self.peers.values().map(|s| s.peer.clone()))
            .collect()
    }

    /// What is known of each other coordinator.
    pub fn peers(&self) -> impl Iterator<Item = &PeerState> {
        self.peers.values()
    }

    /// Number of known coordinators, oneself included.
    pub fn len(&self) -> usize {
        self.peers.len() + 1
    }

    /// Change index of the list of coordinators.
    pub fn index(&self) -> u64 {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str) -> Peer {
        Peer::new(host).unwrap()
    }

    fn hosts(m: &Membership) -> Vec<String> {
        m.list().iter().map(|p| p.host().to_owned()).collect()
    }

    fn rules(max_peers: usize, failures_before_drop: u32) -> Rules {
        Rules {
            max_peers,
            failures_before_drop,
            blacklist_for: Duration::from_secs(10),
        }
    }

    fn table(max_peers: usize, failures_before_drop: u32) -> Membership {
        Membership::new(peer("me:1"), rules(max_peers, failures_before_drop), 1)
    }

    #[test]
    fn lists_itself_first_and_never_polls_itself() {
        let mut m = table(10, 1);
        let now = Instant::now();
        assert_eq!(m.add(peer("me:1"), now), Ok(false));
        assert!(!m.learn(peer("me:1"), now));
        assert_eq!(hosts(&m), ["me:1"]);
        assert!(m.hosts_to_poll().is_empty());
    }

    #[test]
    fn learns_from_a_poll() {
        let mut m = table(10, 1);
        let now = Instant::now();
        assert_eq!(m.add(peer("a:1"), now), Ok(true));
        let new = m.poll_succeeded("a:1", vec![peer("a:1"), peer("b:1"), peer("me:1")], now);
        assert_eq!(new, ["b:1"]);
        assert_eq!(hosts(&m), ["me:1", "a:1", "b:1"]);
        assert_eq!(m.hosts_to_poll(), ["a:1", "b:1"]);
        let a = m.peers().find(|s| s.peer.host() == "a:1").unwrap();
        assert_eq!(a.last_ok, Some(now));
    }

    #[test]
    fn dropped_after_consecutive_failures_and_blacklisted_until_explicitly_added() {
        let mut m = table(10, 3);
        let now = Instant::now();
        m.add(peer("a:1"), now).unwrap();
        m.add(peer("b:1"), now).unwrap();
        let before = m.index();
        assert_eq!(m.poll_failed("b:1", now), Failure::Struck(1));
        assert_eq!(m.poll_failed("b:1", now), Failure::Struck(2));
        assert_eq!(m.index(), before, "a strike changes no list");
        // An answer, even a refusal, clears the strikes.
        m.poll_refused("b:1");
        assert_eq!(m.poll_failed("b:1", now), Failure::Struck(1));
        m.poll_succeeded("b:1", vec![], now);
        for strike in 1..3 {
            assert_eq!(m.poll_failed("b:1", now), Failure::Struck(strike));
        }
        assert_eq!(m.poll_failed("b:1", now), Failure::Dropped);
        assert_eq!(m.poll_failed("b:1", now), Failure::Unknown);
        assert!(m.index() > before);
        assert_eq!(hosts(&m), ["me:1", "a:1"]);
        assert!(m.is_blacklisted("b:1", now));
        // Gossip does not bring it back...
        m.poll_succeeded("a:1", vec![peer("b:1")], now);
        assert!(!m.contains("b:1"));
        assert!(!m.learn(peer("b:1"), now));
        // ...an explicit add does.
        assert_eq!(m.add(peer("b:1"), now), Ok(true));
        assert!(!m.is_blacklisted("b:1", now));
        assert_eq!(hosts(&m), ["me:1", "a:1", "b:1"]);
    }

    #[test]
    fn a_dropped_coordinator_is_probed_until_its_entry_expires_and_taken_back_when_it_answers() {
        let now = Instant::now();
        let mut m = Membership::new(peer("a:1"), rules(8, 1), 1);
        m.add(peer("b:1"), now).unwrap();
        assert_eq!(m.poll_failed("b:1", now), Failure::Dropped);
        assert_eq!(m.hosts_to_probe(now), vec!["b:1".to_owned()]);
        assert!(m.hosts_to_poll().is_empty());

        let mut own = serde_json::Map::new();
        own.insert("host".into(), "b:1".into());
        own.insert("zone".into(), "east".into());
        let own = Peer::from_value(
            serde_json::Value::Object(own),
            &crate::listing::Limits::default(),
        )
        .unwrap();
        let (back, learned) = m.take_back("b:1", vec![own.clone(), peer("c:1")], now);
        assert!(back);
        assert_eq!(learned, vec!["c:1".to_owned()]);
        assert_eq!(hosts(&m), vec!["a:1", "b:1", "c:1"]);
        assert!(m.list().contains(&own), "taken back as it describes itself");
        assert!(m.hosts_to_probe(now).is_empty());
        assert!(!m.is_blacklisted("b:1", now));

        // Not probed past the entry's expiry; a late answer takes nothing back.
        assert_eq!(m.poll_failed("b:1", now), Failure::Dropped);
        let later = now + Duration::from_secs(10);
        assert!(m.hosts_to_probe(later).is_empty());
        assert_eq!(
            m.take_back("b:1", vec![peer("b:1")], later),
            (false, vec![])
        );
        assert!(!m.contains("b:1"));
    }

    #[test]
    fn a_dropped_coordinator_is_not_taken_back_into_a_full_table() {
        let now = Instant::now();
        let mut m = Membership::new(peer("a:1"), rules(2, 1), 1);
        m.add(peer("b:1"), now).unwrap();
        assert_eq!(m.poll_failed("b:1", now), Failure::Dropped);
        m.add(peer("c:1"), now).unwrap();
        assert_eq!(
            m.take_back("b:1", vec![peer("b:1"), peer("d:1")], now),
            (false, vec![])
        );
        assert!(m.is_blacklisted("b:1", now), "still shunned");
        assert_eq!(hosts(&m), vec!["a:1", "c:1"]);
    }

    #[test]
    fn blacklist_entries_expire() {
        let mut m = table(10, 1);
        let now = Instant::now();
        m.add(peer("b:1"), now).unwrap();
        assert_eq!(m.poll_failed("b:1", now), Failure::Dropped);
        let later = now + Duration::from_secs(10);
        assert!(m.is_blacklisted("b:1", later - Duration::from_millis(1)));
        assert!(!m.learn(peer("b:1"), later - Duration::from_millis(1)));
        assert!(!m.is_blacklisted("b:1", later));
        assert!(
            m.learn(peer("b:1"), later),
            "gossip brings it back once expired"
        );
    }

    #[test]
    fn bounded() {
        let mut m = table(3, 1);
        let now = Instant::now();
        m.add(peer("a:1"), now).unwrap();
        m.add(peer("b:1"), now).unwrap();
        assert_eq!(
            m.add(peer("c:1"), now),
            Err(MembershipError::Full { max: 3 })
        );
        assert!(!m.learn(peer("c:1"), now));
        assert_eq!(m.len(), 3);
        // Re-adding a known one is fine at the limit.
        assert_eq!(m.add(peer("a:1"), now), Ok(false));
        for i in 0..10 {
            let host = format!("x{i}:1");
            m.peers.insert(
                host.clone(),
                PeerState {
                    peer: peer(&host),
                    added: now,
                    last_ok: None,
                    strikes: 0,
                },
            );
            assert_eq!(m.poll_failed(&host, now), Failure::Dropped);
        }
        assert!(m.blacklist.len() <= 3);
        assert!(m.is_blacklisted("x9:1", now), "the newest entry is kept");
    }

    #[test]
    fn index_moves_only_on_change() {
        let mut m = table(10, 1);
        let now = Instant::now();
        let i0 = m.index();
        m.add(peer("a:1"), now).unwrap();
        let i1 = m.index();
        assert!(i1 > i0);
        m.add(peer("a:1"), now).unwrap();
        m.poll_succeeded("a:1", vec![peer("a:1")], now);
        assert_eq!(m.index(), i1);
    }
}
