//! The coordinator's HTTP API: the original's v1 routes, plus our extensions.
//!
//! Handlers are thin: decode and validate the request, make one short call into the
//! registry or membership table, encode the answer. Everything a client can get
//! wrong becomes an [`ApiError`], answered as `{"error": "..."}` with a 4xx status;
//! nothing a client sends can panic a handler or change state when it is refused.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /status` | `200 "OK"` |
//! | `GET /v1/coordinator` | `200` the known coordinators, this one first |
//! | `POST /v1/coordinator` | `201` adds (and un-blacklists) a coordinator |
//! | `GET /v1/listings` | `200` names of services with a live listing |
//! | `GET /v1/listings/:service` | `200` its listings, `404` when none |
//! | `POST /v1/listings[?heartbeat=true]` | `201` adds, refreshes or replaces a listing |
//! | `DELETE /v1/listings/:service/:host` | `204`, or `404` when unknown |
//! | `GET /v1/config` | `200` heartbeat interval and other settings |
//! | `GET /ready` | `200` once join sync is done, `503` before |
//! | `GET /v1/snapshot` | `200` every listing with its remaining TTL (NDJSON) |
//!
//! Listing reads (`GET /v1/listings[/:service]`) that arrive while the coordinator
//! is still copying its cluster's listings (join sync, `sync.rs`) wait for it.
//! Every answer says whether the coordinator is complete (`X-Hakken-Complete`).
//!
//! The three list GETs answer with `X-Hakken-Index` and are blocking queries when
//! asked with `?index=N[&wait=30s]`: held until the index differs from `N`.
//! `?pretty` pretty-prints any GET answer. Every answer carries
//! `X-Hakken-Heartbeat-Interval` (ms), `X-Hakken-Coordinator` (this one's host) and
//! `X-Hakken-Complete`.

use super::changes::Topic;
use super::metrics::{RequestLabels, RouteLabels};
use super::readiness::Phase;
use super::registry::Upsert;
use super::Shared;
use crate::listing::{check_name, DecodeError, Listing, Peer};
use crate::protocol::{
    snapshot_end, write_snapshot_entry, SnapshotHead, COMPLETE_HEADER, COORDINATOR_HEADER,
    HEARTBEAT_HEADER, INDEX_HEADER, INSTANCE_HEADER, READY_PATH, SNAPSHOT_CONTENT_TYPE,
    SNAPSHOT_PATH, WAIT_HEADER,
};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// An error answered to a client as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                error = self.message,
                "request refused"
            );
        } else {
            tracing::debug!(
                status = self.status.as_u16(),
                error = self.message,
                "bad request"
            );
        }
        let body = serde_json::to_vec(&json!({ "error": self.message })).expect("serializes");
        let mut response = json_response(self.status, Bytes::from(body));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large".to_owned()
        } else {
            rejection.body_text()
        };
        ApiError::new(status, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The query parameters any route may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Params {
    /// Present (with any value but `false`) → pretty-printed JSON.
    pretty: Option<String>,
    /// `true` on a heartbeat POST.
    heartbeat: Option<String>,
    /// Blocking query: the index the caller has seen.
    index: Option<u64>,
    /// Blocking query: how long to hold it (`30s`, `500ms`, `5m`; a bare number is seconds).
    wait: Option<String>,
}

impl Params {
    fn pretty(&self) -> bool {
        self.pretty.as_deref().is_some_and(|v| v != "false")
    }

    /// The blocking part of the query, if any: the index seen and the hold time.
    fn blocking(&self, shared: &Shared) -> ApiResult<Option<(u64, Duration)>> {
        let Some(index) = self.index else {
            return Ok(None);
        };
        let wait = match &self.wait {
            None => shared.config.default_wait,
            Some(text) => parse_wait(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid wait `{text}`: expected a duration such as 30s, 500ms or 5m"
                ))
            })?,
        };
        Ok(Some((index, wait.min(shared.config.max_wait))))
    }
}

/// Parses `500ms`, `30s`, `5m` or a bare number of seconds.
fn parse_wait(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1_000)
    };
    let number: u64 = number.trim().parse().ok()?;
    Some(Duration::from_millis(number.checked_mul(unit_ms)?))
}

/// Holds a blocking query until `index()` differs from `seen`, `wait` (plus up to
/// 1/16 of it as jitter, so held requests do not all return together) passes, or
/// the coordinator shuts down. Returns at once when the cap on held queries is hit.
/// Returns the hold it granted (zero at the cap), which the answer tells the client
/// (`X-Hakken-Wait`).
async fn block(
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
fn granted(mut response: Response, granted: Option<Duration>) -> Response {
    if let Some(granted) = granted {
        response.headers_mut().insert(
            WAIT_HEADER,
            HeaderValue::from(granted.as_millis().min(u64::MAX as u128) as u64),
        );
    }
    response
}

/// Builds the router over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.max_body_bytes;
    Router::new()
        .route("/status", get(status))
        .route(READY_PATH, get(ready))
        .route(SNAPSHOT_PATH, get(snapshot))
        .route("/metrics", get(get_metrics))
        .route("/v1/config", get(get_config))
        .route(
            "/v1/coordinator",
            get(get_coordinators).post(post_coordinator),
        )
        .route("/v1/listings", get(get_services).post(post_listing))
        .route("/v1/listings/{service}", get(get_listings))
        .route(
            "/v1/listings/{service}/{host}",
            axum::routing::delete(delete_listing),
        )
        .merge(super::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Around {
                headers: common_headers(&shared),
                shared: shared.clone(),
            },
            around,
        ))
        .with_state(shared)
}

/// What the one middleware needs: the shared state and the headers built once.
#[derive(Clone)]
struct Around {
    shared: Arc<Shared>,
    headers: CommonHeaders,
}

/// The one middleware around every route: admits the request (token, body), then
/// stamps the common headers on the answer, counts and times it, and logs it at
/// debug level. Blocking queries are counted but kept out of the latency
/// histogram, which they would swamp. One layer, not four: every request pays it.
async fn around(State(around): State<Around>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let shared = &around.shared;
    let method = method_label(request.method());
    let route = route_label(request.extensions().get::<MatchedPath>());
    let blocking = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("index=")));
    let uri = tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().clone());
    let mut response = match admit(shared, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in around.headers.iter() {
        headers.insert(name.clone(), value.clone());
    }
    // Whether this coordinator holds all its cluster holds (see `readiness.rs`);
    // while it syncs it does not know yet, and no listing read is answered.
    match shared.phase() {
        Phase::Complete => headers.insert(COMPLETE_HEADER, HeaderValue::from_static("true")),
        Phase::Partial => headers.insert(COMPLETE_HEADER, HeaderValue::from_static("false")),
        Phase::Syncing => None,
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let metrics = &shared.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    if !blocking {
        metrics
            .latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }
    if let Some(uri) = uri {
        tracing::debug!(method, %uri, status, micros = elapsed.as_micros() as u64, "request");
    }
    response
}

/// The request as the handler gets it, or the answer that refuses it.
async fn admit(shared: &Shared, request: Request) -> Result<Request, ApiError> {
    authorize(shared, &request)?;
    read_body(shared, request).await
}

/// A bounded label for a route: the routes we serve, or `unmatched`.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    const ROUTES: [&str; 12] = [
        "/status",
        READY_PATH,
        SNAPSHOT_PATH,
        "/metrics",
        "/v1/config",
        "/v1/coordinator",
        "/v1/listings",
        "/v1/listings/{service}",
        "/v1/listings/{service}/{host}",
        "/",
        "/ui",
        "/ui/api/state",
    ];
    matched
        .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()))
        .copied()
        .unwrap_or("unmatched")
}

/// A bounded label for a method: any other token a client invents is `other`, so
/// clients cannot make the metrics grow without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `GET /metrics`: Prometheus text exposition.
async fn get_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let metrics = &shared.metrics;
    let (listings, services) = shared.read_registry(|r| (r.len(), r.service_count()));
    metrics.listings.set(listings as i64);
    metrics.services.set(services as i64);
    metrics
        .coordinators
        .set(shared.read_membership(|m| m.len()) as i64);
    metrics.held_queries.set(shared.changes.held() as i64);
    let mut response = Response::new(Body::from(metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// With a token configured: writes (and reads, when protected) need
/// `Authorization: Bearer <token>`, compared in constant time. `/status` stays open.
fn authorize(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    let Some(token) = shared.config.token.as_deref() else {
        return Ok(());
    };
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path();
    if path == "/status" || path == READY_PATH || (is_read && !shared.config.protect_reads) {
        return Ok(());
    }
    // The scheme is case-insensitive (RFC 7235); the token is not.
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token",
    ))
}

/// Receives a request's whole body within the body deadline and the size limit,
/// so a slow or endless sender gets a `408` or `413` instead of holding a handler.
async fn read_body(shared: &Shared, request: Request) -> Result<Request, ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let mut collect = std::pin::pin!(Limited::new(body, shared.config.max_body_bytes).collect());
    // A small body usually came with the head: take it without arming a timer.
    let at_once = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match at_once {
        Poll::Ready(collected) => Ok(collected),
        Poll::Pending => tokio::time::timeout(shared.config.body_timeout, collect).await,
    };
    let refusal = match collected {
        Ok(Ok(collected)) => {
            return Ok(Request::from_parts(parts, Body::from(collected.to_bytes())));
        }
        Err(_elapsed) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        ),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Ok(Err(error)) => ApiError::bad_request(format!("could not read the body: {error}")),
    };
    Err(refusal)
}

/// The headers every answer carries, built once.
type CommonHeaders = Arc<[(HeaderName, HeaderValue)]>;

fn common_headers(shared: &Shared) -> CommonHeaders {
    let heartbeat = shared.config.heartbeat_interval.as_millis().to_string();
    [
        (HEARTBEAT_HEADER, HeaderValue::from_str(&heartbeat).ok()),
        (
            COORDINATOR_HEADER,
            HeaderValue::from_str(shared.me.host()).ok(),
        ),
        (INSTANCE_HEADER, Some(HeaderValue::from(shared.instance))),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((HeaderName::from_static(name), value?)))
    .collect()
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 JSON answer from pre-serialized bytes, pretty-printed on request.
fn json_ok(body: Bytes, pretty: bool, index: Option<u64>) -> Response {
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

fn to_json_bytes(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("serializes"))
}

async fn status(query: Result<Query<Params>, QueryRejection>) -> ApiResult<Response> {
    let Query(params) = query?;
    Ok(json_ok(to_json_bytes(&"OK"), params.pretty(), None))
}

async fn get_coordinators(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    let mut hold = None;
    if let Some((seen, wait)) = params.blocking(&shared)? {
        let index = || shared.read_membership(|m| m.index());
        hold = Some(block(&shared, Topic::Coordinators, seen, wait, index).await);
    }
    let (index, list) = shared.read_membership(|m| (m.index(), m.list()));
    let response = json_ok(to_json_bytes(&list), params.pretty(), Some(index));
    Ok(granted(response, hold))
}

async fn post_coordinator(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let peer = Peer::from_json(&body?, &shared.config.listing_limits)?;
    let host = peer.host().to_owned();
    let added = shared
        .update_membership(|m| m.add(peer, Instant::now()))
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if added {
        tracing::info!(coordinator = host, "coordinator announced itself");
    }
    Ok(StatusCode::CREATED)
}

async fn get_services(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    let blocking = params.blocking(&shared)?;
    shared.ready().await;
    let mut hold = None;
    if let Some((seen, wait)) = blocking {
        let index = || shared.read_registry(|r| r.names_index());
        hold = Some(block(&shared, Topic::Services, seen, wait, index).await);
    }
    let (index, body) = shared.services_json();
    let response = json_ok(body, params.pretty(), Some(index));
    Ok(granted(response, hold))
}

async fn get_listings(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(service) = path?;
    let Query(params) = query?;
    let blocking = params.blocking(&shared)?;
    // A name no listing could have is answered at once, never held: a held query
    // must not keep an arbitrarily long name in memory.
    let limits = &shared.config.listing_limits;
    if check_name("service", &service, limits.max_service_len).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no live listing for that service name (not a valid name)",
        ));
    }
    shared.ready().await;
    let mut hold = None;
    if let Some((seen, wait)) = blocking {
        let topic = Topic::Service(service.clone());
        let index = || shared.read_registry(|r| r.index(&service));
        hold = Some(block(&shared, topic, seen, wait, index).await);
    }
    let answer = shared.listings_json(&service);
    let response = match answer {
        Ok((index, body)) => json_ok(body, params.pretty(), Some(index)),
        // A blocking query waits for the first listing: it needs an answer with an index.
        Err(index) if blocking.is_some() => {
            json_ok(Bytes::from_static(b"[]"), params.pretty(), Some(index))
        }
        Err(index) => {
            let mut response = ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no live listing for service `{service}`"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(INDEX_HEADER, HeaderValue::from(index));
            response
        }
    };
    Ok(granted(response, hold))
}

/// `GET /ready`: `200` once the coordinator answers listing reads (join sync is
/// done), `503` before: for load balancers and Kubernetes readiness probes.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let phase = shared.phase();
    let (status, body) = match phase {
        Phase::Syncing => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "complete": false, "phase": "syncing"}),
        ),
        Phase::Partial => (
            StatusCode::OK,
            json!({"ready": true, "complete": false, "phase": "partial"}),
        ),
        Phase::Complete => (
            StatusCode::OK,
            json!({"ready": true, "complete": true, "phase": "complete"}),
        ),
    };
    json_response(status, to_json_bytes(&body))
}

/// Listing lines per chunk of a snapshot's body.
const SNAPSHOT_CHUNK: usize = 512;

/// `GET /v1/snapshot`: every live listing with its remaining time to live, for a
/// coordinator that joins (see [`crate::protocol::SnapshotHead`]). Copied out
/// under the lock (shared payloads, no parsing), written out after releasing it,
/// a chunk at a time. A coordinator still syncing has nothing to give: `503`.
async fn snapshot(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    let phase = shared.phase();
    if phase == Phase::Syncing {
        // Normal while two coordinators start together: not worth a warning.
        let body = json!({"error": "still copying listings from a peer; ask another coordinator"});
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            to_json_bytes(&body),
        ));
    }
    let entries = shared.read_registry(|r| r.snapshot(Instant::now()));
    let head = SnapshotHead {
        version: 1,
        coordinator: shared.me.host().to_owned(),
        complete: phase == Phase::Complete,
        count: entries.len(),
    };
    let mut first = serde_json::to_vec(&head).expect("serializes");
    first.push(b'\n');
    let count = entries.len();
    let mut entries = entries.into_iter();
    let chunks = std::iter::from_fn(move || {
        let mut chunk = Vec::new();
        for (body, ttl) in entries.by_ref().take(SNAPSHOT_CHUNK) {
            write_snapshot_entry(&mut chunk, ttl, &body);
        }
        (!chunk.is_empty()).then(|| Bytes::from(chunk))
    });
    let all = std::iter::once(Bytes::from(first))
        .chain(chunks)
        .chain(std::iter::once(Bytes::from(snapshot_end(count))))
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(all)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE),
    );
    Ok(response)
}

async fn post_listing(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let Query(params) = query?;
    let body = body?;
    let heartbeat = params.heartbeat.as_deref() == Some("true");
    // The common case, a heartbeat that repeats the stored payload byte for byte,
    // needs only the key read and a comparison: no decoding, no validation (what
    // is stored was validated), no allocation.
    if let Some((service, host)) = peek_key(&body) {
        if shared.refresh_if_same(&service, &host, &body) {
            log_listing(&shared, &service, &host, heartbeat, Upsert::Refreshed);
            return Ok(StatusCode::CREATED);
        }
    }
    let listing = Listing::from_json(&body, &shared.config.listing_limits)?;
    let (service, host) = (listing.service().to_owned(), listing.host().to_owned());
    let outcome = shared
        .upsert(listing)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    log_listing(&shared, &service, &host, heartbeat, outcome);
    Ok(StatusCode::CREATED)
}

/// Reads only `service` and `host` from a body, borrowing them where it can.
fn peek_key(body: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    #[derive(Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        service: Cow<'a, str>,
        #[serde(borrow)]
        host: Cow<'a, str>,
    }
    let key: Key = serde_json::from_slice(body).ok()?;
    Some((key.service, key.host))
}

fn log_listing(shared: &Shared, service: &str, host: &str, heartbeat: bool, outcome: Upsert) {
    if shared.config.log_heartbeats {
        tracing::info!(service, host, heartbeat, ?outcome, "listing received");
    } else {
        tracing::debug!(service, host, heartbeat, ?outcome, "listing received");
    }
}

async fn delete_listing(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((service, host)) = path?;
    let removed = shared.remove(&service, &host);
    match removed {
        Some(_) => {
            tracing::info!(service, host, "listing withdrawn");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no listing of `{service}` at `{host}`"),
        )),
    }
}

/// `GET /v1/config`: the settings a client may want to adopt.
async fn get_config(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    let config = &shared.config;
    let body = json!({
        "host": shared.me.host(),
        "heartbeatInterval": config.heartbeat_interval.as_millis() as u64,
        "missedHeartbeatsAllowed": config.missed_heartbeats_allowed,
        "resyncInterval": config.resync_period().as_millis() as u64,
        "maxWait": config.max_wait.as_millis() as u64,
        "version": env!("CARGO_PKG_VERSION"),
    });
    Ok(json_ok(to_json_bytes(&body), params.pretty(), None))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
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
        assert_eq!(parse_wait("-1s"), None);
        assert_eq!(parse_wait("soon"), None);
        assert_eq!(parse_wait("99999999999999999999m"), None);
    }
}
