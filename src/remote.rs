//! Typed calls to one coordinator's HTTP API, each bounded by a timeout.
//!
//! Shared by the coordinator's gossip (which polls other coordinators) and by the
//! client library (which publishes and watches). It speaks the v1 wire protocol of
//! the original hakken and reads our extensions (`X-Hakken-Index`,
//! `X-Hakken-Heartbeat-Interval`) when a coordinator sends them, so the same calls
//! work against either implementation. It holds no state beyond a connection pool.

use crate::listing::{Limits, Listing, Peer};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Header carrying a change index (blocking queries).
pub const INDEX_HEADER: &str = "x-hakken-index";
/// Header carrying the coordinator's heartbeat interval in milliseconds.
pub const HEARTBEAT_HEADER: &str = "x-hakken-heartbeat-interval";
/// Header naming the coordinator that answered (its announced host).
pub const COORDINATOR_HEADER: &str = "x-hakken-coordinator";

/// Largest answer body read from a coordinator.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Largest error body read, and the most characters of it kept in the error.
const MAX_ERROR_BYTES: usize = 1024;
const MAX_ERROR_CHARS: usize = 200;

/// Characters escaped in a path segment: everything but unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a call to a coordinator failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// No answer: connection refused, reset, DNS failure, or the timeout passed.
    #[error("{host}: {message}")]
    Unreachable {
        /// The coordinator called.
        host: String,
        /// What went wrong.
        message: String,
    },
    /// An answer with an unexpected status.
    #[error("{host}: HTTP {status}: {body}")]
    Status {
        /// The coordinator called.
        host: String,
        /// The status it answered.
        status: u16,
        /// The start of the body it sent.
        body: String,
    },
    /// An answer whose body is not what the protocol says.
    #[error("{host}: bad answer: {message}")]
    BadAnswer {
        /// The coordinator called.
        host: String,
        /// What was wrong with it.
        message: String,
    },
}

impl RemoteError {
    /// True when the coordinator did not answer at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RemoteError::Unreachable { .. })
    }

    /// True when the other end is no working coordinator: it did not answer, or
    /// answered something that is not the protocol. A clear status (`401`, `503`)
    /// is not that: it is a coordinator saying no.
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { .. } | RemoteError::BadAnswer { .. }
        )
    }
}

/// An answer, with what our coordinators add to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The body, decoded.
    pub value: T,
    /// `X-Hakken-Index`, when the coordinator supports blocking queries.
    pub index: Option<u64>,
    /// `X-Hakken-Heartbeat-Interval`, when the coordinator tells it.
    pub heartbeat_interval: Option<Duration>,
    /// `X-Hakken-Coordinator`: which coordinator answered, when it says.
    pub coordinator: Option<String>,
}

impl<T> Answer<T> {
    /// The same answer with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            index: self.index,
            heartbeat_interval: self.heartbeat_interval,
            coordinator: self.coordinator,
        }
    }
}

/// A blocking query: answer once the index differs from `index`, or after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// The index the caller has seen.
    pub index: u64,
    /// How long the coordinator may hold the request.
    pub wait: Duration,
}

/// A client for coordinators' HTTP APIs.
#[derive(Debug, Clone)]
pub struct Remote {
    http: reqwest::Client,
    timeout: Duration,
    token: Option<String>,
}

/// `http://host/path` for a `name:port` host (a host that has a scheme keeps it).
pub fn url(host: &str, path: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        format!("{}{}", host.trim_end_matches('/'), path)
    } else {
        format!("http://{host}{path}")
    }
}

/// Escapes one path segment (a service name or host) for a URL.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

impl Remote {
    /// A client whose every call gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client with default TLS-free settings builds");
        Remote {
            http,
            timeout,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The timeout applied to each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn unreachable(host: &str, error: reqwest::Error) -> RemoteError {
        let message = if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            "connection failed".to_owned()
        } else {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        };
        RemoteError::Unreachable {
            host: host.to_owned(),
            message,
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Reads a body of at most `max` bytes.
    async fn read_body(
        host: &str,
        mut response: Response,
        max: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Self::unreachable(host, e))?
        {
            if body.len() + chunk.len() > max {
                return Err(RemoteError::BadAnswer {
                    host: host.to_owned(),
                    message: format!("answer larger than {max} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn expect(
        host: &str,
        response: Response,
        ok: StatusCode,
    ) -> Result<Response, RemoteError> {
        if response.status() == ok {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = Self::read_body(host, response, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        let body: String = String::from_utf8_lossy(&body)
            .chars()
            .take(MAX_ERROR_CHARS)
            .collect();
        Err(RemoteError::Status {
            host: host.to_owned(),
            status,
            body,
        })
    }

    fn meta<T>(response: &Response, value: T) -> Answer<T> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            value,
            index: header(INDEX_HEADER).and_then(|v| v.parse().ok()),
            heartbeat_interval: header(HEARTBEAT_HEADER)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            coordinator: header(COORDINATOR_HEADER),
        }
    }

    async fn get_json(
        &self,
        host: &str,
        path: &str,
        blocking: Option<Blocking>,
        not_found_is_empty: bool,
    ) -> Result<Answer<Value>, RemoteError> {
        let mut request = self.authorize(self.http.get(url(host, path)));
        let mut timeout = self.timeout;
        if let Some(b) = blocking {
            request = request.query(&[
                ("index", b.index.to_string()),
                ("wait", format!("{}ms", b.wait.as_millis())),
            ]);
            // The coordinator may hold the request for `wait` plus a little jitter.
            timeout += b.wait + b.wait / 8;
        }
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))?;
        if not_found_is_empty && response.status() == StatusCode::NOT_FOUND {
            return Ok(Self::meta(&response, Value::Array(Vec::new())));
        }
        let response = Self::expect(host, response, StatusCode::OK).await?;
        let answer = Self::meta(&response, ());
        let body = Self::read_body(host, response, MAX_ANSWER_BYTES).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| RemoteError::BadAnswer {
            host: host.to_owned(),
            message: e.to_string(),
        })?;
        Ok(answer.map(|()| value))
    }

    /// Decodes a JSON array item by item. An item that is not valid is skipped
    /// (and logged): one odd entry must not hide the others.
    fn decode<T>(
        host: &str,
        answer: Answer<Value>,
        each: impl Fn(Value) -> Result<T, String>,
    ) -> Result<Answer<Vec<T>>, RemoteError> {
        let Answer { value, .. } = &answer;
        if !value.is_array() {
            return Err(RemoteError::BadAnswer {
                host: host.to_owned(),
                message: "expected a JSON array".into(),
            });
        }
        Ok(answer.map(|value| {
            let Value::Array(items) = value else {
                unreachable!("checked above")
            };
            items
                .into_iter()
                .filter_map(|item| match each(item) {
                    Ok(decoded) => Some(decoded),
                    Err(error) => {
                        tracing::warn!(host, %error, "skipping an invalid entry in an answer");
                        None
                    }
                })
                .collect()
        }))
    }

    /// `GET /v1/coordinator`: the coordinators `host` knows, itself included.
    pub async fn coordinators(
        &self,
        host: &str,
        blocking: Option<Blocking>,
    ) -> Result<Answer<Vec<Peer>>, RemoteError> {
        let answer = self
            .get_json(host, "/v1/coordinator", blocking, false)
            .await?;
        Self::decode(host, answer, |v| {
            Peer::from_value(v, &Limits::RECEIVED).map_err(|e| e.to_string())
        })
    }

    /// `POST /v1/coordinator`: tells `host` about coordinator `me`.
    pub async fn announce(&self, host: &str, me: &Peer) -> Result<(), RemoteError> {
        self.post(host, "/v1/coordinator", me).await
    }

    /// `GET /v1/listings`: names of the services with a live listing.
    pub async fn services(
        &self,
        host: &str,
        blocking: Option<Blocking>,
    ) -> Result<Answer<Vec<String>>, RemoteError> {
        let answer = self.get_json(host, "/v1/listings", blocking, false).await?;
        Self::decode(host, answer, |v| match v {
            Value::String(s) => Ok(s),
            other => Err(format!("expected a service name, got {other}")),
        })
    }

    /// `GET /v1/listings/:service`: the live listings of a service (empty on 404).
    pub async fn listings(
        &self,
        host: &str,
        service: &str,
        blocking: Option<Blocking>,
    ) -> Result<Answer<Vec<Listing>>, RemoteError> {
        let path = format!("/v1/listings/{}", segment(service));
        let answer = self.get_json(host, &path, blocking, true).await?;
        Self::decode(host, answer, |v| {
            Listing::from_value(v, &Limits::RECEIVED).map_err(|e| e.to_string())
        })
    }

    /// `POST /v1/listings` (or `?heartbeat=true`): publishes or refreshes a listing.
    pub async fn publish(
        &self,
        host: &str,
        listing: &Listing,
        heartbeat: bool,
    ) -> Result<(), RemoteError> {
        let path = if heartbeat {
            "/v1/listings?heartbeat=true"
        } else {
            "/v1/listings"
        };
        self.post(host, path, listing).await
    }

    /// `DELETE /v1/listings/:service/:host`: withdraws a listing. `Ok(false)` when the
    /// coordinator did not hold it.
    pub async fn unpublish(&self, host: &str, listing: &Listing) -> Result<bool, RemoteError> {
        let path = format!(
            "/v1/listings/{}/{}",
            segment(listing.service()),
            segment(listing.host())
        );
        let request = self.authorize(self.http.delete(url(host, &path)));
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        Self::expect(host, response, StatusCode::NO_CONTENT).await?;
        Ok(true)
    }

    async fn post(
        &self,
        host: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), RemoteError> {
        let request = self.authorize(self.http.post(url(host, path)));
        let response = request
            .json(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))?;
        Self::expect(host, response, StatusCode::CREATED).await?;
        Ok(())
    }

    /// `GET /status`: whether `host` answers as a coordinator.
    pub async fn status(&self, host: &str) -> Result<(), RemoteError> {
        self.get_json(host, "/status", None, false)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_segments() {
        assert_eq!(url("a:1", "/status"), "http://a:1/status");
        assert_eq!(url("http://a:1/", "/status"), "http://a:1/status");
        assert_eq!(segment("a/b c%2F.."), "a%2Fb%20c%252F..");
        assert_eq!(segment("日"), "%E6%97%A5");
    }
}
