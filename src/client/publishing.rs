//! Sending listings to coordinators: the heartbeat task, and the writes behind
//! [`Client::publish`](super::Client::publish), `unpublish` and `close`.
//!
//! One heartbeat task per client (not per listing) sends every listing to every
//! known coordinator each heartbeat interval, concurrently and bounded. A first
//! publication is a plain `POST /v1/listings` (it replaces the payload everywhere);
//! heartbeats are `POST /v1/listings?heartbeat=true`, as the original client sends
//! them.
//!
//! **One lane per coordinator.** Every write to a coordinator is made holding its
//! [`Lane`], so writes to one coordinator never overtake each other: an older
//! payload never lands after a newer one, and no heartbeat after its `DELETE`.
//! What a write sends is read from the published listings once it holds the lane:
//! a publication sends the payload published then, and a withdrawal leaves out a
//! listing published again meanwhile. Coordinators do not wait for each other: one
//! that hangs holds up only the writes to it, each bounded by the request timeout,
//! and the others keep their heartbeats. (Two names of one coordinator are two
//! lanes: see [`Lanes`].)
//!
//! **Rounds.** The heartbeat task never waits on a coordinator: each round runs as
//! a task of its own, and leaves out a coordinator it would pile up on (one that
//! hangs: see `InRound::take`). A heartbeat round is what counts against a
//! coordinator: one that is broken at a round gets a strike (see
//! [`Inner::struck`]); one a round leaves out gets none from it. Between rounds,
//! the coordinators whose last round failed are tried again soon, with backoff:
//! one that was restarted has every listing back within moments of answering
//! again, not one heartbeat later. Those retries never count as strikes.

use super::{ClientError, Inner};
use crate::backoff::{jittered, Backoff};
use crate::fanout::fan_out;
use crate::listing::Listing;
use crate::remote::RemoteError;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// First retry of a coordinator whose heartbeat failed.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// The writes to one coordinator, one at a time (see the module's doc).
#[derive(Default)]
pub(crate) struct Lane {
    turn: tokio::sync::Mutex<()>,
    /// A heartbeat round is under way to it.
    heartbeat: AtomicBool,
    /// A retry round is under way to it.
    retry: AtomicBool,
    /// A republication waits for its turn.
    republish: AtomicBool,
}

/// The coordinators' lanes, by the name written to. A lane nobody holds carries
/// nothing, and is let go.
///
/// Two names of one coordinator have two lanes: the way in (the configured host,
/// written to while no coordinator is known: a load balancer, say) and the name
/// the coordinator announces. A publication through the way in still under way
/// when the client learns the names may then land after a withdrawal through the
/// announced name; the listing expires there a TTL later. Ordering the two (one
/// lock over every lane) would let a way in that hangs hold up every coordinator
/// again.
#[derive(Default)]
pub(crate) struct Lanes(Mutex<HashMap<String, Arc<Lane>>>);

impl Lanes {
    fn lane(&self, host: &str) -> Arc<Lane> {
        let mut lanes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        lanes.entry(host.to_owned()).or_default().clone()
    }
}

/// Which published listings a publication sends: read once it holds the lane.
#[derive(Clone)]
pub(crate) enum Which {
    /// Every listing published then.
    All,
    /// Those of these (by `service` and `host`) still published then, as they are
    /// published then.
    These(Arc<Vec<Listing>>),
}

impl Which {
    fn published(&self, inner: &Inner) -> Vec<Listing> {
        let all = inner.listings();
        match self {
            Which::All => all,
            Which::These(these) => all
                .into_iter()
                .filter(|l| these.iter().any(|t| t.key() == l.key()))
                .collect(),
        }
    }
}

/// What the heartbeat task does when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every listing to every coordinator; a broken one gets a strike.
    Heartbeat,
    /// Every listing to every coordinator now, without strikes.
    Republish,
    /// Every listing to the coordinators that failed since they last answered.
    Retry,
}

/// Sends every listing again each heartbeat interval, until shutdown; in between,
/// retries the coordinators that failed, and republishes everywhere when asked.
/// When the interval changes (a coordinator announced a shorter one), the next
/// heartbeat is one new interval after the last (see [`Schedule`]).
pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut schedule = Schedule::new(Instant::now(), inner.heartbeat_interval());
    loop {
        let round = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.interval_changed.notified() => {
                schedule.interval_changed(Instant::now(), inner.heartbeat_interval());
                continue;
            }
            _ = inner.retry_soon.notified() => {
                schedule.retry_soon(Instant::now());
                continue;
            }
            _ = inner.republish.notified() => Round::Republish,
            _ = tokio::time::sleep_until(schedule.wake()) => schedule.due(Instant::now()),
        };
        start_round(&inner, round);
        let failing = !inner.failing().is_empty();
        schedule.started(Instant::now(), round, failing, inner.heartbeat_interval());
    }
}

/// When the heartbeat task wakes, and for which round. Pure: the time is
/// passed in.
#[derive(Debug)]
struct Schedule {
    interval: Duration,
    /// When the last heartbeat round started (or the task did).
    last_round: Instant,
    next_round: Instant,
    retry: Backoff,
    next_retry: Option<Instant>,
}

impl Schedule {
    fn new(now: Instant, interval: Duration) -> Self {
        Schedule {
            interval,
            last_round: now,
            next_round: now + jittered(interval),
            retry: Backoff::new(RETRY_MIN, interval),
            next_retry: None,
        }
    }

    /// When to wake next: the next heartbeat round, or a retry before it.
    fn wake(&self) -> Instant {
        self.next_retry
            .map_or(self.next_round, |at| at.min(self.next_round))
    }

    /// The round due at `now`, once awake.
    fn due(&self, now: Instant) -> Round {
        if now >= self.next_round {
            Round::Heartbeat
        } else {
            Round::Retry
        }
    }

    /// The interval is now `interval`: the next heartbeat round is one of it
    /// after the last (at once if that has passed), so changes, however many,
    /// never hold heartbeats off.
    fn interval_changed(&mut self, now: Instant, interval: Duration) {
        self.interval = interval;
        self.next_round = (self.last_round + jittered(interval)).max(now);
        self.retry = Backoff::new(RETRY_MIN, interval);
    }

    /// A new failure: retried soon, without moving the backoff on (that moves
    /// once per retry round).
    fn retry_soon(&mut self, now: Instant) {
        let soon = now + RETRY_MIN;
        self.next_retry = Some(self.next_retry.map_or(soon, |at| at.min(soon)));
    }

    /// `round` started at `now`; `failing`: some coordinators are failing, to
    /// retry on the backoff; `interval`: the one in force now (it changes
    /// unannounced too: when the coordinator that announced the shortest is
    /// dropped).
    fn started(&mut self, now: Instant, round: Round, failing: bool, interval: Duration) {
        if round == Round::Heartbeat {
            if interval != self.interval {
                self.retry = Backoff::new(RETRY_MIN, interval);
            }
            self.interval = interval;
            self.last_round = now;
            self.next_round = now + jittered(interval);
        }
        self.next_retry = if failing {
            Some(now + self.retry.next_delay())
        } else {
            self.retry.reset();
            None
        };
    }
}

/// Starts `round` as a task of its own. Each coordinator's part ends on its own:
/// one that hangs holds up nobody else's. See [`InRound::take`] for the
/// coordinators a round leaves out.
fn start_round(inner: &Arc<Inner>, round: Round) {
    if !inner.publishes() {
        return;
    }
    let places: Vec<InRound> = match round {
        Round::Retry => inner.failing(),
        Round::Heartbeat | Round::Republish => inner.targets(),
    }
    .into_iter()
    .filter_map(|host| InRound::take(inner, host, round))
    .collect();
    if places.is_empty() {
        return;
    }
    let task = inner.clone();
    inner.tasks.spawn(async move {
        let inner = task;
        fan_out(Some(&inner.tasks), places, |place| {
            let inner = inner.clone();
            async move {
                // A retry first finds out whether the failing coordinator answers
                // at all, outside its lane.
                if round == Round::Retry {
                    let alive = tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        status = inner.remote.status(&place.host) => status.is_ok(),
                    };
                    if !alive {
                        return;
                    }
                }
                if inner.shutdown.is_cancelled() {
                    return;
                }
                let host = place.host.clone();
                in_lanes(
                    &inner,
                    vec![(host, place)],
                    |inner, host, mut place| async move {
                        if round == Round::Republish {
                            // Its turn: what it sends is read now, so a restart found
                            // from here on needs a republication of its own.
                            place.release();
                        }
                        let strike = round == Round::Heartbeat;
                        post(&inner, &host, &Which::All, true, strike).await;
                        drop(place);
                    },
                )
                .await;
            }
        })
        .await;
    });
}

/// A coordinator's place in a round of the heartbeat task, given back when its
/// part of the round ends (or is dropped), a republication's when its turn comes.
struct InRound {
    host: String,
    lane: Arc<Lane>,
    round: Round,
    held: bool,
}

impl InRound {
    /// `host`'s place in a `round`, unless the round would pile up on earlier
    /// ones: a heartbeat leaves out a coordinator an earlier heartbeat is still
    /// under way to (that one gives the strike if it fails; a round that leaves
    /// it out gives none), a retry one a heartbeat or a retry is, and a
    /// republication one that another still waits for its turn to. A heartbeat
    /// is under way from the round that starts it until its calls end, its wait
    /// for the lane included: behind other writes to a coordinator that hangs
    /// (each up to the request timeout), it may outlast an interval, and the
    /// coordinator is then struck less often than once a round, and dropped later.
    fn take(inner: &Inner, host: String, round: Round) -> Option<InRound> {
        let lane = inner.lanes.lane(&host);
        let busy = match round {
            Round::Retry => lane.heartbeat.load(Ordering::Acquire),
            Round::Heartbeat | Round::Republish => false,
        };
        if busy || Self::flag(&lane, round).swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(InRound {
            host,
            lane,
            round,
            held: true,
        })
    }

    fn flag(lane: &Lane, round: Round) -> &AtomicBool {
        match round {
            Round::Heartbeat => &lane.heartbeat,
            Round::Retry => &lane.retry,
            Round::Republish => &lane.republish,
        }
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.held, false) {
            Self::flag(&self.lane, self.round).store(false, Ordering::Release);
        }
    }
}

impl Drop for InRound {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs `write` for each host, concurrently, each holding the host's lane, with
/// what goes with the host; returns what each returned.
async fn in_lanes<T, R, F, Fut>(inner: &Arc<Inner>, hosts: Vec<(String, T)>, write: F) -> Vec<R>
where
    T: Send + 'static,
    F: Fn(Arc<Inner>, String, T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    fan_out(Some(&inner.tasks), hosts, |(host, with)| {
        let lane = inner.lanes.lane(&host);
        let write = write(inner.clone(), host, with);
        async move {
            let _turn = lane.turn.lock().await;
            write.await
        }
    })
    .await
}

/// Runs a write of [`Client::publish`](super::Client::publish) or `unpublish` as
/// a task of its own, and waits for it. A caller that stops waiting (drops the
/// future: a `select!`, a timeout) leaves the write to run to its end, in its
/// lanes: a call it already sent may still land, and a later write to the same
/// coordinator must not overtake it. (It runs on this runtime: one that ends
/// ends it too.)
pub(crate) async fn to_the_end<R: Send + 'static>(
    inner: &Arc<Inner>,
    write: impl Future<Output = R> + Send + 'static,
) -> Result<R, ClientError> {
    match inner.tasks.spawn(write).await {
        Ok(output) => Ok(output),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime shuts down.
        Err(_) => Err(ClientError::Closed),
    }
}

/// Sends the listings `which` names to each host, each in its lane. Failures are
/// logged (once per host); with `strike`, a host found broken gets a strike (see
/// [`Inner::struck`]).
pub(crate) async fn send(
    inner: &Arc<Inner>,
    which: Which,
    hosts: Vec<String>,
    heartbeat: bool,
    strike: bool,
) {
    let hosts = hosts.into_iter().map(|host| (host, ())).collect();
    in_lanes(inner, hosts, |inner, host, ()| {
        let which = which.clone();
        async move { post(&inner, &host, &which, heartbeat, strike).await }
    })
    .await;
}

/// Sends `host` the listings `which` names, as published now. The caller holds
/// its lane.
async fn post(inner: &Arc<Inner>, host: &str, which: &Which, heartbeat: bool, strike: bool) {
    let listings = which.published(inner);
    let results = fan_out(Some(&inner.tasks), listings, |listing| {
        let (remote, host) = (inner.remote.clone(), host.to_owned());
        let body = Bytes::from(serde_json::to_vec(&listing).expect("a listing serializes"));
        async move { remote.publish_json(&host, body, heartbeat).await }
    })
    .await;
    // What the answers say of the coordinator (a heartbeat interval to adopt, a
    // restart), from one of them.
    let mut noted = false;
    let results = results
        .into_iter()
        .map(|result| {
            let result = result.map(|answer| {
                if !std::mem::replace(&mut noted, true) {
                    inner.note(host, &answer);
                }
            });
            (host.to_owned(), result)
        })
        .collect();
    let verb = if heartbeat { "heartbeat" } else { "publish" };
    report(inner, verb, results, strike);
}

/// Withdraws each of `listings` that is not published again by then from each
/// host (`DELETE`), each in its lane. A host that does not hold a listing, or (the
/// original coordinator) has no such route, is fine. Returns the hosts that could
/// not be reached, with why. With `before_close`, a host whose lane comes free
/// only once `close` has begun, and before it withdraws, is left to `close`,
/// which withdraws the listings in its own round, bounded as a whole (see
/// [`Inner::withdraw_at_close`]).
pub(crate) async fn withdraw(
    inner: &Arc<Inner>,
    listings: Vec<Listing>,
    hosts: Vec<String>,
    before_close: bool,
) -> BTreeMap<String, RemoteError> {
    let listings = Arc::new(listings);
    let hosts = hosts.into_iter().map(|host| (host, ())).collect();
    let per_host = in_lanes(inner, hosts, |inner, host, ()| {
        let listings = listings.clone();
        async move {
            if before_close && inner.is_closed() {
                let mut later = inner
                    .withdraw_at_close
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // `None`: `close` has taken what it withdraws; this goes on.
                if let Some(later) = later.as_mut() {
                    add_new(later, listings.iter().cloned());
                    return BTreeMap::new();
                }
            }
            let published = inner.listings();
            let gone: Vec<Listing> = listings
                .iter()
                .filter(|l| !published.iter().any(|p| p.key() == l.key()))
                .cloned()
                .collect();
            let results = fan_out(Some(&inner.tasks), gone, |listing| {
                let (remote, host) = (inner.remote.clone(), host.clone());
                async move {
                    match remote.unpublish(&host, &listing).await {
                        Ok(_) => Ok(()),
                        Err(RemoteError::Status {
                            status: 404 | 405, ..
                        }) => {
                            tracing::debug!(
                                coordinator = host.as_str(),
                                "no DELETE route: the listing will expire"
                            );
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
            })
            .await;
            let results = results.into_iter().map(|r| (host.clone(), r)).collect();
            report(&inner, "withdraw", results, false)
        }
    })
    .await;
    per_host.into_iter().flatten().collect()
}

/// Adds to `listings` each of `more` whose `(service, host)` is not there yet.
pub(crate) fn add_new(listings: &mut Vec<Listing>, more: impl IntoIterator<Item = Listing>) {
    for listing in more {
        if !listings.iter().any(|l| l.key() == listing.key()) {
            listings.push(listing);
        }
    }
}

/// Logs failures, one line per host; records who answered, and with `strike`,
/// gives the hosts found broken a strike. Returns the failures by host.
fn report(
    inner: &Inner,
    verb: &str,
    results: Vec<(String, Result<(), RemoteError>)>,
    strike: bool,
) -> BTreeMap<String, RemoteError> {
    let mut failures: BTreeMap<String, (usize, RemoteError)> = BTreeMap::new();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for (host, result) in results {
        match result {
            Ok(()) => {
                // It took a write: it works, and may be given probation again.
                inner.took_a_write(&host);
                answered.insert(host);
            }
            Err(error) => {
                failures
                    .entry(host)
                    .and_modify(|(count, _)| *count += 1)
                    .or_insert((1, error));
            }
        }
    }
    let mut errors = BTreeMap::new();
    for (host, (count, error)) in failures {
        tracing::warn!(coordinator = host.as_str(), %error, listings = count, "{verb} failed");
        // A host that answered some calls, or refused, is alive. One that is
        // broken gets a strike in a heartbeat round, and is retried: soon after
        // a new failure, on the backoff while it goes on failing.
        if !error.is_broken() {
            answered.insert(host.clone());
        } else if !answered.contains(&host) {
            // Suspected first: a new failure is retried soon, one failing already
            // on the retry backoff (a coordinator that answers `/status` but
            // fails every write would otherwise get every listing ten times a
            // second).
            inner.suspect(&host);
            if strike {
                inner.struck(&host, &error);
            }
        }
        errors.insert(host, error);
    }
    for host in &answered {
        inner.answered(host);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn heartbeats_come_each_interval_and_retries_back_off_between() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, MINUTE);
        assert!(s.wake() >= t0 + MINUTE * 9 / 10 && s.wake() <= t0 + MINUTE);
        // A failure: retried soon, then on a doubling backoff while it lasts.
        s.retry_soon(t0);
        assert_eq!(s.wake(), t0 + RETRY_MIN);
        assert_eq!(s.due(s.wake()), Round::Retry);
        let mut at = s.wake();
        let mut gaps = Vec::new();
        for _ in 0..5 {
            s.started(at, Round::Retry, true, MINUTE);
            gaps.push(s.wake() - at);
            at = s.wake();
        }
        for (gap, max) in gaps.iter().zip([100, 200, 400, 800, 1_600]) {
            let max = Duration::from_millis(max);
            assert!(*gap >= max / 2 && *gap <= max, "{gap:?} within {max:?}");
        }
        // It answers: no retry, the backoff starts over.
        s.started(at, Round::Retry, false, MINUTE);
        assert!(s.wake() >= t0 + MINUTE * 9 / 10);
        assert_eq!(s.due(s.wake()), Round::Heartbeat);
        let beat = s.wake();
        s.started(beat, Round::Heartbeat, true, MINUTE);
        assert!(
            s.wake() - beat <= RETRY_MIN,
            "from the start of the backoff"
        );
        // The interval in force at each heartbeat sets the next, announced or
        // not (the coordinator that announced the shortest was dropped).
        s.started(beat, Round::Retry, false, MINUTE);
        s.started(beat, Round::Heartbeat, false, MINUTE * 3);
        assert!(s.wake() - beat > MINUTE * 2, "the longer interval");
        // So does the retry backoff's cap: retries of a failing coordinator
        // never wait longer than the interval in force.
        let second = Duration::from_secs(1);
        s.started(beat, Round::Heartbeat, true, second);
        let mut at = beat;
        for _ in 0..20 {
            s.started(at, Round::Retry, true, second);
            assert!(s.wake() - at <= second, "capped by the interval");
            at = s.wake();
        }
    }

    #[test]
    fn an_interval_change_never_holds_heartbeats_off() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, MINUTE);
        // Shorter, after more than the new interval: a heartbeat at once.
        s.interval_changed(t0 + Duration::from_secs(50), Duration::from_secs(30));
        assert_eq!(s.wake(), t0 + Duration::from_secs(50));
        assert_eq!(s.due(s.wake()), Round::Heartbeat);
        let last = s.wake();
        s.started(last, Round::Heartbeat, false, Duration::from_secs(30));
        // Changes every 5 s, back and forth: the next heartbeat stays within an
        // interval of the last (once then, at once), rather than one interval
        // after each change.
        let mut changes = 0;
        for k in 1..=20u32 {
            let interval = Duration::from_secs(if k % 2 == 0 { 20 } else { 25 });
            let now = last + Duration::from_secs(5) * k;
            s.interval_changed(now, interval);
            changes += 1;
            if s.wake() <= now {
                break;
            }
            assert!(s.wake() <= last + interval, "{k}: within an interval");
        }
        assert!(
            changes >= 4,
            "several changes before the heartbeat: {changes}"
        );
        assert!(s.wake() <= last + Duration::from_secs(25));
    }
}
