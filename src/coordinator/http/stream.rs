//! Streams: `GET /v1/listings/:service`, `/v1/listings` and `/v1/coordinator` with
//! `?stream=true` (any value but `false`), or without it an `Accept` that prefers
//! `text/event-stream` to JSON ([`wanted`]), answer Server-Sent Events.
//!
//! The first event carries the whole state (the JSON array the plain `GET`
//! answers); after that, one event per change of the index, each with `id:` set to the index
//! and `data:` to the array. A comment (`: keep-alive`) goes out when nothing
//! changed for `stream_keepalive`. A client that reconnects with
//! `Last-Event-ID: N` gets no first event while the index is still `N`; so does
//! one that asks with `?index=N` (a browser's `EventSource` can say what it has
//! only in its URL on its first connection; `Last-Event-ID` wins). `wait` means
//! nothing to a stream.
//!
//! **States, not deltas.** Served by hyper (over TLS, after another request on
//! its connection, or asked in a way `direct.rs` leaves to hyper), the body is
//! produced when hyper asks for more, and each event is the state at that moment:
//! a reader that falls behind (its socket's buffers full, so hyper stops asking)
//! gets the newest state when it catches up, never a backlog, and costs the others
//! nothing. Such a stream is an entry in the topic's waiters ([`StreamHold`]) plus
//! this small state: no task, no queue. A change is rendered as an event once, by
//! the first of the topic's streams to send it, and the others send the same
//! bytes. A stream first on a plain connection is taken over ([`Takeover`]) and
//! written by its topic's broadcaster instead (`broadcast.rs`), with the same
//! events. Streams are capped (`max_streams`, `503` past it), counted
//! (`hakken_streams`), and end when the coordinator shuts down.

use super::answer::{to_json_bytes, ApiError};
use crate::coordinator::changes::Topic;
use crate::coordinator::Shared;
use crate::coordinator::StreamHold;
use crate::protocol::KEEPALIVE_HEADER;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Whether a request asks for a stream: `?stream` (any value but `false`), or an
/// `Accept` that prefers `text/event-stream` to `application/json`.
pub(crate) fn wanted(headers: &HeaderMap, stream_param: Option<&str>) -> bool {
    if let Some(value) = stream_param {
        return value != "false";
    }
    prefers_stream(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// Whether `Accept` values rank `text/event-stream` above `application/json`: by
/// their `q`, then by which comes first. Without `application/json`, `*/*` or
/// `application/*` stands for it, by its `q` alone (`text/event-stream;q=0.1,
/// */*` is JSON; `*/*, text/event-stream` a stream: it was named).
fn prefers_stream<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    let mut stream = None;
    let mut json = None;
    let mut wildcard = None;
    for (at, range) in accept.flat_map(|value| value.split(',')).enumerate() {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let slot = if media.eq_ignore_ascii_case("text/event-stream") {
            &mut stream
        } else if media.eq_ignore_ascii_case("application/json") {
            &mut json
        } else if media == "*/*" || media.eq_ignore_ascii_case("application/*") {
            &mut wildcard
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.trim().split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, q)| q.trim().parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        slot.get_or_insert((q, at));
    }
    // Named beats a wildcard of the same `q`, wherever it comes.
    let json = json.or(wildcard.map(|(q, _)| (q, usize::MAX)));
    match (stream, json) {
        (Some((q, _)), _) if q <= 0.0 => false,
        (Some(_), None) => true,
        (Some((q_stream, at_stream)), Some((q_json, at_json))) => {
            q_stream > q_json || (q_stream == q_json && at_stream < at_json)
        }
        (None, _) => false,
    }
}

/// The index a reconnecting client saw last (`Last-Event-ID`).
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The state a topic's stream carries, with its index.
pub(super) fn current(shared: &Shared, topic: &Topic) -> (u64, Bytes) {
    match topic {
        Topic::Service(service) => match shared.listings_json(service) {
            Ok(answer) => answer,
            Err(index) => (index, Bytes::from_static(b"[]")),
        },
        Topic::Services => shared.services_json(),
        Topic::Coordinators => shared.read_membership(|m| (m.index(), to_json_bytes(&m.list()))),
    }
}

/// One event: `id: INDEX`, `data: JSON` (compact JSON has no line breaks).
pub(super) fn event(index: u64, data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 32);
    event.extend_from_slice(b"id: ");
    event.extend_from_slice(index.to_string().as_bytes());
    event.extend_from_slice(b"\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// `every` after `at`, or as far as the clock goes (a keep-alive interval so long
/// it means "never").
pub(super) fn later(at: Instant, every: Duration) -> Instant {
    at.checked_add(every)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// An open stream: what it waits on and what it sent last.
///
/// Its keep-alive timer and its wait for shutdown are made once, not per event:
/// a change costs a stream no timer, one registration with the topic's notifier
/// and one read of the state. The timer is moved only when it fires early
/// (something was sent since it was set).
pub(crate) struct Open {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: Topic,
    pub(super) hold: StreamHold,
    /// A wait for the topic's next change, registered before the state `sent`
    /// was read (so a change since has fired it); none once it fired.
    armed: Pin<Box<Option<OwnedNotified>>>,
    pub(super) sent: Option<u64>,
    /// When the stream last wrote anything.
    wrote: Instant,
    pub(super) keepalive: Pin<Box<Sleep>>,
    pub(super) shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.metrics.streams.dec();
    }
}

/// What a stream sends next.
enum Step {
    Send(Bytes),
    KeepAlive,
    End,
}

impl Open {
    fn new(shared: Arc<Shared>, topic: Topic, hold: StreamHold, sent: Option<u64>) -> Self {
        let every = shared.config.stream_keepalive;
        let shutdown = Box::pin(shared.shutdown.clone().cancelled_owned());
        Open {
            shared,
            topic,
            hold,
            armed: Box::pin(None),
            sent,
            wrote: Instant::now(),
            keepalive: Box::pin(tokio::time::sleep(every)),
            shutdown,
        }
    }

    /// Waits until there is something to send: a new state, a keep-alive, or the
    /// end (shutdown).
    async fn step(&mut self) -> Step {
        loop {
            if let Some(step) = self.turn().await {
                return step;
            }
        }
    }

    /// One turn: the state if it changed since it was sent, else a wait for a
    /// change (then `None`: look again), a keep-alive or the end.
    async fn turn(&mut self) -> Option<Step> {
        // The wait below looks at a change first: under changes that never stop,
        // this is where the end is seen.
        if self.shared.shutdown.is_cancelled() {
            return Some(Step::End);
        }
        if self.armed.is_none() {
            // Registered before the state is read, so a change in between is not
            // missed; it stays registered while what was read is sent.
            self.armed.set(Some(self.hold.notified()));
            if let Some(armed) = self.armed.as_mut().as_pin_mut() {
                armed.enable();
            }
            let (index, data) = current(&self.shared, &self.topic);
            if self.sent != Some(index) {
                self.sent = Some(index);
                self.wrote = Instant::now();
                return Some(Step::Send(
                    self.hold.rendered(index, || event(index, &data)),
                ));
            }
        }
        let every = self.shared.config.stream_keepalive;
        loop {
            // Armed above, or before the state last sent was read.
            let armed = self.armed.as_mut().as_pin_mut()?;
            // In this order, with no random pick: a change, the likeliest, is the
            // only thing polled when it is what woke the stream.
            tokio::select! {
                biased;
                _ = armed => {
                    self.armed.set(None);
                    return None;
                }
                _ = self.keepalive.as_mut() => {
                    let due = later(self.wrote, every);
                    if due > Instant::now() {
                        self.keepalive.as_mut().reset(due);
                        continue;
                    }
                    self.wrote = Instant::now();
                    self.keepalive.as_mut().reset(later(self.wrote, every));
                    return Some(Step::KeepAlive);
                }
                _ = self.shutdown.as_mut() => return Some(Step::End),
            }
        }
    }
}

/// Answers a stream of `topic` (see the module), resuming from `Last-Event-ID`,
/// else from the request's `index` (`seen`: a browser's `EventSource` cannot
/// name the index it has on its first connection, only in its URL).
pub(super) fn open(
    shared: &Arc<Shared>,
    topic: Topic,
    headers: &HeaderMap,
    seen: Option<u64>,
) -> Response {
    let Some(hold) = shared.changes.open_stream(topic.clone()) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open streams: try again later, or use a blocking query",
        )
        .into_response();
    };
    shared.metrics.streams.inc();
    let open = Open::new(shared.clone(), topic, hold, last_event_id(headers).or(seen));
    // Taken by a server that writes the stream itself (`broadcast.rs`) before the
    // body is read, it leaves the body empty.
    let takeover = Takeover(Arc::new(Mutex::new(Some(open))));
    let slot = takeover.clone();
    let events = futures_util::stream::unfold(None, move |open: Option<Open>| {
        let slot = slot.clone();
        async move {
            let mut open = match open {
                Some(open) => open,
                None => slot.take()?,
            };
            let frame = match open.step().await {
                Step::Send(event) => event,
                Step::KeepAlive => Bytes::from_static(b": keep-alive\n\n"),
                Step::End => return None,
            };
            Some((Ok::<_, Infallible>(frame), Some(open)))
        }
    });
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let keepalive = shared.config.stream_keepalive.as_millis();
    headers.insert(KEEPALIVE_HEADER, HeaderValue::from(keepalive as u64));
    // nginx passes the events on as they come instead of buffering them.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(takeover);
    response
}

/// An open stream, for a server that writes it itself rather than read its body.
#[derive(Clone)]
pub(crate) struct Takeover(Arc<Mutex<Option<Open>>>);

impl Takeover {
    /// The stream, unless it was taken already (by this or by the body).
    pub(crate) fn take(&self) -> Option<Open> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::CoordinatorConfig;
    use crate::Listing;

    /// A coordinator whose streams keep alive every `keepalive`, and a stream of
    /// `topic` opened on it.
    fn opened(keepalive: Duration, topic: Topic) -> (Arc<Shared>, Open) {
        let config = CoordinatorConfig {
            stream_keepalive: keepalive,
            ..CoordinatorConfig::default()
        };
        let (shared, _) = Shared::new(config, 1).unwrap();
        let hold = shared.changes.open_stream(topic.clone()).unwrap();
        let open = Open::new(shared.clone(), topic, hold, None);
        (shared, open)
    }

    /// What the next step is, and how long (paused time) it took.
    async fn next(open: &mut Open) -> (Step, Duration) {
        let started = Instant::now();
        let step = open.step().await;
        (step, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_follows_a_quiet_interval_whatever_was_sent_before() {
        let (shared, mut open) = opened(Duration::from_secs(10), Topic::Service("s".into()));
        let (first, waited) = next(&mut open).await;
        assert!(matches!(first, Step::Send(_)) && waited.is_zero());
        // A change 4 s in: its event goes out at once, and the keep-alive that
        // was due at 10 s waits for 10 s of quiet after it.
        tokio::time::sleep(Duration::from_secs(4)).await;
        shared.upsert(Listing::new("s", "a:1").unwrap()).unwrap();
        let (Step::Send(event), waited) = next(&mut open).await else {
            panic!("the change was not sent");
        };
        assert!(waited.is_zero());
        assert!(String::from_utf8_lossy(&event).contains(r#""host":"a:1""#));
        let (step, waited) = next(&mut open).await;
        assert!(matches!(step, Step::KeepAlive));
        assert_eq!(waited, Duration::from_secs(10));
        let (step, waited) = next(&mut open).await;
        assert!(matches!(step, Step::KeepAlive));
        assert_eq!(waited, Duration::from_secs(10));
        shared.shutdown.cancel();
        assert!(matches!(next(&mut open).await.0, Step::End));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_goes_before_a_keep_alive_due_and_one_after_it_is_not_missed() {
        let (shared, mut open) = opened(Duration::from_secs(10), Topic::Service("s".into()));
        assert!(matches!(open.step().await, Step::Send(_)));
        // The stream waits (its keep-alive timer set for 10 s), then the
        // keep-alive is due and a change is waiting: the change goes.
        let quiet = tokio::time::timeout(Duration::from_secs(5), open.step()).await;
        assert!(quiet.is_err(), "nothing to send in the first 5 s");
        tokio::time::sleep(Duration::from_secs(5)).await;
        shared.upsert(Listing::new("s", "a:1").unwrap()).unwrap();
        let (step, waited) = next(&mut open).await;
        assert!(matches!(step, Step::Send(_)) && waited.is_zero());
        let (step, waited) = next(&mut open).await;
        assert!(matches!(step, Step::KeepAlive));
        assert_eq!(waited, Duration::from_secs(10));
        // A change made while the keep-alive is out is sent next, at once.
        shared.upsert(Listing::new("s", "b:1").unwrap()).unwrap();
        let (Step::Send(event), waited) = next(&mut open).await else {
            panic!("the change after a keep-alive was not sent");
        };
        assert!(waited.is_zero());
        assert!(String::from_utf8_lossy(&event).contains(r#""host":"b:1""#));
    }

    #[tokio::test]
    async fn a_stream_ends_at_shutdown_even_with_a_change_waiting() {
        let keepalive = CoordinatorConfig::default().stream_keepalive;
        let (shared, mut open) = opened(keepalive, Topic::Service("s".into()));
        assert!(matches!(open.step().await, Step::Send(_)));
        // A change is waiting when the coordinator shuts down: the stream ends
        // without sending it. (Its wait looks at a change before the shutdown, so
        // each turn looks at the shutdown first.)
        shared.upsert(Listing::new("s", "a:1").unwrap()).unwrap();
        shared.shutdown.cancel();
        assert!(matches!(open.step().await, Step::End));
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_interval_too_long_to_count_means_none() {
        let (_shared, mut open) = opened(Duration::MAX, Topic::Services);
        assert!(matches!(open.step().await, Step::Send(_)));
        // tokio's timer gives up at 30 years: the keep-alive timer fires then, and
        // finds the next keep-alive still beyond the clock's reach.
        let forty_years = Duration::from_secs(40 * 365 * 86_400);
        let quiet = tokio::time::timeout(forty_years, open.step());
        assert!(quiet.await.is_err(), "nothing to send for forty years");
    }

    #[tokio::test]
    async fn a_change_is_rendered_once_for_every_stream_of_its_topic() {
        let (shared, _) = Shared::new(CoordinatorConfig::default(), 1).unwrap();
        let topic = Topic::Service("s".into());
        shared.upsert(Listing::new("s", "a:1").unwrap()).unwrap();
        let mut streams: Vec<Open> = (0..3)
            .map(|_| {
                let hold = shared.changes.open_stream(topic.clone()).unwrap();
                Open::new(shared.clone(), topic.clone(), hold, None)
            })
            .collect();
        let mut events = Vec::new();
        for open in &mut streams {
            let Step::Send(event) = open.step().await else {
                panic!("no first event");
            };
            events.push(event);
        }
        // The same bytes, not copies of them.
        assert!(events
            .iter()
            .all(|e| e.as_ptr() == events[0].as_ptr() && e == &events[0]));
    }

    #[test]
    fn events_and_requests() {
        assert_eq!(&event(7, b"[1]")[..], b"id: 7\ndata: [1]\n\n");
        let mut headers = HeaderMap::new();
        assert!(!wanted(&headers, None));
        assert!(wanted(&headers, Some("true")));
        assert!(!wanted(&headers, Some("false")));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(wanted(&headers, None));
        assert!(!wanted(&headers, Some("false")), "the parameter decides");
        let prefers = |accept: &str| prefers_stream(std::iter::once(accept));
        assert!(prefers("text/event-stream"));
        assert!(prefers("text/event-stream, application/json"));
        assert!(prefers("Text/Event-Stream;charset=utf-8, */*"));
        assert!(!prefers("text/event-stream;q=0.1, */*"));
        assert!(prefers("*/*, text/event-stream"));
        assert!(!prefers("*/*;q=1, text/event-stream;q=0.9"));
        // A q that is not a number between 0 and 1 counts as 1, or is clamped.
        assert!(!prefers("application/json;q=NaN, text/event-stream;q=0.5"));
        assert!(!prefers("application/json;q=abc, text/event-stream"));
        assert!(prefers("application/json;q=0.5, text/event-stream;q=2"));
        assert!(!prefers("text/event-stream;q=-1"));
        assert!(prefers("text/event-stream, application/*;q=0.9"));
        assert!(prefers("application/json;q=0.5, text/event-stream"));
        assert!(!prefers("application/json, text/event-stream"));
        assert!(!prefers("text/event-stream;q=0.5, application/json"));
        assert!(!prefers("text/event-stream;q=0"));
        assert!(!prefers("*/*"));
        assert!(!prefers("application/json"));
        assert!(!prefers(""));
        assert_eq!(last_event_id(&headers), None);
        headers.insert("last-event-id", HeaderValue::from_static(" 42 "));
        assert_eq!(last_event_id(&headers), Some(42));
        headers.insert("last-event-id", HeaderValue::from_static("x"));
        assert_eq!(last_event_id(&headers), None);
    }
}
