//! The query parameters every route may carry, and blocking queries: a request
//! with `?index=N[&wait=D]` is held until what it reads has an index other than
//! `N`, `D` passes (plus up to 1/16 of jitter), or the coordinator shuts down.

use super::answer::{ApiError, ApiResult};
use crate::coordinator::changes::Topic;
use crate::coordinator::Shared;
use crate::protocol::WAIT_HEADER;
use axum::http::HeaderValue;
use axum::response::Response;
use serde::Deserialize;
use std::time::Duration;

/// The query parameters any route may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Params {
    /// Present (with any value but `false`) → pretty-printed JSON.
    pub pretty: Option<String>,
    /// Present (with any value but `false`) → a stream of Server-Sent Events.
    pub stream: Option<String>,
    /// Blocking query: the index the caller has seen (parsed in `blocking`, so a
    /// bad one gets an error that says what an index is).
    index: Option<String>,
    /// Blocking query: how long to hold it (`30s`, `500ms`, `1m30s`; a bare number is seconds).
    wait: Option<String>,
}

impl Params {
    pub fn pretty(&self) -> bool {
        self.pretty.as_deref().is_some_and(|v| v != "false")
    }

    /// The blocking part of the query, if any: the index seen and the hold time.
    /// A bad `wait` is refused with or without an index.
    pub fn blocking(&self, shared: &Shared) -> ApiResult<Option<(u64, Duration)>> {
        let wait = match &self.wait {
            None => shared.config.default_wait,
            Some(text) => parse_wait(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid wait `{text}`: expected a duration such as 30s, 500ms, 5m or 1m30s"
                ))
            })?,
        };
        let Some(text) = &self.index else {
            return Ok(None);
        };
        let index = text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid index `{text}`: expected a whole number from 0 to {}, \
                 such as the X-Hakken-Index header of an earlier answer",
                u64::MAX
            ))
        })?;
        Ok(Some((index, wait.min(shared.config.max_wait))))
    }
}

/// Parses a duration (`500ms`, `30s`, `5m`, `1h`, `1.5s`, `1m30s`: humantime's
/// units) or a bare number of seconds.
fn parse_wait(text: &str) -> Option<Duration> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        Err(_) => humantime::parse_duration(text).ok(),
    }
}

/// Holds a blocking query until `index()` differs from `seen`, `wait` (plus up to
/// 1/16 of it as jitter, so held requests do not all return together) passes, or
/// the coordinator shuts down. Returns at once when the cap on held queries is hit.
/// Returns the hold it granted (zero at the cap), which the answer tells the client
/// (`X-Hakken-Wait`).
pub(super) async fn block(
    shared: &Shared,
    topic: Topic,
    seen: u64,
    wait: Duration,
    index: impl Fn() -> u64,
) -> Duration {
    let Some(hold) = shared.changes.hold(topic) else {
        return Duration::ZERO;
    };
    let notified = hold.notify().notified();
    tokio::pin!(notified);
    // Registered before the index is read, so a change in between is not missed.
    notified.as_mut().enable();
    if index() != seen {
        return wait;
    }
    let jitter_ms = fastrand::u64(0..=(wait.as_millis() as u64 / 16));
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep(wait + Duration::from_millis(jitter_ms)) => {}
        _ = shared.shutdown.cancelled() => {}
    }
    wait
}

/// Tells the client of a blocking query the hold it was granted.
pub(super) fn granted(mut response: Response, granted: Option<Duration>) -> Response {
    if let Some(granted) = granted {
        response.headers_mut().insert(
            WAIT_HEADER,
            HeaderValue::from(granted.as_millis().min(u64::MAX as u128) as u64),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::parse_wait;
    use std::time::Duration;

    #[test]
    fn waits() {
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("-1"), None);
        assert_eq!(parse_wait("NaN"), None);
        assert_eq!(parse_wait("inf"), None);
        assert_eq!(parse_wait("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_wait("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("2m30s"), Some(Duration::from_secs(150)));
        assert_eq!(parse_wait("-1s"), None);
        assert_eq!(parse_wait("soon"), None);
        assert_eq!(parse_wait("99999999999999999999m"), None);
    }
}
