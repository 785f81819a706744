//! The dashboard: one page embedded in the binary, and the JSON it reads.
//!
//! `GET /` redirects to `GET /ui`, a single HTML page (no build step, no assets
//! from the internet) that shows this coordinator, the coordinators it knows, the
//! services with their listing counts, and one service's listings with the age of
//! their last heartbeat, when each was first seen and when it last changed. It
//! reads `GET /ui/api/state` and waits for changes with the blocking queries of the
//! v1 API.
//!
//! While the coordinator is still warming up (started with no complete peer to
//! copy listings from, see `readiness.rs`), the page's status says so: listings whose
//! publishers have not reached it yet are missing.
//!
//! The page also draws sparklines of the last hour: listings per service beside
//! each service, and listings, heartbeats per second and changes per second in
//! the header. The coordinator samples them itself (`history.rs`, a bounded ring
//! buffer in memory); `GET /ui/api/history` answers every series, and the state
//! says how many samples were taken (`historySamples`) so the page asks for the
//! series again only after a new sample.

use super::readiness::Phase;
use super::Shared;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

const PAGE: &str = include_str!("ui/index.html");

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui") }))
        .route("/ui", get(page))
        .route("/ui/api/state", get(state))
        .route("/ui/api/history", get(history))
}

/// The dashboard's series (see [`super::history::History::json`]), cached per sample.
async fn history(State(shared): State<Arc<Shared>>) -> Response {
    let mut response = shared.history_json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("valid"),
    );
    response
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-cache".parse().expect("valid"));
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StateQuery {
    /// The service whose listings to include.
    service: Option<String>,
}

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

/// Everything the page shows, in one answer.
async fn state(State(shared): State<Arc<Shared>>, Query(query): Query<StateQuery>) -> Json<Value> {
    let now = Instant::now();
    let ttl = shared.config.listing_ttl();
    shared.ready().await;
    let (coordinators, coordinators_index) = shared.read_membership(|membership| {
        let me = json!({"host": membership.me().host(), "self": true, "lastOkMsAgo": null});
        let peers = membership.peers().map(|p| {
            json!({
                "host": p.peer.host(),
                "self": false,
                "lastOkMsAgo": p.last_ok.map(|t| ms(now.saturating_duration_since(t))),
                "addedMsAgo": ms(now.saturating_duration_since(p.added)),
            })
        });
        let list: Vec<Value> = std::iter::once(me).chain(peers).collect();
        (list, membership.index())
    });
    // Copy out under the lock (shared payloads, nothing decoded); build the JSON
    // after releasing it.
    let (counts, names_index, listing_count, selected) = shared.read_registry(|registry| {
        let counts: Vec<(String, usize)> = registry
            .service_counts()
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        let selected = query
            .service
            .as_deref()
            .map(|service| (registry.listing_views(service), registry.index(service)));
        (counts, registry.names_index(), registry.len(), selected)
    });
    let services: Vec<Value> = counts
        .iter()
        .map(|(name, count)| {
            let dns = shared
                .dns_zone
                .as_ref()
                .and_then(|zone| zone.service_name(name));
            json!({"name": name, "count": count, "dns": dns})
        })
        .collect();
    let (listings, service_index) = match selected {
        Some((listings, index)) => {
            // Decoded here, after the lock is released.
            let listings: Vec<Value> = listings
                .iter()
                .map(|view| {
                    let listing: Value = serde_json::from_slice(&view.body).unwrap_or(Value::Null);
                    let left = view.deadline.saturating_duration_since(now);
                    json!({
                        "listing": listing,
                        "heartbeatMsAgo": ms(ttl.saturating_sub(left)),
                        "firstSeenMsAgo": ms(now.saturating_duration_since(view.first_seen)),
                        "changedMsAgo": ms(now.saturating_duration_since(view.changed_at)),
                    })
                })
                .collect();
            (listings, Some(index))
        }
        None => (Vec::new(), None),
    };
    let body = json!({
        "self": shared.me.host(),
        // Whether it holds what its cluster holds (else the page says it is
        // still warming up: started with nobody to copy from).
        "complete": shared.phase() == Phase::Complete,
        "heartbeatInterval": ms(shared.config.heartbeat_interval),
        "ttl": ms(ttl),
        "listingCount": listing_count,
        "historySamples": shared.history_samples(),
        "coordinators": coordinators,
        "services": services,
        "service": query.service,
        "listings": listings,
        "index": {
            "coordinators": coordinators_index,
            "services": names_index,
            "service": service_index,
        },
    });
    Json(body)
}
