//! The listing routes: `GET /v1/listings` (service names), `GET
//! /v1/listings/:service`, `POST /v1/listings[?heartbeat=true]` and `DELETE
//! /v1/listings/:service/:host`. A listing enters here (decoded and validated),
//! and leaves here when its publisher withdraws it. Reads wait while the
//! coordinator copies its cluster's listings (join sync).

use super::admission::Received;
use super::answer::{json_ok, ApiError, ApiResult};
use super::blocking::{block, granted, Params};
use super::stream;
use crate::coordinator::changes::Topic;
use crate::coordinator::readiness::Phase;
use crate::coordinator::registry::Upsert;
use crate::coordinator::Shared;
use crate::listing::{check_name, Listing};
use crate::protocol::{DEPARTED_HEADER, INDEX_HEADER};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

pub(super) async fn get_services(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    let blocking = params.blocking(&shared)?;
    shared.ready().await;
    if stream::wanted(&headers, params.stream.as_deref()) {
        let seen = blocking.map(|(seen, _)| seen);
        return Ok(stream::open(&shared, Topic::Services, &headers, seen));
    }
    let mut hold = None;
    if let Some((seen, wait)) = blocking {
        let index = || shared.read_registry(|r| r.names_index());
        hold = Some(block(&shared, Topic::Services, seen, wait, index).await);
    }
    let (index, body) = shared.services_json();
    let response = json_ok(body, params.pretty(), Some(index));
    Ok(granted(response, hold))
}

pub(super) async fn get_listings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
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
    if stream::wanted(&headers, params.stream.as_deref()) {
        let seen = blocking.map(|(seen, _)| seen);
        let topic = Topic::Service(service.clone());
        let mut response = stream::open(&shared, topic, &headers, seen);
        tell_departed(&shared, &service, &mut response);
        return Ok(response);
    }
    let mut hold = None;
    if let Some((seen, wait)) = blocking {
        let topic = Topic::Service(service.clone());
        let index = || shared.read_registry(|r| r.index(&service));
        hold = Some(block(&shared, topic, seen, wait, index).await);
    }
    let answer = shared.listings_json(&service);
    let mut response = match answer {
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
    tell_departed(&shared, &service, &mut response);
    Ok(granted(response, hold))
}

/// What a partial coordinator knows is gone of `service`'s listings, though it
/// cannot list all there is (`X-Hakken-Departed`: withdrawn from it since it
/// started, or read back from its data directory as gone).
fn tell_departed(shared: &Shared, service: &str, response: &mut Response) {
    if shared.phase() != Phase::Partial {
        return;
    }
    let departed = shared.persist.departed(service);
    if let Some(value) = departed.and_then(|d| HeaderValue::from_str(&d).ok()) {
        response.headers_mut().insert(DEPARTED_HEADER, value);
    }
}

pub(super) async fn post_listing(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    Received(body): Received,
) -> ApiResult<StatusCode> {
    // Only `heartbeat=true` means anything here (and only to the log): read it
    // without decoding the query, as the original ignores whatever else comes.
    let heartbeat = query.is_some_and(|q| q.split('&').any(|kv| kv == "heartbeat=true"));
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

pub(super) async fn delete_listing(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((service, host)) = path?;
    // Names no listing could have change nothing: not even what a coordinator
    // that is not complete yet remembers as withdrawn.
    let limits = &shared.config.listing_limits;
    let valid = check_name("service", &service, limits.max_service_len)
        .and_then(|()| check_name("host", &host, limits.max_host_len));
    let removed = valid.ok().and_then(|()| shared.remove(&service, &host));
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

/// `GET /v1/listings/:a/:b`: no route reads one listing; this is most likely a
/// service whose name holds `/`, written unescaped.
pub(super) async fn get_listing_path(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such route: GET {}; a service name that holds `/` is written %2F \
             (/v1/listings/a%2Fb)",
            uri.path()
        ),
    )
}
