//! The tasks that keep the set of known coordinators fresh.
//!
//! - [`resync_loop`] asks the configured `host` every resync period, and at once
//!   (then with backoff) while no coordinator is known.
//! - [`poll_loop`] asks every known coordinator for the coordinators it knows,
//!   every poll interval; one found broken gets a strike (see [`Inner::struck`]).
//! - [`follow_loop`] holds a blocking query on one coordinator's list (ours
//!   support it), so a coordinator that joins or comes back is known, and has every
//!   listing, within moments; against the original's it polls every heartbeat at
//!   most, and moves to one of ours as soon as one is known.
//! - [`liveness_loop`], in a client that publishes nothing (so no heartbeat round
//!   finds a broken coordinator), probes the coordinators its watches follow every
//!   heartbeat interval: one stopped or cut off gets a strike, and the watches move
//!   on at once rather than when their stream goes quiet for good.
//! - [`probation_loop`] probes the coordinators dropped recently, every heartbeat
//!   interval while any is on probation: one that answers is known again and gets
//!   every listing at once. A coordinator back before its peers noticed it was gone
//!   changes no coordinator list, so nothing else would bring it back in time.
//!
//! The bookkeeping itself is [`Coordinators`](super::coordinators::Coordinators).

use super::follow::{Event, Follower};
use super::Inner;
use crate::backoff::{jittered, Backoff};
use crate::fanout::fan_out;
use crate::remote::{Ask, Opened, RemoteError};
use std::sync::Arc;
use std::time::Duration;

/// First retry delay while `host` does not answer.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// Asks `host` for the coordinators it knows and records them.
pub(crate) async fn ask(inner: &Arc<Inner>, host: &str) -> Result<usize, RemoteError> {
    let answer = inner.remote.coordinators(host, None).await?;
    Ok(inner.learn(host, &answer))
}

/// Asks the configured host every resync period; while no coordinator is known,
/// retries with backoff (capped at the poll interval).
pub(crate) async fn resync_loop(inner: Arc<Inner>, ask_first: bool) {
    let config = &inner.config;
    let period = config.resync_period().max(super::MIN_INTERVAL);
    let mut backoff = Backoff::new(RETRY_MIN, config.poll_interval.min(period));
    let mut delay = if ask_first {
        Duration::ZERO
    } else {
        jittered(period)
    };
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = inner.resync_now.notified() => {}
        }
        let result = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            result = resync(&inner) => result,
        };
        delay = match result {
            Ok(_) => {
                backoff.reset();
                jittered(period)
            }
            Err(error) if inner.known().is_empty() => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    host = config.host.as_str(),
                    %error,
                    retry_ms = delay.as_millis() as u64,
                    "no coordinator known and host does not answer; retrying"
                );
                delay
            }
            Err(error) => {
                tracing::info!(host = config.host.as_str(), %error, "resync failed");
                jittered(period)
            }
        };
    }
}

/// Asks the configured host; while no coordinator is known, also the coordinators
/// dropped most recently, at once: any one that answers brings the client back.
async fn resync(inner: &Arc<Inner>) -> Result<usize, RemoteError> {
    let host = inner.config.host.clone();
    if !inner.known().is_empty() {
        return ask(inner, &host).await;
    }
    let results = fan_out(Some(&inner.tasks), inner.targets(), |target| {
        let inner = inner.clone();
        async move { ask(&inner, &target).await }
    })
    .await;
    let mut first_error = None;
    let mut learned = None;
    for result in results {
        match result {
            Ok(count) => learned = Some(learned.unwrap_or(0) + count),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match (learned, first_error) {
        (Some(count), _) => Ok(count),
        (None, Some(error)) => Err(error),
        (None, None) => Ok(0),
    }
}

/// Every poll interval, asks each known coordinator for the coordinators it
/// knows, adds the new ones, and gives those found broken a strike.
pub(crate) async fn poll_loop(inner: Arc<Inner>) {
    let interval = inner.config.poll_interval.max(super::MIN_INTERVAL);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(jittered(interval)) => {}
        }
        let hosts = inner.known();
        let poll = fan_out(Some(&inner.tasks), hosts, |host| {
            let inner = inner.clone();
            async move {
                let result = ask(&inner, &host).await;
                (host, result)
            }
        });
        let results = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            results = poll => results,
        };
        for (host, result) in results {
            match result {
                Err(error) if error.is_broken() => inner.struck(&host, &error),
                Err(error) => {
                    tracing::warn!(coordinator = host.as_str(), %error, "coordinator refused a poll");
                    inner.answered(&host);
                }
                Ok(_) => {
                    inner.answered(&host);
                }
            }
        }
    }
}

/// In a client that publishes nothing, probes the coordinators its watches follow
/// every heartbeat interval (`GET /status`, within the request timeout); one found
/// broken gets a strike, which moves the watches held on it (see
/// [`Inner::struck`]). A client that publishes finds them broken in its heartbeat
/// rounds instead.
pub(crate) async fn liveness_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(jittered(inner.heartbeat_interval())) => {}
        }
        if inner.publishes() {
            continue;
        }
        // Only known coordinators: a strike means nothing to the way in (a load
        // balancer) or to one already dropped.
        let known = inner.known();
        let mut followed = super::feed::followed(&inner);
        followed.retain(|host| known.contains(host));
        if followed.is_empty() {
            continue;
        }
        let probes = fan_out(Some(&inner.tasks), followed, |host| {
            let inner = inner.clone();
            async move {
                let result = inner.remote.status(&host).await;
                (host, result)
            }
        });
        let results = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            results = probes => results,
        };
        // A success clears nothing: `/status` answering says less than the rounds
        // and polls that count strikes.
        for (host, result) in results {
            match result {
                Err(error) if error.is_broken() => inner.struck(&host, &error),
                _ => {}
            }
        }
    }
}

/// While any dropped coordinator is on probation, probes them every heartbeat
/// interval; those that answer are known again and get every listing now. Sleeps
/// until the next drop otherwise.
pub(crate) async fn probation_loop(inner: Arc<Inner>) {
    let mut dropped = inner.dropped.subscribe();
    loop {
        if inner.on_probation().is_empty() {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                changed = dropped.changed() => if changed.is_err() { return },
            }
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(jittered(inner.heartbeat_interval())) => {}
        }
        let probation = inner.on_probation();
        if probation.is_empty() {
            continue;
        }
        let back = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            back = answering(&inner, probation) => back,
        };
        inner.take_back(&back);
    }
}

/// Those of `hosts` that answer `GET /status`.
pub(crate) async fn answering(inner: &Arc<Inner>, hosts: Vec<String>) -> Vec<String> {
    let probes = fan_out(Some(&inner.tasks), hosts, |host| {
        let remote = inner.remote.clone();
        async move {
            let alive = remote.status(&host).await.is_ok();
            (host, alive)
        }
    });
    probes
        .await
        .into_iter()
        .filter_map(|(host, alive)| alive.then_some(host))
        .collect()
}

/// Follows the coordinator list of one coordinator with blocking queries, and
/// learns every coordinator it lists as soon as it is listed.
pub(crate) async fn follow_loop(inner: Arc<Inner>) {
    let mut follower = Follower::new(
        inner.clone(),
        "coordinator list".into(),
        inner.config.watch_wait,
        // Against the original's (no blocking queries), polled every heartbeat at
        // most: a coordinator of ours that joins is found, and followed instead.
        |inner| inner.config.poll_interval.min(inner.heartbeat_interval()),
        |remote, host, ask: Ask| async move {
            let answer = remote.coordinators(&host, ask.blocking()).await?;
            Ok(Opened::Answer(answer))
        },
    );
    loop {
        let event = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            event = follower.next() => event,
        };
        if let Event::Answer { host, answer } = event {
            inner.learn(&host, &answer);
        }
    }
}
