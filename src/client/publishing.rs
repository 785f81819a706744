//! Sending listings to coordinators: the heartbeat task, and the rounds of calls
//! behind [`Client::publish`](super::Client::publish), `unpublish` and `close`.
//!
//! One heartbeat task per client (not per listing) sends every listing to every
//! known coordinator each heartbeat interval, concurrently and bounded. A first
//! publication is a plain `POST /v1/listings` (it replaces the payload everywhere);
//! heartbeats are `POST /v1/listings?heartbeat=true`, as the original client sends
//! them. Every round holds [`Inner::writes`], so rounds never interleave.
//!
//! A heartbeat round is what counts against a coordinator: one that is broken at a
//! round gets a strike (see [`Inner::struck`]). Between rounds, the coordinators
//! whose last round failed are tried again soon, with backoff: one that was
//! restarted has every listing back within moments of answering again, not one
//! heartbeat later. Those retries never count as strikes.

use super::discovery::answering;
use super::Inner;
use crate::backoff::{jittered, Backoff};
use crate::fanout::fan_out;
use crate::listing::Listing;
use crate::remote::RemoteError;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// First retry of a coordinator whose heartbeat failed.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// What the heartbeat task does when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every listing to every coordinator; a broken one gets a strike.
    Heartbeat,
    /// Every listing to every coordinator now, without strikes.
    Republish,
    /// Every listing to the coordinators that failed since they last answered.
    Retry,
}

/// Sends every listing again each heartbeat interval, until shutdown; in between,
/// retries the coordinators that failed, and republishes everywhere when asked.
/// Wakes early when the interval changes (a coordinator announced a shorter one).
pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut next_round = Instant::now() + jittered(inner.heartbeat_interval());
    let mut retry = Backoff::new(RETRY_MIN, inner.heartbeat_interval());
    let mut next_retry: Option<Instant> = None;
    loop {
        let wake = next_retry.map_or(next_round, |at| at.min(next_round));
        let round = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.interval_changed.notified() => {
                next_round = Instant::now() + jittered(inner.heartbeat_interval());
                retry = Backoff::new(RETRY_MIN, inner.heartbeat_interval());
                continue;
            }
            _ = inner.retry_soon.notified() => {
                // A new failure: retry it soon, without moving the backoff on
                // (that moves once per retry round).
                let soon = Instant::now() + RETRY_MIN;
                next_retry = Some(next_retry.map_or(soon, |at| at.min(soon)));
                continue;
            }
            _ = inner.republish.notified() => Round::Republish,
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_round { Round::Heartbeat } else { Round::Retry }
            }
        };
        if round == Round::Heartbeat {
            next_round = Instant::now() + jittered(inner.heartbeat_interval());
        }
        let send_round = async {
            // A retry first finds out, without holding up other writes, which of the
            // failing coordinators answer at all: one that hangs must not keep
            // `publish`, `unpublish` or `close` waiting for a request timeout.
            let hosts = match round {
                Round::Retry => answering(&inner, inner.failing()).await,
                Round::Heartbeat | Round::Republish => inner.targets(),
            };
            let _round = inner.writes.lock().await;
            let listings = inner.listings();
            if listings.is_empty() || hosts.is_empty() {
                return;
            }
            let strike = round == Round::Heartbeat;
            send(&inner, listings, hosts, true, strike).await;
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = send_round => {}
        }
        next_retry = if inner.failing().is_empty() {
            retry.reset();
            None
        } else {
            Some(Instant::now() + retry.next_delay())
        };
    }
}

/// Sends each listing to each host, concurrently. Failures are logged (once per
/// host); with `strike`, a host found broken gets a strike (see [`Inner::struck`]).
/// The caller holds [`Inner::writes`].
pub(crate) async fn send(
    inner: &Arc<Inner>,
    listings: Vec<Listing>,
    hosts: Vec<String>,
    heartbeat: bool,
    strike: bool,
) {
    if hosts.is_empty() {
        return;
    }
    // Serialized once per round, whatever the number of coordinators.
    let bodies: Vec<Bytes> = listings
        .iter()
        .map(|l| Bytes::from(serde_json::to_vec(l).expect("a listing serializes")))
        .collect();
    let pairs = pairs(&bodies, &hosts);
    let results = fan_out(Some(&inner.tasks), pairs, |(host, body)| {
        let remote = inner.remote.clone();
        async move {
            let result = remote.publish_json(&host, body, heartbeat).await;
            (host, result)
        }
    })
    .await;
    // What the answers say of their coordinators (a heartbeat interval to adopt,
    // a restart), from one answer per coordinator.
    let mut noted = BTreeSet::new();
    let results = results
        .into_iter()
        .map(|(host, result)| {
            let result = result.map(|answer| {
                if noted.insert(host.clone()) {
                    inner.note(&host, &answer);
                }
            });
            (host, result)
        })
        .collect();
    let verb = if heartbeat { "heartbeat" } else { "publish" };
    report(inner, verb, results, strike);
}

/// Withdraws each listing from each host (`DELETE`), concurrently. A host that
/// does not hold a listing, or (the original coordinator) has no such route, is
/// fine. The caller holds [`Inner::writes`]. Returns the hosts that could not be
/// reached, with why.
pub(crate) async fn withdraw(
    inner: &Arc<Inner>,
    listings: Vec<Listing>,
    hosts: Vec<String>,
) -> BTreeMap<String, RemoteError> {
    let pairs = pairs(&listings, &hosts);
    let results = fan_out(Some(&inner.tasks), pairs, |(host, listing)| {
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
    report(inner, "withdraw", results, false)
}

/// Every (host, item) pair; items are cheap to clone (shared bytes, listings).
fn pairs<T: Clone>(items: &[T], hosts: &[String]) -> Vec<(String, T)> {
    hosts
        .iter()
        .flat_map(|host| items.iter().map(move |item| (host.clone(), item.clone())))
        .collect()
}

/// Logs failures, one line per host; records who answered, and with `strike`,
/// gives the hosts found broken a strike. Returns the failures by host.
fn report(
    inner: &Inner,
    verb: &str,
    results: Vec<(String, Result<(), RemoteError>)>,
    strike: bool,
) -> BTreeMap<String, RemoteError> {
    let mut failures: BTreeMap<String, (usize, RemoteError)> = BTreeMap::new();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for (host, result) in results {
        match result {
            Ok(()) => {
                // It took a write: it works, and may be given probation again.
                inner.took_a_write(&host);
                answered.insert(host);
            }
            Err(error) => {
                failures
                    .entry(host)
                    .and_modify(|(count, _)| *count += 1)
                    .or_insert((1, error));
            }
        }
    }
    let mut errors = BTreeMap::new();
    for (host, (count, error)) in failures {
        tracing::warn!(coordinator = host.as_str(), %error, listings = count, "{verb} failed");
        // A host that answered some calls, or refused, is alive. One that is
        // broken gets a strike in a heartbeat round, and is retried soon either way.
        if !error.is_broken() {
            answered.insert(host.clone());
        } else if !answered.contains(&host) {
            if strike {
                inner.struck(&host, &error);
            }
            inner.suspect(&host);
        }
        errors.insert(host, error);
    }
    for host in &answered {
        inner.answered(host);
    }
    errors
}
