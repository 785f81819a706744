//! Everything but the listings: liveness (`/status`) and readiness (`/ready`),
//! the coordinator list (`GET`/`POST /v1/coordinator`), the snapshot a joining
//! coordinator copies (`/v1/snapshot`), the settings a client adopts
//! (`/v1/config`), the metrics (`/metrics`), and the fallbacks.

use super::admission::Received;
use super::answer::{json_ok, json_response, to_json_bytes, ApiError, ApiResult};
use super::blocking::{block, granted, Params};
use crate::coordinator::changes::Topic;
use crate::coordinator::readiness::Phase;
use crate::coordinator::Shared;
use crate::listing::Peer;
use crate::protocol::{snapshot_end, write_snapshot_entry, SnapshotHead, SNAPSHOT_CONTENT_TYPE};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;
use tokio::time::Instant;

/// `GET /metrics`: Prometheus text exposition.
pub(super) async fn get_metrics(State(shared): State<Arc<Shared>>) -> Response {
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

pub(super) async fn status(query: Result<Query<Params>, QueryRejection>) -> ApiResult<Response> {
    let Query(params) = query?;
    Ok(json_ok(to_json_bytes(&"OK"), params.pretty(), None))
}

pub(super) async fn get_coordinators(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    // Checked first, as the listing routes do: a bad `index` or `wait` is a 400
    // for a stream too.
    let blocking = params.blocking(&shared)?;
    if super::stream::wanted(&headers, params.stream.as_deref()) {
        let seen = blocking.map(|(seen, _)| seen);
        return Ok(super::stream::open(
            &shared,
            Topic::Coordinators,
            &headers,
            seen,
        ));
    }
    let mut hold = None;
    if let Some((seen, wait)) = blocking {
        let index = || shared.read_membership(|m| m.index());
        hold = Some(block(&shared, Topic::Coordinators, seen, wait, index).await);
    }
    let (index, list) = shared.read_membership(|m| (m.index(), m.list()));
    let response = json_ok(to_json_bytes(&list), params.pretty(), Some(index));
    Ok(granted(response, hold))
}

pub(super) async fn post_coordinator(
    State(shared): State<Arc<Shared>>,
    Received(body): Received,
) -> ApiResult<StatusCode> {
    let peer = Peer::from_json(&body, &shared.config.listing_limits)?;
    let host = peer.host().to_owned();
    let added = shared
        .update_membership(|m| m.add(peer, Instant::now()))
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if added {
        tracing::info!(coordinator = host, "coordinator announced itself");
    }
    Ok(StatusCode::CREATED)
}

/// `GET /ready`: `200` once the coordinator answers listing reads (join sync is
/// done), `503` before: for load balancers and Kubernetes readiness probes.
pub(super) async fn ready(State(shared): State<Arc<Shared>>) -> Response {
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
pub(super) async fn snapshot(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
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

/// `GET /v1/config`: the settings a client may want to adopt.
pub(super) async fn get_config(
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

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
