//! The client library: publish listings to the coordinators, and watch services.
//!
//! A [`Client`] is given one way in (`host`, a coordinator or a load balancer),
//! learns the set of coordinators from it, and then keeps that set fresh
//! (`discovery.rs`), sends every listing it publishes to every coordinator it knows
//! at each heartbeat (`publishing.rs`), and runs [`Watch`]es (`watch.rs`). The
//! watches of one service share one upstream (`feed.rs`), which follows one
//! coordinator at a time (`follow.rs`). It speaks the original hakken's v1
//! protocol, so it works against the npm coordinators too; against ours it also
//! holds streams, else blocking queries (changes arrive in milliseconds, not at
//! the next poll), withdraws its listings on [`Client::close`] and
//! [`Client::unpublish`], and adopts the coordinators' heartbeat interval.
//!
//! Where things are: `coordinators.rs` is the pure table of known coordinators,
//! `selector.rs` what a watch hands out, `from_config.rs` the original's watch
//! configuration shapes. This module is the wiring: shared state, start, publish,
//! close.

mod config;
mod coordinators;
mod departures;
mod discovery;
mod error;
mod feed;
mod follow;
mod from_config;
mod publishing;
mod selector;
mod watch;

pub use config::{ClientConfig, DEFAULT_HEARTBEAT_INTERVAL};
pub use error::ClientError;
pub use selector::{All, Random, Selector};
pub use watch::{Watch, WatchBuilder};

use crate::listing::{Limits, Listing, Peer};
use crate::remote::{Answer, Remote, RemoteError};
use config::MIN_INTERVAL;
use coordinators::{Coordinators, Strike};
use publishing::Which;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Rounds of the cluster's heartbeat interval a dropped coordinator stays on
/// probation: its peers drop it after three failed polls by default (a coordinator's
/// `--failures-before-drop`), plus one for their phase.
const PROBATION_ROUNDS: u32 = 4;

/// Times `start` asks the way in again when no coordinator it learned announced
/// the heartbeat interval (see [`Inner::ask_for_interval`]).
const WAY_IN_RETRIES: usize = 4;

/// State shared by the client's handles, its background tasks and its watches.
pub(crate) struct Inner {
    pub config: ClientConfig,
    pub remote: Remote,
    /// Known coordinators. A std mutex: every critical section is short and
    /// synchronous, never across an `.await`.
    coordinators: Mutex<Coordinators>,
    /// Published listings, one per `(service, host)`, in publication order. Same
    /// discipline as `coordinators`; never both held at once.
    listings: Mutex<Vec<Listing>>,
    /// One lane per coordinator: the writes to it (publish, heartbeat,
    /// withdrawal) are made one at a time, so that an older payload in flight
    /// never lands after a newer one; a coordinator that hangs holds up only its
    /// own (see `publishing.rs`).
    pub lanes: publishing::Lanes,
    /// Cancelled by [`Client::close`] or when the last handle is dropped; every
    /// background task and every watch (through a child token) stops on it.
    pub shutdown: CancellationToken,
    /// Every task the client spawns, so that `close` can wait for all of them.
    pub tasks: TaskTracker,
    /// Asks the resync task to ask `host` now (the known set became empty).
    pub resync_now: Notify,
    /// Wakes the heartbeat task when the heartbeat interval changed.
    pub interval_changed: Notify,
    /// Wakes the heartbeat task to retry the failing coordinators soon.
    pub retry_soon: Notify,
    /// Wakes the heartbeat task to send every listing everywhere now: a
    /// coordinator restarted with nobody to copy listings from.
    pub republish: Notify,
    /// Counts coordinators struck or dropped, so a watch held on one learns that
    /// the client's rounds found it broken, and moves on.
    pub dropped: tokio::sync::watch::Sender<u64>,
    /// One upstream per watched service, shared by its watches.
    feeds: feed::Feeds,
    /// The background tasks, once spawned: started again should the runtime
    /// that ran them end (see [`Inner::spawn_background`]).
    background: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Whether `close` was called.
    closed: AtomicBool,
    /// What is wrong with the configured host, as written (see
    /// [`ClientConfig::check`]).
    bad_host: Option<String>,
    /// Listings an `unpublish` had yet to withdraw when `close` began, from a
    /// coordinator whose earlier writes held it up: `close` withdraws them in its
    /// own bounded round. `None` once `close` has taken them: a withdrawal later
    /// still is made by its `unpublish`.
    pub withdraw_at_close: Mutex<Option<Vec<Listing>>>,
}

impl Inner {
    fn coordinator_table(&self) -> MutexGuard<'_, Coordinators> {
        self.coordinators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn listing_table(&self) -> MutexGuard<'_, Vec<Listing>> {
        self.listings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where calls go now: the known coordinators, or `host` when none is known.
    pub fn targets(&self) -> Vec<String> {
        self.coordinator_table().targets()
    }

    /// The known coordinators.
    pub fn known(&self) -> Vec<String> {
        self.coordinator_table().hosts()
    }

    /// A snapshot of the published listings.
    pub fn listings(&self) -> Vec<Listing> {
        self.listing_table().clone()
    }

    /// Whether the client publishes anything (then it heartbeats every coordinator).
    pub fn publishes(&self) -> bool {
        !self.listing_table().is_empty()
    }

    /// Whether a watch of the client follows a service now (its feed lives).
    pub fn watches(&self) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|feed| feed.strong_count() > 0)
    }

    /// Whether [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The heartbeat interval in force: configured, else announced, else 20 s.
    pub fn heartbeat_interval(&self) -> Duration {
        let interval = match self.config.heartbeat_interval {
            Some(interval) => interval,
            None => self
                .coordinator_table()
                .announced_interval()
                .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
        };
        interval.max(MIN_INTERVAL)
    }

    /// Records what `from` answered to `GET /v1/coordinator`; returns how many
    /// coordinators were new. Every listing is sent to the new ones at once, not at
    /// the next heartbeat: a coordinator that just joined serves them now.
    pub fn learn(self: &Arc<Self>, from: &str, answer: &Answer<Vec<Peer>>) -> usize {
        let mut added = Vec::new();
        {
            let mut table = self.coordinator_table();
            for peer in &answer.value {
                if table.add(peer.host()) {
                    added.push(peer.host().to_owned());
                }
            }
        }
        for host in &added {
            tracing::info!(coordinator = host.as_str(), from, "coordinator added");
        }
        self.note(from, answer);
        let count = added.len();
        if count > 0 && self.is_spawned() {
            self.publish_now(added);
        }
        count
    }

    /// When no coordinator has announced the heartbeat interval yet (the way in
    /// was the original's, which does not say) and none is configured: asks the
    /// coordinators learned for their lists at once, all together, until one
    /// announces it (ours do) or all have answered or failed. Without this the
    /// first heartbeats would come at the 20 s default, and in a cluster with a
    /// shorter interval a new listing would expire before them.
    async fn ask_for_interval(self: &Arc<Self>) {
        if self.config.heartbeat_interval.is_some()
            || self.coordinator_table().announced_interval().is_some()
        {
            return;
        }
        let mut asking = tokio::task::JoinSet::new();
        for host in self.known() {
            let remote = self.remote.clone();
            asking.spawn(async move {
                let answer = remote.coordinators(&host, None).await;
                (host, answer)
            });
        }
        let asked = async {
            while let Some(joined) = asking.join_next().await {
                let Ok((host, Ok(answer))) = joined else {
                    continue;
                };
                self.learn(&host, &answer);
                if answer.heartbeat_interval.is_some() {
                    return;
                }
            }
            // None of those said (the original's coordinator may list only itself,
            // having shunned the others): ask the way in a few times more, which
            // a load balancer spreads over the coordinators behind it.
            let way_in = self.config.host.clone();
            for _ in 0..WAY_IN_RETRIES {
                if let Ok(answer) = self.remote.coordinators(&way_in, None).await {
                    self.learn(&way_in, &answer);
                    if answer.heartbeat_interval.is_some() {
                        return;
                    }
                }
            }
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            () = asked => {}
        }
    }

    /// Sends every published listing to `hosts` now, in a round of its own.
    fn publish_now(self: &Arc<Self>, hosts: Vec<String>) {
        let inner = self.clone();
        self.tasks.spawn(async move {
            // Not cut short at shutdown: a write stopped halfway could land after
            // the withdrawal `close` makes next. Each call is bounded by the timeout.
            if !inner.shutdown.is_cancelled() {
                publishing::send(&inner, Which::All, hosts, false, false).await;
            }
        });
    }

    /// Records the heartbeat interval `host` announced in an answer.
    /// Recorded even when the client's own interval is configured: it is also how
    /// fast the cluster notices a failure (see [`Inner::struck`]).
    pub fn note_interval(&self, host: &str, interval: Option<Duration>) {
        if interval.is_none() {
            return;
        }
        let changed = {
            let mut table = self.coordinator_table();
            let before = table.announced_interval();
            table.announced(host, interval);
            table.announced_interval() != before
        };
        if changed && self.config.heartbeat_interval.is_none() {
            tracing::info!(
                interval_ms = self.heartbeat_interval().as_millis() as u64,
                "adopted the coordinators' heartbeat interval"
            );
            self.interval_changed.notify_one();
        }
    }

    /// The heartbeat interval the cluster runs on, as `table` knows it: the one its
    /// coordinators announce (the shortest), else the configured one, else 20 s.
    fn cluster_interval(&self, table: &Coordinators) -> Duration {
        table
            .announced_interval()
            .or(self.config.heartbeat_interval)
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
    }

    /// The heartbeat interval the cluster runs on (see `cluster_interval`).
    pub fn cluster_heartbeat(&self) -> Duration {
        self.cluster_interval(&self.coordinator_table())
    }

    /// Records that a round (a heartbeat round, a poll) found `host` broken: a
    /// strike, and at the last one the coordinator is forgotten (and on probation);
    /// when none is left, the resync task asks `host` at once.
    pub fn struck(&self, host: &str, error: &RemoteError) {
        let (strike, now_empty) = {
            let mut table = self.coordinator_table();
            // As long as the cluster takes to drop it: its peers poll it every
            // interval they announce, and drop it after a few failures.
            let interval = self.cluster_interval(&table);
            let rounds = PROBATION_ROUNDS.max(self.config.failures_before_drop + 1);
            let probe_until = tokio::time::Instant::now() + interval * rounds;
            let strike = table.failed(host, probe_until);
            (strike, table.is_empty())
        };
        match strike {
            Strike::Dropped => {
                tracing::warn!(
                    coordinator = host,
                    %error,
                    failures = self.config.failures_before_drop,
                    "dropping coordinator after failures in a row"
                );
                self.dropped.send_modify(|count| *count += 1);
                if now_empty {
                    self.resync_now.notify_one();
                }
            }
            Strike::Struck(strikes) => {
                tracing::info!(coordinator = host, %error, strikes, "coordinator failed");
                // A watch held on it moves on now, not after the last strike.
                self.dropped.send_modify(|count| *count += 1);
            }
            Strike::Unknown => {}
        }
    }

    /// Records that `host` answered (a refusal counts: it is alive). True when it
    /// is back after a failure.
    pub fn answered(&self, host: &str) -> bool {
        let back = self.coordinator_table().answered(host);
        if back {
            tracing::info!(coordinator = host, "coordinator answers again");
        }
        back
    }

    /// Records that `host` took a write (see [`Coordinators::took_a_write`]).
    pub fn took_a_write(&self, host: &str) {
        self.coordinator_table().took_a_write(host);
    }

    /// Dropped coordinators still on probation: probed, and taken back
    /// ([`Inner::take_back`]) when they answer.
    pub fn on_probation(&self) -> Vec<String> {
        self.coordinator_table()
            .on_probation(tokio::time::Instant::now())
    }

    /// Knows again those of `hosts` that were dropped (they answered on probation),
    /// and sends them every listing now.
    pub fn take_back(self: &Arc<Self>, hosts: &[String]) {
        let taken: Vec<String> = {
            let mut table = self.coordinator_table();
            hosts
                .iter()
                .filter(|h| table.take_back(h))
                .cloned()
                .collect()
        };
        for host in &taken {
            tracing::info!(
                coordinator = host.as_str(),
                "dropped coordinator answers again; known again"
            );
        }
        if !taken.is_empty() {
            self.publish_now(taken);
        }
    }

    /// Known coordinators that failed since they last answered: retried sooner
    /// than the next heartbeat, so one that comes back gets every listing at once.
    pub fn failing(&self) -> Vec<String> {
        self.coordinator_table().failing()
    }

    /// Known coordinators of ours (they answered with their run): followers prefer
    /// them, for their blocking queries.
    pub fn ours(&self) -> Vec<String> {
        self.coordinator_table().ours()
    }

    /// Known coordinators that said they are not complete (warming up after a
    /// restart with nobody to copy from): followers prefer the others.
    pub fn partial(&self) -> Vec<String> {
        self.coordinator_table().partial()
    }

    /// Records that a call to `host` failed (a write, a held query): it gets
    /// every listing as soon as it answers, retried soon after a new failure and
    /// on the retry backoff while it goes on failing.
    pub fn suspect(&self, host: &str) {
        if self.coordinator_table().suspect(host) {
            self.retry_soon.notify_one();
        }
    }

    /// Records what an answer of `host` says of it: its heartbeat interval, and
    /// whether it restarted (another run answers, or it turned partial: it had
    /// nobody to copy listings from). A restart may not come alone — the whole
    /// cluster may have restarted — so every listing goes to every coordinator now,
    /// rather than at the next heartbeat: one extra round, on a rare event.
    pub fn note<T>(self: &Arc<Self>, host: &str, answer: &Answer<T>) {
        self.note_interval(host, answer.heartbeat_interval);
        let (restarted, turned_partial) = {
            let mut table = self.coordinator_table();
            (
                table.note_instance(host, answer.instance),
                table.note_complete(host, answer.complete),
            )
        };
        if turned_partial || restarted {
            tracing::info!(
                coordinator = host,
                partial = turned_partial,
                "coordinator restarted; publishing everything everywhere now"
            );
            self.republish.notify_one();
        }
    }

    /// Fails when the configured host is not an address.
    pub fn checked(&self) -> Result<(), ClientError> {
        match &self.bad_host {
            Some(why) => Err(ClientError::Config(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether the background tasks were spawned.
    fn is_spawned(&self) -> bool {
        !self.background_tasks().is_empty()
    }

    /// Spawns the background tasks again if they were spawned and ended before
    /// the client was closed (see [`Inner::spawn_background`]).
    pub fn revive(self: &Arc<Self>) {
        if self.is_spawned() {
            self.spawn_background(false);
        }
    }

    fn background_tasks(&self) -> MutexGuard<'_, Vec<tokio::task::AbortHandle>> {
        self.background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns the heartbeat, poll and resync tasks, once; again if they ended
    /// before the client was closed: the runtime that ran them ended (a client in
    /// a `static`, used by one `#[tokio::test]` after another), and they run on
    /// this one from now on, every listing sent everywhere at once. `ask_first`:
    /// the resync task asks `host` at once (and retries with backoff) instead of
    /// waiting one resync period.
    pub fn spawn_background(self: &Arc<Self>, ask_first: bool) {
        // Checked before anything is marked spawned: a caller that catches the
        // panic may start the client later, within a runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            panic!("a hakken Client is started within a tokio runtime (none runs on this thread)");
        }
        let mut background = self.background_tasks();
        if !background.is_empty() {
            if self.shutdown.is_cancelled() || !background.iter().any(|t| t.is_finished()) {
                return;
            }
            tracing::warn!(
                "this client's tasks ended before it was closed (the runtime that ran them \
                 ended, or one panicked); they start again on this one"
            );
            background.iter().for_each(tokio::task::AbortHandle::abort);
            background.clear();
            // Listings may have expired meanwhile: every one goes everywhere now.
            self.republish.notify_one();
        }
        let tasks = [
            self.tasks.spawn(publishing::heartbeat_loop(self.clone())),
            self.tasks.spawn(discovery::poll_loop(self.clone())),
            self.tasks.spawn(discovery::follow_loop(self.clone())),
            self.tasks.spawn(discovery::probation_loop(self.clone())),
            self.tasks.spawn(discovery::liveness_loop(self.clone())),
            self.tasks
                .spawn(discovery::resync_loop(self.clone(), ask_first)),
        ];
        background.extend(tasks.iter().map(tokio::task::JoinHandle::abort_handle));
    }
}

/// Stops the client's tasks when the last handle ([`Client`] or [`Watch`]) goes.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

/// A hakken client: publishes listings and runs watches. Cheap to clone; every
/// clone is the same client. One per process is usually right.
///
/// Dropping the last handle (clones and watches included) stops its tasks but does
/// not withdraw its listings (they expire on the coordinators); [`Client::close`]
/// withdraws them and waits for every task to finish.
///
/// Its tasks run on the tokio runtime it was started in. A client kept past that
/// runtime (in a `static` shared by several `#[tokio::test]`s, say) has no tasks
/// until its next [`start`](Client::start) or [`publish`](Client::publish), or a
/// watch's, which starts them again on the runtime that call runs in and sends
/// every listing everywhere; meanwhile nothing heartbeats. A watch's task starts
/// again at its next `start`, `changed` (one waiting already carries on) or
/// `get` made within a runtime (a receiver from `subscribe` does not start it).
///
/// ```no_run
/// # async fn demo() -> Result<(), hakken::client::ClientError> {
/// use hakken::client::{Client, ClientConfig};
/// use hakken::Listing;
///
/// let client = Client::new(ClientConfig::new("discovery.local:8082"));
/// client.start().await?;
/// client
///     .publish(Listing::new("billing", "10.0.0.7:8080")?.with("protocol", "http"))
///     .await?;
///
/// let watch = client.random_watch("ledger");
/// watch.start().await?;
/// if let Some(ledger) = watch.get().first() {
///     println!("ledger at {}", ledger.host());
/// }
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.inner().config.host)
            .field("coordinators", &self.coordinators())
            .field("closed", &self.inner().is_closed())
            .finish()
    }
}

impl Client {
    /// A client for `config`. Contacts nothing until [`start`](Client::start),
    /// [`start_background`](Client::start_background), a publish or a watch.
    pub fn new(mut config: ClientConfig) -> Client {
        let bad_host = config.host_problem();
        // `https://name:port` means TLS to every coordinator; the host itself is
        // kept as the protocol writes hosts, so that it matches coordinator lists.
        let (https, host) = crate::remote::split_scheme(&config.host);
        config.host = host.to_owned();
        let remote = Remote::with_tls_or_failing(
            config.request_timeout.max(MIN_INTERVAL),
            &config.tls,
            https,
        )
        .with_token(config.token.clone());
        let inner = Inner {
            coordinators: Mutex::new(Coordinators::new(
                config.host.clone(),
                config.failures_before_drop,
            )),
            listings: Mutex::new(Vec::new()),
            lanes: Default::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            resync_now: Notify::new(),
            interval_changed: Notify::new(),
            retry_soon: Notify::new(),
            republish: Notify::new(),
            dropped: tokio::sync::watch::Sender::new(0),
            feeds: Default::default(),
            background: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            bad_host,
            withdraw_at_close: Mutex::new(Some(Vec::new())),
            remote,
            config,
        };
        Client {
            handle: Arc::new(Handle {
                inner: Arc::new(inner),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Asks `host` for the coordinators (`GET /v1/coordinator`), then starts the
    /// background tasks: heartbeats, coordinator polls and resyncs. Fails with
    /// [`ClientError::NoCoordinator`] when `host` does not answer (the client can be
    /// started again later), [`ClientError::Config`] when it is not an address
    /// (see [`ClientConfig::check`]). Starting a started client asks `host` again.
    /// With `skip`, succeeds at once and contacts nothing.
    pub async fn start(&self) -> Result<(), ClientError> {
        let inner = self.inner();
        if inner.is_closed() {
            return Err(ClientError::Closed);
        }
        if inner.config.skip {
            return Ok(());
        }
        inner.checked()?;
        let host = inner.config.host.clone();
        let answer = tokio::select! {
            _ = inner.shutdown.cancelled() => return Err(ClientError::Closed),
            answer = inner.remote.coordinators(&host, None) => answer,
        };
        let answer = answer.map_err(|error| ClientError::NoCoordinator {
            host: host.clone(),
            source: Some(error),
        })?;
        inner.learn(&host, &answer);
        if answer.heartbeat_interval.is_none() {
            inner.ask_for_interval().await;
        }
        inner.spawn_background(false);
        Ok(())
    }

    /// Starts the background tasks without waiting: `host` is asked at once and
    /// again with backoff and jitter until it answers (the original's `start()`
    /// without a callback). Logs an error and starts nothing when `host` is not
    /// an address (see [`ClientConfig::check`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime. The client is left as it was: it can be started
    /// later, within one.
    pub fn start_background(&self) {
        let inner = self.inner();
        if inner.is_closed() || inner.config.skip {
            return;
        }
        if let Err(error) = inner.checked() {
            tracing::error!(%error, "client not started");
            return;
        }
        inner.spawn_background(true);
    }

    /// Publishes a listing: sends it now to every known coordinator (`POST
    /// /v1/listings`, which replaces a listing with the same `service` and `host`),
    /// and again at every heartbeat to every coordinator known then. Coordinators
    /// that fail or refuse are logged and retried at the next heartbeat; the call
    /// fails only for a listing that is not valid ([`ClientError::Invalid`]), a
    /// `host` that is not an address or a closed client. The call
    /// returns once every coordinator answered or failed: one that does not answer
    /// holds it up (each call to it waits up to the request timeout, after those
    /// to it already under way), but not the others, nor the heartbeats. Given
    /// up on (the future dropped), the publication still runs to its end, and
    /// later writes to each coordinator come after it. Heartbeats are sent once
    /// the client is started. With `skip`, only records the listing.
    pub async fn publish(&self, listing: Listing) -> Result<(), ClientError> {
        let listing = Listing::from_map(listing.into_map(), &Limits::default())?;
        let inner = self.inner();
        inner.checked()?;
        {
            // Checked under the table's lock, as `close` sets it: a listing is
            // either withdrawn by `close` or refused.
            let mut listings = inner.listing_table();
            if inner.is_closed() {
                return Err(ClientError::Closed);
            }
            match listings.iter_mut().find(|l| l.key() == listing.key()) {
                Some(slot) => *slot = listing.clone(),
                None => listings.push(listing.clone()),
            }
        }
        if inner.config.skip {
            return Ok(());
        }
        // Publishing before `start` starts the client in the background (as
        // `start_background` does), so heartbeats follow.
        inner.spawn_background(true);
        let which = Which::These(Arc::new(vec![listing]));
        let write = {
            let inner = inner.clone();
            async move { publishing::send(&inner, which, inner.targets(), false, false).await }
        };
        publishing::to_the_end(inner, write).await?;
        Ok(())
    }

    /// Stops publishing a listing (matched by `service` and `host`) and withdraws
    /// it from every known coordinator (`DELETE`; one that does not hold it is
    /// fine). Coordinators that fail are logged: the listing expires there.
    /// Given up on (the future dropped), the withdrawal still runs to its end
    /// (what of it still waits behind earlier writes when `close` begins, `close`
    /// makes in its own round).
    pub async fn unpublish(&self, listing: &Listing) -> Result<(), ClientError> {
        let inner = self.inner();
        inner.checked()?;
        let removed = {
            let mut listings = inner.listing_table();
            if inner.is_closed() {
                return Err(ClientError::Closed);
            }
            let before = listings.len();
            listings.retain(|l| l.key() != listing.key());
            before != listings.len()
        };
        if !removed {
            tracing::debug!(
                service = listing.service(),
                host = listing.host(),
                "unpublish: not published here"
            );
        }
        if !inner.config.skip {
            let write = {
                let (inner, listing) = (inner.clone(), listing.clone());
                async move { publishing::withdraw(&inner, vec![listing], inner.targets(), true).await }
            };
            publishing::to_the_end(inner, write).await?;
        }
        Ok(())
    }

    /// A watch on `service`, to configure: filters, a selector (all listings by
    /// default), then [`WatchBuilder::build`].
    pub fn watch(&self, service: &str) -> WatchBuilder {
        WatchBuilder::new(self.clone(), service)
    }

    /// A watch handing out one listing of `service`, picked at random (see
    /// [`Random`] for when it picks again).
    pub fn random_watch(&self, service: &str) -> Watch {
        self.watch(service).random(1).build()
    }

    /// A watch that hands out `listings` and never changes; it needs no coordinator.
    pub fn static_watch(listings: Vec<Listing>) -> Watch {
        Watch::fixed(listings)
    }

    /// A watch from the original's configuration shapes (`watchFromConfig`):
    ///
    /// - `"billing"`: one random listing of `billing`;
    /// - `{"type": "random", "service": "billing", "filter": {"zone": "eu"},
    ///   "config": {"numToPull": 2}}`: up to `numToPull` (default 1) random listings
    ///   whose fields equal the filter's;
    /// - `{"type": "all", "service": .., "filter": ..}`: every listing that passes;
    /// - `{"type": "static", "service": "db", "hosts": [..]}`: a fixed list. Each
    ///   entry is a listing object or a `"name:port"` string; a missing `service`
    ///   is the config's `service`, else `"static"`. (The original hands the
    ///   entries out as they are; a [`Listing`] needs a service and a host.)
    ///
    /// Fails with [`ClientError::Config`] on any other shape.
    ///
    /// ```
    /// # fn demo(client: hakken::Client) -> Result<(), hakken::ClientError> {
    /// let watch = client.watch_from_config(&serde_json::json!({
    ///     "type": "static", "hosts": ["localhost:5432"], "service": "db"
    /// }))?;
    /// assert_eq!(watch.get()[0].host(), "localhost:5432");
    /// # Ok(()) }
    /// ```
    pub fn watch_from_config(&self, config: &serde_json::Value) -> Result<Watch, ClientError> {
        from_config::watch_from_config(self, config)
    }

    /// The coordinators this client knows (announced hosts, sorted).
    pub fn coordinators(&self) -> Vec<String> {
        self.inner().known()
    }

    /// The listings this client publishes.
    pub fn published(&self) -> Vec<Listing> {
        self.inner().listings()
    }

    /// The heartbeat interval in force: the configured one, else the coordinators'
    /// (`X-Hakken-Heartbeat-Interval`, the shortest), else 20 s.
    pub fn heartbeat_interval(&self) -> Duration {
        self.inner().heartbeat_interval()
    }

    /// Tasks of this client still running (background tasks, watches, calls in
    /// flight). Zero after [`close`](Client::close) returns.
    pub fn running_tasks(&self) -> usize {
        self.inner().tasks.len()
    }

    /// Whether [`close`](Client::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner().is_closed()
    }

    /// Closes the client: stops every background task and every watch and waits
    /// for them, then withdraws every listing it published from every known
    /// coordinator (best effort, bounded by the request timeout). Later calls
    /// fail with [`ClientError::Closed`]; closing again does nothing.
    pub async fn close(&self) {
        self.close_reporting().await;
    }

    /// Like [`close`](Client::close), and says which coordinators its listings
    /// could not be withdrawn from (they expire there): one error per coordinator,
    /// none when every withdrawal went through (or there was nothing to withdraw).
    /// The coordinators dropped most recently (up to 16) are asked too, and
    /// named when they fail.
    pub async fn close_reporting(&self) -> Vec<RemoteError> {
        let inner = self.inner();
        // Closed and the listings taken at once, under the table's lock: a publish
        // came before (its listing is withdrawn below) or fails with `Closed`.
        let (first, listings) = {
            let mut table = inner.listing_table();
            let first = !inner.closed.swap(true, Ordering::SeqCst);
            let listings = if first {
                std::mem::take(&mut *table)
            } else {
                Vec::new()
            };
            (first, listings)
        };
        inner.shutdown.cancel();
        inner.tasks.close();
        // Writes in flight (a publish, a heartbeat: each call bounded by the
        // timeout) end before anything is withdrawn, so none lands after its
        // DELETE. Those that start now find nothing left to send.
        inner.tasks.wait().await;
        if !first || inner.config.skip {
            return Vec::new();
        }
        let mut listings = listings;
        let handed_over = inner
            .withdraw_at_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        publishing::add_new(&mut listings, handed_over.into_iter().flatten());
        let mut failed = Vec::new();
        if !listings.is_empty() {
            // The coordinators dropped lately too: one that stopped answering us
            // may still serve others, and hold the listings until they expire.
            let mut targets = inner.targets();
            for host in inner.coordinator_table().recently_dropped() {
                if !targets.contains(&host) {
                    targets.push(host);
                }
            }
            let withdraw = publishing::withdraw(inner, listings, targets.clone(), false);
            // Every call is bounded by the timeout itself: the margin lets each
            // one end with its own result (a coordinator that does not answer is
            // named alone, not every other with it).
            let within = inner.remote.timeout() + inner.remote.timeout() / 2;
            match tokio::time::timeout(within, withdraw).await {
                Ok(errors) => failed.extend(errors.into_values()),
                Err(_) => {
                    tracing::warn!(
                        "close: withdrawing listings took too long; the rest will expire"
                    );
                    failed.extend(targets.into_iter().map(|host| RemoteError::Unreachable {
                        host,
                        message: "timed out".into(),
                    }));
                }
            }
            // Calls aborted by the timeout finish unwinding here.
            inner.tasks.wait().await;
        }
        tracing::info!(host = inner.config.host.as_str(), "client closed");
        failed
    }
}
