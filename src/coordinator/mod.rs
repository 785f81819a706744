//! The coordinator: an HTTP server holding service listings, gossiping with its peers.
//!
//! [`Coordinator::start`] takes a listener the caller bound (port 0 works) and runs
//! six things until [`Coordinator::shutdown`]: the HTTP server (`http/`), the
//! expiry task (below), the two gossip loops (`gossip.rs`), the join sync
//! (`sync.rs`) and the dashboard's sampler (below, `history.rs`), and with a data
//! directory the registry's writer (`persist.rs`). They share one
//! `Shared` value: the registry, the membership table and the dashboard's history
//! behind short-lived locks (never held across an `.await`), the start phase
//! (`readiness.rs`), the configuration, and one cancellation token that every loop
//! watches.
//!
//! Where things live: a listing enters in `http/listings.rs` (or, copied from a
//! peer at start, in `sync.rs`, or read back from the data directory, in
//! `persist.rs`), lives in `registry::Registry`, leaves through
//! `expire_loop` here or a `DELETE` (`http/listings.rs`), and watchers learn of it
//! through `GET /v1/listings/:service`.

mod changes;
pub mod config;
mod dashboard;
mod direct;
mod dns;
mod dns_tcp;
mod gossip;
mod history;
mod http;
mod membership;
mod metrics;
mod persist;
mod readiness;
mod registry;
mod server;
mod sockets;
mod sync;
mod tls;
mod warnings;

pub use config::CoordinatorConfig;
pub use dns::answer_packet as dns_answer_packet;
pub use registry::RegistryLimits;
pub use tls::{ClientIdentity, ServerTls};

use crate::listing::{Listing, Peer};
use crate::protocol::SnapshotEntry;
use crate::remote::Remote;
use bytes::Bytes;
use changes::{Changes, Topic};
use history::{History, Totals};
use membership::{Membership, Rules};
use persist::How;
use readiness::{Phase, Readiness};
use registry::{Registry, RegistryError, Upsert};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// An open stream's registration with its topic (see `changes.rs`), whose
/// streams are written through the HTTP layer's subscribers.
pub(crate) type StreamHold = changes::StreamHold<http::Subscribers>;

/// Most listings expired under one hold of the registry lock, so an expiry wave
/// does not stall requests.
const EXPIRY_BATCH: usize = 1_000;

/// Why a coordinator failed to start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The listener could not be bound or read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The announced host is not a valid coordinator descriptor.
    #[error("announce host: {0}")]
    Announce(#[from] crate::listing::ListingError),
    /// The DNS domain is not a domain name.
    #[error("DNS domain `{0}` is not a domain name")]
    DnsDomain(String),
    /// The DNS port could not be bound (UDP or TCP).
    #[error("DNS port {port}: {error}")]
    DnsPort {
        /// The port asked for.
        port: u16,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A TLS file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The data directory cannot be created, opened or locked.
    #[error("data directory {}: {error}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A background task panicked.
    #[error("task `{0}` panicked: {1}")]
    Panicked(&'static str, String),
}

/// How far the resync loop got with the discovery host, for the join (`sync.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiscoveryState {
    /// Times the discovery host was asked.
    pub attempts: u32,
    /// Whether another coordinator answered through it.
    pub answered: bool,
}

/// State shared by the HTTP handlers and the background tasks.
///
/// The registry and the membership table are reached only through the methods
/// below: reads through a closure that cannot keep the guard, and every mutation
/// through a method that also wakes the blocking queries it concerns, so no change
/// can forget to.
pub(crate) struct Shared {
    pub config: CoordinatorConfig,
    /// This coordinator's descriptor, `announce_host:port`.
    pub me: Peer,
    /// A std read-write lock: every critical section is short and synchronous, and
    /// reads and repeat heartbeats share it (see the registry's module docs).
    registry: RwLock<Registry>,
    /// Same discipline as `registry`; never both held at once.
    membership: Mutex<Membership>,
    /// The DNS zone, when DNS is served (the dashboard shows each service's name).
    dns_zone: Option<dns::Zone>,
    /// The dashboard's charts: written by the sampler every `history_interval`,
    /// read by the dashboard. Never held with another lock.
    history: Mutex<History>,
    pub remote: Remote,
    pub shutdown: CancellationToken,
    /// Waiters of blocking queries, woken by the mutation methods below.
    pub changes: Arc<Changes<http::Subscribers>>,
    pub metrics: metrics::Metrics,
    /// Syncing, partial or complete (see `readiness.rs`).
    readiness: Readiness,
    /// Published by the resync loop, read by the join.
    pub discovery: watch::Sender<DiscoveryState>,
    /// Asks the join task to copy again: the membership changed while partial.
    pub sync_wanted: Notify,
    /// Wakes the expiry task: an imported listing may be due before it wakes.
    expiry_changed: Notify,
    /// The registry's writer and the start, with a data directory (`persist.rs`).
    pub persist: persist::State,
    /// Identifies this run of the coordinator (`X-Hakken-Instance`): the wall
    /// clock at start, in microseconds, also the first index.
    pub instance: u64,
}

impl Shared {
    /// The state of a coordinator about to listen on `port` (with its TLS
    /// certificates, when it serves TLS); nothing runs yet.
    fn new(
        config: CoordinatorConfig,
        port: u16,
    ) -> Result<(Arc<Self>, Option<Arc<tls::Certificates>>), CoordinatorError> {
        let me = Peer::new(format!("{}:{}", config.announce_host, port))?;
        let first_index = first_index();
        let mut registry = Registry::new(config.listing_ttl(), config.registry_limits, first_index);
        // Until complete, a copy from a peer may come: it must not bring back what
        // a publisher withdrew meanwhile.
        registry.record_withdrawals(true);
        let rules = Rules {
            max_peers: config.max_coordinators,
            failures_before_drop: config.failures_before_drop,
            blacklist_for: config.resync_period(),
        };
        let membership = Membership::new(me.clone(), rules, first_index);
        // In a TLS cluster every coordinator serves TLS: peers are called over it.
        let certificates = match &config.tls {
            Some(files) => Some(Arc::new(tls::Certificates::load(files.clone())?)),
            None => None,
        };
        let remote = Remote::with_tls(
            config.request_timeout,
            &config.peer_tls,
            config.tls.is_some(),
        )?
        .with_token(config.token.clone());
        let shared = Arc::new(Shared {
            remote,
            me,
            registry: RwLock::new(registry),
            membership: Mutex::new(membership),
            history: Mutex::new(History::new(config.history_period())),
            // Checked with DNS off too: a bad setting is refused, not kept for later.
            dns_zone: match dns::Zone::new(&config.dns_domain, config.dns_ttl) {
                Some(zone) => config.dns_port.map(|_| zone),
                None => return Err(CoordinatorError::DnsDomain(config.dns_domain.clone())),
            },
            shutdown: CancellationToken::new(),
            changes: Arc::new(Changes::new(config.max_held_queries, config.max_streams)),
            metrics: metrics::Metrics::new(),
            readiness: Readiness::new(),
            discovery: watch::Sender::new(DiscoveryState::default()),
            sync_wanted: Notify::new(),
            expiry_changed: Notify::new(),
            persist: persist::State::default(),
            instance: first_index,
            config,
        });
        Ok((shared, certificates))
    }

    /// The registry for a change. Recovered even if a panic poisoned the lock:
    /// every mutation completes before it can panic, so the data stays consistent.
    fn registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The registry for reading, shared with other readers.
    fn registry_shared(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The dashboard's series as JSON (see `history.rs`), built once per sample.
    pub fn history_json(&self) -> Bytes {
        self.history().json()
    }

    /// Samples the dashboard's history has taken since start.
    pub fn history_samples(&self) -> u64 {
        self.history().samples()
    }

    /// Takes one sample for the dashboard's history: the registry's per-service
    /// counts are copied into `counts` (names shared, not copied; the buffer is
    /// the caller's, reused) under the registry's lock, then recorded under the
    /// history's.
    fn sample_history(&self, counts: &mut Vec<(Arc<str>, u32)>) {
        counts.clear();
        let listings = self.read_registry(|registry| {
            counts.extend(
                registry
                    .service_counts()
                    .map(|(name, n)| (name.clone(), u32::try_from(n).unwrap_or(u32::MAX))),
            );
            registry.len()
        });
        let m = &self.metrics;
        let changes = [&m.added, &m.replaced, &m.expired, &m.deleted, &m.imported]
            .iter()
            .fold(0u64, |sum, counter| sum.saturating_add(counter.get()));
        let totals = Totals {
            heartbeats: m.heartbeats.get(),
            changes,
            listings: listings as u64,
        };
        self.history().record(Instant::now(), totals, counts);
        counts.clear();
    }

    /// Reads the registry under its lock.
    pub fn read_registry<T>(&self, read: impl FnOnce(&Registry) -> T) -> T {
        read(&self.registry_shared())
    }

    /// Reads the membership table under its lock.
    pub fn read_membership<T>(&self, read: impl FnOnce(&Membership) -> T) -> T {
        read(&self.membership())
    }

    /// Live listings held.
    pub fn listing_count(&self) -> usize {
        self.registry_shared().len()
    }

    /// A service's listings as a JSON array with its index, `Err(index)` when it
    /// has none (cached per change inside the registry).
    pub fn listings_json(&self, service: &str) -> Result<(u64, Bytes), u64> {
        let registry = self.registry_shared();
        registry
            .listings_json(service)
            .ok_or_else(|| registry.index(service))
    }

    /// The service names as a JSON array, with their index.
    pub fn services_json(&self) -> (u64, Bytes) {
        self.registry_shared().services_json()
    }

    // Every mutation goes through one of the methods below, so that every change
    // wakes the blocking queries that wait on it.

    /// Adds, refreshes or replaces a listing.
    pub fn upsert(&self, listing: Listing) -> Result<Upsert, RegistryError> {
        let service = listing.service().to_owned();
        self.persist.heard(&service, listing.host());
        let (outcome, names_changed) = {
            let mut registry = self.registry();
            let names = registry.names_index();
            let outcome = registry.upsert(listing, Instant::now())?;
            (outcome, registry.names_index() != names)
        };
        self.metrics.heartbeats.inc();
        match outcome {
            Upsert::Added => self.metrics.added.inc(),
            Upsert::Replaced => self.metrics.replaced.inc(),
            Upsert::Refreshed => 0,
        };
        if outcome != Upsert::Refreshed {
            self.persist.wanted.notify_one();
            self.changes.notify(&Topic::Service(service));
        }
        if names_changed {
            self.changes.notify(&Topic::Services);
        }
        Ok(outcome)
    }

    /// Refreshes a listing whose payload is byte for byte the stored one, without
    /// decoding it; false (nothing changed) otherwise.
    pub fn refresh_if_same(&self, service: &str, host: &str, body: &[u8]) -> bool {
        let refreshed = self
            .registry_shared()
            .refresh_if_same(service, host, body, Instant::now());
        if refreshed {
            self.metrics.heartbeats.inc();
        }
        refreshed
    }

    /// Withdraws a listing; returns its payload when there was one.
    pub fn remove(&self, service: &str, host: &str) -> Option<Bytes> {
        let (removed, moved, names_changed) = {
            let mut registry = self.registry();
            let names = registry.names_index();
            let index = registry.index(service);
            let removed = registry.remove(service, host);
            let moved = registry.index(service) != index;
            if removed.is_some() && self.config.data_dir.is_some() {
                let key = (Arc::from(service), Arc::from(host));
                (self.persist).left([key], How::Withdrawn, self.config.listing_ttl());
            }
            if registry.records_withdrawals() {
                // Not complete yet: a watch may hold the listing from before
                // and never have seen it here. Say it is gone (under the lock:
                // before the index it moved can be read).
                self.persist.withdrawn(service, host);
            }
            (removed, moved, registry.names_index() != names)
        };
        if moved {
            self.changes.notify(&Topic::Service(service.to_owned()));
        }
        if removed.is_some() {
            // A withdrawal of what was not held is not written (memory only).
            self.persist.wanted.notify_one();
            self.metrics.deleted.inc();
        }
        if names_changed {
            self.changes.notify(&Topic::Services);
        }
        removed
    }

    /// Expires at most `max` listings that are due; with a data directory,
    /// the file will say they left, unless `on_time` is false (they expired
    /// while the coordinator was stalled: their publishers may be alive, their
    /// heartbeats waiting to be read).
    fn expire(&self, max: usize, on_time: bool) -> Vec<(Arc<str>, Arc<str>)> {
        let (expired, names_changed) = {
            let mut registry = self.registry();
            let names = registry.names_index();
            let expired = registry.expire(Instant::now(), max);
            if on_time && !expired.is_empty() && self.config.data_dir.is_some() {
                let ttl = self.config.listing_ttl();
                (self.persist).left(expired.iter().cloned(), How::Expired, ttl);
                self.persist.wanted.notify_one();
            }
            (expired, registry.names_index() != names)
        };
        self.metrics.expired.inc_by(expired.len() as u64);
        let services: BTreeSet<&str> = expired.iter().map(|(service, _)| &**service).collect();
        for service in services {
            self.changes.notify(&Topic::Service(service.to_owned()));
        }
        if names_changed {
            self.changes.notify(&Topic::Services);
        }
        expired
    }

    /// Imports listings copied from a peer (see [`Registry::import`]), skipping
    /// any this coordinator's limits refuse. Returns how many were added.
    pub fn import(&self, batch: Vec<SnapshotEntry>) -> usize {
        let limits = &self.config.listing_limits;
        let now = Instant::now();
        let mut added: BTreeSet<String> = BTreeSet::new();
        let mut count = 0;
        let names_changed = {
            let mut registry = self.registry();
            let names = registry.names_index();
            for entry in &batch {
                if entry.listing.check(limits).is_err() {
                    continue;
                }
                if let Ok(true) = registry.import(&entry.listing, entry.ttl, now) {
                    count += 1;
                    added.insert(entry.listing.service().to_owned());
                }
            }
            registry.names_index() != names
        };
        self.metrics.imported.inc_by(count as u64);
        if count > 0 {
            self.expiry_changed.notify_one();
            self.persist.wanted.notify_one();
        }
        for service in added {
            self.changes.notify(&Topic::Service(service));
        }
        if names_changed {
            self.changes.notify(&Topic::Services);
        }
        count
    }

    /// Applies `change` to the membership table, waking coordinator-list waiters
    /// when the list changed (and, while partial, asking for another copy).
    pub fn update_membership<T>(&self, change: impl FnOnce(&mut Membership) -> T) -> T {
        let (result, changed) = {
            let mut membership = self.membership();
            let before = membership.index();
            let result = change(&mut membership);
            (result, membership.index() != before)
        };
        if changed {
            self.persist.wanted.notify_one();
            self.changes.notify(&Topic::Coordinators);
            if self.readiness.phase() == Phase::Partial {
                self.sync_wanted.notify_one();
            }
        }
        result
    }

    /// The start phase now (see `readiness.rs`).
    pub fn phase(&self) -> Phase {
        self.readiness.phase()
    }

    /// Waits until reads may be answered, at most the sync timeout.
    pub async fn ready(&self) {
        if !self.readiness.is_ready() {
            self.readiness.wait_ready(self.config.sync_timeout).await;
        }
    }

    /// Moves the start phase forward; held blocking queries are answered so
    /// their callers learn the new completeness at once. Once complete, the
    /// registry stops remembering withdrawals (no copy will come any more).
    fn advance(&self, to: Phase) {
        if self.readiness.advance(to) {
            if to == Phase::Complete {
                self.registry().record_withdrawals(false);
                self.persist.forget_departed();
            }
            self.changes.notify_all();
        }
    }
}

/// The first index of a coordinator's registry and membership table: the wall
/// clock in microseconds, so that a restarted coordinator never hands out an index
/// it handed out before (a watcher holding an old one is answered at once). It
/// would take a million changes a second, sustained, to catch up with the clock.
fn first_index() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_micros() as u64)
}

/// A running coordinator. Drop it and its tasks stop; call
/// [`shutdown`](Coordinator::shutdown) to also wait for them.
///
/// ```no_run
/// # async fn demo() -> Result<(), hakken::coordinator::CoordinatorError> {
/// use hakken::coordinator::{Coordinator, CoordinatorConfig};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let coordinator = Coordinator::start(listener, CoordinatorConfig::default())?;
/// println!("serving on {}", coordinator.local_addr());
/// coordinator.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Coordinator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    dns_addr: Option<SocketAddr>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Where the registry is kept, if it is (written once more at shutdown).
    data_dir: Option<Arc<persist::DataDir>>,
}

impl Coordinator {
    /// Binds `addr` and starts a coordinator on it.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordinatorError> {
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, config)
    }

    /// Starts a coordinator on a bound listener. Must be called within a tokio runtime.
    pub fn start(
        listener: TcpListener,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordinatorError> {
        let local_addr = listener.local_addr()?;
        let data_dir = match &config.data_dir {
            Some(path) => Some(Arc::new(persist::DataDir::open(path)?)),
            None => None,
        };
        let (shared, certificates) = Shared::new(config, local_addr.port())?;
        // Everything that can fail comes before the first task: a start that
        // fails leaves nothing running.
        let dns = match (shared.config.dns_port, shared.dns_zone.clone()) {
            (Some(port), Some(zone)) => {
                let sockets = dns::bind(local_addr.ip(), port)
                    .map_err(|error| CoordinatorError::DnsPort { port, error })?;
                Some((sockets, zone))
            }
            _ => None,
        };
        tracing::info!(
            address = %local_addr,
            announce = shared.me.host(),
            discovery = shared.config.discovery_host.as_deref().unwrap_or("-"),
            heartbeat_ms = shared.config.heartbeat_interval.as_millis() as u64,
            "coordinator started"
        );
        let app = http::service(shared.clone());
        let options = server::ServeOptions {
            max_connections: shared.config.max_connections,
            header_timeout: shared.config.header_timeout,
            stall_timeout: shared.config.stall_timeout,
            grace: shared.config.shutdown_grace,
            tls: certificates.clone(),
            refused: shared.metrics.http_refused.clone(),
        };
        let server = server::serve(listener, app, options, shared.shutdown.clone());
        let mut tasks = vec![
            ("http", tokio::spawn(server)),
            ("expiry", tokio::spawn(expire_loop(shared.clone()))),
            ("poll", tokio::spawn(gossip::poll_loop(shared.clone()))),
            ("sync", tokio::spawn(sync::run(shared.clone()))),
            ("history", tokio::spawn(history_loop(shared.clone()))),
        ];
        if let Some(dir) = &data_dir {
            let write = persist::write_loop(shared.clone(), dir.clone());
            tasks.push(("persist", tokio::spawn(write)));
        }
        let mut dns_addr = None;
        if let Some(((udp, tcp, addr), zone)) = dns {
            let handler = dns::Handler {
                shared: shared.clone(),
                zone,
            };
            let serve = dns::serve(
                handler,
                udp,
                tcp,
                shared.config.header_timeout,
                shared.config.dns_max_connections,
                shared.shutdown.clone(),
            );
            tasks.push(("dns", tokio::spawn(serve)));
            tracing::info!(address = %addr, domain = shared.config.dns_domain.as_str(), "serving DNS");
            dns_addr = Some(addr);
        }
        if let Some(certificates) = certificates {
            let reload = tls::reload_loop(certificates, shared.shutdown.clone());
            tasks.push(("tls-reload", tokio::spawn(reload)));
        }
        if shared.config.discovery_host.is_some() {
            tasks.push(("resync", tokio::spawn(gossip::resync_loop(shared.clone()))));
        }
        Ok(Coordinator {
            shared,
            local_addr,
            dns_addr,
            tasks,
            data_dir,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where DNS is served (UDP and TCP on one port), when it is.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// The host this coordinator announces to others (`announce_host:port`).
    pub fn host(&self) -> &str {
        self.shared.me.host()
    }

    /// Whether it answers reads yet: it has copied its cluster's listings, or
    /// found nobody to copy from (what `GET /ready` says).
    pub fn is_ready(&self) -> bool {
        self.shared.phase() != Phase::Syncing
    }

    /// Whether it holds every listing its cluster holds (`X-Hakken-Complete`).
    pub fn is_complete(&self) -> bool {
        self.shared.phase() == Phase::Complete
    }

    /// Hosts of the coordinators this one knows, itself included.
    pub fn known_coordinators(&self) -> Vec<String> {
        self.shared
            .read_membership(|m| m.list())
            .iter()
            .map(|p| p.host().to_owned())
            .collect()
    }

    /// Number of live listings held.
    pub fn listing_count(&self) -> usize {
        self.shared.listing_count()
    }

    /// Number of blocking queries being held right now.
    pub fn held_queries(&self) -> usize {
        self.shared.changes.held()
    }

    /// Stops accepting, finishes in-flight requests (bounded), stops every task, and
    /// reports a task that panicked.
    pub async fn shutdown(mut self) -> Result<(), CoordinatorError> {
        self.shared.shutdown.cancel();
        let deadline = Instant::now() + self.shared.config.shutdown_grace + Duration::from_secs(1);
        let mut result = Ok(());
        for (name, task) in self.tasks.drain(..) {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_panic() => {
                    let message = panic_message(error.into_panic());
                    tracing::error!(task = name, message, "task panicked");
                    result = Err(CoordinatorError::Panicked(name, message));
                }
                Ok(Err(_cancelled)) => {}
                Err(_elapsed) => {
                    tracing::warn!(task = name, "task did not stop in time; aborted");
                    abort.abort();
                }
            }
        }
        // Once in-flight requests are done (the HTTP task first, above), so that
        // what they changed is in it.
        if let Some(dir) = self.data_dir.take() {
            persist::final_write(&self.shared, &dir).await;
        }
        tracing::info!(address = %self.local_addr, "coordinator stopped");
        result
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Sleeps until the next listing deadline and expires what is due, in batches.
///
/// With no listing it sleeps one TTL: a listing added meanwhile has a deadline at
/// least one TTL away, so waking then is never late.
async fn expire_loop(shared: Arc<Shared>) {
    let ttl = shared.config.listing_ttl();
    loop {
        let next = shared
            .read_registry(Registry::next_deadline)
            .unwrap_or_else(|| Instant::now() + ttl);
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            // Listings imported from a peer may be due sooner than `next`.
            _ = shared.expiry_changed.notified() => continue,
        }
        // Woken more than H/2 late: the process was stalled (stopped, starved),
        // and what expires now may have publishers whose heartbeats wait unread.
        let late = Instant::now().saturating_duration_since(next);
        let on_time = late <= shared.config.heartbeat() / 2;
        loop {
            let expired = shared.expire(EXPIRY_BATCH, on_time);
            for (service, host) in &expired {
                tracing::info!(service = &**service, host = &**host, "listing expired");
            }
            if !shared.read_registry(|r| r.is_due(Instant::now())) {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Samples the dashboard's history every `history_interval`, the first time at
/// once. A late tick is not made up for: the next one comes a period after it
/// (the rates are measured over the real time between samples).
async fn history_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.config.history_period());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reused from one sample to the next; at most one entry per live service.
    let mut counts = Vec::new();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        shared.sample_history(&mut counts);
    }
}
