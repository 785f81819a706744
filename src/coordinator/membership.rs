//! The membership table: which other coordinators this one knows, and which it shuns.
//!
//! Plain data, no I/O. The gossip tasks (`gossip.rs`) feed it what they hear
//! and ask it whom to poll; the HTTP layer feeds it explicit announcements. The rules
//! are the original's:
//!
//! - An explicit add (`POST /v1/coordinator`, or the discovery host's answer at a
//!   resync) always adds, and lifts a blacklist entry.
//! - A coordinator learned from another coordinator's list is added unless it is
//!   blacklisted.
//! - A coordinator whose poll fails is removed and blacklisted.
//! - This coordinator is always in its own list, never polled, never removed.
//!
//! The table is bounded: past `max_peers` known coordinators, new ones are refused.

use crate::listing::Peer;
use std::collections::{BTreeMap, VecDeque};
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

/// Known coordinators and the blacklist.
#[derive(Debug)]
pub struct Membership {
    me: Peer,
    peers: BTreeMap<String, PeerState>,
    /// Hosts removed after a failed poll, oldest first; bounded like `peers`.
    blacklist: VecDeque<String>,
    max_peers: usize,
    /// Changes whenever the list of coordinators changes.
    index: u64,
}

impl Membership {
    /// A table holding only `me`, the descriptor this coordinator announces.
    pub fn new(me: Peer, max_peers: usize) -> Self {
        Membership {
            me,
            peers: BTreeMap::new(),
            blacklist: VecDeque::new(),
            max_peers: max_peers.max(1),
            index: 1,
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
        self.blacklist.retain(|host| host != peer.host());
        self.insert(peer, now)
    }

    /// Adds a coordinator heard of from another one, unless it is blacklisted,
    /// oneself, or the table is full. Returns whether it was new.
    pub fn learn(&mut self, peer: Peer, now: Instant) -> bool {
        if peer.host() == self.me.host() || self.is_blacklisted(peer.host()) {
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
        if self.peers.len() + 1 >= self.max_peers {
            return Err(MembershipError::Full {
                max: self.max_peers,
            });
        }
        self.peers.insert(
            peer.host().to_owned(),
            PeerState {
                peer,
                added: now,
                last_ok: None,
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
        }
        list.into_iter()
            .filter_map(|peer| {
                let host = peer.host().to_owned();
                self.learn(peer, now).then_some(host)
            })
            .collect()
    }

    /// Records a failed poll of `host`: it is removed and blacklisted.
    /// Returns whether it was known.
    pub fn poll_failed(&mut self, host: &str) -> bool {
        let known = self.peers.remove(host).is_some();
        if known {
            self.index += 1;
        }
        if host != self.me.host() && !self.is_blacklisted(host) {
            if self.blacklist.len() >= self.max_peers {
                self.blacklist.pop_front();
            }
            self.blacklist.push_back(host.to_owned());
        }
        known
    }

    /// Whether `host` is currently shunned.
    pub fn is_blacklisted(&self, host: &str) -> bool {
        self.blacklist.iter().any(|h| h == host)
    }

    /// Whether `host` is known (oneself included).
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

    /// Always false: a table holds at least oneself.
    pub fn is_empty(&self) -> bool {
        false
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

    #[test]
    fn lists_itself_first_and_never_polls_itself() {
        let mut m = Membership::new(peer("me:1"), 10);
        let now = Instant::now();
        assert_eq!(m.add(peer("me:1"), now), Ok(false));
        assert!(!m.learn(peer("me:1"), now));
        assert_eq!(hosts(&m), ["me:1"]);
        assert!(m.hosts_to_poll().is_empty());
    }

    #[test]
    fn learns_from_a_poll() {
        let mut m = Membership::new(peer("me:1"), 10);
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
    fn a_failed_poll_removes_and_blacklists_until_explicitly_added() {
        let mut m = Membership::new(peer("me:1"), 10);
        let now = Instant::now();
        m.add(peer("a:1"), now).unwrap();
        m.add(peer("b:1"), now).unwrap();
        let before = m.index();
        assert!(m.poll_failed("b:1"));
        assert!(m.index() > before);
        assert_eq!(hosts(&m), ["me:1", "a:1"]);
        assert!(m.is_blacklisted("b:1"));
        // Gossip does not bring it back...
        m.poll_succeeded("a:1", vec![peer("b:1")], now);
        assert!(!m.contains("b:1"));
        assert!(!m.learn(peer("b:1"), now));
        // ...an explicit add does.
        assert_eq!(m.add(peer("b:1"), now), Ok(true));
        assert!(!m.is_blacklisted("b:1"));
        assert_eq!(hosts(&m), ["me:1", "a:1", "b:1"]);
    }

    #[test]
    fn bounded() {
        let mut m = Membership::new(peer("me:1"), 3);
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
            m.poll_failed(&format!("x:{i}"));
        }
        assert!(m.blacklist.len() <= 3);
    }

    #[test]
    fn index_moves_only_on_change() {
        let mut m = Membership::new(peer("me:1"), 10);
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
