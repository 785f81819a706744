//! Join sync: a starting coordinator copies its cluster's listings before it
//! answers a single listing read.
//!
//! The task here runs once per coordinator:
//!
//! 1. **Find peers.** With a discovery host, wait until the resync loop
//!    (`gossip.rs`) has heard from another coordinator through it, or has tried
//!    [`JOIN_ATTEMPTS`] times (a single coordinator that is its own discovery host,
//!    a load balancer that keeps routing us to ourselves, nothing up yet).
//! 2. **Copy.** Ask the known peers, in random order, for every listing: ours
//!    through `GET /v1/snapshot` (each listing with its remaining time to live).
//!    Only when none of ours gave a complete copy, the original's, through the v1
//!    routes: they do not say how long a listing has left, and one whose publisher
//!    died may have a whole TTL left there, so each lives one TTL less one
//!    heartbeat interval here (a dead publisher's listing is then gone within TTL +
//!    3 H of its death, as anywhere; a live publisher refreshes it within H). A
//!    peer that fails, or does not start its answer within a request timeout, is
//!    skipped for the next; a peer still syncing itself answers
//!    `503` and is skipped too. Listings arrive in batches and are imported as they come:
//!    what a publisher sent us meanwhile wins, and what it withdrew since this
//!    coordinator started stays withdrawn (the registry remembers withdrawals until
//!    the coordinator is complete).
//! 3. **Open.** `Complete` after a copy from a complete peer; otherwise `Partial`
//!    (see `readiness.rs`). The whole of 1 and 2 is bounded by `sync_timeout`.
//!    Unless the copy came from a complete peer of ours, what this coordinator
//!    held before it stopped is read back first, when it keeps its registry on
//!    disk (`persist.rs`); the coordinators it knew are learned again then. When
//!    a file was read back, the cluster restarted, the original's coordinators
//!    with it: a copy of theirs (they never say they are partial) does not make
//!    this one complete, here or later.
//!
//! While partial, every change to the membership table triggers another copy (a
//! peer found late, by an announcement or a later resync), and one heartbeat
//! interval (plus a request timeout) after the cluster could know of it — at once
//! without a discovery host, else once another coordinator answered through the
//! discovery host — the coordinator counts as complete anyway: every live publisher
//! has sent it its listings by then.

use super::readiness::Phase;
use super::Shared;
use crate::fanout::fan_out;
use crate::protocol::SnapshotEntry;
use crate::remote::RemoteError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Asks of the discovery host before a start gives up finding peers through it
/// (it keeps asking in the background, and copies from whoever it finds later).
pub(super) const JOIN_ATTEMPTS: u32 = 4;

/// Listings imported under one hold of the registry lock.
const IMPORT_BATCH: usize = 1_000;

/// What a round of copying achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copied {
    /// Everything a complete peer of ours held.
    Complete,
    /// Everything one of the original's coordinators held: it says nothing of
    /// withdrawals, nor whether it just restarted itself.
    CompleteV1,
    /// Whatever partial peers held, or nothing: no peer was complete or reachable.
    Partial,
}

/// Opens the coordinator if the join task ends without doing so (it panicked):
/// reads must not wait on a start that will never finish.
struct OpenOnDrop(Arc<Shared>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.advance(Phase::Partial);
    }
}

/// The join task: sync, open, then keep trying to complete while partial.
pub(super) async fn run(shared: Arc<Shared>) {
    let _open = OpenOnDrop(shared.clone());
    // With a data directory, its file is parsed while the join runs.
    let file = shared.config.data_dir.clone().map(|dir| {
        (
            super::persist::parse_file(&dir, shared.config.listing_limits),
            dir,
        )
    });
    let started = Instant::now();
    let deadline = started + shared.config.sync_timeout;
    let joined = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        joined = tokio::time::timeout_at(deadline, join(&shared, deadline)) => joined,
    };
    let copied = joined.unwrap_or_else(|_elapsed| {
        tracing::warn!(
            timeout_ms = shared.config.sync_timeout.as_millis() as u64,
            "join sync did not finish in time; serving what was copied"
        );
        Copied::Partial
    });
    // The coordinators it knew before it stopped (after the join: one of the
    // original's restarted with it is empty, and says nothing of it).
    if let Some((_, dir)) = &file {
        super::persist::learn_peers(&shared, dir).await;
    }
    // Whether a file was read back: the cluster restarted (every one of ours
    // was partial or down), and the original's coordinators, which say nothing
    // of it, restarted empty with it: a copy of theirs is not the whole.
    let mut read_back = false;
    if copied != Copied::Complete {
        // No complete peer of ours to copy from: what this coordinator held before
        // it stopped, if it keeps it (a complete peer of ours knows better: it saw
        // what was withdrawn meanwhile).
        if let Some((parsed, dir)) = file {
            read_back = super::persist::read_back(&shared, &dir, parsed).await;
        }
    }
    // What it holds is settled: the registry's writer may start.
    shared.persist.settle();
    let listings = shared.listing_count();
    let whole = |copied| copied == Copied::Complete || (copied == Copied::CompleteV1 && !read_back);
    if whole(copied) {
        shared.advance(Phase::Complete);
        tracing::info!(
            listings,
            ms = started.elapsed().as_millis() as u64,
            "ready: copied the cluster's listings"
        );
        return;
    }
    shared.advance(Phase::Partial);
    let alone = if shared.config.discovery_host.is_none() {
        " (as expected for a coordinator started alone)"
    } else {
        ""
    };
    tracing::info!(
        listings,
        ms = started.elapsed().as_millis() as u64,
        "ready, but no complete peer to copy from: answers are flagged partial until every publisher has had a heartbeat interval to be heard from{alone}"
    );
    // Complete once every live publisher has had a heartbeat interval (and a call's
    // time) to reach us, counted from when the cluster can know of us: at once for
    // a coordinator without a discovery host, else from the first time another
    // coordinator answered through it (and was told of us). Sooner if a copy from a
    // complete peer succeeds: every change of the membership table asks for one.
    let warm_up = shared.config.heartbeat() + shared.config.request_timeout;
    let mut discovery = shared.discovery.subscribe();
    let mut warm: Option<Instant> = shared
        .config
        .discovery_host
        .is_none()
        .then(|| started + warm_up);
    loop {
        if warm.is_none() && discovery.borrow_and_update().answered {
            warm = Some(Instant::now() + warm_up);
        }
        let warmed = async {
            match warm {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = warmed => break,
            _ = discovery.changed() => {}
            _ = shared.sync_wanted.notified() => {
                // Not past the warm-up: by then the coordinator is complete
                // anyway, and a copy must not hold that back.
                let deadline = Instant::now() + shared.config.sync_timeout;
                let deadline = warm.map_or(deadline, |at| at.min(deadline));
                let copy = tokio::time::timeout_at(deadline, copy(&shared, deadline));
                let copied = tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    copied = copy => copied,
                };
                if copied.is_ok_and(whole) {
                    tracing::info!(listings = shared.listing_count(), "complete: copied the listings of a peer found late");
                    break;
                }
            }
        }
    }
    shared.advance(Phase::Complete);
}

/// Steps 1 and 2.
async fn join(shared: &Arc<Shared>, deadline: Instant) -> Copied {
    if shared.config.discovery_host.is_some() {
        let mut discovery = shared.discovery.subscribe();
        let found = discovery.wait_for(|d| d.answered || d.attempts >= JOIN_ATTEMPTS);
        let _ = found.await;
    }
    copy(shared, deadline).await
}

/// Copies from the known peers in random order until one complete copy succeeds;
/// from the original's (no snapshots) only when none of ours gave one.
async fn copy(shared: &Arc<Shared>, deadline: Instant) -> Copied {
    let mut peers = shared.read_membership(|m| m.hosts_to_poll());
    fastrand::shuffle(&mut peers);
    let mut without_snapshots = Vec::new();
    for host in peers {
        match copy_from(shared, &host, deadline).await {
            Ok(Some(true)) => return Copied::Complete,
            Ok(Some(false)) => {
                tracing::debug!(peer = host, "copied from a partial peer; trying the next");
            }
            Ok(None) => without_snapshots.push(host),
            Err(error) => {
                tracing::info!(peer = host, %error, "could not copy listings from this peer; trying the next");
            }
        }
    }
    for host in without_snapshots {
        match copy_v1(shared, &host).await {
            Ok(true) => return Copied::CompleteV1,
            Ok(false) => {
                tracing::debug!(peer = host, "copied from a partial peer; trying the next");
            }
            Err(error) => {
                tracing::info!(peer = host, %error, "could not copy listings from this peer; trying the next");
            }
        }
    }
    Copied::Partial
}

/// Copies every listing `host` holds through its snapshot; `Ok(Some(complete))`
/// says whether it was complete, `Ok(None)` that it has no snapshots.
async fn copy_from(
    shared: &Arc<Shared>,
    host: &str,
    deadline: Instant,
) -> Result<Option<bool>, RemoteError> {
    let within = deadline.saturating_duration_since(Instant::now());
    let limits = shared.config.listing_limits;
    let mut snapshot = match shared.remote.snapshot(host, within, limits).await {
        Ok(snapshot) => snapshot,
        // No such route: the original's coordinator, or an older one of ours.
        Err(RemoteError::Status { status: 404, .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let complete = snapshot.head().complete;
    let mut imported = 0;
    while let Some(batch) = snapshot.next_batch(IMPORT_BATCH).await? {
        imported += shared.import(batch);
    }
    tracing::debug!(
        peer = host,
        count = snapshot.head().count,
        imported,
        skipped = snapshot.skipped(),
        complete,
        "snapshot copied"
    );
    Ok(Some(complete))
}

/// How long a listing copied from a coordinator without snapshots lives here:
/// one TTL less one heartbeat interval, at least one heartbeat interval.
fn v1_ttl(ttl: Duration, heartbeat: Duration) -> Duration {
    ttl.saturating_sub(heartbeat).max(heartbeat.min(ttl))
}

/// Copies from a coordinator without the snapshot route: the list of services,
/// then each service's listings. Their remaining time is unknown (up to a whole
/// TTL for a publisher that just died): one TTL less one heartbeat interval each.
/// `Ok(complete)`: whether it said it was complete (the original says nothing).
async fn copy_v1(shared: &Arc<Shared>, host: &str) -> Result<bool, RemoteError> {
    let services = shared.remote.services(host, None).await?;
    // The original says nothing (complete); an older one of ours may say partial.
    let complete = services.complete != Some(false);
    let services = services.value;
    let config = &shared.config;
    let ttl = v1_ttl(config.listing_ttl(), config.heartbeat());
    let reads = fan_out(None, services, |service| {
        let remote = shared.remote.clone();
        let host = host.to_owned();
        async move { remote.listings(&host, &service, None).await }
    });
    for read in reads.await {
        let listings = read?.value;
        let batch = listings
            .into_iter()
            .map(|listing| SnapshotEntry { ttl, listing })
            .collect();
        shared.import(batch);
    }
    Ok(complete)
}
