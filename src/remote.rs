//! Typed calls to one coordinator's HTTP API, each bounded by a timeout.
//!
//! Shared by the coordinator's gossip (which polls other coordinators) and by the
//! client library (which publishes and watches). It speaks the v1 wire protocol of
//! the original hakken and reads our extensions (`X-Hakken-Index`,
//! `X-Hakken-Heartbeat-Interval`) when a coordinator sends them, so the same calls
//! work against either implementation. It holds no state beyond a connection pool.

use crate::listing::{Limits, Listing, Peer};
use crate::protocol::{
    read_snapshot_line, SnapshotEntry, SnapshotHead, SnapshotLine, COMPLETE_HEADER,
    COORDINATOR_HEADER, DEPARTED_HEADER, HEARTBEAT_HEADER, INDEX_HEADER, INSTANCE_HEADER,
    KEEPALIVE_HEADER, MAX_WAIT, SNAPSHOT_PATH, WAIT_HEADER,
};
use crate::tls::{ClientTls, TlsError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body read from a coordinator.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest list of coordinators read: a thousand descriptors of a kilobyte.
const MAX_COORDINATORS_BYTES: usize = 1024 * 1024;

/// Largest error body read, and the most characters of it kept in the error.
const MAX_ERROR_BYTES: usize = 1024;
const MAX_ERROR_CHARS: usize = 200;

/// Characters escaped in a path segment: everything but unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The message of a call that could not connect (see `never_connected`).
const CONNECT_FAILED: &str = "connection failed";
/// The message of a call whose connection was not made in time (a firewall
/// dropping packets, say; see `never_connected`).
const CONNECT_TIMED_OUT: &str = "timed out connecting";

/// Why a call to a coordinator failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// The coordinator ended a stream cleanly (it shuts down, or cut a reader
    /// that stalled): nothing says it is broken.
    #[error("{host}: the coordinator ended the stream")]
    Ended {
        /// The coordinator.
        host: String,
    },
    /// Something answered that is not a hakken coordinator: a web page, another
    /// service's error (`404` with `text/html`, say).
    #[error("{host} is not a hakken coordinator (HTTP {status}, {content_type})")]
    NotCoordinator {
        /// The host called.
        host: String,
        /// The status it answered.
        status: u16,
        /// The content type it answered with (`none` when it named none).
        content_type: String,
    },
}

impl RemoteError {
    /// True when the coordinator did not answer at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RemoteError::Unreachable { .. })
    }

    /// The one rule for whether a failed call counts against a coordinator: true
    /// when the other end is no working coordinator. It did not answer, answered
    /// something that is not the protocol, or failed inside (a `5xx` other than
    /// `503`). A clear refusal is not that: a `4xx` (a wrong token, a request it
    /// will not take) or a `503` (at its limits) is a working coordinator saying
    /// no, and is never a reason to forget it.
    pub fn is_broken(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. }
            | RemoteError::BadAnswer { .. }
            | RemoteError::NotCoordinator { .. } => true,
            RemoteError::Status { status, .. } => *status >= 500 && *status != 503,
            RemoteError::Ended { .. } => false,
        }
    }

    /// Whether no connection could be made at all (refused, a name that does not
    /// resolve, no answer to the connection attempt), rather than one that
    /// failed or timed out once made.
    pub fn never_connected(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { message, .. }
                if message.starts_with(CONNECT_FAILED) || message == CONNECT_TIMED_OUT
        )
    }

    /// The host the failed call went to.
    pub fn host(&self) -> &str {
        match self {
            RemoteError::Unreachable { host, .. }
            | RemoteError::Status { host, .. }
            | RemoteError::BadAnswer { host, .. }
            | RemoteError::NotCoordinator { host, .. }
            | RemoteError::Ended { host } => host,
        }
    }
}

/// Why a connection could not be made, from the innermost of `error`'s causes:
/// the system's words (`Connection refused (os error 111)`), after `cannot
/// resolve the name` when the name lookup failed.
fn connect_cause(error: &reqwest::Error) -> Option<String> {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        chain.push(inner.to_string());
        source = inner.source();
    }
    let innermost = chain.last()?;
    Some(if chain.iter().any(|e| e == "dns error") {
        format!("cannot resolve the name: {innermost}")
    } else {
        innermost.clone()
    })
}

/// An answer, with what our coordinators add to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Answer<T> {
    /// The body, decoded.
    pub value: T,
    /// `X-Hakken-Index`, when the coordinator supports blocking queries.
    pub index: Option<u64>,
    /// `X-Hakken-Heartbeat-Interval`, when the coordinator tells it.
    pub heartbeat_interval: Option<Duration>,
    /// `X-Hakken-Coordinator`: which coordinator answered, when it says.
    pub coordinator: Option<String>,
    /// `X-Hakken-Complete`: `Some(false)` from a coordinator still warming up after
    /// a start with nobody to copy listings from; `None` from the original's.
    pub complete: Option<bool>,
    /// `X-Hakken-Wait`: how long the coordinator agreed to hold a blocking query.
    pub wait: Option<Duration>,
    /// `X-Hakken-Instance`: which run of the coordinator answered.
    pub instance: Option<u64>,
    /// `X-Hakken-Departed`: hosts of listings a partial coordinator knows are gone.
    pub departed: Vec<String>,
}

impl<T> Answer<T> {
    /// The same answer with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            index: self.index,
            heartbeat_interval: self.heartbeat_interval,
            coordinator: self.coordinator,
            complete: self.complete,
            wait: self.wait,
            instance: self.instance,
            departed: self.departed,
        }
    }
}

/// A blocking query: answer once the index differs from `index`, or after `wait`
/// (asked as at most [`MAX_WAIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// The index the caller has seen.
    pub index: u64,
    /// How long the coordinator may hold the request.
    pub wait: Duration,
}

/// How a route is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// For one answer: at once, or held as a blocking query.
    Once(Option<Blocking>),
    /// For a stream of states (`Accept: text/event-stream`). A coordinator without
    /// streams (the original, an older one of ours) answers once instead.
    Stream,
}

impl Ask {
    /// The blocking query asked, if any.
    pub fn blocking(self) -> Option<Blocking> {
        match self {
            Ask::Once(blocking) => blocking,
            Ask::Stream => None,
        }
    }
}

/// Decodes one answer of a route.
type Decode<T> = fn(&str, Answer<Value>) -> Result<Answer<T>, RemoteError>;

/// What asking a route opened.
#[derive(Debug)]
pub enum Opened<T> {
    /// One answer: the route was asked once, or the coordinator does not stream.
    Answer(Answer<T>),
    /// A stream of states.
    Stream(Box<Events<T>>),
}

/// A stream of states from one coordinator (Server-Sent Events): each
/// [`Events::next`] is the newest state that arrived. Dropping it closes the
/// connection.
pub struct Events<T> {
    host: String,
    response: Response,
    parser: crate::sse::Parser,
    /// The stream's head: what every state carries besides its value and index.
    head: Answer<()>,
    /// How long the stream may stay silent (no state, no keep-alive).
    idle: Duration,
    decode: Decode<T>,
}

impl<T> std::fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("host", &self.host)
            .field("head", &self.head)
            .finish()
    }
}

/// How many keep-alive intervals a stream may stay silent.
const SILENT_KEEPALIVES: u32 = 3;
/// The least silence a stream is allowed, however short its keep-alive interval
/// (a reader on a busy machine may take a while to read).
const MIN_SILENCE: Duration = Duration::from_secs(1);
/// The keep-alive interval assumed of a stream that does not name one.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

impl<T> Events<T> {
    fn new(host: &str, response: Response, max_bytes: usize, decode: Decode<T>) -> Self {
        let keepalive = response
            .headers()
            .get(KEEPALIVE_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_millis)
            .filter(|k| !k.is_zero())
            .unwrap_or(DEFAULT_KEEPALIVE);
        Events {
            host: host.to_owned(),
            head: Remote::meta(&response, ()),
            response,
            parser: crate::sse::Parser::new(max_bytes),
            idle: keepalive.saturating_mul(SILENT_KEEPALIVES).max(MIN_SILENCE),
            decode,
        }
    }

    /// What the stream's head said: the coordinator, its run, whether it is
    /// complete.
    pub fn head(&self) -> &Answer<()> {
        &self.head
    }

    /// The next state: the newest of those that arrived together (states, not
    /// deltas: an older one is worth nothing once a newer is here). Fails when the
    /// stream ends, breaks, stays silent too long, or sends what is not a state.
    pub async fn next(&mut self) -> Result<Answer<T>, RemoteError> {
        let host = self.host.as_str();
        let mut events = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.idle, self.response.chunk())
                .await
                .map_err(|_| RemoteError::Unreachable {
                    host: host.to_owned(),
                    message: format!("the stream stayed silent for {} ms", self.idle.as_millis()),
                })?
                .map_err(|e| Remote::unreachable(host, e))?;
            let Some(chunk) = chunk else {
                return Err(RemoteError::Ended {
                    host: host.to_owned(),
                });
            };
            self.parser
                .feed(&chunk, &mut events)
                .map_err(|e| RemoteError::BadAnswer {
                    host: host.to_owned(),
                    message: e.to_string(),
                })?;
            let Some(event) = events.pop() else {
                continue;
            };
            let value: Value =
                serde_json::from_slice(&event.data).map_err(|e| RemoteError::BadAnswer {
                    host: host.to_owned(),
                    message: format!("a stream event: {e}"),
                })?;
            // The index is what a stream's state is worth to a follower: without
            // it, the state cannot be told apart from an older one.
            let Some(index) = event.id.and_then(|id| id.trim().parse().ok()) else {
                return Err(RemoteError::BadAnswer {
                    host: host.to_owned(),
                    message: "a stream event without a numeric id".into(),
                });
            };
            let mut answer = self.head.clone().map(|()| value);
            answer.index = Some(index);
            return (self.decode)(host, answer);
        }
    }
}

/// A client for coordinators' HTTP APIs.
#[derive(Debug, Clone)]
pub struct Remote {
    http: reqwest::Client,
    timeout: Duration,
    token: Option<String>,
    /// Whether a host written without a scheme is called over TLS.
    https: bool,
    /// Why the TLS settings could not be used: every call fails with it.
    unusable: Option<Arc<str>>,
}

/// `http://host/path` for a `name:port` host (a host that has a scheme keeps it).
pub fn url(host: &str, path: &str) -> String {
    url_for(host, path, false)
}

/// The URL of `path` on `host`: a host that has a scheme keeps it, one without
/// gets `https` when `https`, else `http`.
fn url_for(host: &str, path: &str, https: bool) -> String {
    let (tls, bare) = split_scheme(host);
    if tls || https {
        format!("https://{bare}{path}")
    } else {
        format!("http://{bare}{path}")
    }
}

/// Splits a coordinator address into whether it asks for TLS and the host as
/// the protocol writes it (`name:port`): `https://a:1/` is `(true, "a:1")`,
/// `http://a:1` and `a:1` are `(false, "a:1")`.
pub fn split_scheme(address: &str) -> (bool, &str) {
    let scheme = |prefix: &str| {
        address
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            .then(|| &address[prefix.len()..])
    };
    let (https, rest) = if let Some(rest) = scheme("https://") {
        (true, rest)
    } else if let Some(rest) = scheme("http://") {
        (false, rest)
    } else {
        (false, address)
    };
    (https, rest.trim_end_matches('/'))
}

/// The media type an answer names, without parameters.
fn content_type(response: &Response) -> Option<String> {
    let value = response.headers().get(reqwest::header::CONTENT_TYPE)?;
    let value = value.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether a content type can carry the protocol's JSON (none named counts: the
/// original sends some answers without one).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|t| t.is_empty() || t.contains("json"))
}

/// Decodes a service's listings; an invalid one is skipped (and logged).
fn decode_listings(host: &str, answer: Answer<Value>) -> Result<Answer<Vec<Listing>>, RemoteError> {
    Remote::decode(host, answer, |v| {
        Listing::from_value(v, &Limits::RECEIVED).map_err(|e| e.to_string())
    })
}

/// Escapes one path segment (a service name or host) for a URL.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

impl Remote {
    /// A client whose every call gives up after `timeout`; plain HTTP to hosts
    /// written without a scheme, TLS (trusting the system's roots) to `https://`.
    pub fn new(timeout: Duration) -> Self {
        let config = ClientTls::default()
            .config()
            .expect("a TLS configuration without files builds");
        Self::build(timeout, config, false)
    }

    /// A client with TLS settings: `https` says whether hosts written without a
    /// scheme are called over TLS (they are in a TLS cluster). The files are read
    /// now.
    pub fn with_tls(timeout: Duration, tls: &ClientTls, https: bool) -> Result<Self, TlsError> {
        Ok(Self::build(timeout, tls.config()?, https))
    }

    fn build(timeout: Duration, tls: rustls::ClientConfig, https: bool) -> Self {
        let http = reqwest::Client::builder()
            // Shorter than the call's own timeout, which would end a connection
            // attempt first and be told apart from it (`never_connected`) no more.
            .connect_timeout(timeout * 9 / 10)
            .pool_idle_timeout(Duration::from_secs(30))
            .tls_backend_preconfigured(tls)
            .build()
            .expect("an HTTP client with a preconfigured rustls backend builds");
        Remote {
            http,
            timeout,
            token: None,
            https,
            unusable: None,
        }
    }

    /// Like [`with_tls`](Remote::with_tls), but when the settings cannot be used,
    /// a client whose every call fails saying why (for callers that cannot fail
    /// at construction, like `Client::new`).
    pub fn with_tls_or_failing(timeout: Duration, tls: &ClientTls, https: bool) -> Self {
        match Self::with_tls(timeout, tls, https) {
            Ok(remote) => remote,
            Err(error) => {
                tracing::error!(%error, "TLS settings cannot be used; every call will fail");
                let mut remote = Self::new(timeout);
                remote.https = https;
                remote.unusable = Some(error.to_string().into());
                remote
            }
        }
    }

    /// Fails when the TLS settings could not be used.
    fn usable(&self, host: &str) -> Result<(), RemoteError> {
        match &self.unusable {
            None => Ok(()),
            Some(why) => Err(RemoteError::Unreachable {
                host: host.to_owned(),
                message: format!("TLS settings: {why}"),
            }),
        }
    }

    /// Whether hosts written without a scheme are called over TLS.
    pub fn https(&self) -> bool {
        self.https
    }

    fn url(&self, host: &str, path: &str) -> String {
        url_for(host, path, self.https)
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
        let message = if error.is_connect() && error.is_timeout() {
            CONNECT_TIMED_OUT.to_owned()
        } else if error.is_timeout() {
            "timed out".to_owned()
        } else if let Some(tls) = crate::tls::explain(&error) {
            format!("TLS: {tls}")
        } else if error.is_connect() {
            match connect_cause(&error) {
                Some(cause) => format!("{CONNECT_FAILED}: {cause}"),
                None => CONNECT_FAILED.to_owned(),
            }
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
        let content_type = content_type(&response);
        let body = Self::read_body(host, response, MAX_ERROR_BYTES).await;
        // An error body too large for an error of a coordinator's, unless it says
        // it is JSON, is a web page too.
        let too_large = matches!(body, Err(RemoteError::BadAnswer { .. }))
            && !content_type.as_deref().is_some_and(|t| t.contains("json"));
        let body = body.unwrap_or_default();
        if status == 400 && body.starts_with(crate::protocol::PLAIN_ON_TLS.as_bytes()) {
            return Err(RemoteError::Unreachable {
                host: host.to_owned(),
                message: "TLS: it speaks TLS on this port (write the address as https://HOST:PORT)"
                    .into(),
            });
        }
        if too_large || (!body.is_empty() && !is_json(content_type.as_deref())) {
            return Err(RemoteError::NotCoordinator {
                host: host.to_owned(),
                status,
                content_type: content_type.unwrap_or_else(|| "none".into()),
            });
        }
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
        /// Most departed hosts taken from one answer.
        const MAX_DEPARTED: usize = 1_000;
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
            complete: header(COMPLETE_HEADER).and_then(|v| v.parse().ok()),
            wait: header(WAIT_HEADER)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            instance: header(INSTANCE_HEADER).and_then(|v| v.parse().ok()),
            departed: header(DEPARTED_HEADER)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .take(MAX_DEPARTED)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    async fn get_json(
        &self,
        host: &str,
        path: &str,
        blocking: Option<Blocking>,
        not_found_is_empty: bool,
        max_bytes: usize,
    ) -> Result<Answer<Value>, RemoteError> {
        let response = self.get(host, path, Ask::Once(blocking)).await?;
        Self::read_json(host, response, not_found_is_empty, max_bytes).await
    }

    /// Sends `GET path` to `host`, asked as `ask`, and returns the answer's head.
    async fn get(&self, host: &str, path: &str, ask: Ask) -> Result<Response, RemoteError> {
        self.usable(host)?;
        let mut request = self.authorize(self.http.get(self.url(host, path)));
        let mut timeout = self.timeout;
        match ask {
            Ask::Once(None) => {}
            Ask::Once(Some(mut b)) => {
                b.wait = b.wait.min(MAX_WAIT);
                request = request.query(&[
                    ("index", b.index.to_string()),
                    ("wait", format!("{}ms", b.wait.as_millis())),
                ]);
                // The coordinator may hold the request for `wait` plus a little jitter.
                timeout = timeout.saturating_add(b.wait.saturating_add(b.wait / 8));
            }
            Ask::Stream => {
                // A stream has no end: only the wait for its head is bounded (and
                // then each wait for an event, by the reader).
                request = request.header(reqwest::header::ACCEPT, "text/event-stream");
                return match tokio::time::timeout(self.timeout, request.send()).await {
                    Ok(sent) => sent.map_err(|e| Self::unreachable(host, e)),
                    Err(_) => Err(RemoteError::Unreachable {
                        host: host.to_owned(),
                        message: "timed out".into(),
                    }),
                };
            }
        }
        request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))
    }

    /// Reads a JSON answer (at most `max_bytes`); a `404` that is one of the
    /// protocol's is an empty array when `not_found_is_empty` (one of ours that
    /// has no such route is an error).
    async fn read_json(
        host: &str,
        response: Response,
        not_found_is_empty: bool,
        max_bytes: usize,
    ) -> Result<Answer<Value>, RemoteError> {
        let content_type = content_type(&response);
        // One of ours answers a read of listings with its index, a 404 too: a 404
        // of ours without one is for a route it does not have (an address with a
        // path, say), an error and not "no listings".
        let no_such_route = response.headers().contains_key(INSTANCE_HEADER)
            && !response.headers().contains_key(INDEX_HEADER);
        if not_found_is_empty
            && response.status() == StatusCode::NOT_FOUND
            && is_json(content_type.as_deref())
            && !no_such_route
        {
            let answer = Self::meta(&response, Value::Array(Vec::new()));
            if content_type.as_deref().is_none_or(str::is_empty) {
                // No type named: the original's bare 404, or another server's page
                // (one too large to be an error of ours counts as a page).
                let page = match Self::read_body(host, response, MAX_ERROR_BYTES).await {
                    Ok(body) => {
                        !body.iter().all(u8::is_ascii_whitespace)
                            && serde_json::from_slice::<Value>(&body).is_err()
                    }
                    Err(RemoteError::BadAnswer { .. }) => true,
                    Err(error) => return Err(error),
                };
                if page {
                    return Err(RemoteError::NotCoordinator {
                        host: host.to_owned(),
                        status: 404,
                        content_type: "none".into(),
                    });
                }
            }
            return Ok(answer);
        }
        let response = Self::expect(host, response, StatusCode::OK).await?;
        let answer = Self::meta(&response, ());
        let body = Self::read_body(host, response, max_bytes).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            if is_json(content_type.as_deref()) {
                RemoteError::BadAnswer {
                    host: host.to_owned(),
                    message: e.to_string(),
                }
            } else {
                RemoteError::NotCoordinator {
                    host: host.to_owned(),
                    status: 200,
                    content_type: content_type.clone().unwrap_or_else(|| "none".into()),
                }
            }
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

    /// `GET /v1/coordinator`: the coordinators `host` knows, itself included. Each
    /// descriptor is held to the normal limits, and its `host` to `name:port` or
    /// `[v6]:port`; one that is not is skipped (and logged).
    pub async fn coordinators(
        &self,
        host: &str,
        blocking: Option<Blocking>,
    ) -> Result<Answer<Vec<Peer>>, RemoteError> {
        let answer = self
            .get_json(
                host,
                "/v1/coordinator",
                blocking,
                false,
                MAX_COORDINATORS_BYTES,
            )
            .await?;
        Self::decode(host, answer, |v| {
            Peer::from_value(v, &Limits::default()).map_err(|e| e.to_string())
        })
    }

    /// `POST /v1/coordinator`: tells `host` about coordinator `me`. The answer says
    /// which coordinator took it (behind a load balancer, maybe `me` itself).
    pub async fn announce(&self, host: &str, me: &Peer) -> Result<Answer<()>, RemoteError> {
        self.post(host, "/v1/coordinator", me).await
    }

    /// `GET /v1/listings`: names of the services with a live listing.
    pub async fn services(
        &self,
        host: &str,
        blocking: Option<Blocking>,
    ) -> Result<Answer<Vec<String>>, RemoteError> {
        let answer = self
            .get_json(host, "/v1/listings", blocking, false, MAX_ANSWER_BYTES)
            .await?;
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
        let answer = self
            .get_json(host, &path, blocking, true, MAX_ANSWER_BYTES)
            .await?;
        decode_listings(host, answer)
    }

    /// `GET /v1/listings/:service` asked as `ask`: with [`Ask::Stream`], a stream
    /// of the service's listings from a coordinator that streams, one answer from
    /// one that does not.
    pub async fn open_listings(
        &self,
        host: &str,
        service: &str,
        ask: Ask,
    ) -> Result<Opened<Vec<Listing>>, RemoteError> {
        let path = format!("/v1/listings/{}", segment(service));
        let response = self.get(host, &path, ask).await?;
        let streams = response.status() == StatusCode::OK
            && content_type(&response).as_deref() == Some("text/event-stream");
        if ask == Ask::Stream && streams {
            let events = Events::new(host, response, MAX_ANSWER_BYTES, decode_listings);
            return Ok(Opened::Stream(Box::new(events)));
        }
        // The head came within the timeout; the body must too.
        let read = Self::read_json(host, response, true, MAX_ANSWER_BYTES);
        let answer = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| RemoteError::Unreachable {
                host: host.to_owned(),
                message: "timed out".into(),
            })??;
        decode_listings(host, answer).map(Opened::Answer)
    }

    /// `POST /v1/listings` (or `?heartbeat=true`): publishes or refreshes a listing.
    pub async fn publish(
        &self,
        host: &str,
        listing: &Listing,
        heartbeat: bool,
    ) -> Result<(), RemoteError> {
        let body = serde_json::to_vec(listing).expect("a listing serializes");
        self.publish_json(host, bytes::Bytes::from(body), heartbeat)
            .await
            .map(|_| ())
    }

    /// Like [`Remote::publish`], with the listing serialized already (a client that
    /// sends one listing to many coordinators serializes it once), and the answer's
    /// headers (the coordinator's heartbeat interval, its run) returned.
    pub async fn publish_json(
        &self,
        host: &str,
        listing_json: bytes::Bytes,
        heartbeat: bool,
    ) -> Result<Answer<()>, RemoteError> {
        let path = if heartbeat {
            "/v1/listings?heartbeat=true"
        } else {
            "/v1/listings"
        };
        self.post_body(host, path, listing_json).await
    }

    /// `DELETE /v1/listings/:service/:host`: withdraws a listing. `Ok(false)` when the
    /// coordinator did not hold it.
    pub async fn unpublish(&self, host: &str, listing: &Listing) -> Result<bool, RemoteError> {
        let path = format!(
            "/v1/listings/{}/{}",
            segment(listing.service()),
            segment(listing.host())
        );
        self.usable(host)?;
        let request = self.authorize(self.http.delete(self.url(host, &path)));
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
    ) -> Result<Answer<()>, RemoteError> {
        let body = serde_json::to_vec(body).expect("serializes");
        self.post_body(host, path, bytes::Bytes::from(body)).await
    }

    async fn post_body(
        &self,
        host: &str,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<Answer<()>, RemoteError> {
        self.usable(host)?;
        let request = self.authorize(self.http.post(self.url(host, path)));
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))?;
        let response = Self::expect(host, response, StatusCode::CREATED).await?;
        Ok(Self::meta(&response, ()))
    }

    /// `GET /v1/snapshot` (ours only): every listing `host` holds, with its
    /// remaining time to live, read as it streams in. `within` bounds the whole
    /// transfer, and its head (status and first line) must come within one call's
    /// timeout; listings invalid under `limits` are skipped. A coordinator without
    /// the route (the original's, or an older one of ours) answers a `Status` 404.
    pub async fn snapshot(
        &self,
        host: &str,
        within: Duration,
        limits: Limits,
    ) -> Result<Snapshot, RemoteError> {
        self.usable(host)?;
        // The head (status and first line) comes within one call's timeout, so a
        // peer that accepts but never answers does not use up all of `within`;
        // the rest of the body may take until `within`.
        let head = tokio::time::timeout(
            self.timeout.min(within),
            self.snapshot_head(host, within, limits),
        );
        head.await.map_err(|_| RemoteError::Unreachable {
            host: host.to_owned(),
            message: "timed out".into(),
        })?
    }

    /// [`Remote::snapshot`] up to its head.
    async fn snapshot_head(
        &self,
        host: &str,
        within: Duration,
        limits: Limits,
    ) -> Result<Snapshot, RemoteError> {
        let request = self.authorize(self.http.get(self.url(host, SNAPSHOT_PATH)));
        let response = request
            .timeout(within)
            .send()
            .await
            .map_err(|e| Self::unreachable(host, e))?;
        let response = Self::expect(host, response, StatusCode::OK).await?;
        let mut snapshot = Snapshot {
            host: host.to_owned(),
            response,
            buffer: Vec::new(),
            start: 0,
            limits,
            head: None,
            seen: 0,
            skipped: 0,
            ended: false,
        };
        let line = snapshot
            .next_line()
            .await?
            .ok_or_else(|| snapshot.bad("empty snapshot"))?;
        let head: SnapshotHead = serde_json::from_slice(&line)
            .map_err(|e| snapshot.bad(&format!("snapshot head: {e}")))?;
        snapshot.head = Some(head);
        Ok(snapshot)
    }

    /// `GET /status`: whether `host` answers as a coordinator.
    pub async fn status(&self, host: &str) -> Result<(), RemoteError> {
        self.get_json(host, "/status", None, false, MAX_ERROR_BYTES)
            .await
            .map(|_| ())
    }
}

/// Longest line of a snapshot: a listing is bounded by its coordinator's body
/// limit, and this is far above any sensible one.
const MAX_SNAPSHOT_LINE: usize = 16 * 1024 * 1024;

/// A snapshot being received (see [`Remote::snapshot`]).
#[derive(Debug)]
pub struct Snapshot {
    host: String,
    response: Response,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    limits: Limits,
    head: Option<SnapshotHead>,
    seen: usize,
    skipped: usize,
    ended: bool,
}

impl Snapshot {
    /// Its first line: who sent it, whether that coordinator was complete, and how
    /// many listings follow.
    pub fn head(&self) -> &SnapshotHead {
        self.head.as_ref().expect("read when the snapshot opened")
    }

    /// Listings skipped so far because they are not valid here.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn bad(&self, message: &str) -> RemoteError {
        RemoteError::BadAnswer {
            host: self.host.clone(),
            message: message.to_owned(),
        }
    }

    /// The next line, without its newline; `None` at the end of the body. Lines are
    /// taken from `buffer` at `start` (so a chunk of many lines is scanned once),
    /// and what was taken is dropped only when a new chunk comes in.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, RemoteError> {
        loop {
            let rest = &self.buffer[self.start..];
            if let Some(at) = rest.iter().position(|b| *b == b'\n') {
                let line = rest[..at].to_vec();
                self.start += at + 1;
                return Ok(Some(line));
            }
            if rest.len() > MAX_SNAPSHOT_LINE {
                return Err(self.bad("snapshot line too long"));
            }
            self.buffer.drain(..self.start);
            self.start = 0;
            match self
                .response
                .chunk()
                .await
                .map_err(|e| Remote::unreachable(&self.host, e))?
            {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None if self.buffer.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buffer))),
            }
        }
    }

    /// Up to `max` more listings; `None` once the end marker was read. An error
    /// when the stream breaks off or does not follow the format: what was read
    /// before it is still good.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<SnapshotEntry>>, RemoteError> {
        if self.ended {
            return Ok(None);
        }
        let mut batch = Vec::new();
        while batch.len() < max.max(1) {
            let Some(line) = self.next_line().await? else {
                return Err(self.bad("snapshot cut short (no end marker)"));
            };
            match read_snapshot_line(&line, &self.limits).map_err(|e| self.bad(&e))? {
                SnapshotLine::Entry(entry) => {
                    self.seen += 1;
                    batch.push(entry);
                }
                SnapshotLine::Invalid(reason) => {
                    self.seen += 1;
                    self.skipped += 1;
                    tracing::debug!(
                        host = self.host.as_str(),
                        reason,
                        "snapshot: listing skipped"
                    );
                }
                SnapshotLine::End(count) => {
                    if count != self.seen {
                        return Err(self.bad(&format!(
                            "snapshot ends after {} listings but claims {count}",
                            self.seen
                        )));
                    }
                    self.ended = true;
                    break;
                }
            }
            if self.seen > self.head().count {
                return Err(self.bad("snapshot holds more listings than its head says"));
            }
        }
        if batch.is_empty() && self.ended {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_segments() {
        assert_eq!(url("a:1", "/status"), "http://a:1/status");
        assert_eq!(url("http://a:1/", "/status"), "http://a:1/status");
        assert_eq!(url("HTTPS://a:1", "/status"), "https://a:1/status");
        assert_eq!(url_for("a:1", "/status", true), "https://a:1/status");
        assert_eq!(split_scheme("HTTPS://a:1/"), (true, "a:1"));
        assert_eq!(split_scheme("Http://a:1"), (false, "a:1"));
        assert_eq!(split_scheme("a:1"), (false, "a:1"));
        assert_eq!(segment("a/b c%2F.."), "a%2Fb%20c%252F..");
        assert_eq!(segment("日"), "%E6%97%A5");
    }
}
