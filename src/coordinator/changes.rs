//! Change notification for blocking queries.
//!
//! A blocking query (`GET ...?index=N&wait=D`) is held until what it reads changes.
//! Each thing that can be waited on is a [`Topic`]: one service's listings, the set
//! of services, or the list of coordinators. A topic that has waiters has one
//! [`Notify`]; a change to it wakes exactly its waiters, nobody else's. A topic
//! with no waiter costs nothing: its entry is removed when the last waiter leaves.
//!
//! No task and no timer exists per waiter beyond the request future itself, and
//! the number of held requests is capped: past the cap, [`Changes::hold`] refuses
//! and the request is answered at once. Streams (Server-Sent Events) register the
//! same way for as long as they are open ([`Changes::open_stream`]), under a cap
//! of their own. What a topic's streams are written through (`S`, the HTTP
//! layer's subscribers in `http/broadcast.rs`) is kept here with its waiters,
//! made on first use, and goes with them: this module only holds it.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Something a blocking query can wait on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// The listings of one service.
    Service(String),
    /// The set of service names.
    Services,
    /// The list of known coordinators.
    Coordinators,
}

/// One topic's waiters: what wakes them, the newest state rendered for its
/// streams (so that a change is rendered once, not once per stream), and the
/// streams its broadcaster writes to.
struct Waiters<S> {
    /// In an `Arc` so that a stream can keep a wait registered between its turns
    /// ([`StreamHold::notified`]).
    notify: Arc<Notify>,
    rendered: Mutex<Option<(u64, Bytes)>>,
    /// The streams its broadcaster writes to (`http/broadcast.rs`), once it has
    /// one.
    subscribers: OnceLock<Arc<S>>,
}

impl<S> Default for Waiters<S> {
    fn default() -> Self {
        Waiters {
            notify: Arc::default(),
            rendered: Mutex::default(),
            subscribers: OnceLock::new(),
        }
    }
}

/// The waiters of every topic; `S` is what a topic's streams are written
/// through.
pub(crate) struct Changes<S> {
    topics: Mutex<HashMap<Topic, Arc<Waiters<S>>>>,
    held: AtomicUsize,
    max_held: usize,
    streams: AtomicUsize,
    max_streams: usize,
}

/// One held request's registration; dropping it unregisters.
pub(crate) struct Hold<'a, S> {
    changes: &'a Changes<S>,
    topic: Topic,
    /// Taken (and dropped) under the lock when the hold is dropped, so that
    /// counting references there is exact.
    waiters: Option<Arc<Waiters<S>>>,
}

/// One open stream's registration; dropping it unregisters.
pub(crate) struct StreamHold<S> {
    changes: Arc<Changes<S>>,
    topic: Topic,
    waiters: Option<Arc<Waiters<S>>>,
}

/// Takes one of `max` slots counted by `count`, if one is free.
fn reserve(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl<S> Changes<S> {
    /// No waiters yet; at most `max_held` requests held and `max_streams` streams
    /// open at once.
    pub fn new(max_held: usize, max_streams: usize) -> Self {
        Changes {
            topics: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            max_held,
            streams: AtomicUsize::new(0),
            max_streams,
        }
    }

    /// Registers a stream on `topic` for as long as the returned hold lives, or
    /// `None` when the cap on streams is reached.
    pub fn open_stream(self: &Arc<Self>, topic: Topic) -> Option<StreamHold<S>> {
        if !reserve(&self.streams, self.max_streams) {
            return None;
        }
        let waiters = self.topics().entry(topic.clone()).or_default().clone();
        Some(StreamHold {
            changes: self.clone(),
            topic,
            waiters: Some(waiters),
        })
    }

    /// How many streams are open right now.
    #[cfg(test)]
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Unregisters one waiter of `topic` (its `waiters` taken out of its hold) and
    /// frees its slot in `count`.
    fn release(&self, topic: &Topic, waiters: Option<Arc<Waiters<S>>>, count: &AtomicUsize) {
        let mut topics = self.topics();
        // Our reference goes first, under the lock; references are only taken
        // under this lock (`hold` clones, `notify` only borrows), so one left means
        // the map's alone: nobody else waits here.
        drop(waiters);
        if topics
            .get(topic)
            .is_some_and(|waiters| Arc::strong_count(waiters) == 1)
        {
            topics.remove(topic);
        }
        drop(topics);
        count.fetch_sub(1, Ordering::AcqRel);
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Arc<Waiters<S>>>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every request held on `topic`.
    pub fn notify(&self, topic: &Topic) {
        // Under the lock, and without cloning the `Arc`: `Hold::drop` counts
        // references to decide whether it was the last waiter.
        if let Some(waiters) = self.topics().get(topic) {
            waiters.notify.notify_waiters();
        }
    }

    /// Wakes every held request, whatever it waits on (something all answers
    /// carry changed: the coordinator's completeness).
    pub fn notify_all(&self) {
        for waiters in self.topics().values() {
            waiters.notify.notify_waiters();
        }
    }

    /// Registers a request on `topic`, or `None` when the cap is reached.
    pub fn hold(&self, topic: Topic) -> Option<Hold<'_, S>> {
        if !reserve(&self.held, self.max_held) {
            return None;
        }
        let waiters = self.topics().entry(topic.clone()).or_default().clone();
        Some(Hold {
            changes: self,
            topic,
            waiters: Some(waiters),
        })
    }

    /// How many requests are held right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// How many topics have waiters right now.
    #[cfg(test)]
    pub fn topics_len(&self) -> usize {
        self.topics().len()
    }
}

impl<S> Hold<'_, S> {
    /// The notifier to await; create its `notified()` future before reading the index.
    pub fn notify(&self) -> &Notify {
        &self
            .waiters
            .as_deref()
            .expect("present until dropped")
            .notify
    }
}

impl<S> Drop for Hold<'_, S> {
    fn drop(&mut self) {
        let changes = self.changes;
        changes.release(&self.topic, self.waiters.take(), &changes.held);
    }
}

impl<S> StreamHold<S> {
    /// A wait for the topic's next change that the stream can keep: enable it
    /// before reading the index.
    pub fn notified(&self) -> OwnedNotified {
        self.waiters().notify.clone().notified_owned()
    }

    /// The state at `index` as its streams send it: `render`ed by the first
    /// stream of the topic to ask for that index, shared by the others. (A
    /// topic's state is a function of its index, so the index is the key.)
    pub fn rendered(&self, index: u64, render: impl FnOnce() -> Bytes) -> Bytes {
        let mut rendered = self
            .waiters()
            .rendered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*rendered {
            Some((at, bytes)) if *at == index => bytes.clone(),
            // A stream behind the others renders its own; the newest stays shared.
            Some((at, _)) if *at > index => render(),
            _ => {
                let bytes = render();
                *rendered = Some((index, bytes.clone()));
                bytes
            }
        }
    }

    /// The topic's streams written by its broadcaster (made on first use).
    pub fn subscribers(&self) -> Arc<S>
    where
        S: Default,
    {
        self.waiters().subscribers.get_or_init(Arc::default).clone()
    }

    /// What the topic's changes are told on, for its broadcaster (which holds this,
    /// not the topic's entry: the entry goes with its last waiter).
    pub fn changes(&self) -> Arc<Notify> {
        self.waiters().notify.clone()
    }

    fn waiters(&self) -> &Waiters<S> {
        self.waiters.as_deref().expect("present until dropped")
    }
}

impl<S> Drop for StreamHold<S> {
    fn drop(&mut self) {
        let changes = &self.changes;
        changes.release(&self.topic, self.waiters.take(), &changes.streams);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // (Streams' subscribers play no part here: `()`.)

    #[tokio::test]
    async fn wakes_only_the_topic_that_changed() {
        let changes = Changes::<()>::new(10, 10);
        let a = changes.hold(Topic::Service("a".into())).unwrap();
        let b = changes.hold(Topic::Service("b".into())).unwrap();
        let woke_a = a.notify().notified();
        let woke_b = b.notify().notified();
        tokio::pin!(woke_a, woke_b);
        woke_a.as_mut().enable();
        woke_b.as_mut().enable();
        changes.notify(&Topic::Service("a".into()));
        tokio::time::timeout(Duration::from_secs(5), woke_a)
            .await
            .expect("a woke");
        let b_woke = futures_poll(woke_b.as_mut());
        assert!(!b_woke, "b must not wake on a change to a");
    }

    fn futures_poll<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        future.poll(&mut cx).is_ready()
    }

    #[test]
    fn holds_dropped_together_leave_no_topic_behind() {
        // Two threads hold the same topic, then drop their holds at the same time,
        // a new topic each round (a topic left behind is never cleaned up by a
        // later hold): every entry must go with the last hold.
        let changes = Arc::new(Changes::<()>::new(usize::MAX, usize::MAX));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (changes, barrier) = (changes.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for round in 0..100_000u32 {
                        let hold = changes.hold(Topic::Service(round.to_string())).unwrap();
                        barrier.wait();
                        drop(hold);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(changes.topics_len(), 0);
        assert_eq!(changes.held(), 0);
    }

    #[test]
    fn capped_and_cleaned_up() {
        let changes = Changes::<()>::new(2, 0);
        let one = changes.hold(Topic::Services).unwrap();
        let two = changes.hold(Topic::Services).unwrap();
        assert!(changes.hold(Topic::Coordinators).is_none());
        assert_eq!(changes.held(), 2);
        drop(one);
        assert_eq!(changes.topics_len(), 1);
        drop(two);
        assert_eq!(changes.topics_len(), 0);
        assert_eq!(changes.held(), 0);
        assert!(changes.hold(Topic::Coordinators).is_some());
    }

    #[test]
    fn streams_have_their_own_cap_and_clean_up() {
        let changes = Arc::new(Changes::<()>::new(0, 2));
        assert!(changes.hold(Topic::Services).is_none(), "no held queries");
        let one = changes.open_stream(Topic::Services).unwrap();
        let two = changes.open_stream(Topic::Service("a".into())).unwrap();
        assert!(changes.open_stream(Topic::Coordinators).is_none());
        assert_eq!(changes.streams(), 2);
        drop(one);
        drop(two);
        assert_eq!(changes.topics_len(), 0);
        assert_eq!(changes.streams(), 0);
    }
}
