//! Streams: `GET /v1/listings/:service`, `/v1/listings` and `/v1/coordinator` with
//! `Accept: text/event-stream` (or `?stream=true`) answer Server-Sent Events.
//!
//! The first event carries the whole state (the JSON array the plain `GET`
//! answers); after that, one event per change, each with `id:` set to the index
//! and `data:` to the array. A comment (`: keep-alive`) goes out when nothing
//! changed for `stream_keepalive`. A client that reconnects with
//! `Last-Event-ID: N` gets no first event while the index is still `N`.
//!
//! **States, not deltas.** The body is produced when hyper asks for more, and
//! each event is the state at that moment: a reader that falls behind (its
//! socket's buffers full, so hyper stops asking) gets the newest state when it
//! catches up, never a backlog, and costs the others nothing. A stream is an
//! entry in the topic's waiters ([`StreamHold`]) plus this small state: no task,
//! no queue. Streams are capped (`max_streams`, `503` past it), counted
//! (`hakken_streams`), and end when the coordinator shuts down.

use super::answer::{to_json_bytes, ApiError};
use crate::coordinator::changes::{StreamHold, Topic};
use crate::coordinator::Shared;
use crate::protocol::KEEPALIVE_HEADER;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;

/// Whether a request asks for a stream.
pub(super) fn wanted(headers: &HeaderMap, stream_param: Option<&str>) -> bool {
    stream_param.is_some_and(|v| v != "false")
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"))
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
fn current(shared: &Shared, topic: &Topic) -> (u64, Bytes) {
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
fn event(index: u64, data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 32);
    event.extend_from_slice(b"id: ");
    event.extend_from_slice(index.to_string().as_bytes());
    event.extend_from_slice(b"\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// An open stream: what it waits on and what it sent last.
struct Open {
    shared: Arc<Shared>,
    topic: Topic,
    hold: StreamHold,
    sent: Option<u64>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.metrics.streams.dec();
    }
}

/// What one turn of a stream produces.
enum Step {
    Send(Bytes),
    Changed,
    KeepAlive,
    End,
}

impl Open {
    /// Waits until there is something to send: a new state, a keep-alive, or the
    /// end (shutdown).
    async fn step(&mut self) -> Step {
        let notified = self.hold.notify().notified();
        tokio::pin!(notified);
        // Registered before the state is read, so a change in between is not missed.
        notified.as_mut().enable();
        let (index, data) = current(&self.shared, &self.topic);
        if self.sent != Some(index) {
            self.sent = Some(index);
            return Step::Send(event(index, &data));
        }
        tokio::select! {
            _ = notified => Step::Changed,
            _ = tokio::time::sleep(self.shared.config.stream_keepalive) => Step::KeepAlive,
            _ = self.shared.shutdown.cancelled() => Step::End,
        }
    }
}

/// Answers a stream of `topic` (see the module).
pub(super) fn open(shared: &Arc<Shared>, topic: Topic, headers: &HeaderMap) -> Response {
    let Some(hold) = shared.changes.open_stream(topic.clone()) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open streams: try again later, or use a blocking query",
        )
        .into_response();
    };
    shared.metrics.streams.inc();
    let open = Open {
        shared: shared.clone(),
        topic,
        hold,
        sent: last_event_id(headers),
    };
    let events = futures_util::stream::unfold(open, |mut open| async move {
        loop {
            match open.step().await {
                Step::Send(event) => return Some((Ok::<_, Infallible>(event), open)),
                Step::KeepAlive => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), open))
                }
                Step::Changed => continue,
                Step::End => return None,
            }
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
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(last_event_id(&headers), None);
        headers.insert("last-event-id", HeaderValue::from_static(" 42 "));
        assert_eq!(last_event_id(&headers), Some(42));
        headers.insert("last-event-id", HeaderValue::from_static("x"));
        assert_eq!(last_event_id(&headers), None);
    }
}
