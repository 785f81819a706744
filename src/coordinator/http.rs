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
//!
//! `?pretty` pretty-prints any GET answer. Every answer carries
//! `X-Hakken-Heartbeat-Interval` (ms) and `X-Hakken-Coordinator` (this one's host).

use super::Shared;
use crate::listing::{Listing, ListingError, Peer};
use crate::remote::{COORDINATOR_HEADER, HEARTBEAT_HEADER, INDEX_HEADER};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
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
        json_response(self.status, Bytes::from(body))
    }
}

impl From<ListingError> for ApiError {
    fn from(error: ListingError) -> Self {
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
struct Params {
    /// Present (with any value but `false`) → pretty-printed JSON.
    pretty: Option<String>,
    /// `true` on a heartbeat POST.
    heartbeat: Option<String>,
}

impl Params {
    fn pretty(&self) -> bool {
        self.pretty.as_deref().is_some_and(|v| v != "false")
    }
}

/// Builds the router over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.max_body_bytes;
    Router::new()
        .route("/status", get(status))
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response_with_state(
            shared.clone(),
            common_headers,
        ))
        .with_state(shared)
}

async fn common_headers(State(shared): State<Arc<Shared>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let heartbeat = shared.config.heartbeat_interval.as_millis().to_string();
    if let Ok(value) = HeaderValue::from_str(&heartbeat) {
        headers.insert(HEARTBEAT_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(shared.me.host()) {
        headers.insert(COORDINATOR_HEADER, value);
    }
    response
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
    let body = if pretty {
        let value: Value = serde_json::from_slice(&body).expect("we serialized it");
        Bytes::from(serde_json::to_vec_pretty(&value).expect("serializes"))
    } else {
        body
    };
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

/// Parses a request body as JSON; the error names what is wrong.
fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body: expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
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
    let (index, list) = {
        let membership = shared.membership();
        (membership.index(), membership.list())
    };
    Ok(json_ok(to_json_bytes(&list), params.pretty(), Some(index)))
}

async fn post_coordinator(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let value = parse_body(&body?)?;
    let peer = Peer::from_value(value, &shared.config.listing_limits)?;
    let host = peer.host().to_owned();
    let added = shared
        .membership()
        .add(peer, Instant::now())
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
    let (index, body) = shared.registry().services_json();
    Ok(json_ok(body, params.pretty(), Some(index)))
}

async fn get_listings(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(service) = path?;
    let Query(params) = query?;
    let answer = shared.registry().listings_json(&service);
    match answer {
        Some((index, body)) => Ok(json_ok(body, params.pretty(), Some(index))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live listing for service `{service}`"),
        )),
    }
}

async fn post_listing(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let Query(params) = query?;
    let value = parse_body(&body?)?;
    let listing = Listing::from_value(value, &shared.config.listing_limits)?;
    let heartbeat = params.heartbeat.as_deref() == Some("true");
    let (service, host) = (listing.service().to_owned(), listing.host().to_owned());
    let outcome = shared
        .registry()
        .upsert(listing, Instant::now())
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if shared.config.log_heartbeats {
        tracing::info!(service, host, heartbeat, ?outcome, "listing received");
    } else {
        tracing::debug!(service, host, heartbeat, ?outcome, "listing received");
    }
    Ok(StatusCode::CREATED)
}

async fn delete_listing(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((service, host)) = path?;
    let removed = shared.registry().remove(&service, &host);
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

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
