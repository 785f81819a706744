//! Watches: a service's listings, filtered and selected, kept current.
//!
//! A watch follows one coordinator at a time, picked at random among those its
//! client knows (the configured host when it knows none). When that coordinator
//! answers with an index (ours do), the next request is a blocking query that the
//! coordinator holds until the service changes, so changes arrive within
//! milliseconds; otherwise (the original coordinator) the watch polls every
//! heartbeat interval. When the coordinator fails, the watch keeps what it has,
//! leaves that coordinator aside and asks another; when every one failed, it keeps
//! looking with backoff and jitter. The selection is published on a
//! [`tokio::sync::watch`] channel only when it actually changes.

use super::error::ClientError;
use super::selector::{All, Filter, Random, Selector};
use super::{Client, Inner};
use crate::backoff::{jittered, Backoff};
use crate::listing::Listing;
use crate::remote::{Blocking, RemoteError};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First delay before looking again when no coordinator could be asked.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest delay between two rounds of looking for a coordinator.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// First pause after a blocking query came back at once with nothing new.
const EARLY_MIN: Duration = Duration::from_millis(250);
/// How long a failed coordinator is left aside, unless another one answers first.
const EXCLUSION: Duration = Duration::from_secs(30);

/// Where a watch stands with its first answer.
#[derive(Debug)]
enum SyncState {
    /// Nothing answered yet.
    Pending,
    /// A coordinator answered at least once.
    Synced,
    /// Every coordinator was tried and failed, before any answered.
    Failed { host: String, error: RemoteError },
}

/// What a watch and its task share.
struct WatchState {
    service: String,
    filters: Vec<Filter>,
    selector: Arc<dyn Selector>,
    wait: Duration,
    selection: watch::Sender<Vec<Listing>>,
    sync: watch::Sender<SyncState>,
    /// A child of the client's shutdown token (its own for a static watch).
    token: CancellationToken,
    /// The coordinator followed now. A std mutex, for a copy in and out.
    coordinator: Mutex<Option<String>>,
}

impl WatchState {
    fn set_coordinator(&self, host: Option<&str>) {
        *self
            .coordinator
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = host.map(str::to_owned);
    }

    /// Applies an answer; `candidates` remembers what passed the filters last time,
    /// so the selector runs only when that changes.
    fn update(&self, listings: Vec<Listing>, candidates: &mut Option<Vec<Listing>>) {
        let passed: Vec<Listing> = listings
            .into_iter()
            .filter(|l| l.service() == self.service && self.filters.iter().all(|f| f.accepts(l)))
            .collect();
        if candidates.as_ref() == Some(&passed) {
            return;
        }
        let changed = self.selection.send_if_modified(|current| {
            let next = self.selector.reselect(&passed, current);
            if next == *current {
                return false;
            }
            *current = next;
            true
        });
        if changed {
            tracing::debug!(service = self.service.as_str(), "watch: selection changed");
        }
        *candidates = Some(passed);
    }
}

/// Configures a watch: filters, then a selector. Made by [`Client::watch`].
///
/// ```no_run
/// # async fn demo(client: hakken::client::Client) -> Result<(), hakken::client::ClientError> {
/// let watch = client
///     .watch("billing")
///     .filter("protocol", "https")
///     .filter_fn(|l| l.get("weight").and_then(|w| w.as_u64()).unwrap_or(0) > 0)
///     .random(2)
///     .build();
/// watch.start().await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct WatchBuilder {
    client: Client,
    service: String,
    filters: Vec<Filter>,
    selector: Arc<dyn Selector>,
    wait: Option<Duration>,
}

impl WatchBuilder {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        WatchBuilder {
            client,
            service: service.to_owned(),
            filters: Vec::new(),
            selector: Arc::new(All),
            wait: None,
        }
    }

    /// Keeps only listings whose field `key` equals `value` (JSON equality; a
    /// listing without the field never passes). Filters add up.
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.filters.push(Filter::Equals(key.into(), value.into()));
        self
    }

    /// Keeps only listings for which `accepts` is true. Filters add up.
    pub fn filter_fn(mut self, accepts: impl Fn(&Listing) -> bool + Send + Sync + 'static) -> Self {
        self.filters.push(Filter::Fn(Arc::new(accepts)));
        self
    }

    /// Hands out up to `n` listings picked at random ([`Random`]).
    pub fn random(self, n: usize) -> Self {
        self.selector(Random(n))
    }

    /// Hands out what `selector` picks (default: [`All`]).
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// How long a coordinator may hold a blocking query (default: the client's
    /// `watch_wait`, 60 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// The watch, not started yet.
    pub fn build(self) -> Watch {
        let inner = self.client.inner();
        let wait = self
            .wait
            .unwrap_or(inner.config.watch_wait)
            .max(super::MIN_INTERVAL);
        let state = WatchState {
            token: inner.shutdown.child_token(),
            service: self.service,
            filters: self.filters,
            selector: self.selector,
            wait,
            selection: watch::Sender::new(Vec::new()),
            sync: watch::Sender::new(SyncState::Pending),
            coordinator: Mutex::new(None),
        };
        Watch::from_state(state, Some(self.client), false)
    }
}

/// A long-lived view of a service's listings. Create one early, share it, and
/// call [`get`](Watch::get) whenever a listing is needed: it never blocks.
/// Dropping a watch stops it; a watch keeps its client alive.
///
/// ```no_run
/// # async fn demo(client: hakken::client::Client) -> Result<(), hakken::client::ClientError> {
/// let watch = client.watch("billing").build();
/// watch.start().await?; // after the first answer, even an empty one
/// println!("now: {:?}", watch.get());
/// let next = watch.changed().await?; // the next change
/// println!("then: {next:?}");
/// watch.close();
/// # Ok(()) }
/// ```
pub struct Watch {
    state: Arc<WatchState>,
    /// `None` for a static watch.
    client: Option<Client>,
    spawned: AtomicBool,
    /// What [`Watch::changed`] has handed out: one receiver for the watch's life,
    /// so a change between two calls is never lost.
    seen: tokio::sync::Mutex<watch::Receiver<Vec<Listing>>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("service", &self.state.service)
            .field("filters", &self.state.filters)
            .field("coordinator", &self.coordinator())
            .field("selection", &*self.state.selection.borrow())
            .finish()
    }
}

impl Watch {
    /// A watch that always hands out `listings`.
    pub(crate) fn fixed(listings: Vec<Listing>) -> Watch {
        let service = listings
            .first()
            .map(|l| l.service().to_owned())
            .unwrap_or_default();
        let state = WatchState {
            service,
            filters: Vec::new(),
            selector: Arc::new(All),
            wait: Duration::ZERO,
            selection: watch::Sender::new(listings),
            sync: watch::Sender::new(SyncState::Synced),
            token: CancellationToken::new(),
            coordinator: Mutex::new(None),
        };
        Watch::from_state(state, None, true)
    }

    fn from_state(state: WatchState, client: Option<Client>, spawned: bool) -> Watch {
        let seen = tokio::sync::Mutex::new(state.selection.subscribe());
        Watch {
            state: Arc::new(state),
            client,
            spawned: AtomicBool::new(spawned),
            seen,
        }
    }

    /// Starts following the service, and returns after the first answer (even an
    /// empty one). Fails with [`ClientError::NoCoordinator`] when every coordinator
    /// was tried and none answered; the watch keeps looking in the background all
    /// the same. A static watch, or one on a client with `skip`, returns at once.
    pub async fn start(&self) -> Result<(), ClientError> {
        let state = &self.state;
        if state.token.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let Some(client) = &self.client else {
            return Ok(());
        };
        let inner = client.inner();
        if inner.is_closed() {
            return Err(ClientError::Closed);
        }
        if inner.config.skip {
            state.sync.send_replace(SyncState::Synced);
            return Ok(());
        }
        if !self.spawned.swap(true, Ordering::SeqCst) {
            tracing::info!(service = state.service.as_str(), "watch started");
            inner.tasks.spawn(watch_loop(inner.clone(), state.clone()));
        }
        let mut sync = state.sync.subscribe();
        loop {
            let synced = match &*sync.borrow_and_update() {
                SyncState::Pending => false,
                SyncState::Synced => true,
                SyncState::Failed { host, error } => {
                    return Err(ClientError::NoCoordinator {
                        host: host.clone(),
                        source: Some(error.clone()),
                    })
                }
            };
            if synced {
                // What `start` waited for is not a change `changed` should report.
                self.seen.lock().await.borrow_and_update();
                return Ok(());
            }
            tokio::select! {
                _ = state.token.cancelled() => return Err(ClientError::Closed),
                changed = sync.changed() => changed.map_err(|_| ClientError::Closed)?,
            }
        }
    }

    /// The current selection. No I/O; empty until the first answer.
    pub fn get(&self) -> Vec<Listing> {
        self.state.selection.borrow().clone()
    }

    /// A receiver of the selection, notified at each change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Listing>> {
        self.state.selection.subscribe()
    }

    /// Waits for the next change of the selection and returns it: the first change
    /// since the previous call (or since the watch was built), so a change made
    /// while the caller was busy is returned at once, not lost. Fails with
    /// [`ClientError::Closed`] when the watch or its client is closed meanwhile.
    pub async fn changed(&self) -> Result<Vec<Listing>, ClientError> {
        let mut selection = self.seen.lock().await;
        tokio::select! {
            _ = self.state.token.cancelled() => Err(ClientError::Closed),
            changed = selection.changed() => {
                changed.map_err(|_| ClientError::Closed)?;
                let current = selection.borrow_and_update().clone();
                Ok(current)
            }
        }
    }

    /// The service watched (for a static watch, that of its first listing).
    pub fn service(&self) -> &str {
        &self.state.service
    }

    /// The coordinator this watch follows now, if any.
    pub fn coordinator(&self) -> Option<String> {
        self.state
            .coordinator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the watch; its selection stays readable. The task ends promptly (and
    /// [`Client::close`] waits for it).
    pub fn close(&self) {
        self.state.token.cancel();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.state.token.cancel();
    }
}

/// A coordinator to ask: one known and not left aside, at random; else the
/// configured host unless it was left aside too.
fn pick(inner: &Inner, excluded: &HashSet<String>) -> Option<String> {
    let candidates: Vec<String> = inner
        .targets()
        .into_iter()
        .filter(|h| !excluded.contains(h))
        .collect();
    if candidates.is_empty() {
        let host = &inner.config.host;
        return (!excluded.contains(host)).then(|| host.clone());
    }
    Some(candidates[fastrand::usize(..candidates.len())].clone())
}

/// Resolves once `host` has left the client's known coordinators.
async fn dropped(inner: &Inner, drops: &mut watch::Receiver<u64>, host: &str) {
    loop {
        if drops.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !inner.known().iter().any(|h| h == host) {
            return;
        }
    }
}

/// Sleeps `delay` unless the watch stops first; false when it stopped.
async fn pause(state: &WatchState, delay: Duration) -> bool {
    tokio::select! {
        _ = state.token.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// The watch task: follows one coordinator, moves on when it fails.
async fn watch_loop(inner: Arc<Inner>, state: Arc<WatchState>) {
    let service = state.service.as_str();
    // Coordinators that failed this watch, and since when the first of them.
    let mut excluded: HashSet<String> = HashSet::new();
    let mut excluded_since = Instant::now();
    let mut current: Option<String> = None;
    let mut index: Option<u64> = None;
    let mut candidates: Option<Vec<Listing>> = None;
    let mut last_error: Option<(String, RemoteError)> = None;
    // Which coordinator gave `index` (`X-Hakken-Coordinator`): behind a load
    // balancer, an index from one coordinator means nothing to another.
    let mut answerer: Option<String> = None;
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut early = Backoff::new(EARLY_MIN, RETRY_MAX);
    loop {
        if !excluded.is_empty() && excluded_since.elapsed() > EXCLUSION {
            excluded.clear();
        }
        let host = match current.clone().or_else(|| pick(&inner, &excluded)) {
            Some(host) => host,
            None => {
                // Every coordinator failed this round: keep the listings, look again.
                if let Some((host, error)) = last_error.take() {
                    state.sync.send_if_modified(|sync| match sync {
                        SyncState::Pending => {
                            *sync = SyncState::Failed { host, error };
                            true
                        }
                        _ => false,
                    });
                }
                excluded.clear();
                let delay = retry.next_delay().min(inner.heartbeat_interval());
                tracing::warn!(
                    service,
                    retry_ms = delay.as_millis() as u64,
                    "watch: no coordinator answers; keeping listings"
                );
                if !pause(&state, delay).await {
                    return;
                }
                continue;
            }
        };
        if current.is_none() {
            tracing::info!(
                service,
                coordinator = host.as_str(),
                "watch: following coordinator"
            );
            state.set_coordinator(Some(&host));
            current = Some(host.clone());
        }
        let blocking = index.map(|index| Blocking {
            index,
            wait: state.wait,
        });
        let asked = Instant::now();
        // A held query can outlive the coordinator: when another call of the client
        // finds it dead and drops it, give up on it at once rather than at `wait`.
        let mut drops = inner.dropped.subscribe();
        let followed = inner.known().contains(&host);
        let result = tokio::select! {
            _ = state.token.cancelled() => return,
            result = inner.remote.listings(&host, service, blocking) => result,
            () = dropped(&inner, &mut drops, &host), if followed => Err(RemoteError::Unreachable {
                host: host.clone(),
                message: "dropped by the client after another call to it failed".into(),
            }),
        };
        match result {
            Ok(answer) => {
                retry.reset();
                let known = inner.known();
                if known.contains(&host) {
                    excluded.clear();
                }
                inner.note_interval(&host, answer.heartbeat_interval);
                state.update(answer.value, &mut candidates);
                state.sync.send_if_modified(|sync| match sync {
                    SyncState::Synced => false,
                    _ => {
                        *sync = SyncState::Synced;
                        true
                    }
                });
                let hopped = blocking.is_some()
                    && answer.coordinator.is_some()
                    && answer.coordinator != answerer;
                let delay = match (answer.index, blocking) {
                    // No index: a coordinator without blocking queries; poll.
                    (None, _) => Some(jittered(inner.heartbeat_interval())),
                    // Back at once with nothing new, or from another coordinator
                    // behind a load balancer: do not spin.
                    (Some(new), Some(b))
                        if hopped || (new == b.index && asked.elapsed() < b.wait / 2) =>
                    {
                        Some(early.next_delay().min(inner.heartbeat_interval()))
                    }
                    (Some(_), _) => {
                        early.reset();
                        None
                    }
                };
                answerer = answer.coordinator;
                // The configured host is the way in, not a coordinator to follow
                // once real ones are known (it may be a load balancer).
                if host == inner.config.host
                    && !known.contains(&host)
                    && known.iter().any(|h| !excluded.contains(h))
                {
                    current = None;
                    index = None;
                    answerer = None;
                    state.set_coordinator(None);
                }
                if current.is_some() {
                    index = answer.index;
                }
                if let Some(delay) = delay {
                    if !pause(&state, delay).await {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(service, coordinator = host.as_str(), %error, "watch: coordinator failed; keeping listings, trying another");
                if error.is_broken() {
                    inner.drop_coordinator(&host, &error);
                }
                if excluded.is_empty() {
                    excluded_since = Instant::now();
                }
                excluded.insert(host.clone());
                state.set_coordinator(None);
                current = None;
                index = None;
                answerer = None;
                last_error = Some((host, error));
            }
        }
    }
}
