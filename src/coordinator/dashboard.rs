//! The dashboard: one page embedded in the binary, and the JSON it reads.
//!
//! `GET /` redirects to `GET /ui`, a single HTML page (no build step, no assets
//! from the internet) that shows this coordinator, the coordinators it knows, the
//! services with their listing counts, and one service's listings with the age of
//! their last heartbeat. It reads `GET /ui/api/state` and waits for changes with
//! the blocking queries of the v1 API.

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
            .map(|(name, count)| (name.to_owned(), count))
            .collect();
        let selected = query.service.as_deref().map(|service| {
            (
                registry.bodies_with_deadlines(service),
                registry.index(service),
            )
        });
        (counts, registry.names_index(), registry.len(), selected)
    });
    let services: Vec<Value> = counts
        .iter()
        .map(|(name, count)| json!({"name": name, "count": count}))
        .collect();
    let (listings, service_index) = match selected {
        Some((listings, index)) => {
            // Decoded here, after the lock is released.
            let listings: Vec<Value> = listings
                .iter()
                .map(|(body, deadline)| {
                    let listing: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                    let left = deadline.saturating_duration_since(now);
                    json!({"listing": listing, "heartbeatMsAgo": ms(ttl.saturating_sub(left))})
                })
                .collect();
            (listings, Some(index))
        }
        None => (Vec::new(), None),
    };
    let body = json!({
        "self": shared.me.host(),
        "heartbeatInterval": ms(shared.config.heartbeat_interval),
        "ttl": ms(ttl),
        "listingCount": listing_count,
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
