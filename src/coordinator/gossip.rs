//! The gossip tasks: how a coordinator finds the others, over HTTP.
//!
//! Two loops drive the pure [`Membership`](super::membership::Membership) table:
//!
//! - **resync** (only with a discovery host), at start and every resync period: ask
//!   the discovery host for its coordinators and add each one explicitly; if the
//!   answer does not list this coordinator, announce it there with a POST.
//! - **poll**, every heartbeat interval: ask every known coordinator for its list, all
//!   at once, each call bounded by the request timeout; learn the new ones; remove
//!   and blacklist one that fails.
//!
//! A discovery host that is unreachable, or is this coordinator itself, is normal in
//! a small deployment: it is logged once as a warning (and again when it recovers),
//! not at every resync.

use super::Shared;
use crate::backoff::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Polls every known coordinator every heartbeat interval, the first time one
/// interval after start (nobody is known before that but through announcements).
pub(super) async fn poll_loop(shared: Arc<Shared>) {
    let period = shared.config.heartbeat();
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = poll_round(&shared) => {}
        }
    }
}

/// One round: every known coordinator polled concurrently, results applied.
async fn poll_round(shared: &Arc<Shared>) {
    let hosts = shared.membership().hosts_to_poll();
    let mut polls = JoinSet::new();
    for host in hosts {
        let remote = shared.remote.clone();
        polls.spawn(async move {
            let answer = remote.coordinators(&host, None).await;
            (host, answer)
        });
    }
    while let Some(joined) = polls.join_next().await {
        let Ok((host, answer)) = joined else { continue };
        shared.metrics.gossip_polls.inc();
        match answer {
            Ok(answer) => {
                let learned = shared
                    .update_membership(|m| m.poll_succeeded(&host, answer.value, Instant::now()));
                for new in learned {
                    tracing::info!(coordinator = new, via = host, "learned of coordinator");
                }
            }
            Err(error) => {
                shared.metrics.gossip_poll_failures.inc();
                if shared.update_membership(|m| m.poll_failed(&host)) {
                    tracing::warn!(coordinator = host, %error, "coordinator poll failed; removed and blacklisted");
                }
            }
        }
    }
}

/// Asks the discovery host for coordinators at start and every resync period.
pub(super) async fn resync_loop(shared: Arc<Shared>) {
    let Some(discovery) = shared.config.discovery_host.clone() else {
        return;
    };
    let period = shared.config.resync_period();
    let mut warned = false;
    // Routed back to ourselves by a load balancer, or the discovery host not up
    // yet: ask again soon, after 100 ms doubling up to the resync period, with
    // jitter so coordinators behind one balancer do not keep asking in lockstep.
    let mut retry = Backoff::new(Duration::from_millis(100), period);
    loop {
        let again_soon = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            again_soon = resync(&shared, &discovery, &mut warned) => again_soon,
        };
        let delay = if again_soon {
            retry.next_delay()
        } else {
            retry.reset();
            period
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One resync. `warned` remembers whether the discovery host's failure was already
/// reported, so a long outage is one warning, not one per period. Returns whether
/// to ask again soon: the discovery host did not answer, or the answer came from
/// this coordinator itself (a load balancer routed us back to ourselves,
/// recognised by the `X-Hakken-Coordinator` header).
async fn resync(shared: &Arc<Shared>, discovery: &str, warned: &mut bool) -> bool {
    let me = shared.me.clone();
    let answer = match shared.remote.coordinators(discovery, None).await {
        Ok(answer) => answer,
        Err(error) => {
            if *warned {
                tracing::debug!(discovery, %error, "discovery host still unreachable");
            } else {
                tracing::warn!(discovery, %error, "discovery host unreachable; serving alone until it answers");
                *warned = true;
            }
            return true;
        }
    };
    if std::mem::take(warned) {
        tracing::info!(discovery, "discovery host answers again");
    }
    if answer.coordinator.as_deref() == Some(me.host()) {
        tracing::debug!(
            discovery,
            "discovery host routed us to ourselves; asking again soon"
        );
        return true;
    }
    let listed_me = shared.update_membership(|membership| {
        let now = Instant::now();
        let mut listed_me = false;
        for peer in answer.value {
            if peer.host() == me.host() {
                listed_me = true;
                continue;
            }
            let host = peer.host().to_owned();
            match membership.add(peer, now) {
                Ok(true) => {
                    tracing::info!(coordinator = host, via = discovery, "added coordinator")
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(coordinator = host, %error, "coordinator not added"),
            }
        }
        listed_me
    });
    if !listed_me {
        match shared.remote.announce(discovery, &me).await {
            Ok(()) => tracing::debug!(discovery, "announced self to discovery host"),
            Err(error) => {
                tracing::warn!(discovery, %error, "could not announce self to discovery host")
            }
        }
    }
    false
}
