//! Workload 11 (issue #18): streams against blocking queries, in the same run, on
//! our coordinator (core 0). Every watcher is its own connection from this driver
//! (core 1), as separate processes would have them: a stream (`Accept:
//! text/event-stream`), or a blocking query re-asked after each answer on a
//! kept-alive connection. A watcher has a change when it has read the bytes of
//! the new state: the driver only looks for the payload's `"v":N` in them, so what
//! is timed is the coordinator and the network, not a client's decoding. The
//! kernel's receive timestamp also gives when those bytes arrived at the socket,
//! whatever the driver's own pace reading them. Watchers
//! speak HTTP/1.1 on plain sockets and record into a shared [`Board`]: with a
//! client library and a channel per delivery, the driver spent more system time
//! per delivery (4.7 µs) than the coordinator (3.9 µs), and timed itself as much
//! as the coordinator. They run on a thread of their own, on a current-thread
//! runtime, and read each delivery with one system call ([`Socket::read`]): with
//! a multi-thread runtime and a second read to find the socket empty, the driver
//! spent about 0.5 µs more per delivery.
//!
//! 1. 1,000 watchers, each way: per (change, watcher) latency from just before
//!    the write until that watcher has the change; streams again with the
//!    coordinator on both cores.
//! 2. 10,000 watchers, each way: until every watcher has the change; coordinator
//!    memory per open stream (and per held query).
//! 3. Heartbeat throughput (wrk, as in section 1) before any stream, then without
//!    streams and with 10,000 streams open, in turn.

use crate::util::*;
use crate::workloads::{hb_listing, metric};
use crate::{Check, Ctx, Section};
use anyhow::{anyhow, bail, Result};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;

const SERVICE: &str = "s11";
const SMALL: usize = 1_000;
const LARGE: usize = 10_000;
const SMALL_CHANGES: u64 = 200;
const LARGE_CHANGES: u64 = 20;
/// Changes made, untimed, before each timed series: the first changes after the
/// watchers connect are slower (1,000 streams: about 2× for the first 15), as the
/// connections' buffers and the caches warm up.
const SMALL_WARMUP: u64 = 20;
const LARGE_WARMUP: u64 = 2;
/// Longest wait for one change to reach every watcher.
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Stream,
    Blocking,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Stream => "stream",
            Way::Blocking => "blocking query",
        }
    }
}

/// The payload version `v` in a state's bytes (the last one, for several events).
fn version(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(4).rposition(|w| w == b"\"v\":")?;
    let digits: Vec<u8> = bytes[at + 4..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn publication(v: u64) -> String {
    format!(r#"{{"service":"{SERVICE}","host":"p:1","v":{v}}}"#)
}

/// Publishes the listing with payload `v` on `addr`, with `http` (kept between
/// the changes of a series, so that no change waits for a connection).
async fn publish(http: &reqwest::Client, addr: &str, v: u64) -> Result<()> {
    http.post(format!("http://{addr}/v1/listings"))
        .body(publication(v))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Where every watcher records the newest version it has and when it got the one
/// the driver waits for. One store per delivery, no channel and no wake-up of the
/// driver's loop until the last watcher has it, so what the driver spends per
/// delivery is mostly the socket read itself.
struct Board {
    base: Instant,
    /// The version waited for, plus one (0: none yet).
    wanted: AtomicU64,
    /// Per watcher: the newest version seen, plus one (0: none yet).
    seen: Vec<AtomicU64>,
    /// Per watcher: when it read what reached `wanted`, ns since `base`.
    at: Vec<AtomicU64>,
    /// Per watcher: when that arrived at its socket, ns since `base`, plus one
    /// (0: the read brought no usable stamp).
    arrived: Vec<AtomicU64>,
    /// Watchers that reached `wanted`.
    count: AtomicUsize,
    /// Told when `count` reaches every watcher.
    all: Notify,
}

impl Board {
    fn new(n: usize) -> Self {
        Board {
            base: Instant::now(),
            wanted: AtomicU64::new(0),
            seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            all: Notify::new(),
        }
    }

    /// From now on, waits for version `v` (any version, for `None`).
    fn arm(&self, v: Option<u64>) {
        self.count.store(0, Ordering::SeqCst);
        self.wanted.store(v.map_or(1, |v| v + 1), Ordering::SeqCst);
        // Those that already have it (none, for a change not made yet).
        let wanted = self.wanted.load(Ordering::SeqCst);
        let already = self
            .seen
            .iter()
            .filter(|s| s.load(Ordering::SeqCst) >= wanted)
            .count();
        self.count.fetch_add(already, Ordering::SeqCst);
    }

    /// Watcher `id` has version `v`, from what `got` read.
    fn saw(&self, id: usize, v: u64, got: &Got) {
        let wanted = self.wanted.load(Ordering::SeqCst);
        // The times first: once `seen` says a watcher has what is wanted, its
        // times are there (only this watcher's task writes any of them).
        if self.seen[id].load(Ordering::SeqCst) < wanted && v + 1 >= wanted {
            self.at[id].store(self.ns(got.read), Ordering::SeqCst);
            let arrived = got.arrived.map_or(0, |at| self.ns(at) + 1);
            self.arrived[id].store(arrived, Ordering::SeqCst);
        }
        let before = self.seen[id].fetch_max(v + 1, Ordering::SeqCst);
        // The count only wakes the driver; what is reported is read from `seen`.
        if before < wanted
            && v + 1 >= wanted
            && self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.seen.len()
        {
            self.all.notify_one();
        }
    }

    /// Until every watcher has what was armed, or `deadline`.
    async fn wait(&self, deadline: tokio::time::Instant) {
        loop {
            if self.count.load(Ordering::SeqCst) >= self.seen.len()
                && self.have() == self.seen.len()
            {
                return;
            }
            if tokio::time::timeout_at(deadline, self.all.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// How many watchers have what was armed.
    fn have(&self) -> usize {
        let wanted = self.wanted.load(Ordering::SeqCst);
        self.seen
            .iter()
            .filter(|seen| seen.load(Ordering::SeqCst) >= wanted)
            .count()
    }

    /// `at` in ns since `base`.
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Per watcher that has what was armed: µs from `t0` until it read it, and
    /// until it arrived (none without a usable stamp, or one from before `t0`). A
    /// read from before `t0` (a watcher caught between its stores) is left out,
    /// as missed.
    fn latencies(&self, t0: Instant) -> Vec<(u64, Option<u64>)> {
        let wanted = self.wanted.load(Ordering::SeqCst);
        let t0 = self.ns(t0);
        (0..self.seen.len())
            .filter(|&id| self.seen[id].load(Ordering::SeqCst) >= wanted)
            .map(|id| {
                let at = self.at[id].load(Ordering::SeqCst);
                let arrived = self.arrived[id].load(Ordering::SeqCst).checked_sub(1);
                (at, arrived)
            })
            .filter(|(at, _)| *at >= t0)
            .map(|(at, arrived)| {
                let arrived = arrived.and_then(|a| a.checked_sub(t0)).map(|a| a / 1_000);
                ((at - t0) / 1_000, arrived)
            })
            .collect()
    }
}

/// A watcher's connection: a nonblocking socket on the watchers' runtime (see
/// [`WatcherThread`]), with no delay on small writes, on which the kernel stamps
/// what arrives (`SO_TIMESTAMPNS`, read by [`Socket::read`]).
struct Socket(AsyncFd<std::net::TcpStream>);

impl Socket {
    /// Connects and sends `request`.
    async fn connect(addr: &str, request: &str) -> Result<Socket> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        // SAFETY: a std `TcpStream` owns its descriptor and always gives the same
        // one; the `AsyncFd` owns the stream until it is dropped. (`into_std`
        // keeps the socket non-blocking: a read never blocks the watchers' thread.)
        let socket = Socket(unsafe { AsyncFd::register(socket.into_std()?) }?);
        socket.write_all(request.as_bytes()).await?;
        Ok(socket)
    }

    async fn write_all(&self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let mut ready = self.0.writable().await?;
            if let Ok(wrote) = ready.try_io(|socket| socket.get_ref().write(bytes)) {
                bytes = &bytes[wrote?..];
            }
        }
        Ok(())
    }

    /// Reads what the socket has into `buffer`, with when it arrived (see [`Got`]).
    ///
    /// The driver reads 1,000 or 10,000 sockets on one core, one after another,
    /// where separate processes would each read their own: the arrival is when the
    /// watcher has the bytes, whatever the driver's own pace. A read that does not
    /// fill `buffer` has emptied the socket (TCP returns less only when nothing
    /// is left, urgent data aside, which the coordinator never sends), so the next
    /// one waits for the next event rather than first finding nothing: one system
    /// call per delivery, not two.
    async fn read(&self, buffer: &mut [u8]) -> Result<Got> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|socket| receive(socket.as_raw_fd(), buffer)) {
                Ok(got) => {
                    let got = got?;
                    if got.n > 0 && got.n < buffer.len() {
                        ready.clear_ready();
                    }
                    return Ok(got);
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what the socket has onto the end of `pending` (an error once the
    /// connection closed).
    async fn read_more(&self, buffer: &mut [u8], pending: &mut Vec<u8>) -> Result<Got> {
        let got = self.read(buffer).await?;
        if got.n == 0 {
            bail!("connection closed");
        }
        pending.extend_from_slice(&buffer[..got.n]);
        Ok(got)
    }
}

/// What one read of a watcher's socket took.
struct Got {
    /// Bytes read (0: the connection closed).
    n: usize,
    /// When the last of them arrived at the socket: the kernel's receive
    /// timestamp, moved onto the monotonic clock; none when the read brought no
    /// usable one (no stamp, or one from after the read).
    arrived: Option<Instant>,
    /// When they were read.
    read: Instant,
}

/// One `recvmsg` of socket `fd` into `buffer`, with the receive timestamp.
fn receive(fd: RawFd, buffer: &mut [u8]) -> std::io::Result<Got> {
    let mut iov = [std::io::IoSliceMut::new(buffer)];
    let mut space = nix::cmsg_space!(TimeSpec);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::empty())?;
    // Both clocks at once, as close to the read as can be.
    let (read, wall) = (Instant::now(), std::time::SystemTime::now());
    let stamp = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(at) => Some(at),
            _ => None,
        })
    });
    // How long before the read it arrived, on the wall clock the stamp is on.
    let arrived = stamp.and_then(|at| {
        let at = std::time::UNIX_EPOCH + Duration::new(at.tv_sec() as u64, at.tv_nsec() as u32);
        read.checked_sub(wall.duration_since(at).ok()?)
    });
    Ok(Got {
        n: msg.bytes,
        arrived,
        read,
    })
}

/// The watchers' own thread and runtime, on the driver's core: a current-thread
/// runtime, so that waking a watcher goes through no multi-thread scheduler (its
/// queues, locks and cross-thread wakes). Ended when dropped.
struct WatcherThread {
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatcherThread {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchers".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(WatcherThread {
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for WatcherThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One watcher reading a stream on a socket of its own (HTTP/1.1 written and read
/// by hand, so the driver's cost per delivery is a read and a scan): reports each
/// new `v` on `board`.
async fn stream_watcher(addr: String, id: usize, board: Arc<Board>) -> Result<()> {
    let request = format!(
        "GET /v1/listings/{SERVICE} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
    );
    let socket = Socket::connect(&addr, &request).await?;
    let mut buffer = vec![0u8; 2048];
    let mut pending: Vec<u8> = Vec::new();
    let mut head = true;
    loop {
        let got = socket.read_more(&mut buffer, &mut pending).await?;
        if head {
            let Some(end) = head_end(&pending) else {
                continue;
            };
            if !pending.starts_with(b"HTTP/1.1 200") {
                bail!(
                    "stream answered {}",
                    String::from_utf8_lossy(&pending[..end])
                );
            }
            head = false;
        }
        // Whole events only (an event ends with a blank line); the chunked
        // encoding's framing in between does not matter to the search.
        if let Some(end) = pending.windows(2).rposition(|w| w == b"\n\n") {
            if let Some(v) = version(&pending[..end]) {
                board.saw(id, v, &got);
            }
            pending.drain(..end + 2);
        }
    }
}

/// Where a header block ends, if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// A header's value in a response head (names compared without case).
fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// One watcher asking blocking queries on a kept-alive socket of its own (HTTP/1.1
/// written and read by hand, as for streams): reports each new `v` on `board`.
async fn blocking_watcher(addr: String, id: usize, board: Arc<Board>) -> Result<()> {
    let mut index: Option<u64> = None;
    let mut socket: Option<Socket> = None;
    let mut buffer = vec![0u8; 2048];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let path = match index {
            Some(i) => format!("/v1/listings/{SERVICE}?index={i}&wait=300s"),
            None => format!("/v1/listings/{SERVICE}"),
        };
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        let socket = match &mut socket {
            Some(socket) => {
                socket.write_all(request.as_bytes()).await?;
                socket
            }
            None => socket.insert(Socket::connect(&addr, &request).await?),
        };
        // The head, then a body of its Content-Length; the answer's times are
        // those of its last read.
        let mut last = None;
        let (head_len, body_len) = loop {
            if let Some(end) = head_end(&pending) {
                let head = std::str::from_utf8(&pending[..end])?;
                if !head.starts_with("HTTP/1.1 200") {
                    bail!("blocking query answered {head}");
                }
                let length = header_value(head, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| anyhow!("no content-length in {head}"))?;
                index = Some(
                    header_value(head, "x-hakken-index")
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| anyhow!("no x-hakken-index in {head}"))?,
                );
                break (end, length);
            }
            last = Some(socket.read_more(&mut buffer, &mut pending).await?);
        };
        while pending.len() < head_len + body_len {
            last = Some(socket.read_more(&mut buffer, &mut pending).await?);
        }
        let answer = &pending[head_len..head_len + body_len];
        if let (Some(v), Some(got)) = (version(answer), &last) {
            board.saw(id, v, got);
        }
        pending.drain(..head_len + body_len);
    }
}

/// Closes `watchers` and waits until the coordinator at `addr` has let go of
/// every stream and held query.
async fn close(addr: &str, mut watchers: Watchers) -> Result<()> {
    watchers.tasks.abort_all();
    while watchers.tasks.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, "hakken_streams", &[], &[]).await?
        + metric(addr, "hakken_held_queries", &[], &[]).await?
        > 0.0
    {
        if Instant::now() > deadline {
            return Err(anyhow!("the watchers' connections were not let go"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `n` watchers of one way, open.
struct Watchers {
    board: Arc<Board>,
    tasks: tokio::task::JoinSet<Result<()>>,
    n: usize,
}

async fn open(on: &WatcherThread, addr: &str, way: Way, n: usize) -> Result<Watchers> {
    let board = Arc::new(Board::new(n));
    // Every watcher has the current state before the first change.
    board.arm(None);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..n {
        let (addr, board) = (addr.to_owned(), board.clone());
        match way {
            Way::Stream => tasks.spawn_on(stream_watcher(addr, id, board), &on.runtime),
            Way::Blocking => tasks.spawn_on(blocking_watcher(addr, id, board), &on.runtime),
        };
        // At a bounded pace, so the listen backlog never overflows.
        if id % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    board.wait(deadline).await;
    let count = board.have();
    if count < n {
        bail!(
            "{count} of {n} {} watchers ready{}",
            way.label(),
            failure(&mut tasks)
        );
    }
    Ok(Watchers { board, tasks, n })
}

/// Why a watcher ended, if one did (`: …`), else nothing: a watcher ends only on
/// an error.
fn failure(tasks: &mut tokio::task::JoinSet<Result<()>>) -> String {
    match tasks.try_join_next() {
        Some(Ok(Err(error))) => format!(": {error:#}"),
        Some(Ok(Ok(()))) => ": a watcher ended".to_owned(),
        Some(Err(error)) => format!(": {error}"),
        None => String::new(),
    }
}

/// CPU time (user and system) of process `pid` ("self" for this driver), µs.
fn cpu_us(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_us(&stat)
}

/// utime + stime from a `/proc/PID/stat` line, µs. They are the 12th and 13th
/// fields after the command's closing parenthesis (the state is the 1st), in clock
/// ticks (100 a second here). Fields are counted as words: some are negative (the
/// terminal's process group is -1 without one), so they cannot be told apart by
/// parsing.
fn stat_cpu_us(stat: &str) -> u64 {
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    (ticks(11) + ticks(12)) * 10_000
}

/// What one series of changes measured.
#[derive(Default)]
struct Stats {
    /// Every (change, watcher) latency until the watcher read it, µs.
    samples: Vec<u64>,
    /// Per change: until the last watcher read it, µs.
    all: Vec<u64>,
    /// The same two, until it arrived at the watcher's socket (deliveries with a
    /// usable stamp only).
    arrived: Vec<u64>,
    arrived_all: Vec<u64>,
    /// Deliveries without a usable stamp.
    unstamped: usize,
    missed: usize,
    changes: u64,
    /// CPU time of the coordinator and of this driver over the changes, µs.
    coordinator_cpu: u64,
    driver_cpu: u64,
}

/// Makes `changes` changes (payload `v` = `first`, `first + 1`, …), each once the
/// previous reached every watcher and, for blocking queries, every watcher asks
/// again (held again), so each change is timed from the same steady state.
async fn changes(
    addr: &str,
    pid: u32,
    way: Way,
    watchers: &mut Watchers,
    first: u64,
    changes: u64,
) -> Result<Stats> {
    let http = http();
    let mut stats = Stats::default();
    let pid = pid.to_string();
    let (coordinator_before, driver_before) = (cpu_us(&pid), cpu_us("self"));
    for v in first..first + changes {
        if way == Way::Blocking {
            let deadline = Instant::now() + Duration::from_secs(30);
            while (metric(addr, "hakken_held_queries", &[], &[]).await? as usize) < watchers.n {
                if Instant::now() > deadline {
                    bail!("the blocking watchers were not all held again");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        watchers.board.arm(Some(v));
        let t0 = Instant::now();
        publish(&http, addr, v).await?;
        watchers
            .board
            .wait(tokio::time::Instant::now() + CHANGE_LIMIT)
            .await;
        let latencies = watchers.board.latencies(t0);
        let last = latencies.iter().map(|l| l.0).max().unwrap_or(0);
        let last_arrived = latencies.iter().filter_map(|l| l.1).max().unwrap_or(0);
        stats.missed += watchers.n.saturating_sub(latencies.len());
        stats.samples.extend(latencies.iter().map(|l| l.0));
        stats.arrived.extend(latencies.iter().filter_map(|l| l.1));
        stats.unstamped += latencies.iter().filter(|l| l.1.is_none()).count();
        // A watcher that failed (a refusal, a closed connection) is an error of the
        // run, not a slow delivery.
        let failed = failure(&mut watchers.tasks);
        if !failed.is_empty() {
            bail!("a {} watcher failed{failed}", way.label());
        }
        stats.all.push(last);
        stats.arrived_all.push(last_arrived);
        stats.changes += 1;
    }
    stats.coordinator_cpu = cpu_us(&pid).saturating_sub(coordinator_before);
    stats.driver_cpu = cpu_us("self").saturating_sub(driver_before);
    Ok(stats)
}

/// One series of [`SMALL`] watchers of `way` on `server`, whose listing has
/// payload `v`: open, untimed warm-up changes, timed changes, closed. `v` ends
/// at the last payload published.
async fn small_series(on: &WatcherThread, server: &Proc, way: Way, v: &mut u64) -> Result<Stats> {
    let addr = server.addr();
    let mut watchers = open(on, &addr, way, SMALL).await?;
    changes(
        &addr,
        server.pid(),
        way,
        &mut watchers,
        *v + 1,
        SMALL_WARMUP,
    )
    .await?;
    *v += SMALL_WARMUP;
    let stats = changes(
        &addr,
        server.pid(),
        way,
        &mut watchers,
        *v + 1,
        SMALL_CHANGES,
    )
    .await?;
    *v += SMALL_CHANGES;
    // Every socket closed before the next series opens its own.
    watchers.tasks.abort_all();
    while watchers.tasks.join_next().await.is_some() {}
    Ok(stats)
}

/// `| p50 | p99 | max | all p50 | all max |` of `samples` and of per-change `all`
/// (µs), without the outer bars.
fn latency_cells(samples: &[u64], all: &[u64]) -> String {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let mut a = all.to_vec();
    a.sort_unstable();
    format!(
        "{} | {} | {} | {} | {}",
        ms(pct(&s, 50.0)),
        ms(pct(&s, 99.0)),
        ms(s.last().copied().unwrap_or(0)),
        ms(pct(&a, 50.0)),
        ms(a.last().copied().unwrap_or(0)),
    )
}

fn row(what: &str, n: usize, stats: &Stats) -> String {
    let events = (stats.changes * n as u64).max(1) as f64;
    format!(
        "| {what} | {} × {n} | {} | {} | {:.1} µs | {:.1} µs |",
        stats.changes,
        latency_cells(&stats.samples, &stats.all),
        stats.missed,
        stats.coordinator_cpu as f64 / events,
        stats.driver_cpu as f64 / events,
    )
}

/// The same series, until the changes arrived at the watchers' sockets.
fn arrival_row(what: &str, n: usize, stats: &Stats) -> String {
    format!(
        "| {what} | {} × {n} | {} | {} |",
        stats.changes,
        latency_cells(&stats.arrived, &stats.arrived_all),
        stats.unstamped,
    )
}

/// Every run's requests/s, in order.
fn runs(runs: &[f64]) -> String {
    runs.iter().map(|r| rps(*r)).collect::<Vec<_>>().join(", ")
}

fn p99(samples: &[u64]) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    pct(&s, 99.0)
}

/// Runs with streams open behind the heartbeat figure. One run of 5 s here moves
/// by up to a third from the next, and the machine's pace drifts over a minute.
/// Measured as seven runs without streams, seven with 10,000 open and seven
/// without again, the runs after the streams had closed came out between the two
/// (medians 96 % and 90 % of the first seven's): these runs could not tell an
/// effect of the open streams from the machine slowing down. So the runs
/// alternate, without and with, and each run with streams is compared with the
/// two without it on either side.
const HB_RUNS: usize = 7;
/// Runs on the coordinator before it ever held a stream, shown beside: the
/// alternating runs come after the series of 10,000, and would not show an effect
/// that outlasts the streams.
const HB_FRESH_RUNS: usize = 3;
/// The coordinator's keep-alive interval (`stream_keepalive`, 15 s by default). A
/// run with streams starts [`HB_KEEPALIVE_LEAD`] before their first keep-alive is
/// due, so that each of them sends one during the run.
const HB_KEEPALIVE: Duration = Duration::from_secs(15);
const HB_KEEPALIVE_LEAD: Duration = Duration::from_secs(3);

/// Heartbeat throughput on `addr` without streams and with [`LARGE`] streams
/// open, in alternation: [`HB_RUNS`] runs with, each between two without.
struct Heartbeats {
    /// `HB_RUNS + 1` runs, requests/s.
    without: Vec<f64>,
    /// `HB_RUNS` runs; `with[i]` ran between `without[i]` and `without[i + 1]`.
    with: Vec<f64>,
    /// Runs that began with a core still busy after [`SETTLE_LIMIT`].
    unsettled: usize,
}

impl Heartbeats {
    /// Each run with streams over the mean of the two without it on either side.
    fn ratios(&self) -> Vec<f64> {
        self.with
            .iter()
            .zip(self.without.windows(2))
            .map(|(with, around)| with / ((around[0] + around[1]) / 2.0))
            .collect()
    }

    /// The median of [`Heartbeats::ratios`].
    fn ratio(&self) -> f64 {
        median(self.ratios())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Longest wait for the cores to be at rest before a heartbeat run.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Waits until cores 0 and 1 were each busy under 5 % of a 500 ms window (at
/// most [`SETTLE_LIMIT`]): whether they were. Every heartbeat run starts so, not
/// at once after 10,000 sockets closed, while the kernel is still freeing them.
async fn settle() -> bool {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let before = core_times();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if busy_since(&before).iter().all(|busy| *busy < 0.05) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

async fn heartbeats(ctx: &Ctx, on: &WatcherThread, addr: &str, seconds: u32) -> Result<Heartbeats> {
    let mut runs = Heartbeats {
        without: Vec::with_capacity(HB_RUNS + 1),
        with: Vec::with_capacity(HB_RUNS),
        unsettled: 0,
    };
    runs.unsettled += usize::from(!settle().await);
    runs.without
        .push(heartbeat_rps(ctx, addr, seconds).await?.0);
    for _ in 0..HB_RUNS {
        let watchers = open(on, addr, Way::Stream, LARGE).await?;
        let opened = Instant::now();
        let open_gauge = metric(addr, "hakken_streams", &[], &[]).await?;
        if (open_gauge as usize) < LARGE {
            bail!("only {open_gauge} streams open");
        }
        runs.unsettled += usize::from(!settle().await);
        tokio::time::sleep_until((opened + HB_KEEPALIVE - HB_KEEPALIVE_LEAD).into()).await;
        runs.with.push(heartbeat_rps(ctx, addr, seconds).await?.0);
        close(addr, watchers).await?;
        runs.unsettled += usize::from(!settle().await);
        runs.without
            .push(heartbeat_rps(ctx, addr, seconds).await?.0);
    }
    Ok(runs)
}

/// Heartbeat throughput on `addr` (wrk, 32 connections, as section 1), requests/s.
async fn heartbeat_rps(ctx: &Ctx, addr: &str, seconds: u32) -> Result<(f64, String)> {
    let spec = WrkSpec {
        url: format!("http://{addr}/v1/listings?heartbeat=true"),
        script: "heartbeats.lua",
        connections: 32,
        seconds,
        env: vec![
            ("BENCH_LISTINGS".into(), HB_LISTINGS.to_string()),
            ("BENCH_SERVICES".into(), HB_SERVICES.to_string()),
        ],
    };
    let result = run_wrk(&ctx.paths, &spec).await?;
    if result.errors() > 0 {
        bail!("wrk saw {} errors", result.errors());
    }
    Ok((result.rps(), wrk_command_line(&spec)))
}

const HB_LISTINGS: usize = 62_500;
const HB_SERVICES: usize = 50;

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let mut body = String::new();
    let mut checks = Vec::new();
    writeln!(
        body,
        "Our coordinator on core 0; this driver on core 1, holding every watcher's \
         connection: {SMALL} and then {LARGE} watchers of one service, each on its own \
         connection, as separate processes would have them. *Stream*: `GET \
         /v1/listings/{SERVICE}` with `Accept: text/event-stream`, held open. *Blocking \
         query*: `GET /v1/listings/{SERVICE}?index=N&wait=300s`, asked again on the same \
         kept-alive connection after each answer. One publisher changes the listing's \
         payload (`POST /v1/listings`, `v` = 1, 2, …); a watcher has the change when it has read the \
         bytes of the new state (the driver only looks for `\"v\":N` in \
         them). Each watcher writes its request and reads its answers on a plain socket \
         (no HTTP client library), and records what it saw in a shared table (no \
         channel); the watchers share one thread of their own (a single-threaded \
         runtime) and read each delivery with one system call, so that the driver's own \
         cost per delivery is little more than the socket read. Each change is made once the previous one reached every watcher and, \
         for blocking queries, every watcher is held again (`hakken_held_queries`), so \
         both ways start each change from the same steady state. Each series follows \
         {SMALL_WARMUP} untimed changes ({LARGE_WARMUP} with {LARGE} watchers): the first \
         changes after the watchers connect are slower (about 2× for the first 15 with \
         {SMALL} streams). The latency is from \
         just before the write until the watcher has read the change; `all` is, per change, \
         until the last watcher had it. A second table gives the same changes until they \
         arrived at each watcher's socket (the kernel's receive timestamp): this driver \
         reads every socket on one core, one after another, where separate processes would \
         each read their own. The targets are checked on the read; the arrival (the \
         coordinator's side alone) is shown beside. *Stream, coordinator on 2 cores*: the same 1000 streams with \
         the coordinator on both cores (two worker threads), this driver sharing the \
         second. *CPU per delivery* is the CPU time (user and \
         system, from /proc) the coordinator and this driver spent over the series, \
         divided by changes × watchers (for blocking queries it includes a `/metrics` \
         read every 5 ms while the driver waits for every watcher to be held again).\n"
    )?;

    // 1. 1,000 watchers, both ways, one coordinator; then streams again with the
    // coordinator on both cores (two worker threads), this driver sharing the
    // second.
    let on = WatcherThread::start()?;
    let server = start_ours(&ctx.paths, "ours-streams-1k", &CoordOpts::default()).await?;
    let mut v = 0;
    publish(&http(), &server.addr(), v).await?;
    let mut small = Vec::new();
    for way in [Way::Stream, Way::Blocking] {
        small.push((way, small_series(&on, &server, way, &mut v).await?));
    }
    drop(server);
    let opts = CoordOpts {
        cores: "0-1".into(),
        ..CoordOpts::default()
    };
    let server = start_ours(&ctx.paths, "ours-streams-1k-2cores", &opts).await?;
    publish(&http(), &server.addr(), v).await?;
    let two_cores = small_series(&on, &server, Way::Stream, &mut v).await?;
    drop(server);

    // 2. and 3. 10,000 watchers, memory, heartbeats: one coordinator holding the
    // heartbeat workload's listings.
    let opts = CoordOpts {
        extra: ["--max-streams", "20000", "--max-held-queries", "20000"]
            .map(String::from)
            .to_vec(),
        ..CoordOpts::default()
    };
    let server = start_ours(&ctx.paths, "ours-streams-10k", &opts).await?;
    let addr = server.addr();
    let bodies: Vec<String> = (0..HB_LISTINGS)
        .map(|i| hb_listing(i, HB_SERVICES))
        .collect();
    load(&addr, bodies, 32).await?;
    // From here on, `v` is the next payload to publish.
    publish(&http(), &addr, v).await?;
    v += 1;
    let hb_seconds = (ctx.seconds / 2).max(5);
    let mut hb_fresh = Vec::with_capacity(HB_FRESH_RUNS);
    let mut wrk_line = String::new();
    for _ in 0..HB_FRESH_RUNS {
        let (rps, line) = heartbeat_rps(ctx, &addr, hb_seconds).await?;
        hb_fresh.push(rps);
        wrk_line = line;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kb();
    let mut large = Vec::new();
    let mut per_watcher = Vec::new();
    for way in [Way::Stream, Way::Blocking] {
        let before = server.rss_kb();
        let mut watchers = open(&on, &addr, way, LARGE).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with = server.rss_kb();
        let open_gauge = match way {
            Way::Stream => metric(&addr, "hakken_streams", &[], &[]).await?,
            Way::Blocking => metric(&addr, "hakken_held_queries", &[], &[]).await?,
        };
        if (open_gauge as usize) < LARGE {
            bail!("only {open_gauge} {} open", way.label());
        }
        changes(&addr, server.pid(), way, &mut watchers, v, LARGE_WARMUP).await?;
        v += LARGE_WARMUP;
        let stats = changes(&addr, server.pid(), way, &mut watchers, v, LARGE_CHANGES).await?;
        v += LARGE_CHANGES;
        close(&addr, watchers).await?;
        per_watcher.push((way, with.saturating_sub(before) * 1024 / LARGE as u64));
        large.push((way, stats));
    }
    let hb = heartbeats(ctx, &on, &addr, hb_seconds).await?;
    let peak = hwm_kb(server.pid());
    drop(server);

    body.push_str(
        "\n| way, watchers | changes × watchers | p50 | p99 | max | all p50 | all max | missed | coordinator CPU per delivery | driver CPU per delivery |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    // Every series, in the order of both tables.
    let series: Vec<(&str, usize, &Stats)> = small
        .iter()
        .map(|(way, stats)| (way.label(), SMALL, stats))
        .chain([("stream, coordinator on 2 cores", SMALL, &two_cores)])
        .chain(large.iter().map(|(way, stats)| (way.label(), LARGE, stats)))
        .collect();
    for (what, n, stats) in &series {
        writeln!(body, "{}", row(what, *n, stats))?;
    }
    body.push_str(
        "\nThe same changes until they arrived at each watcher's socket (the kernel's \
         receive timestamp, `SO_TIMESTAMPNS`), whenever the driver then read them; a delivery \
         whose read brought no usable stamp is counted, not timed:\n\n\
         | way, watchers | changes × watchers | p50 | p99 | max | all p50 | all max | without a usable stamp |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (what, n, stats) in &series {
        writeln!(body, "{}", arrival_row(what, *n, stats))?;
    }
    writeln!(
        body,
        "\nCoordinator memory with {LARGE} watchers open (RSS with them, less RSS before; \
         idle RSS {} with {HB_LISTINGS} listings held; peak over the whole section, the heartbeat runs below included, {}):\n",
        mib(idle_rss),
        mib(peak)
    )?;
    body.push_str("| way | per open watcher |\n| --- | ---: |\n");
    for (way, bytes) in &per_watcher {
        writeln!(
            body,
            "| {} | {:.1} KB |",
            way.label(),
            *bytes as f64 / 1024.0
        )?;
    }
    writeln!(
        body,
        "\nHeartbeat throughput, as in section 1 (`{wrk_line}`), on the same coordinator. \
         Before it ever held a stream: {}. After the series above, without streams and \
         with {LARGE} streams open in turn, {HB_RUNS} runs with, each between two \
         without: the streams are opened again for each run with them, which starts \
         {} s after they opened, so that each stream sends its first keep-alive (due \
         after {} s) during the run; every run starts once both cores were at rest \
         (under 5 % busy over 500 ms){}. Without, in order: {}. With: {}. Each run with \
         streams over the mean of the two without it on either side: {}. The median run \
         with streams was {:.0} % of the median before any stream.",
        runs(&hb_fresh),
        (HB_KEEPALIVE - HB_KEEPALIVE_LEAD).as_secs(),
        HB_KEEPALIVE.as_secs(),
        match hb.unsettled {
            0 => String::new(),
            n => format!(
                " ({n} of {} runs started with a core still busy after {} s)",
                2 * HB_RUNS + 1,
                SETTLE_LIMIT.as_secs()
            ),
        },
        runs(&hb.without),
        runs(&hb.with),
        hb.ratios()
            .iter()
            .map(|r| format!("{:.0} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        median(hb.with.clone()) / median(hb_fresh.clone()) * 100.0,
    )?;

    let stream_small = &small[0].1;
    let blocking_small = &small[1].1;
    // Checked on the read: a watcher has the change when it has read it. The
    // arrival at its socket (the coordinator's side alone) is shown beside.
    let p = p99(&stream_small.samples);
    checks.push(Check {
        what: "11. Streams, 1,000 watchers".into(),
        target: "p99 ≤ 5 ms".into(),
        measured: format!(
            "{} until read, {} until arrival (blocking queries: {}, {})",
            ms(p),
            ms(p99(&stream_small.arrived)),
            ms(p99(&blocking_small.samples)),
            ms(p99(&blocking_small.arrived))
        ),
        met: Some(p <= 5_000 && stream_small.missed == 0),
    });
    let slowest = |times: &[u64]| times.iter().copied().max().unwrap_or(0);
    let (stream_large, blocking_large) = (&large[0].1, &large[1].1);
    let all = slowest(&stream_large.all);
    checks.push(Check {
        what: "11. Streams, 10,000 watchers".into(),
        target: "all notified ≤ 100 ms".into(),
        measured: format!(
            "max {} until read, {} until arrival (blocking queries: {}, {})",
            ms(all),
            ms(slowest(&stream_large.arrived_all)),
            ms(slowest(&blocking_large.all)),
            ms(slowest(&blocking_large.arrived_all))
        ),
        met: Some(all <= 100_000 && stream_large.missed == 0),
    });
    let per_stream = per_watcher[0].1;
    checks.push(Check {
        what: "11. Streams, memory".into(),
        target: "≤ 10 KB per open stream".into(),
        measured: format!("{:.1} KB", per_stream as f64 / 1024.0),
        met: Some(per_stream <= 10 * 1024),
    });
    let ratio = hb.ratio();
    checks.push(Check {
        what: "11. Streams, heartbeats".into(),
        target: "no effect with 10,000 streams open".into(),
        measured: format!(
            "{:.0} % of without (the median of {HB_RUNS})",
            ratio * 100.0
        ),
        met: Some(ratio >= 0.95),
    });
    writeln!(
        body,
        "\nWith streams open, heartbeats ran at {:.0} % of without (the median of those \
         {HB_RUNS}). The original \
         has neither streams nor blocking queries: n/a (its polling is in section 5).",
        ratio * 100.0
    )?;
    Ok(Section {
        order: 11,
        title: "11. Streams (issue #18)".into(),
        measured_at: String::new(),
        body,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_with_streams_is_set_against_the_two_around_it() {
        // Throughput falling steadily by 2,000 a run, and the streams costing 5 %:
        // every ratio comes out at 95 %, whatever the drift.
        let without: Vec<f64> = (0..=HB_RUNS)
            .map(|i| 100_000.0 - 2_000.0 * i as f64)
            .collect();
        let with = without
            .windows(2)
            .map(|around| 0.95 * (around[0] + around[1]) / 2.0)
            .collect();
        let runs = Heartbeats {
            without,
            with,
            unsettled: 0,
        };
        let ratios = runs.ratios();
        assert_eq!(ratios.len(), HB_RUNS);
        assert!(
            ratios.iter().all(|r| (r - 0.95).abs() < 1e-12),
            "{ratios:?}"
        );
        // The median is the middle one, whatever the order.
        let runs = Heartbeats {
            without: vec![100.0; 4],
            with: vec![99.0, 90.0, 101.0],
            unsettled: 0,
        };
        assert_eq!(runs.ratio(), 0.99);
    }

    #[test]
    fn cpu_time_is_read_past_negative_fields() {
        // A process without a terminal (tpgid -1), as under setsid: utime 250 and
        // stime 70 ticks.
        let stat =
            "4242 (hakken (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 5 6 20 0 2 0 99 1 2";
        assert_eq!(stat_cpu_us(stat), 320 * 10_000);
    }
}
