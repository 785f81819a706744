//! The listing registry: what a coordinator knows about live services.
//!
//! Plain, synchronous data: every method that depends on time takes `now`, so the
//! whole lifecycle of a listing (added, refreshed, replaced, expired, removed) is
//! tested without a clock or a runtime. The coordinator keeps one `Registry` behind a
//! mutex and drives it from HTTP handlers and from one expiry task.
//!
//! - Listings are keyed by `(service, host)`. Publishing a key that exists refreshes
//!   its deadline, and replaces the stored payload when it differs (the original
//!   kept the stale one).
//! - A listing lives `ttl` (= heartbeat interval × missed heartbeats allowed) after
//!   its last heartbeat: it is expired by [`Registry::expire`] once `now >= deadline`.
//!   Deadlines sit in an ordered set, so expiry touches only what is due and the
//!   caller can sleep until [`Registry::next_deadline`].
//! - Every change takes the next value of one counter. Each service remembers the
//!   counter of its last change (its *index*), and the set of service names has its
//!   own index; a heartbeat that changes nothing changes no index. These indexes are
//!   what blocking queries wait on, and they key the cached JSON answers.
//! - Each listing remembers when this registry first held it and when its payload
//!   last changed (for the dashboard). A heartbeat that repeats the payload moves
//!   neither; one that brings a different payload moves the second. A listing
//!   copied from a peer at join sync was first seen when it was copied: the peer's
//!   times are not carried over.
//!
//! **Reads and heartbeats need no exclusive access.** The coordinator keeps the
//! registry behind a read-write lock. Everything a read needs works through `&self`:
//! a service's JSON answer is built once per change in a once-cell (cleared by the
//! change, under the write lock); and the common heartbeat, one that repeats the
//! stored payload, only moves the listing's deadline, an atomic. So reads and
//! heartbeats run side by side on every core; only changes take the write lock.

use crate::listing::Listing;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Bounds on what a registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Most listings in total.
    pub max_listings: usize,
    /// Most distinct services.
    pub max_services: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_listings: 1_000_000,
            max_services: 100_000,
        }
    }
}

/// What an [`Registry::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The key was new.
    Added,
    /// The key existed with a different payload, which was replaced.
    Replaced,
    /// The key existed with the same payload: only its deadline moved.
    Refreshed,
}

/// Why an [`Registry::upsert`] was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry holds `max` listings already.
    #[error("listing limit reached ({max} listings)")]
    TooManyListings {
        /// The limit.
        max: usize,
    },
    /// The registry holds `max` services already.
    #[error("service limit reached ({max} services)")]
    TooManyServices {
        /// The limit.
        max: usize,
    },
}

type Key = (Arc<str>, Arc<str>);

/// Instants as signed nanoseconds from one origin, so that a deadline fits in an
/// atomic: a heartbeat moves it through `&self`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: Instant,
}

impl Clock {
    fn nanos(self, at: Instant) -> i64 {
        if at >= self.origin {
            (at - self.origin).as_nanos().min(i64::MAX as u128) as i64
        } else {
            -((self.origin - at).as_nanos().min(i64::MAX as u128) as i64)
        }
    }

    fn instant(self, nanos: i64) -> Instant {
        let magnitude = Duration::from_nanos(nanos.unsigned_abs());
        if nanos >= 0 {
            self.origin + magnitude
        } else {
            self.origin - magnitude
        }
    }
}

/// One listing: its payload as compact JSON (what watchers get, byte for byte;
/// far smaller than a parsed object), its deadline, and when it was first seen and
/// last changed.
struct Entry {
    body: Bytes,
    /// When it expires unless refreshed (see [`Clock`]); a heartbeat moves it
    /// without exclusive access.
    deadline: AtomicI64,
    /// The time it is filed under in `Registry::queue`: its deadline when filed,
    /// which a heartbeat only moves later, so the queue may run early, never late.
    queued: Instant,
    /// When this registry first held it, published or copied from a peer (see
    /// [`Clock`]: 8 bytes, not an `Instant`'s 16).
    first_seen: i64,
    /// When its payload last changed: `first_seen` until a heartbeat brings a
    /// different payload.
    changed_at: i64,
}

/// What the dashboard shows of one listing (see [`Registry::listing_views`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingView {
    /// The payload, compact JSON (shared, not copied).
    pub body: Bytes,
    /// When it expires unless refreshed.
    pub deadline: Instant,
    /// When this registry first held it.
    pub first_seen: Instant,
    /// When its payload last changed (`first_seen` if never).
    pub changed_at: Instant,
}

/// A listing's compact JSON, the form it is stored and compared in: in an
/// allocation of exactly its size (the serializer's buffer has room to spare,
/// which a million stored listings would all keep).
fn encode(listing: &Listing) -> Bytes {
    let json = serde_json::to_vec(listing).expect("a listing serializes");
    Bytes::copy_from_slice(&json)
}

struct Service {
    name: Arc<str>,
    listings: BTreeMap<Arc<str>, Entry>,
    index: u64,
    /// The JSON array of this service's listings, built by the first read after a
    /// change (readers share the lock, so it is a once-cell) and cleared by the next.
    body: OnceLock<Bytes>,
}

/// Live listings by service, with their deadlines and change indexes.
pub struct Registry {
    ttl: Duration,
    clock: Clock,
    limits: RegistryLimits,
    services: BTreeMap<Arc<str>, Service>,
    /// Every listing, filed under a time at or before its deadline. A heartbeat
    /// only moves `Entry::deadline`; the expiry pass files a listing again when it
    /// finds it was refreshed. Refreshing is then a lookup, not two tree updates.
    queue: BTreeSet<(Instant, Key)>,
    len: usize,
    /// The last index handed out; every change takes the next one.
    counter: u64,
    /// Index of the set of service names.
    names_index: u64,
    /// Index reported for a service with no listing: the last time any service vanished.
    absent_index: u64,
    /// Cached JSON array of service names, valid for `names_index`.
    names_body: OnceLock<Bytes>,
    /// Keys withdrawn while a copy from a peer may be under way: an import must not
    /// bring back what a publisher withdrew meanwhile. `None` when not recording.
    withdrawn: Option<HashSet<Key>>,
}

impl Registry {
    /// An empty registry whose listings live `ttl` after their last heartbeat, and
    /// whose indexes start at `first_index` (the coordinator passes the wall clock
    /// in microseconds, so that indexes never repeat across restarts).
    pub fn new(ttl: Duration, limits: RegistryLimits, first_index: u64) -> Self {
        let first_index = first_index.max(1);
        Registry {
            ttl,
            clock: Clock {
                origin: Instant::now(),
            },
            limits,
            services: BTreeMap::new(),
            queue: BTreeSet::new(),
            len: 0,
            counter: first_index,
            names_index: first_index,
            absent_index: first_index,
            names_body: OnceLock::new(),
            withdrawn: None,
        }
    }

    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Adds a listing, or refreshes the heartbeat of the one with the same key,
    /// replacing its payload when it changed.
    ///
    /// The payload counts as changed when its compact JSON differs (fields
    /// reordered included: watchers get the order as published).
    pub fn upsert(&mut self, listing: Listing, now: Instant) -> Result<Upsert, RegistryError> {
        let deadline = now + self.ttl;
        let body = encode(&listing);
        let clock = self.clock;
        if let Some(service) = self.services.get_mut(listing.service()) {
            if let Some(entry) = service.listings.get_mut(listing.host()) {
                *entry.deadline.get_mut() = clock.nanos(deadline);
                if entry.body == body {
                    return Ok(Upsert::Refreshed);
                }
                entry.body = body;
                entry.changed_at = clock.nanos(now);
                self.counter += 1;
                service.index = self.counter;
                service.body = OnceLock::new();
                return Ok(Upsert::Replaced);
            }
        }
        self.insert(listing.service(), listing.host(), body, deadline, now)?;
        Ok(Upsert::Added)
    }

    /// Files a new key, first seen `now`, within the limits.
    fn insert(
        &mut self,
        service: &str,
        host: &str,
        body: Bytes,
        deadline: Instant,
        now: Instant,
    ) -> Result<(), RegistryError> {
        if self.len >= self.limits.max_listings {
            return Err(RegistryError::TooManyListings {
                max: self.limits.max_listings,
            });
        }
        let is_new_service = !self.services.contains_key(service);
        if is_new_service && self.services.len() >= self.limits.max_services {
            return Err(RegistryError::TooManyServices {
                max: self.limits.max_services,
            });
        }
        let index = self.bump();
        if is_new_service {
            self.names_index = index;
            self.names_body = OnceLock::new();
        }
        let service = self
            .services
            .entry(Arc::from(service))
            .or_insert_with_key(|name| Service {
                name: name.clone(),
                listings: BTreeMap::new(),
                index,
                body: OnceLock::new(),
            });
        service.index = index;
        service.body = OnceLock::new();
        let host: Arc<str> = Arc::from(host);
        let key = (service.name.clone(), host.clone());
        let seen = self.clock.nanos(now);
        let entry = Entry {
            body,
            deadline: AtomicI64::new(self.clock.nanos(deadline)),
            queued: deadline,
            first_seen: seen,
            changed_at: seen,
        };
        service.listings.insert(host, entry);
        self.queue.insert((deadline, key));
        self.len += 1;
        Ok(())
    }

    /// Adds a listing copied from another coordinator, where it had `ttl_left` to
    /// live: it lives no longer here (and at most one TTL). What this registry
    /// holds already came straight from its publisher and wins; a key withdrawn
    /// while recording (see [`Registry::record_withdrawals`]) stays withdrawn.
    /// Returns whether it was added; it was first seen (and last changed) `now`.
    pub fn import(
        &mut self,
        listing: &Listing,
        ttl_left: Duration,
        now: Instant,
    ) -> Result<bool, RegistryError> {
        let held = self.holds(listing.service(), listing.host());
        let withdrawn = self.withdrawn.as_ref().is_some_and(|keys| {
            !keys.is_empty()
                && keys.contains(&(Arc::from(listing.service()), Arc::from(listing.host())))
        });
        if held || withdrawn || ttl_left.is_zero() {
            return Ok(false);
        }
        let deadline = now + ttl_left.min(self.ttl);
        let body = encode(listing);
        self.insert(listing.service(), listing.host(), body, deadline, now)?;
        Ok(true)
    }

    /// Starts (`true`) or stops remembering withdrawn keys, for [`Registry::import`].
    /// Bounded: past `max_listings` remembered keys, no more are.
    pub fn record_withdrawals(&mut self, on: bool) {
        match (on, &self.withdrawn) {
            (true, None) => self.withdrawn = Some(HashSet::new()),
            (false, _) => self.withdrawn = None,
            (true, Some(_)) => {}
        }
    }

    /// Whether withdrawn keys are remembered now (see [`Registry::record_withdrawals`]).
    pub fn records_withdrawals(&self) -> bool {
        self.withdrawn.is_some()
    }

    /// Every live listing as compact JSON, with the time it has left to live.
    pub fn snapshot(&self, now: Instant) -> Vec<(Bytes, Duration)> {
        let mut all = Vec::with_capacity(self.len);
        for service in self.services.values() {
            for entry in service.listings.values() {
                let left = self.deadline_of(entry).saturating_duration_since(now);
                if !left.is_zero() {
                    all.push((entry.body.clone(), left));
                }
            }
        }
        all
    }

    /// Refreshes the heartbeat of `(service, host)` if its stored payload is exactly
    /// `body` (compact JSON): the common heartbeat, handled without decoding it.
    /// Returns false, changing nothing, in any other case.
    ///
    /// Needs only shared access: the deadline is an atomic, and only ever moves
    /// later here (a heartbeat racing another keeps the later of the two).
    pub fn refresh_if_same(&self, service: &str, host: &str, body: &[u8], now: Instant) -> bool {
        let Some(service) = self.services.get(service) else {
            return false;
        };
        let Some(entry) = service.listings.get(host) else {
            return false;
        };
        if entry.body != body {
            return false;
        }
        let deadline = self.clock.nanos(now + self.ttl);
        entry.deadline.fetch_max(deadline, Ordering::Relaxed);
        true
    }

    fn deadline_of(&self, entry: &Entry) -> Instant {
        self.clock.instant(entry.deadline.load(Ordering::Relaxed))
    }

    /// Removes one listing, returning its payload (compact JSON); `None` when there
    /// was none. While withdrawals are recorded, the key is remembered either way:
    /// a publisher may withdraw a listing this registry has not copied yet. Then
    /// the service's index moves even when it held no such listing: its answers
    /// change (a partial coordinator names what was withdrawn, `X-Hakken-Departed`),
    /// and a watcher's blocking query must not wait that out.
    pub fn remove(&mut self, service: &str, host: &str) -> Option<Bytes> {
        if let Some(withdrawn) = &mut self.withdrawn {
            if withdrawn.len() < self.limits.max_listings {
                withdrawn.insert((Arc::from(service), Arc::from(host)));
            }
            if !self.holds(service, host) {
                let index = self.bump();
                match self.services.get_mut(service) {
                    Some(service) => service.index = index,
                    None => self.absent_index = index,
                }
                return None;
            }
        }
        let service = self.services.get(service)?;
        let (host, entry) = service.listings.get_key_value(host)?;
        let key = (service.name.clone(), host.clone());
        self.queue.remove(&(entry.queued, key.clone()));
        Some(self.take(&key).body)
    }

    /// Takes the entry at `key` out of its service (the deadline is already gone),
    /// removing the service when it was the last one.
    fn take(&mut self, key: &Key) -> Entry {
        let index = self.bump();
        let service = self.services.get_mut(&key.0).expect("key is live");
        let entry = service.listings.remove(&key.1).expect("key is live");
        self.len -= 1;
        if service.listings.is_empty() {
            self.services.remove(&key.0);
            self.names_index = index;
            self.names_body = OnceLock::new();
            self.absent_index = index;
        } else {
            service.index = index;
            service.body = OnceLock::new();
        }
        entry
    }

    /// Removes listings whose deadline is at or before `now`, earliest first,
    /// returning their `(service, host)` keys. Does at most `max` steps (an expiry,
    /// or filing a refreshed listing again): call again while [`Registry::is_due`].
    pub fn expire(&mut self, now: Instant, max: usize) -> Vec<(Arc<str>, Arc<str>)> {
        let mut expired = Vec::new();
        // Bounded work per call, re-filing included: the caller holds a lock.
        let mut work = 0;
        while let Some(first) = self.queue.first() {
            if first.0 > now || work >= max {
                break;
            }
            work += 1;
            let (_, key) = self.queue.pop_first().expect("checked non-empty");
            let clock = self.clock;
            let entry = self
                .services
                .get_mut(&key.0)
                .and_then(|s| s.listings.get_mut(&key.1))
                .expect("every queued key is live");
            let deadline = clock.instant(*entry.deadline.get_mut());
            if deadline > now {
                // Refreshed since it was filed: file it under its deadline now.
                entry.queued = deadline;
                self.queue.insert((deadline, key));
                continue;
            }
            self.take(&key);
            expired.push(key);
        }
        expired
    }

    /// Whether [`Registry::expire`] has work at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|next| next <= now)
    }

    /// When to run [`Registry::expire`] next: at or before the earliest deadline
    /// (early when that listing was refreshed since; the pass then files it again).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(queued, _)| *queued)
    }

    /// Whether the listing `(service, host)` is held.
    pub fn holds(&self, service: &str, host: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.listings.contains_key(host))
    }

    /// When the listing `(service, host)` expires, unless refreshed.
    #[cfg(test)]
    pub fn deadline(&self, service: &str, host: &str) -> Option<Instant> {
        let entry = self.services.get(service)?.listings.get(host)?;
        Some(self.deadline_of(entry))
    }

    /// Names of services with at least one live listing, sorted.
    #[cfg(test)]
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(|name| &**name)
    }

    /// Live listings of one service, sorted by host (decoded on the way out).
    #[cfg(test)]
    pub fn listings(&self, service: &str) -> impl Iterator<Item = Listing> + '_ {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|s| s.listings.values())
            .map(|e| {
                let limits = crate::listing::Limits::RECEIVED;
                Listing::from_json(&e.body, &limits).expect("stored listings are valid")
            })
    }

    /// The stored bodies of one service's live listings (shared, not copied), for
    /// the caller to decode after releasing the lock.
    pub fn bodies(&self, service: &str) -> Vec<Bytes> {
        self.services
            .get(service)
            .map(|s| s.listings.values().map(|e| e.body.clone()).collect())
            .unwrap_or_default()
    }

    /// One service's live listings as the dashboard shows them (payload,
    /// deadline, first seen, last changed), sorted by host.
    ///
    /// Payloads stay compact JSON (shared, not copied): the caller decodes them
    /// after releasing the lock.
    pub fn listing_views(&self, service: &str) -> Vec<ListingView> {
        let clock = self.clock;
        self.services
            .get(service)
            .into_iter()
            .flat_map(|s| s.listings.values())
            .map(|e| ListingView {
                body: e.body.clone(),
                deadline: self.deadline_of(e),
                first_seen: clock.instant(e.first_seen),
                changed_at: clock.instant(e.changed_at),
            })
            .collect()
    }

    /// When the listing `(service, host)` was first seen and last changed.
    #[cfg(test)]
    pub fn times(&self, service: &str, host: &str) -> Option<(Instant, Instant)> {
        let entry = self.services.get(service)?.listings.get(host)?;
        Some((
            self.clock.instant(entry.first_seen),
            self.clock.instant(entry.changed_at),
        ))
    }

    /// Each service with its number of live listings, sorted by name (the name
    /// shared, so a caller can keep it without copying it).
    pub fn service_counts(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.services
            .iter()
            .map(|(name, service)| (name, service.listings.len()))
    }

    /// The number of live listings of one service.
    #[cfg(test)]
    pub fn count(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |s| s.listings.len())
    }

    /// Change index of one service (see the module docs).
    pub fn index(&self, service: &str) -> u64 {
        self.services
            .get(service)
            .map_or(self.absent_index, |s| s.index)
    }

    /// Change index of the set of service names.
    pub fn names_index(&self) -> u64 {
        self.names_index
    }

    /// The service's listings as a JSON array, with its index; `None` when it has none.
    /// Serialized once per change and shared by every reader until the next one.
    pub fn listings_json(&self, service: &str) -> Option<(u64, Bytes)> {
        let service = self.services.get(service)?;
        let body = service.body.get_or_init(|| {
            // The stored payloads are compact JSON already: join them.
            let size: usize = service.listings.values().map(|e| e.body.len() + 1).sum();
            let mut all = Vec::with_capacity(size + 2);
            all.push(b'[');
            for (i, entry) in service.listings.values().enumerate() {
                if i > 0 {
                    all.push(b',');
                }
                all.extend_from_slice(&entry.body);
            }
            all.push(b']');
            Bytes::from(all)
        });
        Some((service.index, body.clone()))
    }

    /// The service names as a JSON array, with their index; cached like listings.
    pub fn services_json(&self) -> (u64, Bytes) {
        let services = &self.services;
        let body = self.names_body.get_or_init(|| {
            let names: Vec<&str> = services.keys().map(|n| &**n).collect();
            Bytes::from(serde_json::to_vec(&names).expect("names serialize"))
        });
        (self.names_index, body.clone())
    }

    /// Total live listings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no listing is live.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of services with at least one live listing.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TTL: Duration = Duration::from_millis(300);

    fn listing(service: &str, host: &str) -> Listing {
        Listing::new(service, host).unwrap()
    }

    fn registry() -> Registry {
        Registry::new(TTL, RegistryLimits::default(), 1)
    }

    fn hosts(registry: &Registry, service: &str) -> Vec<String> {
        registry
            .listings(service)
            .map(|l| l.host().to_owned())
            .collect()
    }

    #[test]
    fn add_then_refresh_then_replace() {
        let t0 = Instant::now();
        let mut r = registry();
        assert_eq!(r.upsert(listing("s", "a:1"), t0), Ok(Upsert::Added));
        let i1 = r.index("s");
        assert_eq!(r.upsert(listing("s", "a:1"), t0), Ok(Upsert::Refreshed));
        assert_eq!(r.index("s"), i1, "a no-op heartbeat changes no index");
        let changed = listing("s", "a:1").with("v", 2);
        assert_eq!(r.upsert(changed, t0), Ok(Upsert::Replaced));
        assert!(r.index("s") > i1);
        assert_eq!(r.listings("s").next().unwrap().get("v"), Some(&json!(2)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn expires_exactly_at_the_deadline() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        assert_eq!(r.next_deadline(), Some(t0 + TTL));
        assert!(r
            .expire(t0 + TTL - Duration::from_millis(1), usize::MAX)
            .is_empty());
        assert_eq!(hosts(&r, "s"), ["a:1"]);
        let gone = r.expire(t0 + TTL, usize::MAX);
        assert_eq!(gone, vec![(Arc::from("s"), Arc::from("a:1"))]);
        assert!(r.is_empty());
        assert_eq!(r.services().count(), 0);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_heartbeat_moves_the_deadline() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        let t1 = t0 + Duration::from_millis(200);
        r.upsert(listing("s", "a:1"), t1).unwrap();
        assert!(r.expire(t0 + TTL, usize::MAX).is_empty());
        assert_eq!(r.deadline("s", "a:1"), Some(t1 + TTL));
        assert_eq!(r.expire(t1 + TTL, usize::MAX).len(), 1);
    }

    #[test]
    fn a_service_disappears_with_its_last_listing() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        r.upsert(listing("s", "b:1"), t0 + Duration::from_millis(100))
            .unwrap();
        r.upsert(listing("t", "a:1"), t0 + Duration::from_millis(200))
            .unwrap();
        assert_eq!(r.services().collect::<Vec<_>>(), ["s", "t"]);
        let names = r.names_index();
        r.expire(t0 + TTL, usize::MAX);
        assert_eq!(hosts(&r, "s"), ["b:1"]);
        assert_eq!(r.names_index(), names, "the set of names did not change");
        r.expire(t0 + TTL + Duration::from_millis(100), usize::MAX);
        assert_eq!(r.services().collect::<Vec<_>>(), ["t"]);
        assert!(r.names_index() > names);
        assert_eq!(r.count("s"), 0);
    }

    #[test]
    fn expiry_in_batches() {
        let t0 = Instant::now();
        let mut r = registry();
        for i in 0..5 {
            r.upsert(listing("s", &format!("h:{i}")), t0).unwrap();
        }
        assert_eq!(r.expire(t0 + TTL, 2).len(), 2);
        assert_eq!(r.expire(t0 + TTL, 2).len(), 2);
        assert_eq!(r.expire(t0 + TTL, 2).len(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn refresh_if_same_needs_the_exact_stored_payload() {
        let t0 = Instant::now();
        let mut r = registry();
        let stored = listing("s", "a:1").with("x", 1);
        r.upsert(stored, t0).unwrap();
        let index = r.index("s");
        let later = t0 + Duration::from_millis(100);
        let same = br#"{"service":"s","host":"a:1","x":1}"#;
        assert!(r.refresh_if_same("s", "a:1", same, later));
        assert_eq!(r.deadline("s", "a:1"), Some(later + TTL));
        assert_eq!(r.index("s"), index);
        // Anything else changes nothing.
        let spaced = br#"{"service":"s","host":"a:1","x": 1}"#;
        assert!(!r.refresh_if_same("s", "a:1", spaced, t0 + TTL));
        assert!(!r.refresh_if_same("s", "b:1", same, t0 + TTL));
        assert!(!r.refresh_if_same("t", "a:1", same, t0 + TTL));
        assert_eq!(r.deadline("s", "a:1"), Some(later + TTL));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn remove_deletes_one_listing() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        r.upsert(listing("s", "b:1"), t0).unwrap();
        let before = r.index("s");
        assert_eq!(
            r.remove("s", "a:1").as_deref(),
            Some(&br#"{"service":"s","host":"a:1"}"#[..])
        );
        assert_eq!(r.remove("s", "a:1"), None);
        assert_eq!(r.remove("nope", "a:1"), None);
        assert!(r.index("s") > before);
        assert_eq!(hosts(&r, "s"), ["b:1"]);
        // The removed listing is gone from the expiry queue too.
        assert_eq!(r.expire(t0 + TTL, usize::MAX).len(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn a_withdrawal_of_what_is_not_held_moves_the_index_only_while_recording() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        let (held, absent) = (r.index("s"), r.index("t"));
        assert_eq!(r.remove("s", "b:1"), None);
        assert_eq!(r.remove("t", "b:1"), None);
        assert_eq!((r.index("s"), r.index("t")), (held, absent));
        r.record_withdrawals(true);
        assert_eq!(r.remove("s", "b:1"), None);
        assert!(r.index("s") > held);
        assert_eq!(r.remove("t", "b:1"), None);
        assert!(r.index("t") > absent);
        assert_eq!(hosts(&r, "s"), ["a:1"]);
        assert_eq!(r.listings_json("s").unwrap().0, r.index("s"));
    }

    #[test]
    fn indexes_only_grow_across_disappearance() {
        let t0 = Instant::now();
        let mut r = registry();
        r.upsert(listing("s", "a:1"), t0).unwrap();
        let present = r.index("s");
        r.remove("s", "a:1");
        let absent = r.index("s");
        assert!(absent > present);
        r.upsert(listing("s", "a:1"), t0).unwrap();
        assert!(r.index("s") > absent);
    }

    #[test]
    fn limits_refuse_new_keys_but_keep_refreshing() {
        let t0 = Instant::now();
        let limits = RegistryLimits {
            max_listings: 2,
            max_services: 1,
        };
        let mut r = Registry::new(TTL, limits, 1);
        r.upsert(listing("s", "a:1"), t0).unwrap();
        assert_eq!(
            r.upsert(listing("t", "a:1"), t0),
            Err(RegistryError::TooManyServices { max: 1 })
        );
        r.upsert(listing("s", "b:1"), t0).unwrap();
        assert_eq!(
            r.upsert(listing("s", "c:1"), t0),
            Err(RegistryError::TooManyListings { max: 2 })
        );
        let later = t0 + Duration::from_millis(100);
        assert_eq!(r.upsert(listing("s", "a:1"), later), Ok(Upsert::Refreshed));
        assert_eq!(r.deadline("s", "a:1"), Some(later + TTL));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn first_seen_and_changed_at() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = registry();
        r.upsert(listing("s", "a:1").with("v", 1), t0).unwrap();
        assert_eq!(r.times("s", "a:1"), Some((t0, t0)));
        // Heartbeats that repeat the payload move neither time, by either path.
        r.upsert(listing("s", "a:1").with("v", 1), t0 + ms(100))
            .unwrap();
        assert!(r.refresh_if_same(
            "s",
            "a:1",
            br#"{"service":"s","host":"a:1","v":1}"#,
            t0 + ms(150)
        ));
        assert_eq!(r.times("s", "a:1"), Some((t0, t0)));
        // A different payload moves the time of the last change only.
        r.upsert(listing("s", "a:1").with("v", 2), t0 + ms(200))
            .unwrap();
        assert_eq!(r.times("s", "a:1"), Some((t0, t0 + ms(200))));
        let view = &r.listing_views("s")[0];
        assert_eq!(view.first_seen, t0);
        assert_eq!(view.changed_at, t0 + ms(200));
        assert_eq!(view.deadline, t0 + ms(200) + TTL);
        // Gone and back: first seen again.
        r.remove("s", "a:1");
        assert_eq!(r.times("s", "a:1"), None);
        r.upsert(listing("s", "a:1").with("v", 2), t0 + ms(250))
            .unwrap();
        assert_eq!(r.times("s", "a:1"), Some((t0 + ms(250), t0 + ms(250))));
        // Copied from a peer: first seen when copied.
        assert_eq!(r.import(&listing("s", "b:1"), TTL, t0 + ms(260)), Ok(true));
        assert_eq!(r.times("s", "b:1"), Some((t0 + ms(260), t0 + ms(260))));
    }

    #[test]
    fn cached_json_follows_changes() {
        let t0 = Instant::now();
        let mut r = registry();
        assert_eq!(r.listings_json("s"), None);
        r.upsert(listing("s", "a:1").with("x", 1), t0).unwrap();
        let (i1, body) = r.listings_json("s").unwrap();
        assert_eq!(&body[..], br#"[{"service":"s","host":"a:1","x":1}]"#);
        r.upsert(listing("s", "a:1").with("x", 2), t0).unwrap();
        let (i2, body) = r.listings_json("s").unwrap();
        assert!(i2 > i1);
        assert_eq!(&body[..], br#"[{"service":"s","host":"a:1","x":2}]"#);
        assert_eq!(&r.services_json().1[..], br#"["s"]"#);
    }
}
