//! Sending listings to coordinators: the heartbeat task, and the rounds of calls
//! behind [`Client::publish`](super::Client::publish), `unpublish` and `close`.
//!
//! One heartbeat task per client (not per listing) sends every listing to every
//! known coordinator each heartbeat interval, concurrently and bounded. A first
//! publication is a plain `POST /v1/listings` (it replaces the payload everywhere);
//! heartbeats are `POST /v1/listings?heartbeat=true`, as the original client sends
//! them. Every round holds [`Inner::writes`], so rounds never interleave.

use super::fanout::fan_out;
use super::Inner;
use crate::backoff::jittered;
use crate::listing::Listing;
use crate::remote::RemoteError;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Sends every listing again each heartbeat interval, until shutdown. Wakes early
/// when the interval changes (a coordinator announced a shorter one).
pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut last = Instant::now();
    loop {
        let due = last + jittered(inner.heartbeat_interval());
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.interval_changed.notified() => continue,
            _ = tokio::time::sleep_until(due) => {}
        }
        last = Instant::now();
        let round = async {
            let _round = inner.writes.lock().await;
            let listings = inner.listings();
            if !listings.is_empty() {
                send(&inner, listings, inner.targets(), true).await;
            }
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = round => {}
        }
    }
}

/// Sends each listing to each host, concurrently. Failures are logged (once per
/// host); a host that does not answer at all is dropped from the known set.
/// The caller holds [`Inner::writes`].
pub(crate) async fn send(
    inner: &Arc<Inner>,
    listings: Vec<Listing>,
    hosts: Vec<String>,
    heartbeat: bool,
) {
    let pairs = pairs(&listings, &hosts);
    let results = fan_out(&inner.tasks, pairs, |(host, listing)| {
        let remote = inner.remote.clone();
        async move {
            let result = remote.publish(&host, &listing, heartbeat).await;
            (host, result)
        }
    })
    .await;
    let verb = if heartbeat { "heartbeat" } else { "publish" };
    report(inner, verb, results, true);
}

/// Withdraws each listing from each host (`DELETE`), concurrently. A host that
/// does not hold a listing, or (the original coordinator) has no such route, is
/// fine. The caller holds [`Inner::writes`].
pub(crate) async fn withdraw(inner: &Arc<Inner>, listings: Vec<Listing>, hosts: Vec<String>) {
    let pairs = pairs(&listings, &hosts);
    let results = fan_out(&inner.tasks, pairs, |(host, listing)| {
        let remote = inner.remote.clone();
        async move {
            let result = match remote.unpublish(&host, &listing).await {
                Ok(_) => Ok(()),
                Err(RemoteError::Status {
                    status: 404 | 405, ..
                }) => {
                    tracing::debug!(
                        coordinator = host.as_str(),
                        "no DELETE route: the listing will expire"
                    );
                    Ok(())
                }
                Err(error) => Err(error),
            };
            (host, result)
        }
    })
    .await;
    report(inner, "withdraw", results, false);
}

fn pairs(listings: &[Listing], hosts: &[String]) -> Vec<(String, Listing)> {
    hosts
        .iter()
        .flat_map(|host| listings.iter().map(move |l| (host.clone(), l.clone())))
        .collect()
}

/// Logs failures, one line per host, and drops the hosts that did not answer
/// (when `drop_unreachable`).
fn report(
    inner: &Inner,
    verb: &str,
    results: Vec<(String, Result<(), RemoteError>)>,
    drop_unreachable: bool,
) {
    let mut failures: BTreeMap<String, (usize, RemoteError)> = BTreeMap::new();
    for (host, result) in results {
        if let Err(error) = result {
            failures
                .entry(host)
                .and_modify(|(count, _)| *count += 1)
                .or_insert((1, error));
        }
    }
    for (host, (count, error)) in failures {
        tracing::warn!(coordinator = host.as_str(), %error, failed = count, "{verb} failed");
        if drop_unreachable && error.is_broken() {
            inner.drop_coordinator(&host, &error);
        }
    }
}
