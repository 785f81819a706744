//! Following one coordinator at a time: the engine under every watch, and under
//! the client's view of the coordinator list.
//!
//! A [`Follower`] asks one route (a service's listings, the coordinator list) of one
//! coordinator, picked at random among those the client knows (the configured host
//! when it knows none). When that coordinator answers with an index (ours do), the
//! next request is a blocking query that it holds until the route changes, so
//! changes arrive within milliseconds; otherwise (the original coordinator) the
//! follower polls. When the coordinator fails, the follower leaves it aside and
//! asks another; when every one failed, it keeps looking with backoff and jitter.
//!
//! A follower made [`streaming`](Follower::streaming) asks ours for a stream
//! instead (Server-Sent Events): one request, then each change as one small
//! event, with no request in between. A coordinator that answers a stream request
//! once (an older one of ours) or refuses it (`503`, at its cap on streams) is
//! followed with blocking queries for a while, and the original's with polling:
//! the fallbacks, in that order. A coordinator that is not complete yet is
//! followed with blocking queries, whose answers say when it becomes complete.
//!
//! One call of [`Follower::next`] is one step: pick a coordinator, ask (or read
//! the open stream), and either hand back the answer or take the failure and go
//! on. The pauses between steps (polling, backing off) are taken at the start of
//! the next call.

use super::Inner;
use crate::backoff::{jittered, Backoff};
use crate::remote::{Answer, Ask, Blocking, Events, Opened, RemoteError};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// First delay before looking again when no coordinator could be asked.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest delay between two rounds of looking for a coordinator.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// First pause after a blocking query came back at once with nothing new.
const EARLY_MIN: Duration = Duration::from_millis(250);
/// A stream that ends sooner than this after it opened is not asked for again
/// for [`EXCLUSION`]: something between (a proxy) or the coordinator keeps cutting
/// it, and blocking queries do not spin.
const STREAM_MIN_LIFE: Duration = Duration::from_secs(1);
/// How long a failed coordinator is left aside, unless another one answers first;
/// also how long one that did not stream is followed without asking it to.
const EXCLUSION: Duration = Duration::from_secs(30);

/// What one step of following produced.
#[derive(Debug)]
pub(crate) enum Event<T> {
    /// `host` answered.
    Answer {
        /// The coordinator asked.
        host: String,
        /// What it answered.
        answer: Answer<T>,
    },
    /// Every coordinator was tried this round and failed; `host` was the last.
    Exhausted {
        /// The coordinator asked last.
        host: String,
        /// How it failed.
        error: RemoteError,
    },
}

/// The coordinator a follower follows now, shared with whoever reports it.
pub(crate) type Followed = Arc<Mutex<Option<String>>>;

/// Follows one route; `ask` makes the call (`remote, host, how`).
pub(crate) struct Follower<Q, T> {
    inner: Arc<Inner>,
    ask: Q,
    /// For logs: what is followed.
    what: String,
    /// How long a coordinator may hold a blocking query.
    wait: Duration,
    /// How often to poll a coordinator without blocking queries.
    poll: fn(&Inner) -> Duration,
    followed: Followed,
    current: Option<String>,
    /// The index of the last answer from `current`.
    index: Option<u64>,
    /// Which coordinator gave `index` (`X-Hakken-Coordinator`): behind a load
    /// balancer, an index from one coordinator means nothing to another.
    answerer: Option<String>,
    /// Coordinators that failed this follower, and since when the first of them.
    excluded: HashSet<String>,
    excluded_since: Instant,
    last_error: Option<(String, RemoteError)>,
    /// Whether a failure was warned of since the last answer: the rest of an
    /// outage (a retry every few seconds) is logged at debug, not warned of again.
    warned: bool,
    /// Whether to ask ours for streams.
    streams: bool,
    /// The stream open on `current`, if any, and since when.
    stream: Option<Box<Events<T>>>,
    stream_opened: Instant,
    /// Whether `current`'s last answer said it is complete (or did not say).
    complete: bool,
    /// Coordinators that did not stream when asked, and since when the first.
    no_streams: HashSet<String>,
    no_streams_since: Instant,
    retry: Backoff,
    early: Backoff,
    /// Taken before the next request.
    pause: Option<Duration>,
    /// Whether which coordinator is followed and that one answers again are
    /// logged at `info`, and an outage always warned of: a watch's follower does;
    /// the client's own follower of the coordinator list says it at `debug`, and
    /// warns of an outage only when no watch or heartbeat would (see `warns`).
    tell: bool,
    /// The coordinator last said to be followed, not to say it again on its
    /// return.
    told: Option<String>,
}

impl<T, Q, Fut> Follower<Q, T>
where
    Q: Fn(crate::remote::Remote, String, Ask) -> Fut,
    Fut: Future<Output = Result<Opened<T>, RemoteError>>,
{
    /// A follower of the route `ask` calls, holding queries up to `wait`.
    pub fn new(
        inner: Arc<Inner>,
        what: String,
        wait: Duration,
        poll: fn(&Inner) -> Duration,
        ask: Q,
    ) -> Self {
        Follower {
            inner,
            ask,
            what,
            wait,
            poll,
            followed: Arc::new(Mutex::new(None)),
            current: None,
            index: None,
            answerer: None,
            excluded: HashSet::new(),
            excluded_since: Instant::now(),
            last_error: None,
            warned: false,
            streams: false,
            stream: None,
            stream_opened: Instant::now(),
            complete: true,
            no_streams: HashSet::new(),
            no_streams_since: Instant::now(),
            retry: Backoff::new(RETRY_MIN, RETRY_MAX),
            early: Backoff::new(EARLY_MIN, RETRY_MAX),
            pause: None,
            tell: false,
            told: None,
        }
    }

    /// Says at `info` which coordinator it follows, and when one answers again.
    pub fn telling(mut self) -> Self {
        self.tell = true;
        self
    }

    /// Whether an outage beginning now is warned of: by a watch's follower
    /// always; by the coordinator list's only when the client neither watches nor
    /// publishes (else those warn of it, and once is enough).
    fn warns(&self) -> bool {
        self.tell || !(self.inner.watches() || self.inner.publishes())
    }

    /// Logs `message` about `host`: at `info` when this follower tells, else at
    /// `debug`.
    fn tell(&self, host: &str, message: &'static str) {
        if self.tell {
            tracing::info!(what = self.what.as_str(), coordinator = host, "{message}");
        } else {
            tracing::debug!(what = self.what.as_str(), coordinator = host, "{message}");
        }
    }

    /// Names the coordinator followed now in `cell` (which a watch reports).
    pub fn reporting_to(mut self, cell: Followed) -> Self {
        self.followed = cell;
        self
    }

    /// Asks ours for streams rather than blocking queries.
    pub fn streaming(mut self) -> Self {
        self.streams = true;
        self
    }

    /// Follows `host` now (none: picks one at the next step). Any stream open on
    /// the coordinator followed before is closed.
    fn set_followed(&mut self, host: Option<String>) {
        *self.followed.lock().unwrap_or_else(PoisonError::into_inner) = host.clone();
        self.current = host;
        self.stream = None;
        self.complete = true;
    }

    /// Whether to ask `host` for a stream: ours (it answered with an index, or
    /// the client knows it as ours), complete, and not found without streams lately.
    fn wants_stream(&mut self, host: &str) -> bool {
        if !self.no_streams.is_empty() && self.no_streams_since.elapsed() > EXCLUSION {
            self.no_streams.clear();
        }
        self.streams
            && self.complete
            && !self.no_streams.contains(host)
            && (self.index.is_some() || self.inner.ours().iter().any(|h| h == host))
    }

    /// Notes that `host` did not stream when asked.
    fn without_streams(&mut self, host: &str) {
        if self.no_streams.is_empty() {
            self.no_streams_since = Instant::now();
        }
        tracing::info!(
            what = self.what.as_str(),
            coordinator = host,
            "not asking the coordinator for streams for a while; following it with blocking queries"
        );
        self.no_streams.insert(host.to_owned());
    }

    /// Reads the next state of the stream open on `host`.
    async fn read_stream(&mut self, host: String) -> Option<Event<T>> {
        let events = self.stream.as_mut()?;
        match guarded(&self.inner, &host, events.next()).await {
            Ok(answer) => {
                self.on_answer(&host, &answer, None, Instant::now());
                Some(Event::Answer { host, answer })
            }
            Err(error) => {
                if self.stream_opened.elapsed() < STREAM_MIN_LIFE {
                    self.without_streams(&host);
                }
                match error {
                    // Ended cleanly: ask again (this coordinator or another).
                    RemoteError::Ended { .. } => {
                        tracing::debug!(
                            what = self.what.as_str(),
                            coordinator = host.as_str(),
                            "the coordinator ended the stream"
                        );
                        self.set_followed(None);
                        self.index = None;
                        self.answerer = None;
                    }
                    error => self.on_error(host, error),
                }
                None
            }
        }
    }

    /// One step: reads the open stream, or waits out the pause the last step
    /// asked for, then asks a coordinator, going on to the next one while they fail.
    pub async fn next(&mut self) -> Event<T> {
        loop {
            if let (Some(host), Some(_)) = (self.current.clone(), &self.stream) {
                match self.read_stream(host).await {
                    Some(event) => return event,
                    None => continue,
                }
            }
            if let Some(pause) = self.pause.take() {
                tokio::time::sleep(pause).await;
            }
            if !self.excluded.is_empty() && self.excluded_since.elapsed() > EXCLUSION {
                self.excluded.clear();
            }
            let Some(host) = self.current.clone().or_else(|| self.pick()) else {
                // Every coordinator failed this round: look again after a while.
                self.excluded.clear();
                let delay = self.retry.next_delay().min(self.inner.heartbeat_interval());
                if !self.outage_begins() || !self.warns() {
                    tracing::debug!(
                        what = self.what.as_str(),
                        retry_ms = delay.as_millis() as u64,
                        "no coordinator answers"
                    );
                } else {
                    tracing::warn!(
                        what = self.what.as_str(),
                        retry_ms = delay.as_millis() as u64,
                        "no coordinator answers; keeping what we have"
                    );
                }
                self.pause = Some(delay);
                match self.last_error.take() {
                    Some((host, error)) => return Event::Exhausted { host, error },
                    None => continue,
                }
            };
            if self.current.is_none() {
                // Once per new choice; during an outage (every few seconds, until
                // one answers), or the same one again, at debug.
                if self.warned || self.told.as_ref() == Some(&host) {
                    tracing::debug!(
                        what = self.what.as_str(),
                        coordinator = host.as_str(),
                        "trying coordinator"
                    );
                } else {
                    self.tell(&host, "following coordinator");
                    self.told = Some(host.clone());
                }
                self.set_followed(Some(host.clone()));
            }
            let blocking = self.index.map(|index| Blocking {
                index,
                wait: self.wait,
            });
            let ask = if self.wants_stream(&host) {
                Ask::Stream
            } else {
                Ask::Once(blocking)
            };
            let asked = Instant::now();
            let call = (self.ask)(self.inner.remote.clone(), host.clone(), ask);
            match guarded(&self.inner, &host, call).await {
                Ok(Opened::Stream(events)) => {
                    self.complete = events.head().complete != Some(false);
                    self.stream = Some(events);
                    self.stream_opened = Instant::now();
                }
                Ok(Opened::Answer(answer)) => {
                    if ask == Ask::Stream {
                        self.without_streams(&host);
                    }
                    self.on_answer(&host, &answer, ask.blocking(), asked);
                    return Event::Answer { host, answer };
                }
                // At its cap on streams: a blocking query at once.
                Err(RemoteError::Status { status: 503, .. }) if ask == Ask::Stream => {
                    self.without_streams(&host);
                }
                Err(error) => self.on_error(host, error),
            }
        }
    }

    /// A coordinator to ask: one known and not left aside, at random, preferring
    /// those that are complete, and among them ours (their blocking queries bring
    /// changes at once, where the original's must be polled); else the configured
    /// host unless it was left aside too.
    fn pick(&self) -> Option<String> {
        let candidates: Vec<String> = self
            .inner
            .targets()
            .into_iter()
            .filter(|h| !self.excluded.contains(h))
            .collect();
        if candidates.is_empty() {
            let host = &self.inner.config.host;
            return (!self.excluded.contains(host)).then(|| host.clone());
        }
        let partial = self.inner.partial();
        let ours = self.inner.ours();
        let complete: Vec<&String> = candidates.iter().filter(|h| !partial.contains(h)).collect();
        let complete_ours: Vec<&String> = complete
            .iter()
            .copied()
            .filter(|h| ours.contains(h))
            .collect();
        let tier = [complete_ours, complete]
            .into_iter()
            .find(|tier| !tier.is_empty())
            .unwrap_or_else(|| candidates.iter().collect());
        Some(tier[fastrand::usize(..tier.len())].clone())
    }

    /// Takes an answer: what to ask next, and how long to wait first.
    fn on_answer(
        &mut self,
        host: &str,
        answer: &Answer<T>,
        blocking: Option<Blocking>,
        asked: Instant,
    ) {
        self.retry.reset();
        if std::mem::take(&mut self.warned) {
            self.tell(host, "answered again");
            self.told = Some(host.to_owned());
        }
        self.complete = answer.complete != Some(false);
        if !self.complete {
            // Its blocking queries' answers will say when it becomes complete.
            self.stream = None;
        }
        let known = self.inner.known();
        if known.iter().any(|h| h == host) {
            self.excluded.clear();
        }
        self.inner.note(host, answer);
        let hopped = blocking.is_some()
            && answer.coordinator.is_some()
            && answer.coordinator != self.answerer;
        // A coordinator without blocking queries (the original's) is followed only
        // while none of ours is known: it must be polled.
        let polled = answer.index.is_none();
        if polled
            && self.current.is_some()
            && self.inner.ours().iter().any(|h| !self.excluded.contains(h))
        {
            tracing::info!(
                what = self.what.as_str(),
                coordinator = host,
                "leaving a coordinator without blocking queries for one of ours"
            );
            self.set_followed(None);
            self.index = None;
            self.answerer = None;
            self.pause = None;
            return;
        }
        self.pause = match (answer.index, blocking) {
            // No index: a coordinator without blocking queries; poll.
            (None, _) => Some(jittered((self.poll)(&self.inner))),
            // Back with nothing new well before the hold it granted (it was at its
            // cap on held queries), or from another coordinator behind a load
            // balancer: do not spin.
            (Some(new), Some(b))
                if hopped || (new == b.index && returned_early(answer, b, asked)) =>
            {
                Some(self.early.next_delay().min(self.inner.heartbeat_interval()))
            }
            (Some(_), _) => {
                self.early.reset();
                None
            }
        };
        self.answerer = answer.coordinator.clone();
        // The configured host is the way in, not a coordinator to follow once real
        // ones are known (it may be a load balancer).
        let configured = &self.inner.config.host;
        if host == configured
            && !known.iter().any(|h| h == host)
            && known.iter().any(|h| !self.excluded.contains(h))
        {
            self.set_followed(None);
            self.index = None;
            self.answerer = None;
        }
        if self.current.is_some() {
            self.index = answer.index;
        }
    }

    /// Whether a failure now begins an outage (none was warned of since the last
    /// answer): it is warned of, the rest of the outage logged at debug.
    fn outage_begins(&mut self) -> bool {
        !std::mem::replace(&mut self.warned, true)
    }

    /// Takes a failure: leave `host` aside and go on to another.
    fn on_error(&mut self, host: String, error: RemoteError) {
        if !self.outage_begins() || !self.warns() {
            tracing::debug!(what = self.what.as_str(), coordinator = host.as_str(), %error, "coordinator failed");
        } else {
            tracing::warn!(what = self.what.as_str(), coordinator = host.as_str(), %error, "coordinator failed; keeping what we have until one answers");
        }
        if error.is_broken() {
            self.inner.suspect(&host);
        }
        if self.excluded.is_empty() {
            self.excluded_since = Instant::now();
        }
        self.excluded.insert(host.clone());
        self.set_followed(None);
        self.index = None;
        self.answerer = None;
        self.last_error = Some((host, error));
    }
}

/// Whether a blocking query with nothing new came back well before the hold its
/// coordinator granted (`X-Hakken-Wait`; the asked wait when it does not say).
fn returned_early<T>(answer: &Answer<T>, blocking: Blocking, asked: Instant) -> bool {
    let granted = answer.wait.unwrap_or(blocking.wait);
    granted.is_zero() || asked.elapsed() < granted / 2
}

/// Runs `call` to `host`; gives up at once when the client strikes or drops `host`
/// (a heartbeat round found it broken: cut off, stopped, dead) rather than when
/// the call times out, so that the follower moves to another coordinator.
async fn guarded<R>(
    inner: &Inner,
    host: &str,
    call: impl Future<Output = Result<R, RemoteError>>,
) -> Result<R, RemoteError> {
    let mut drops = inner.dropped.subscribe();
    let followed = inner.known().iter().any(|h| h == host);
    tokio::select! {
        result = call => result,
        () = dropped(inner, &mut drops, host), if followed => Err(RemoteError::Unreachable {
            host: host.to_owned(),
            message: "the client's heartbeats to it failed".into(),
        }),
    }
}

/// Resolves once a round of the client's struck `host` or dropped it.
async fn dropped(inner: &Inner, drops: &mut watch::Receiver<u64>, host: &str) {
    loop {
        if drops.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !inner.known().iter().any(|h| h == host) || inner.failing().iter().any(|h| h == host) {
            return;
        }
    }
}
