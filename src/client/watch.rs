//! Watches: a service's listings, filtered and selected, kept current.
//!
//! A watch takes the answers of its service's [`Feed`], shared by every watch of
//! that service in the client: a stream from one of ours (changes within
//! milliseconds), else blocking queries, else polling every heartbeat interval
//! against the original's; another coordinator when one fails, the listings kept
//! meanwhile. Each watch applies its own filters and selector, and publishes the
//! selection on a [`tokio::sync::watch`] channel only when it actually changes.
//!
//! **A watch never shrinks because its coordinator is new.** Our coordinators
//! answer no listing read before they have copied their cluster's listings; one
//! that had nobody to copy from says so (`X-Hakken-Complete: false`) until every
//! publisher has reached it. From such a coordinator, a watch keeps the listings
//! it held before that the coordinator has not listed yet, unless the coordinator
//! says it is gone (`X-Hakken-Departed`: withdrawn from it since it started, or
//! read back from its data directory as gone); a listing the coordinator has listed once, it may remove (see
//! `View::take`).
//!
//! **Nor does a listing come back because its coordinator is new.** A listing
//! ours removed is kept out, for a few heartbeat intervals, of the answers of the
//! original's coordinator (which has no withdrawal) and of other runs of ours that
//! may have copied it from there (see `Departures`, in the feed).

use super::error::ClientError;
use super::feed::Feed;
use super::follow::Followed;
use super::selector::{All, Filter, Random, Selector};
use super::Client;
use crate::listing::Listing;
use crate::protocol::MAX_WAIT;
use crate::remote::{Answer, RemoteError};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Where a watch stands with its first answer.
#[derive(Debug)]
enum SyncState {
    /// Nothing answered yet.
    Pending,
    /// A coordinator answered at least once.
    Synced,
    /// Every coordinator was tried and failed, before any answered.
    Failed { host: String, error: RemoteError },
    /// The watch's filter or selector panicked: the watch has stopped.
    Panicked,
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
    /// Notified when the watch's task ends, closed or not.
    ended: Notify,
    /// Set when the watch's task ends, cleared when it starts again: `get`
    /// looks no further while it is clear.
    may_have_ended: AtomicBool,
}

/// A watch's task, once started.
struct Running {
    /// Set when the task ends (its future is dropped: it returned, or the
    /// runtime that ran it ended).
    ended: Arc<AtomicBool>,
    /// Set when it ended in a panic (a filter or selector that panics): it is
    /// not started again, to panic again.
    panicked: Arc<AtomicBool>,
    /// The coordinator followed now (the feed's follower writes it).
    followed: Followed,
}

/// Marks the end of a watch's task, however it ends (it returned, it panicked,
/// or the runtime that ran it ended).
struct Ends {
    ended: Arc<AtomicBool>,
    state: Arc<WatchState>,
}

impl Drop for Ends {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        self.state.may_have_ended.store(true, Ordering::Release);
        self.state.ended.notify_waiters();
    }
}

/// What a watch task remembers between answers.
#[derive(Default)]
struct View {
    /// What passed the filters last time, so the selector runs only when that
    /// changes.
    candidates: Option<Vec<Listing>>,
    /// While answers are partial: the coordinator giving them (which run of it),
    /// and the listings held from before it that it has not listed yet. Those are
    /// kept; a listing it has listed once is its to remove.
    protected: Option<(Source, Vec<Listing>)>,
}

/// Who gave an answer: a coordinator's host, and which run of it.
type Source = (String, Option<u64>);

impl View {
    /// What to take from `host`'s answer `listings` (filtered): all of it when the
    /// coordinator is complete; from one that is not, the answer plus the listings
    /// held from before it that it has not listed yet and does not know are gone
    /// (`departed`, hosts: see [`crate::protocol::DEPARTED_HEADER`]).
    fn take(
        &mut self,
        source: Source,
        listings: Vec<Listing>,
        complete: bool,
        departed: &[String],
    ) -> Vec<Listing> {
        if complete {
            self.protected = None;
            return listings;
        }
        let held = self.candidates.as_deref().unwrap_or_default();
        let departed: HashSet<&str> = departed.iter().map(String::as_str).collect();
        let answered: HashMap<(&str, &str), &Listing> =
            listings.iter().map(|l| (l.key(), l)).collect();
        let protected: Vec<Listing> = match self.protected.take() {
            Some((from, protected)) if from == source => protected,
            // A new source of partial answers: protect all that is held now.
            _ => held.to_vec(),
        };
        let protected: HashMap<(String, String), Listing> = protected
            .into_iter()
            .filter(|p| !answered.contains_key(&p.key()))
            .filter(|p| !departed.contains(p.host()))
            .map(|p| ((p.service().to_owned(), p.host().to_owned()), p))
            .collect();
        // In the order held (so that nothing moves for nothing), then what is new.
        let mut view: Vec<Listing> = Vec::with_capacity(held.len() + listings.len());
        let mut placed: HashSet<(&str, &str)> = HashSet::new();
        for h in held {
            let kept = || protected.get(&(h.service().to_owned(), h.host().to_owned()));
            if let Some(listing) = answered.get(&h.key()).copied().or_else(kept) {
                placed.insert(h.key());
                view.push(listing.clone());
            }
        }
        for listing in &listings {
            if !placed.contains(&listing.key()) {
                view.push(listing.clone());
            }
        }
        self.protected = Some((source, protected.into_values().collect()));
        view
    }
}

impl WatchState {
    /// Applies `host`'s answer to the view and publishes the selection if it
    /// changed. From a coordinator that is not complete, no listing held from
    /// before is removed (see [`View::take`]).
    fn update(&self, host: &str, answer: &Answer<Vec<Listing>>, view: &mut View) {
        let complete = answer.complete != Some(false);
        let source = (host.to_owned(), answer.instance);
        let passed: Vec<Listing> = answer
            .value
            .iter()
            .filter(|l| l.service() == self.service && self.filters.iter().all(|f| f.accepts(l)))
            .cloned()
            .collect();
        let passed = view.take(source, passed, complete, &answer.departed);
        if view.candidates.as_ref() == Some(&passed) {
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
        view.candidates = Some(passed);
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

    /// Keeps only listings for which `accepts` is true. Filters add up. If it
    /// panics, the watch stops, and its `start` and `changed` fail with
    /// [`ClientError::WatchPanicked`] (so does a [`selector`](Self::selector)'s
    /// panic); the other watches of the service go on.
    pub fn filter_fn(mut self, accepts: impl Fn(&Listing) -> bool + Send + Sync + 'static) -> Self {
        self.filters.push(Filter::Fn(Arc::new(accepts)));
        self
    }

    /// Hands out up to `n` listings picked at random ([`Random`]).
    pub fn random(self, n: usize) -> Self {
        self.selector(Random(n))
    }

    /// Hands out what `selector` picks (default: [`All`]). If it panics, the
    /// watch stops, as with [`filter_fn`](Self::filter_fn).
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// How long a coordinator may hold a blocking query (default: the client's
    /// `watch_wait`, 60 s; at most an hour, and ours cap it at 5 minutes). Against
    /// ours, a watch holds a stream, and blocking queries are its fallback; the
    /// watches of one service in a client share one upstream, with the wait of the
    /// first started.
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
            .clamp(super::MIN_INTERVAL, MAX_WAIT);
        let state = WatchState {
            token: inner.shutdown.child_token(),
            service: self.service,
            filters: self.filters,
            selector: self.selector,
            wait,
            selection: watch::Sender::new(Vec::new()),
            sync: watch::Sender::new(SyncState::Pending),
            ended: Notify::new(),
            may_have_ended: AtomicBool::new(false),
        };
        Watch::from_state(state, Some(self.client))
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
    /// Its task, once started. A std mutex, never held across an `.await`.
    running: Mutex<Option<Running>>,
    /// What [`Watch::changed`] has handed out: one receiver for the watch's life,
    /// so a change between two calls is never lost. A std mutex, held only to copy
    /// the receiver in and out: never across an `.await`.
    seen: Mutex<watch::Receiver<Vec<Listing>>>,
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
            ended: Notify::new(),
            may_have_ended: AtomicBool::new(false),
            token: CancellationToken::new(),
        };
        Watch::from_state(state, None)
    }

    fn from_state(state: WatchState, client: Option<Client>) -> Watch {
        let seen = Mutex::new(state.selection.subscribe());
        Watch {
            state: Arc::new(state),
            client,
            running: Mutex::new(None),
            seen,
        }
    }

    /// Spawns the watch's task: the first time when `start`, and again when it
    /// ended though the watch was not closed (the runtime that ran it ended: a
    /// watch in a `static`, used by one `#[tokio::test]` after another).
    fn run(&self, inner: &Arc<super::Inner>, start: bool) {
        let state = &self.state;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match &*running {
            None if start => {
                tracing::info!(service = state.service.as_str(), "watch started");
            }
            Some(now)
                if now.ended.load(Ordering::Acquire)
                    && !now.panicked.load(Ordering::Acquire)
                    && !state.token.is_cancelled() =>
            {
                tracing::warn!(
                    service = state.service.as_str(),
                    "the runtime that ran this watch has ended; it runs on this one now"
                );
                inner.revive();
            }
            _ => return,
        }
        let feed = Feed::of(inner, &state.service, state.wait);
        let followed = feed.followed.clone();
        let (ended, panicked) = (Arc::default(), Arc::<AtomicBool>::default());
        let ends = Ends {
            ended: Arc::clone(&ended),
            state: state.clone(),
        };
        state.may_have_ended.store(false, Ordering::Release);
        let task = inner.tasks.spawn(watch_loop(feed, state.clone()));
        // Watches the task: a panic (in a filter or a selector, most likely) stops
        // the watch for good, and its callers are told. (Should the runtime end
        // before this sees the panic, the watch is started again once on the
        // next, and panics there.)
        let (stopped, watched) = (Arc::clone(&panicked), state.clone());
        inner.tasks.spawn(async move {
            let _ends = ends;
            if let Err(error) = task.await {
                if error.is_panic() {
                    let payload = error.into_panic();
                    let why = payload
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("(no message)");
                    tracing::error!(
                        service = watched.service.as_str(),
                        panic = why,
                        "a watch's task panicked (its filter or selector, most likely); the watch has stopped"
                    );
                    stopped.store(true, Ordering::Release);
                    watched.sync.send_replace(SyncState::Panicked);
                }
            }
        });
        *running = Some(Running {
            ended,
            panicked,
            followed,
        });
    }

    /// Starts following the service, and returns after the first answer (even an
    /// empty one). Fails with [`ClientError::NoCoordinator`] when every coordinator
    /// was tried and none answered; the watch keeps looking in the background all
    /// the same; with [`ClientError::Config`] when the client's `host` is not an
    /// address (see [`ClientConfig::check`](crate::ClientConfig::check)), and with
    /// [`ClientError::WatchPanicked`] when its filter or selector panicked, and
    /// with [`ClientError::Invalid`] for a service name no listing could have (empty,
    /// longer than the default [`Limits`](crate::Limits) allow, `.` or `..`, with
    /// control characters). A static watch, or one on a client with `skip`,
    /// returns at once.
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
        // A name no listing could have: an error, not a watch that stays empty.
        crate::listing::check_name(
            "service",
            &state.service,
            crate::listing::Limits::default().max_service_len,
        )?;
        if inner.config.skip {
            state.sync.send_replace(SyncState::Synced);
            return Ok(());
        }
        inner.checked()?;
        self.run(inner, true);
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
                SyncState::Panicked => return Err(ClientError::WatchPanicked),
            };
            if synced {
                // What `start` waited for is not a change `changed` should report.
                self.seen().borrow_and_update();
                return Ok(());
            }
            tokio::select! {
                _ = state.token.cancelled() => return Err(ClientError::Closed),
                changed = sync.changed() => changed.map_err(|_| ClientError::Closed)?,
            }
        }
    }

    /// The current selection; empty until the first answer. No I/O, no wait
    /// (it starts the watch's task again, within a runtime, if that ended with
    /// the runtime that ran it).
    pub fn get(&self) -> Vec<Listing> {
        self.revive();
        self.state.selection.borrow().clone()
    }

    /// Whether the watch's task panicked (see [`ClientError::WatchPanicked`]).
    fn panicked(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|running| running.panicked.load(Ordering::Acquire))
    }

    /// Starts the watch's task again, on the runtime this runs in, if it ended
    /// with the runtime that ran it (see [`Watch::run`]).
    fn revive(&self) {
        if !self.state.may_have_ended.load(Ordering::Acquire) {
            return;
        }
        if let Some(client) = &self.client {
            if tokio::runtime::Handle::try_current().is_ok() {
                self.run(client.inner(), false);
            }
        }
    }

    /// A receiver of the selection, notified at each change (not when the watch
    /// stops because its filter or selector panicked: see [`Watch::changed`]).
    pub fn subscribe(&self) -> watch::Receiver<Vec<Listing>> {
        self.state.selection.subscribe()
    }

    /// Waits for the next change of the selection and returns it: the first change
    /// since the previous call (or since the watch was built), so a change made
    /// while the caller was busy is returned at once, not lost. Fails with
    /// [`ClientError::Closed`] when the watch or its client is closed meanwhile,
    /// with [`ClientError::WatchPanicked`] when its filter or selector panicked.
    pub async fn changed(&self) -> Result<Vec<Listing>, ClientError> {
        loop {
            // Told if the task ends meanwhile (its runtime ended): it then starts
            // again here, and the wait goes on.
            let ended = self.state.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            self.revive();
            if self.state.token.is_cancelled() {
                return Err(ClientError::Closed);
            }
            if self.panicked() {
                return Err(ClientError::WatchPanicked);
            }
            // A copy remembers what the shared receiver has seen; it goes back
            // once it has seen the change.
            let mut selection = self.seen().clone();
            tokio::select! {
                biased;
                _ = self.state.token.cancelled() => return Err(ClientError::Closed),
                () = &mut ended => {}
                changed = selection.changed() => {
                    changed.map_err(|_| ClientError::Closed)?;
                    let current = selection.borrow_and_update().clone();
                    *self.seen() = selection;
                    return Ok(current);
                }
            }
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, watch::Receiver<Vec<Listing>>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The service watched (for a static watch, that of its first listing).
    pub fn service(&self) -> &str {
        &self.state.service
    }

    /// The coordinator this watch follows now, if any (none once closed). The
    /// watches of one service in a client follow the same one.
    pub fn coordinator(&self) -> Option<String> {
        if self.state.token.is_cancelled() {
            return None;
        }
        let followed = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()?
            .followed
            .clone();
        let now = followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        now
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

/// The watch task: applies what its feed hears (the feed stops when the last
/// watch task using it ends). A watch that joins a feed takes its newest answer
/// at once, unless the feed is failing now: then it waits for the next answer, or
/// for the next round of failures (which `start` reports). Failures from before
/// it joined are not its own.
async fn watch_loop(feed: Arc<Feed>, state: Arc<WatchState>) {
    let mut heard = feed.subscribe();
    let mut view = View::default();
    let (mut taken, mut failures) = {
        let now = heard.borrow_and_update();
        (if now.failing { now.answers } else { 0 }, now.failures)
    };
    loop {
        let now = heard.borrow_and_update().clone();
        if let (Some((host, answer)), true) = (&now.answer, now.answers != taken) {
            taken = now.answers;
            state.update(host, answer, &mut view);
            state.sync.send_if_modified(|sync| match sync {
                SyncState::Synced => false,
                _ => {
                    *sync = SyncState::Synced;
                    true
                }
            });
        }
        if let (Some((host, error)), true) = (now.failed, now.failures != failures) {
            failures = now.failures;
            // Every coordinator failed before any answered: `start` says so.
            state.sync.send_if_modified(|sync| match sync {
                SyncState::Pending => {
                    *sync = SyncState::Failed { host, error };
                    true
                }
                _ => false,
            });
        }
        tokio::select! {
            _ = state.token.cancelled() => return,
            changed = heard.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(host: &str, version: u32) -> Listing {
        Listing::new("s", host).unwrap().with("v", version)
    }

    fn hosts(listings: &[Listing]) -> Vec<&str> {
        listings.iter().map(Listing::host).collect()
    }

    #[test]
    fn a_partial_coordinator_never_removes_what_it_has_not_listed() {
        let mut view = View::default();
        let x = || ("x".to_owned(), Some(1));
        let took = view.take(x(), vec![listing("a:1", 1)], false, &[]);
        assert_eq!(hosts(&took), ["a:1"], "nothing held before: taken as it is");
        view.candidates = Some(took);
        let took = view.take(x(), vec![], false, &[]);
        assert!(took.is_empty(), "x listed a:1, so x may remove it");

        let held = vec![listing("a:1", 1), listing("b:1", 1), listing("c:1", 1)];
        let mut view = View {
            candidates: Some(held),
            protected: None,
        };
        // A restarted coordinator that has heard from nobody yet.
        let took = view.take(x(), vec![], false, &[]);
        assert_eq!(hosts(&took), ["a:1", "b:1", "c:1"]);
        view.candidates = Some(took);
        // a's publisher reached it, with a new payload: in its place.
        let took = view.take(x(), vec![listing("a:1", 2)], false, &[]);
        assert_eq!(hosts(&took), ["a:1", "b:1", "c:1"]);
        assert_eq!(took[0].get("v"), Some(&serde_json::json!(2)));
        view.candidates = Some(took);
        // a withdrew: x listed it, so the removal is real.
        let took = view.take(x(), vec![], false, &[]);
        assert_eq!(hosts(&took), ["b:1", "c:1"]);
        view.candidates = Some(took);
        // Another run of x: what is held now is protected again.
        let x2 = || ("x".to_owned(), Some(2));
        let took = view.take(x2(), vec![], false, &[]);
        assert_eq!(hosts(&took), ["b:1", "c:1"]);
        // Another partial coordinator: likewise.
        let took = view.take(("y".to_owned(), None), vec![listing("d:1", 1)], false, &[]);
        assert_eq!(hosts(&took), ["b:1", "c:1", "d:1"]);
        view.candidates = Some(took);
        // A complete answer is the truth.
        let took = view.take(("y".to_owned(), None), vec![listing("c:1", 1)], true, &[]);
        assert_eq!(hosts(&took), ["c:1"]);
        assert!(view.protected.is_none());
    }

    #[test]
    fn a_partial_coordinator_may_say_what_it_knows_is_gone() {
        let held = vec![listing("a:1", 1), listing("b:1", 1), listing("c:1", 1)];
        let mut view = View {
            candidates: Some(held),
            protected: None,
        };
        let x = || ("x".to_owned(), Some(1));
        // A coordinator that read back its file: b's publisher had stopped
        // heartbeating, so b is gone; a and c it has not heard from yet.
        let took = view.take(x(), vec![], false, &["b:1".to_owned()]);
        assert_eq!(hosts(&took), ["a:1", "c:1"]);
        view.candidates = Some(took);
        // Listed, a departed host is taken as it is (its publisher came back).
        let took = view.take(x(), vec![listing("b:1", 2)], false, &["b:1".to_owned()]);
        assert_eq!(hosts(&took), ["a:1", "c:1", "b:1"]);
    }
}
