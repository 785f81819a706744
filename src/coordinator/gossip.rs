//! The gossip tasks: how a coordinator finds the others, over HTTP.
//!
//! Two loops drive the pure [`Membership`](super::membership::Membership) table:
//!
//! - **resync** (only with a discovery host), at start and every resync period
//!   (and, after the first answer, every heartbeat interval for a few intervals):
//!   ask the discovery host for its coordinators and add each one explicitly (the
//!   extra early asks only learn them, so they lift no blacklist); if the answer
//!   does not list this coordinator, announce it there with a POST.
//! - **poll**, every heartbeat interval: ask every known coordinator for its list, all
//!   at once, each call bounded by the request timeout; learn the new ones. A peer
//!   that is broken gets a strike, and is dropped and blacklisted after
//!   `failures_before_drop` of them in a row; one that refuses (`4xx`, `503`) is
//!   kept (see [`RemoteError::is_broken`](crate::remote::RemoteError::is_broken)).
//!   A dropped peer is probed in the same round for as long as it is blacklisted
//!   (each probe bounded by half a heartbeat), and taken back when it answers: a coordinator that restarted is known again
//!   within a heartbeat even when its announcement was lost (the original's
//!   coordinator loses one that a load balancer routes back to itself).
//!
//! **Announcements are not lost.** A coordinator tells every peer it newly learns
//! of through the discovery host about itself at once, so a restart is known
//! cluster-wide in one round trip; a poll answer that does not list this
//! coordinator is answered with an announcement to that peer; and an announcement
//! that a load balancer routed back to this coordinator (its answer says who took
//! it, `X-Hakken-Coordinator`) counts as not delivered and is retried soon.
//!
//! A discovery host that is unreachable, or is this coordinator itself, is normal in
//! a small deployment: it is logged once as a warning (and again when it recovers),
//! not at every resync.

use super::membership::Failure;
use super::Shared;
use crate::backoff::Backoff;
use crate::fanout::fan_out;
use crate::remote::RemoteError;
use std::sync::Arc;
use std::time::Duration;
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

/// One round: every known coordinator polled, and every dropped one on probation
/// probed, concurrently; the results applied.
async fn poll_round(shared: &Arc<Shared>) {
    let (hosts, probes) =
        shared.read_membership(|m| (m.hosts_to_poll(), m.hosts_to_probe(Instant::now())));
    let calls = hosts
        .into_iter()
        .map(|host| (host, false))
        .chain(probes.into_iter().map(|host| (host, true)));
    // A probe is bounded by half a heartbeat too: a dropped peer that does not
    // answer at all must not hold the round (and the others' results) back.
    let probe_within = shared.config.heartbeat() / 2;
    let polls = fan_out(None, calls, |(host, probe)| {
        let remote = shared.remote.clone();
        async move {
            let call = remote.coordinators(&host, None);
            let answer = if probe {
                tokio::time::timeout(probe_within, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(RemoteError::Unreachable {
                            host: host.clone(),
                            message: "timed out".into(),
                        })
                    })
            } else {
                call.await
            };
            (host, probe, answer)
        }
    });
    let mut unaware = Vec::new();
    for (host, probe, answer) in polls.await {
        shared.metrics.gossip_polls.inc();
        match answer {
            Ok(answer) => {
                let listed_me = answer.value.iter().any(|p| p.host() == shared.me.host());
                let now = Instant::now();
                let (back, learned) = if probe {
                    shared.update_membership(|m| m.take_back(&host, answer.value, now))
                } else {
                    (
                        true,
                        shared.update_membership(|m| m.poll_succeeded(&host, answer.value, now)),
                    )
                };
                if probe && back {
                    tracing::info!(
                        coordinator = host,
                        "dropped coordinator answers again; taken back"
                    );
                }
                if back && !listed_me {
                    unaware.push(host.clone());
                }
                for new in learned {
                    tracing::info!(coordinator = new, via = host, "learned of coordinator");
                }
            }
            // A probe that fails changes nothing: the coordinator is already dropped.
            Err(_) if probe => {
                shared.metrics.gossip_poll_failures.inc();
            }
            Err(error) if error.is_broken() => {
                shared.metrics.gossip_poll_failures.inc();
                match shared.update_membership(|m| m.poll_failed(&host, Instant::now())) {
                    Failure::Dropped => tracing::warn!(
                        coordinator = host,
                        %error,
                        failures = shared.config.failures_before_drop,
                        "coordinator failed too many polls in a row; removed and blacklisted"
                    ),
                    Failure::Struck(strikes) => tracing::info!(
                        coordinator = host,
                        %error,
                        strikes,
                        "coordinator poll failed"
                    ),
                    Failure::Unknown => {}
                }
            }
            Err(error) => {
                shared.metrics.gossip_poll_failures.inc();
                shared.update_membership(|m| m.poll_refused(&host));
                tracing::warn!(coordinator = host, %error, "coordinator refused a poll; kept");
            }
        }
    }
    announce_to(shared, unaware).await;
}

/// Announces this coordinator straight to each of `hosts`, concurrently.
async fn announce_to(shared: &Arc<Shared>, hosts: Vec<String>) {
    let announcements = fan_out(None, hosts, |host| {
        let remote = shared.remote.clone();
        let me = shared.me.clone();
        async move {
            let result = remote.announce(&host, &me).await;
            (host, result)
        }
    });
    for (host, result) in announcements.await {
        match result {
            Ok(_) => tracing::debug!(coordinator = host, "announced self"),
            Err(error) => tracing::info!(coordinator = host, %error, "could not announce self"),
        }
    }
}

/// What one resync found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Another coordinator answered through the discovery host, and knows of us.
    Answered,
    /// Ask again soon: the discovery host did not answer, answered as ourselves (a
    /// load balancer routed us back), or our announcement was routed back to us.
    Again,
}

/// Asks the discovery host for coordinators at start and every resync period.
pub(super) async fn resync_loop(shared: Arc<Shared>) {
    let Some(discovery) = shared.config.discovery_host.clone() else {
        return;
    };
    let period = shared.config.resync_period();
    let mut warned = false;
    // Routed back to ourselves by a load balancer, or the discovery host not up
    // yet (or cut off by a partition): ask again soon, after 100 ms doubling up to
    // one heartbeat interval, with jitter so coordinators behind one balancer do
    // not keep asking in lockstep. A partition that heals is then noticed within
    // a heartbeat, not a resync period.
    let heartbeat = period.min(shared.config.heartbeat());
    let mut retry = Backoff::new(Duration::from_millis(100), heartbeat);
    // After its first answer, a coordinator asks every heartbeat interval for up
    // to [`EARLY_ASKS`] intervals (within the first resync period): one that starts
    // together with its cluster (every coordinator restarted at once, behind a
    // balancer) reaches the members that were not up at its first ask. The
    // original's coordinators announce themselves only once per period, so asking
    // is the only way to find them sooner. These extra asks learn (they do not
    // lift a blacklist): a dead host the discovery host still lists is not taken
    // back at every one of them.
    let mut early_until: Option<Instant> = None;
    loop {
        // An extra ask, or a quick retry of one, only learns.
        let early = early_until.is_some_and(|until| Instant::now() < until);
        let outcome = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            outcome = resync(&shared, &discovery, &mut warned, early) => outcome,
        };
        shared.discovery.send_modify(|state| {
            state.attempts += 1;
            state.answered |= outcome.0;
        });
        if outcome.0 && early_until.is_none() {
            let window = period.min(heartbeat.saturating_mul(EARLY_ASKS));
            early_until = Some(Instant::now() + window);
        }
        let delay = if outcome.1 == Resync::Again {
            retry.next_delay()
        } else {
            retry.reset();
            if early_until.is_some_and(|until| Instant::now() + heartbeat <= until) {
                heartbeat
            } else {
                period
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Extra asks of the discovery host, one per heartbeat interval, after its first
/// answer (see [`resync_loop`]).
const EARLY_ASKS: u32 = 10;

/// One resync. `warned` remembers whether the discovery host's failure was already
/// reported, so a long outage is one warning, not one per period. An `early` one
/// only learns the coordinators it hears of (see [`resync_loop`]); others add them
/// explicitly. Returns whether another coordinator answered, and whether to ask
/// again soon.
async fn resync(
    shared: &Arc<Shared>,
    discovery: &str,
    warned: &mut bool,
    early: bool,
) -> (bool, Resync) {
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
            return (false, Resync::Again);
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
        return (false, Resync::Again);
    }
    let (listed_me, added) = shared.update_membership(|membership| {
        let now = Instant::now();
        let mut listed_me = false;
        let mut added = Vec::new();
        for peer in answer.value {
            if peer.host() == me.host() {
                listed_me = true;
                continue;
            }
            let host = peer.host().to_owned();
            let outcome = if early {
                Ok(membership.learn(peer, now))
            } else {
                membership.add(peer, now)
            };
            match outcome {
                Ok(true) => added.push(host),
                Ok(false) => {}
                Err(error) => tracing::warn!(coordinator = host, %error, "coordinator not added"),
            }
        }
        (listed_me, added)
    });
    for host in &added {
        tracing::info!(
            coordinator = host.as_str(),
            via = discovery,
            "added coordinator"
        );
    }
    // Every peer newly known hears of us now, not at its next poll of someone
    // who knows us.
    announce_to(shared, added).await;
    if listed_me {
        return (true, Resync::Answered);
    }
    match shared.remote.announce(discovery, &me).await {
        Ok(answer) if answer.coordinator.as_deref() == Some(me.host()) => {
            tracing::debug!(
                discovery,
                "our announcement was routed back to ourselves; announcing again soon"
            );
            (true, Resync::Again)
        }
        Ok(_) => {
            tracing::debug!(discovery, "announced self to discovery host");
            (true, Resync::Answered)
        }
        Err(error) => {
            tracing::warn!(discovery, %error, "could not announce self to discovery host");
            (true, again_if_unreachable(&error))
        }
    }
}

/// After a failed announcement: ask again soon unless the discovery host refused it
/// (a clear `4xx` will not change by asking again soon).
fn again_if_unreachable(error: &RemoteError) -> Resync {
    if error.is_broken() {
        Resync::Again
    } else {
        Resync::Answered
    }
}
