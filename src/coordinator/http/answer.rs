//! What a client gets back: JSON answers from bytes serialized once, and
//! [`ApiError`], the one error type of the HTTP layer, answered as
//! `{"error": "..."}` with a 4xx (or 503) status. Nothing a client sends can panic
//! a handler or change state when it is refused.

use crate::coordinator::warnings::WarnEvery;
use crate::listing::DecodeError;
use crate::protocol::INDEX_HEADER;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// An error answered to a client as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// A `401` that also offers HTTP Basic (reads only, see admission).
    basic: bool,
    /// Said with `Connection: close`: the request's body was left unread, so the
    /// connection cannot carry another request (hyper closes it).
    close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            basic: false,
            close: false,
        }
    }

    /// The same error, telling the client that the connection closes after it.
    pub fn closing(self) -> Self {
        ApiError {
            close: true,
            ..self
        }
    }

    /// A `401` asking for the token: as Bearer, and for a read also as the
    /// password of HTTP Basic credentials (what a browser can be asked for).
    pub fn unauthorized(read: bool) -> Self {
        ApiError {
            basic: read,
            ..Self::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// Most kinds of refusal remembered (a handful exist; all are forgotten when
/// more come, so that the memory stays bounded whatever the messages hold).
const REFUSAL_KINDS: usize = 32;

/// Refusals of each kind (one message), warned of at most once a minute: a
/// coordinator at a cap refuses every client that retries, and would fill its
/// log. `hakken_http_requests` counts every one.
#[derive(Default)]
struct RefusalWarnings {
    kinds: HashMap<String, WarnEvery>,
}

impl RefusalWarnings {
    /// Counts a refusal with `message` at `now`: `Some(n)` when it is to be
    /// warned of, `n` being the refusals of its kind since the last warning (this
    /// one included).
    fn refused(&mut self, message: &str, now: Instant) -> Option<u64> {
        if !self.kinds.contains_key(message) && self.kinds.len() >= REFUSAL_KINDS {
            self.kinds.clear();
        }
        self.kinds
            .entry(message.to_owned())
            .or_default()
            .happened(now)
    }
}

/// One for the process: a coordinator runs alone in its process but for tests and
/// programs that embed several, where one's warning may stand for another's
/// refusals of the same kind within the minute (the metric counts each one's).
static REFUSAL_WARNINGS: Mutex<Option<RefusalWarnings>> = Mutex::new(None);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let warn = REFUSAL_WARNINGS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(RefusalWarnings::default)
                .refused(&self.message, Instant::now());
            if let Some(refused) = warn {
                tracing::warn!(
                    status = self.status.as_u16(),
                    error = self.message,
                    refused,
                    "request refused (warned of once a minute at most)"
                );
            }
        } else {
            tracing::debug!(
                status = self.status.as_u16(),
                error = self.message,
                "bad request"
            );
        }
        let body = serde_json::to_vec(&json!({ "error": self.message })).expect("serializes");
        let mut response = json_response(self.status, Bytes::from(body));
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // Basic first for reads: a browser asks its user then (the token as the
            // password), so the dashboard works when reads are protected. Never
            // for writes: a browser replays Basic credentials on cross-site
            // requests, so a page could make it write (CSRF).
            let headers = response.headers_mut();
            if self.basic {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"hakken\", charset=\"UTF-8\""),
                );
            }
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hakken\""),
            );
        }
        response
    }
}

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        // Only a repeated parameter gets here (every value is read as text).
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::bad_request(format!("invalid query string: {detail}"))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 JSON answer from pre-serialized bytes, pretty-printed on request.
pub(super) fn json_ok(body: Bytes, pretty: bool, index: Option<u64>) -> Response {
    // Pretty-printing re-reads what we wrote; should that ever fail, the compact
    // body is still the right answer.
    let pretty_body = pretty
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|value| serde_json::to_vec_pretty(&value).ok());
    let body = pretty_body.map_or(body, Bytes::from);
    let mut response = json_response(StatusCode::OK, body);
    if let Some(index) = index {
        response
            .headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(index));
    }
    response
}

pub(super) fn to_json_bytes(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::warnings::WARNING_PERIOD;
    use std::time::Duration;

    #[test]
    fn refusals_of_one_kind_are_warned_of_once_a_minute_with_their_count() {
        let mut warnings = RefusalWarnings::default();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(warnings.refused("at the cap", t0), Some(1));
        // Within the minute: counted, not warned of; another kind is.
        for i in 1..=5 {
            assert_eq!(warnings.refused("at the cap", t0 + second * i), None);
        }
        assert_eq!(warnings.refused("full", t0 + second), Some(1));
        // A minute on: warned of, with every refusal since the last warning.
        assert_eq!(warnings.refused("at the cap", t0 + WARNING_PERIOD), Some(6));
        assert_eq!(
            warnings.refused("at the cap", t0 + WARNING_PERIOD + second),
            None
        );
        // Bounded: more kinds than remembered forget the rest.
        for kind in 0..REFUSAL_KINDS * 2 {
            warnings.refused(&kind.to_string(), t0);
        }
        assert!(warnings.kinds.len() <= REFUSAL_KINDS);
    }
}
