//! Feeds: one upstream per watched service in a client, shared by every watch of
//! that service.
//!
//! A [`Feed`] runs one [`Follower`] of a service's listings (a stream from ours,
//! else blocking queries, else polling) and publishes each answer on a
//! [`tokio::sync::watch`] channel. Every watch of the service subscribes to it and
//! applies its own filters and selector, so a hundred watches of `billing` cost
//! the coordinators one stream, not a hundred. (A watch's `wait` matters only for
//! the blocking queries a feed falls back to: the feed takes its first watch's.)
//! The answers are states, not deltas: a watch that is slow to look skips to the
//! newest, and loses nothing. The feed sees every answer in order, and screens
//! each for stale copies of listings ours removed (see [`Departures`]).
//!
//! The feed lives while a watch uses it: the feeds table holds it weakly, each
//! running watch task strongly, and the last to let go stops its task.

use super::departures::Departures;
use super::follow::{Event, Followed, Follower};
use super::Inner;
use crate::listing::Listing;
use crate::remote::{Answer, RemoteError};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The feeds of a client, by service.
pub(crate) type Feeds = std::sync::Mutex<HashMap<String, Weak<Feed>>>;

/// What a feed has heard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heard {
    /// The newest answer, and which coordinator gave it.
    pub answer: Option<(String, Arc<Answer<Vec<Listing>>>)>,
    /// Counts the answers, so a watch tells a new one from one it has seen.
    pub answers: u64,
    /// The last round in which every coordinator was tried and failed.
    pub failed: Option<(String, RemoteError)>,
    /// Counts those rounds, likewise.
    pub failures: u64,
    /// Whether the last thing heard was such a round (not an answer).
    pub failing: bool,
}

/// One upstream of a service's listings, shared by the watches of that service.
pub(crate) struct Feed {
    heard: watch::Receiver<Heard>,
    /// The coordinator followed now.
    pub followed: Followed,
    /// Stops the feed's task when the last watch lets go.
    _stop: DropGuard,
}

impl Feed {
    /// The feed of `service`, started (holding blocking queries up to `wait` where
    /// it falls back to them) if no watch uses one yet.
    pub fn of(inner: &Arc<Inner>, service: &str, wait: Duration) -> Arc<Feed> {
        let mut feeds = inner.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        let key = service.to_owned();
        // One whose task has ended (with the runtime that ran it) is let go.
        if let Some(feed) = feeds.get(&key).and_then(Weak::upgrade) {
            if feed.heard.has_changed().is_ok() {
                return feed;
            }
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (heard, receiver) = watch::channel(Heard::default());
        let token = inner.shutdown.child_token();
        let followed = Followed::default();
        tracing::info!(service, "watch feed started");
        inner.tasks.spawn(feed_loop(
            inner.clone(),
            service.to_owned(),
            wait,
            heard,
            followed.clone(),
            token.clone(),
        ));
        let feed = Arc::new(Feed {
            heard: receiver,
            followed,
            _stop: token.drop_guard(),
        });
        feeds.insert(key, Arc::downgrade(&feed));
        feed
    }

    /// A receiver of what the feed hears.
    pub fn subscribe(&self) -> watch::Receiver<Heard> {
        self.heard.clone()
    }
}

/// The coordinators the client's feeds follow now (each once).
pub(crate) fn followed(inner: &Inner) -> Vec<String> {
    let feeds = inner.feeds.lock().unwrap_or_else(PoisonError::into_inner);
    let mut hosts: Vec<String> = feeds
        .values()
        .filter_map(Weak::upgrade)
        .filter_map(|feed| {
            feed.followed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The feed's task: follows the service, and publishes what it hears.
async fn feed_loop(
    inner: Arc<Inner>,
    service: String,
    wait: Duration,
    heard: watch::Sender<Heard>,
    followed: Followed,
    token: CancellationToken,
) {
    let asked = service.clone();
    let mut follower = Follower::new(
        inner.clone(),
        format!("watch {service}"),
        wait,
        Inner::heartbeat_interval,
        move |remote, host, ask| {
            let service = asked.clone();
            async move { remote.open_listings(&host, &service, ask).await }
        },
    )
    .streaming()
    .telling()
    .reporting_to(followed);
    let mut departures = Departures::default();
    loop {
        let event = tokio::select! {
            _ = token.cancelled() => return,
            event = follower.next() => event,
        };
        match event {
            Event::Answer { host, answer } => {
                let interval = inner.cluster_heartbeat();
                let answer = departures.screen(&host, answer, interval, Instant::now());
                heard.send_modify(|heard| {
                    heard.answer = Some((host, answer));
                    heard.answers += 1;
                    heard.failing = false;
                });
            }
            Event::Exhausted { host, error } => heard.send_modify(|heard| {
                heard.failed = Some((host, error));
                heard.failures += 1;
                heard.failing = true;
            }),
        }
    }
}
