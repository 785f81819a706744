//! The tasks that keep the set of known coordinators fresh.
//!
//! - [`resync_loop`] asks the configured `host` every resync period, and at once
//!   (then with backoff) while no coordinator is known.
//! - [`poll_loop`] asks every known coordinator for the coordinators it knows,
//!   every poll interval; a coordinator that fails is dropped.
//!
//! The bookkeeping itself is [`Coordinators`](super::coordinators::Coordinators).

use super::fanout::fan_out;
use super::Inner;
use crate::backoff::{jittered, Backoff};
use crate::remote::RemoteError;
use std::sync::Arc;
use std::time::Duration;

/// First retry delay while `host` does not answer.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// Asks `host` for the coordinators it knows and records them.
pub(crate) async fn ask(inner: &Inner, host: &str) -> Result<usize, RemoteError> {
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
    let results = fan_out(&inner.tasks, inner.targets(), |target| {
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
/// knows, adds the new ones and drops those that fail.
pub(crate) async fn poll_loop(inner: Arc<Inner>) {
    let interval = inner.config.poll_interval.max(super::MIN_INTERVAL);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(jittered(interval)) => {}
        }
        let hosts = inner.known();
        let poll = fan_out(&inner.tasks, hosts, |host| {
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
            if let Err(error) = result {
                inner.drop_coordinator(&host, &error);
            }
        }
    }
}
