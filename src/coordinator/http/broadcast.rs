//! Streams written by their topic's broadcaster, on connections served directly.
//!
//! A stream served on its socket (`direct.rs`) is not woken for each change.
//! A change to a topic wakes one task, the topic's broadcaster ([`run`]): it
//! renders the change once, as the HTTP chunk every such stream of the topic
//! sends, and hands it to each stream's socket without waiting (`try_write`). A
//! socket that does not take all of it (its reader is behind) is left to the
//! stream's own task, which writes the rest when the socket has room, then the
//! newest state if there is a newer one. A reader that falls behind skips to the
//! newest list, and the others do not wait for it. Each change starts with the
//! stream after the one it started with last time, so that no stream is always
//! written last.
//!
//! The stream's own task ([`serve`]) writes the head and the first event in one
//! write (no first event when `Last-Event-ID` names the current index), then
//! waits. It wakes for a write the broadcaster left to it, to send a keep-alive,
//! to end at shutdown, or because its reader went or sent something. A write that
//! waits longer than the stall timeout ends the stream.
//!
//! Every write to a stream's socket is made under that stream's lock, so writes
//! from the broadcaster and from the stream's task never interleave. After the
//! first event, a state goes out only if its index is above the last one sent (a
//! topic's index only grows within a coordinator), so no reader gets an older
//! state after a newer one. A topic's broadcaster runs while the topic has such
//! streams: the first one starts it, and it ends once the last one has left, or at
//! shutdown. It holds the topic's notifier and its streams, not the topic's entry
//! (`changes.rs`), which goes with its last waiter as before.
//!
//! The HTTP/1.1 chunk encoder ([`chunk`]) is here too: `direct.rs` writes a
//! stream's answer with it.

use super::stream::{current, event, later, Open};
use crate::coordinator::changes::Topic;
use crate::coordinator::sockets::linger;
use crate::coordinator::Shared;
use axum::body::Bytes;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A keep-alive comment as one chunk.
const KEEPALIVE: &[u8] = b"e\r\n: keep-alive\n\n\r\n";
/// The chunk that ends the body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The streams of one topic that its broadcaster writes to.
#[derive(Default)]
pub(crate) struct Subscribers {
    list: Mutex<List>,
    /// Told when the last stream leaves, so that the broadcaster ends.
    emptied: Notify,
}

#[derive(Default)]
struct List {
    /// By the order they joined in.
    members: BTreeMap<u64, Arc<Subscriber>>,
    next: u64,
    /// Whether the topic's broadcaster is running.
    running: bool,
}

impl Subscribers {
    fn list(&self) -> MutexGuard<'_, List> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `member`: its place, and whether the broadcaster must be started (none
    /// runs).
    fn join(&self, member: Arc<Subscriber>) -> (u64, bool) {
        let mut list = self.list();
        let id = list.next;
        list.next += 1;
        list.members.insert(id, member);
        let start = !list.running;
        list.running = true;
        (id, start)
    }

    fn leave(&self, id: u64) {
        let mut list = self.list();
        list.members.remove(&id);
        if list.members.is_empty() {
            drop(list);
            self.emptied.notify_one();
        }
    }

    /// Fills `into` with the members, from the first one after `after` on (in the
    /// order they joined, round to the start), and says where it started; with
    /// none, marks the broadcaster stopped and says nothing.
    fn members(&self, after: u64, into: &mut Vec<Arc<Subscriber>>) -> Option<u64> {
        let mut list = self.list();
        let later = list.members.range(after.saturating_add(1)..);
        let Some((&first, _)) = later.chain(list.members.iter()).next() else {
            list.running = false;
            return None;
        };
        into.extend(list.members.range(first..).map(|(_, m)| m.clone()));
        into.extend(list.members.range(..first).map(|(_, m)| m.clone()));
        Some(first)
    }

    /// Whether the broadcaster is running (for tests).
    #[cfg(test)]
    fn running(&self) -> bool {
        self.list().running
    }
}

/// A stream's place among its topic's subscribers; leaving when dropped.
struct Membership {
    subscribers: Arc<Subscribers>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.subscribers.leave(self.id);
    }
}

/// One stream's socket, and what was written to it.
pub(crate) struct Subscriber {
    socket: TcpStream,
    out: Mutex<Out>,
    /// Wakes the stream's own task: a write was left to it, or it ended.
    wake: Notify,
}

struct Out {
    /// The index of the last state written (or being written).
    sent: u64,
    /// What the socket has not taken yet of the last write (bytes, and how far it
    /// got): only the stream's own task writes, and writes this first.
    rest: Option<(Bytes, usize)>,
    /// When something was last written.
    wrote: Instant,
    /// The stream ended or its socket failed: nothing more is written to it.
    closed: bool,
}

/// What one attempt to write gave.
#[derive(Debug, PartialEq, Eq)]
enum Wrote {
    /// All of it.
    All,
    /// Part or none of it; the rest is left to the stream's own task.
    Left,
    /// The socket failed.
    Failed,
}

impl Subscriber {
    fn new(socket: TcpStream, sent: u64) -> Self {
        Subscriber {
            socket,
            out: Mutex::new(Out {
                sent,
                rest: None,
                wrote: Instant::now(),
                closed: false,
            }),
            wake: Notify::new(),
        }
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `bytes` (nothing is left from before), without waiting: what the
    /// socket does not take is kept in `out.rest`.
    fn put(&self, out: &mut Out, bytes: Bytes) -> Wrote {
        debug_assert!(out.rest.is_none());
        match self.socket.try_write(&bytes) {
            Ok(n) if n == bytes.len() => Wrote::All,
            Ok(n) => {
                out.rest = Some((bytes, n));
                Wrote::Left
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                out.rest = Some((bytes, 0));
                Wrote::Left
            }
            Err(_) => {
                out.closed = true;
                Wrote::Failed
            }
        }
    }

    /// The broadcaster's write: the state at `index`, as `chunk`, if it is newer than
    /// what was sent, unless the stream's task has a write to finish (it then sends
    /// the newest state itself).
    fn offer(&self, index: u64, chunk: &Bytes, now: Instant) {
        let mut out = self.out();
        if out.closed || out.sent >= index {
            return;
        }
        if out.rest.is_none() {
            out.sent = index;
            out.wrote = now;
            if self.put(&mut out, chunk.clone()) == Wrote::All {
                return;
            }
        }
        drop(out);
        self.wake.notify_one();
    }

    /// Writes what is left of the last write, waiting for room at most `stall`
    /// each time; false when the socket failed or stalled, or when the
    /// coordinator shuts down while it waits (a shutdown does not wait for a
    /// reader that is behind).
    async fn finish(&self, stall: Duration, shutdown: &CancellationToken) -> bool {
        loop {
            {
                let mut out = self.out();
                let Some((bytes, at)) = out.rest.take() else {
                    return true;
                };
                match self.socket.try_write(&bytes[at..]) {
                    Ok(n) if at + n == bytes.len() => continue,
                    Ok(n) => out.rest = Some((bytes, at + n)),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        out.rest = Some((bytes, at));
                    }
                    Err(_) => {
                        out.closed = true;
                        return false;
                    }
                }
            }
            tokio::select! {
                room = tokio::time::timeout(stall, self.socket.writable()) => {
                    if !matches!(room, Ok(Ok(()))) {
                        return false;
                    }
                }
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// Finishes what is left, then sends the newest state if it is newer than the
    /// last sent, until there is nothing newer or the coordinator shuts down; false
    /// when the socket failed or stalled.
    async fn catch_up(&self, open: &Open, stall: Duration) -> bool {
        loop {
            // Under changes that never stop, this is where a shutdown is seen.
            if open.shared.shutdown.is_cancelled() {
                return true;
            }
            if !self.finish(stall, &open.shared.shutdown).await {
                return false;
            }
            let (index, data) = current(&open.shared, &open.topic);
            let mut out = self.out();
            if out.closed {
                return false;
            }
            if out.rest.is_some() {
                // The broadcaster wrote a newer state meanwhile and left part of it.
                continue;
            }
            if out.sent >= index {
                return true;
            }
            let event = open.hold.rendered(index, || event(index, &data));
            out.sent = index;
            out.wrote = Instant::now();
            if self.put(&mut out, chunk(&event)) == Wrote::Failed {
                return false;
            }
        }
    }

    /// Sends a keep-alive if nothing was written for `every` until `now`; when to
    /// look again.
    fn keep_alive(&self, every: Duration, now: Instant) -> Instant {
        let mut out = self.out();
        let due = later(out.wrote, every);
        if due > now {
            return due;
        }
        // A stream with a write to finish has something better to send.
        if !out.closed && out.rest.is_none() {
            out.wrote = now;
            if self.put(&mut out, Bytes::from_static(KEEPALIVE)) != Wrote::All {
                // Something left to write, or the end.
                drop(out);
                self.wake.notify_one();
            }
        }
        later(now, every)
    }

    /// Whether the reader went (end of file, an error) or sent something (nothing
    /// is expected, but up to `blank` bytes of CR or LF, an empty line after the
    /// request, which HTTP asks servers to bear); false for a wake-up with nothing
    /// to read.
    fn reader_done(&self, blank: &mut usize) -> bool {
        let mut probe = [0u8; 1];
        match self.socket.try_read(&mut probe) {
            Err(error) if error.kind() == ErrorKind::WouldBlock => false,
            Ok(1) if *blank > 0 && matches!(probe[0], b'\r' | b'\n') => {
                *blank -= 1;
                false
            }
            _ => true,
        }
    }
}

/// The socket read through a shared reference, for [`linger`].
struct Reading<'a>(&'a TcpStream);

impl AsyncRead for Reading<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// Marks a broadcaster that panics as stopped, so that the topic's next stream
/// starts another, and ends the topic's streams, whose clients then open them
/// again: none is left open with nobody writing its changes. (One that ends marks
/// itself stopped under the list's lock, when it finds no stream left.)
struct Panicked<'a>(&'a Subscribers);

impl Drop for Panicked<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut list = self.0.list();
            list.running = false;
            for member in list.members.values() {
                member.out().closed = true;
                member.wake.notify_one();
            }
        }
    }
}

/// The topic's broadcaster: on each change, the state once as a chunk, offered to
/// every stream of the topic. It ends when the topic has no stream left, or at
/// shutdown.
async fn run(shared: Arc<Shared>, topic: Topic, notify: Arc<Notify>, subs: Arc<Subscribers>) {
    let _panicked = Panicked(&subs);
    let mut members = Vec::new();
    let mut rendered: Option<(u64, Bytes)> = None;
    let mut first = 0;
    loop {
        // Registered before the state is read, so no change in between is missed.
        let changed = notify.clone().notified_owned();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let Some(started) = subs.members(first, &mut members) else {
            return;
        };
        first = started;
        let (index, data) = current(&shared, &topic);
        let chunk = match &rendered {
            Some((at, chunk)) if *at == index => chunk.clone(),
            _ => chunk(&event(index, &data)),
        };
        let now = Instant::now();
        for member in members.drain(..) {
            member.offer(index, &chunk, now);
            // Other tasks get their turn during a long broadcast.
            tokio::task::consume_budget().await;
        }
        rendered = Some((index, chunk));
        tokio::select! {
            biased;
            _ = changed => {}
            _ = subs.emptied.notified() => {}
            _ = shared.shutdown.cancelled() => {
                subs.list().running = false;
                return;
            }
        }
    }
}

/// Serves the stream `open` on `socket`, whose answer starts with `head`, until
/// the coordinator shuts down, the reader goes or sends anything, or a write
/// waits longer than `stall`.
pub(crate) async fn serve(socket: TcpStream, head: Vec<u8>, mut open: Open, stall: Duration) {
    let (index, data) = current(&open.shared, &open.topic);
    let mut first = head;
    if open.sent != Some(index) {
        first.extend_from_slice(&chunk(&open.hold.rendered(index, || event(index, &data))));
    }
    let stream = Arc::new(Subscriber::new(socket, index));
    stream.out().rest = Some((Bytes::from(first), 0));
    if !stream.finish(stall, &open.shared.shutdown).await {
        return;
    }
    let subscribers = open.hold.subscribers();
    let (id, start) = subscribers.join(stream.clone());
    let membership = Membership { subscribers, id };
    if start {
        tokio::spawn(run(
            open.shared.clone(),
            open.topic.clone(),
            open.hold.changes(),
            membership.subscribers.clone(),
        ));
    }
    // A change made since the state above was read.
    stream.wake.notify_one();
    let every = open.shared.config.stream_keepalive;
    let mut blank = 2;
    let ended = loop {
        // A change is looked at first: under changes that never stop, this is
        // where a shutdown is seen.
        if open.shared.shutdown.is_cancelled() {
            break true;
        }
        tokio::select! {
            biased;
            _ = stream.wake.notified() => {
                if !stream.catch_up(&open, stall).await {
                    break false;
                }
            }
            _ = open.keepalive.as_mut() => {
                let due = stream.keep_alive(every, Instant::now());
                open.keepalive.as_mut().reset(due);
            }
            _ = open.shutdown.as_mut() => break true,
            _ = stream.socket.readable() => {
                if stream.reader_done(&mut blank) {
                    break false;
                }
            }
        }
    };
    stream.out().closed = true;
    drop(membership);
    // The stream's place under the cap, and the gauge, are free from here on.
    drop(open);
    if !ended {
        return;
    }
    // The end of the body, unless the reader is behind: a shutdown does not wait
    // for it (the broadcaster writes nothing more: the stream is closed).
    let ended_cleanly = {
        let mut out = stream.out();
        out.rest.is_none() && stream.put(&mut out, Bytes::from_static(LAST_CHUNK)) == Wrote::All
    };
    if !ended_cleanly {
        return;
    }
    if socket2::SockRef::from(&stream.socket)
        .shutdown(std::net::Shutdown::Write)
        .is_ok()
    {
        linger(&mut Reading(&stream.socket)).await;
    }
}

/// A chunk's size line: `len` in hex, then CRLF, at the end of `out` (written by
/// hand: it runs for every event rendered).
fn chunk_size(mut len: usize, out: &mut [u8; 18]) -> &[u8] {
    let mut at = 16;
    loop {
        at -= 1;
        out[at] = b"0123456789abcdef"[len & 15];
        len >>= 4;
        if len == 0 {
            break;
        }
    }
    out[16..].copy_from_slice(b"\r\n");
    &out[at..]
}

/// `data` as one HTTP/1.1 chunk: its size in hex, CRLF, the data, CRLF.
pub(crate) fn chunk(data: &[u8]) -> Bytes {
    let mut size = [0u8; 18];
    let size = chunk_size(data.len(), &mut size);
    let mut chunk = Vec::with_capacity(size.len() + data.len() + 2);
    chunk.extend_from_slice(size);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    Bytes::from(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::CoordinatorConfig;
    use crate::Listing;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn chunk_sizes_are_hex() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size(0, &mut out), b"0\r\n");
        assert_eq!(chunk_size(4096, &mut out), b"1000\r\n");
        for len in [9, 10, 255, 70_000, usize::MAX] {
            assert_eq!(chunk_size(len, &mut out), format!("{len:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn a_chunk_is_sized_in_hex() {
        for (len, size) in [(1, "1"), (26, "1a"), (4096, "1000"), (70_000, "11170")] {
            let data = vec![b'x'; len];
            let expected = [format!("{size}\r\n").as_bytes(), &data, b"\r\n"].concat();
            assert_eq!(chunk(&data), expected);
        }
    }

    /// Longest wait for something that should happen at once.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Two ends of a connection: the stream's socket, and its reader's.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reader = TcpStream::connect(listener.local_addr().unwrap());
        let (reader, accepted) = tokio::join!(reader, listener.accept());
        (accepted.unwrap().0, reader.unwrap())
    }

    /// Reads from `reader` until what it read contains `want`.
    async fn read_until(reader: &mut TcpStream, want: &str) -> String {
        let mut read = Vec::new();
        let reading = async {
            while !String::from_utf8_lossy(&read).contains(want) {
                let mut buffer = [0u8; 4096];
                let n = reader.read(&mut buffer).await.unwrap();
                assert!(n > 0, "closed before {want:?}");
                read.extend_from_slice(&buffer[..n]);
            }
        };
        tokio::time::timeout(PATIENCE, reading)
            .await
            .unwrap_or_else(|_| panic!("{want:?} never came"));
        String::from_utf8_lossy(&read).into_owned()
    }

    #[tokio::test]
    async fn only_newer_states_go_out_and_nothing_between_the_parts_of_one_write() {
        let (socket, mut reader) = connected().await;
        let stream = Subscriber::new(socket, 5);
        let now = Instant::now();
        stream.offer(5, &Bytes::from_static(b"same"), now);
        stream.offer(4, &Bytes::from_static(b"older"), now);
        stream.offer(6, &Bytes::from_static(b"six|"), now);
        // More than the socket takes while nobody reads: the rest is left to the
        // stream's own task, which is told.
        let large = Bytes::from(vec![b'x'; 64 << 20]);
        stream.offer(7, &large, now);
        assert!(stream.out().rest.is_some(), "the socket took 64 MB at once");
        let told = tokio::time::timeout(PATIENCE, stream.wake.notified());
        told.await.expect("the stream's task is told");
        // A newer state meanwhile is not written in the middle of it; the
        // stream's task is told again (it sends the newest when done).
        stream.offer(8, &Bytes::from_static(b"eight"), now);
        let told = tokio::time::timeout(PATIENCE, stream.wake.notified());
        told.await
            .expect("the stream's task is told of the newer state");
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).await.unwrap();
            all
        });
        assert!(stream.finish(PATIENCE, &CancellationToken::new()).await);
        assert_eq!(stream.out().sent, 7, "8 is left to the stream's task");
        drop(stream);
        let all = reading.await.unwrap();
        assert!(
            all == [b"six|".as_slice(), &large].concat(),
            "{} bytes",
            all.len()
        );
    }

    #[tokio::test]
    async fn a_keep_alive_goes_out_after_a_quiet_interval() {
        let (socket, mut reader) = connected().await;
        let stream = Subscriber::new(socket, 1);
        let start = stream.out().wrote;
        let at = |s: u64| start + Duration::from_secs(s);
        let every = Duration::from_secs(10);
        assert_eq!(stream.keep_alive(every, at(0)), at(10));
        // A state 4 s in: the keep-alive waits for 10 s of quiet after it.
        stream.offer(2, &Bytes::from_static(b"two|"), at(4));
        assert_eq!(stream.keep_alive(every, at(10)), at(14));
        assert_eq!(stream.keep_alive(every, at(14)), at(24));
        assert_eq!(stream.keep_alive(every, at(20)), at(24));
        let expected = format!("two|{}", String::from_utf8_lossy(KEEPALIVE));
        assert_eq!(
            read_until(&mut reader, "keep-alive\n\n\r\n").await,
            expected
        );
    }

    #[tokio::test]
    async fn a_topic_has_one_broadcaster_while_it_has_streams_and_none_after() {
        let (shared, _) = Shared::new(CoordinatorConfig::default(), 1).unwrap();
        let topic = Topic::Service("s".into());
        let hold = shared.changes.open_stream(topic.clone()).unwrap();
        let subscribers = hold.subscribers();
        let index = current(&shared, &topic).0;
        let (socket, mut reader) = connected().await;
        let (first, start) = subscribers.join(Arc::new(Subscriber::new(socket, index)));
        assert!(start, "the first stream starts the broadcaster");
        let broadcaster = tokio::spawn(run(
            shared.clone(),
            topic.clone(),
            hold.changes(),
            subscribers.clone(),
        ));
        // Changes reach the stream through the broadcaster, each as one chunk; the
        // second once it waits for changes.
        for host in ["a:1", "b:1"] {
            shared.upsert(Listing::new("s", host).unwrap()).unwrap();
            let read = read_until(&mut reader, "}]\n\n\r\n").await;
            assert!(read.contains(&format!(r#""host":"{host}""#)), "{read:?}");
        }
        let (socket, _reader) = connected().await;
        let (second, start) = subscribers.join(Arc::new(Subscriber::new(socket, index)));
        assert!(!start, "one broadcaster per topic");
        // The topic's entry goes with its last waiter, even while its broadcaster
        // runs.
        drop(hold);
        assert_eq!(shared.changes.topics_len(), 0, "nothing left of the topic");
        subscribers.leave(first);
        subscribers.leave(second);
        tokio::time::timeout(PATIENCE, broadcaster)
            .await
            .expect("the broadcaster ends after the last stream")
            .unwrap();
        assert!(!subscribers.running());
    }

    #[tokio::test]
    async fn each_change_starts_one_stream_further_round_the_list() {
        let subscribers = Subscribers::default();
        let mut streams = Vec::new();
        for _ in 0..3 {
            let (socket, reader) = connected().await;
            let stream = Arc::new(Subscriber::new(socket, 1));
            let (id, _) = subscribers.join(stream.clone());
            streams.push((id, stream, reader));
        }
        let order = |after: u64| {
            let mut members = Vec::new();
            let first = subscribers.members(after, &mut members);
            let ids: Vec<u64> = members
                .iter()
                .map(|m| streams.iter().find(|s| Arc::ptr_eq(&s.1, m)).unwrap().0)
                .collect();
            (first, ids)
        };
        assert_eq!(order(0), (Some(1), vec![1, 2, 0]));
        assert_eq!(order(1), (Some(2), vec![2, 0, 1]));
        assert_eq!(order(2), (Some(0), vec![0, 1, 2]));
        subscribers.leave(0);
        assert_eq!(order(2), (Some(1), vec![1, 2]));
        subscribers.leave(1);
        subscribers.leave(2);
        assert_eq!(order(2), (None, vec![]));
        assert!(!subscribers.running(), "none left: stopped");
    }

    #[tokio::test]
    async fn a_broadcaster_that_panics_ends_its_streams_and_the_next_starts_another() {
        let subscribers = Subscribers::default();
        let (socket, _reader) = connected().await;
        let stream = Arc::new(Subscriber::new(socket, 1));
        assert!(subscribers.join(stream.clone()).1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = Panicked(&subscribers);
            panic!("a broadcaster's bug (this panic is the test's)");
        }));
        assert!(panicked.is_err());
        assert!(!subscribers.running());
        assert!(stream.out().closed, "its stream ends");
        let told = tokio::time::timeout(PATIENCE, stream.wake.notified());
        told.await.expect("and its task is told");
        let (socket, _reader) = connected().await;
        let next = Arc::new(Subscriber::new(socket, 1));
        assert!(subscribers.join(next).1, "the next stream starts another");
    }
}
