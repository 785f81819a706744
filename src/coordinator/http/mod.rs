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
//! | `GET /v1/listings/:a/:b` | `404` saying to write a `/` in a service name `%2F` |
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
//!
//! The module by concern: `admission.rs` is the one middleware every request goes
//! through (token, body, common headers, metrics, request log); `answer.rs` how
//! answers and errors are written; `blocking.rs` the query parameters and the hold
//! of blocking queries; `listings.rs` the listing routes; `cluster.rs` the rest
//! (status, readiness, coordinators, snapshot, config, metrics).

mod admission;
mod answer;
mod blocking;
mod broadcast;
mod cluster;
mod listings;
mod stream;

use super::Shared;
use crate::protocol::{READY_PATH, SNAPSHOT_PATH};
pub(crate) use admission::Admission;
use axum::routing::get;
use axum::Router;
pub(crate) use broadcast::{chunk, serve as serve_stream, Subscribers};
use cluster::{
    get_config, get_coordinators, get_metrics, method_not_allowed, not_found, post_coordinator,
    ready, snapshot, status,
};
use listings::{delete_listing, get_listing_path, get_listings, get_services, post_listing};
use std::sync::Arc;
pub(crate) use stream::{wanted, Takeover};

/// The router over the shared state, with admission in front.
pub(crate) fn service(shared: Arc<Shared>) -> Admission {
    Admission::new(router(shared.clone()), shared)
}

/// Every route.
fn router(shared: Arc<Shared>) -> Router {
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
            get(get_listing_path).delete(delete_listing),
        )
        .merge(super::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}
