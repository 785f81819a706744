//! Running many calls at once, a bounded number at a time.
//!
//! Each call runs as its own task so a slow coordinator delays only itself. The
//! client passes its [`TaskTracker`], so closing it waits for them too; a
//! coordinator's calls need none (they end with the future). Dropping the returned
//! future aborts the calls still running.

use std::future::Future;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

/// Most calls in flight at once from one fan-out.
pub(crate) const CONCURRENCY: usize = 32;

/// Runs `call` on every item, at most [`CONCURRENCY`] at a time, and returns the
/// outputs in completion order. A call that panics is logged and left out.
pub(crate) async fn fan_out<T, R, F, Fut>(
    tracker: Option<&TaskTracker>,
    items: impl IntoIterator<Item = T>,
    call: F,
) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut running = JoinSet::new();
    let mut outputs = Vec::new();
    let collect = |joined: Result<R, tokio::task::JoinError>, outputs: &mut Vec<R>| match joined {
        Ok(output) => outputs.push(output),
        Err(error) if error.is_panic() => tracing::error!(%error, "a coordinator call panicked"),
        Err(_cancelled) => {}
    };
    for item in items {
        while running.len() >= CONCURRENCY {
            if let Some(joined) = running.join_next().await {
                collect(joined, &mut outputs);
            }
        }
        match tracker {
            Some(tracker) => running.spawn(tracker.track_future(call(item))),
            None => running.spawn(call(item)),
        };
    }
    while let Some(joined) = running.join_next().await {
        collect(joined, &mut outputs);
    }
    outputs
}
