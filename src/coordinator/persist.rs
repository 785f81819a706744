//! The registry on disk: a coordinator given a data directory keeps its listings
//! across a restart, even a `kill -9` of every coordinator at once.
//!
//! Without one, a coordinator that restarts with no peer of ours to copy from
//! knows nothing of the listings it held: it answers partial (`readiness.rs`)
//! until every publisher has been heard from, and until then it cannot tell a
//! listing whose publisher died just before the restart from one whose publisher
//! is alive. With one, it writes every live listing and the time each has left
//! to `DIR/registry.ndjson` (the snapshot format of `GET /v1/snapshot`, after a
//! head that says when it was written), and reads it back at start when the join
//! sync found no complete peer of ours to copy from (one knows better: it saw
//! what was withdrawn while this one was down; the original's coordinators know
//! nothing of withdrawals). The file is parsed while the join runs and imported
//! after it: each listing then lives what it had left, less the time the file was
//! on disk, and what a publisher sent meanwhile or a peer gave wins.
//!
//! **A listing near its end.** The file may be up to `H/2` old when the
//! coordinator stops, and a live publisher's next heartbeat after a restart may
//! come up to `H` later, so a live publisher's listing could be read back with
//! less time left than it takes its publisher to refresh it. A listing whose
//! publisher was heartbeating when the file was written (it had at least
//! `TTL - 5/4 H` left then) lives at least `5/4 H` after it is read back (at most
//! a TTL); one whose publisher had already missed a heartbeat lives only what it
//! had left, and so does one read back before and not heard from since (the file
//! says when its writer read its own file back). With the default TTL of `3 H`, a
//! dead publisher's listing then stays at most the file's age when read back less
//! `H/2` longer than it would have: nothing more when the coordinator was back
//! within `H/2` of the file's last write.
//!
//! **What it presumes gone.** A listing the file held whose publisher had not
//! been heard from for more than one and a half heartbeat intervals when it was
//! written is presumed gone unless heard from again, when the file records the
//! settings its times were counted under, they are the coordinator's now, and the
//! TTL is at least `5/2 H` (else nothing is). While the coordinator is partial,
//! its answers for the service name such listings in `X-Hakken-Departed` (plain
//! hosts only, at most 1 KB): our watches keep a listing a partial coordinator
//! does not list, for it may just not have heard from its publisher yet, but not
//! one it presumes gone. A publisher heard from during the join, or that reaches
//! it again later, is struck off; all is forgotten once the coordinator is
//! complete. Whatever a publisher withdraws while the coordinator is not
//! complete is named too, held or not ([`State::withdrawn`]; with a data
//! directory or not). (A live publisher that was cut off from this coordinator alone, or
//! heartbeats slower than `H`, is then missing from our watches until it reaches
//! the coordinator again: the coordinator's complete answer would leave it out
//! too.)
//!
//! **What left just before.** A watch may hold a listing that this coordinator
//! had already let go of when it stopped (it expired or was withdrawn here, and
//! the watch had it from another coordinator, since restarted too): no listing
//! line can name it. So the file's head also lists, as `left`, the listings
//! that left lately and are not held again, with how long before the write they
//! left and how (at most [`MAX_LEFT`], the newest). Read back, a listing
//! withdrawn in the last three TTLs is presumed gone (the original's
//! coordinators have no withdrawal: they keep a closed publisher's listing a TTL
//! and an expiry pass after its last heartbeat, longer when stopped meanwhile,
//! and a watch may have it from one of them), and so is one that expired in the
//! last TTL on the terms above (the same settings, a TTL of at least `5/2 H`);
//! the next file lists them again, so a second restart names them too. An expiry
//! the coordinator came to more than `H/2` late (it was stopped or starved: the
//! publisher's heartbeats may be waiting unread) is not listed. A publisher the
//! original's client stopped heartbeating to here (it drops a coordinator that
//! failed once) is then named gone for up to a TTL after it expired here; the
//! coordinator's answers lacked it all along.
//!
//! **Whom it knew.** The head also lists the coordinators the writer knew that
//! had not failed a poll since they last answered one. When the file was
//! written within a resync period (`10 H`), they are learned again at start, as
//! from a peer's list, right after the join sync (one of the original's that
//! restarted too would give an empty copy and call it whole), so that a
//! coordinator restarted with the rest of its cluster lists the whole cluster
//! within its first moments: the original's coordinators announce themselves
//! only once per resync period, through a balancer that may route the
//! announcement to a coordinator that is still down, and a publisher that
//! started meanwhile would miss them. One that is gone is dropped after its
//! failed polls, as any peer, and is not written again. A copy from one of the
//! original's does not make the coordinator complete after its file was read
//! back (`sync.rs`): the original's restarted with it, empty, and never say so.
//!
//! **When it is written:** once the coordinator has settled what it holds at
//! start (before, it would overwrite the file with less than it held), then
//! every `H/2` after the last write, soon after any listing is added, replaced,
//! withdrawn or expired (or the coordinators it knows change), and at shutdown
//! once in-flight requests are done. Writes
//! are paced: at most about a tenth of the time is spent writing (a 100,000-listing
//! registry is about 40 MB), so a change reaches the file within 20 ms on a small
//! registry, later on a large one, but within `2 H` whatever a write took (a write
//! the process was stopped in looks long). Each write goes to a temporary file, synced,
//! then renamed over the old one, so a crash leaves the old file or the new one,
//! never half of one; the file is readable by its owner only. A file that cannot
//! be read (damaged, another version) is logged and the coordinator starts
//! without it; a write that fails is logged (once, until one succeeds again) and
//! tried again a period later. One coordinator per directory: a second one is
//! refused at start (`DIR/lock`, a `flock`: use a local file system).
//!
//! **What it does not promise.** Changes since the last write are lost with a
//! `kill -9`. A listing withdrawn while this coordinator was down, from peers that
//! are partial themselves when it starts (every coordinator restarted), comes
//! back from its file for what it had left, at most a TTL. Ages are measured with
//! the wall clock: a clock stepped forward while it was down ages every listing
//! (and every departure), one stepped back counts the file as just written.

use super::{CoordinatorError, Shared};
use crate::listing::Limits;
use crate::listing::Peer;
use crate::protocol::{
    read_snapshot_line, snapshot_end, write_snapshot_entry, SnapshotEntry, SnapshotLine,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The file the registry is written to, in the data directory.
const FILE: &str = "registry.ndjson";
/// Where a write goes before it is renamed over [`FILE`].
const TEMPORARY: &str = "registry.ndjson.tmp";
/// Held locked by the coordinator that uses the directory.
const LOCK: &str = "lock";
/// The shortest time between two writes.
const MIN_GAP: Duration = Duration::from_millis(20);
/// The longest time between two writes that pacing may ask for, in write
/// periods (`H/2`).
const MAX_GAP_PERIODS: u32 = 4;
/// Listings imported under one hold of the registry lock.
const IMPORT_BATCH: usize = 1_000;
/// Most departed listings remembered from a file.
const MAX_DEPARTED: usize = 10_000;
/// Most listings remembered as withdrawn while the coordinator is not complete.
const MAX_WITHDRAWN: usize = 1_000;
/// Most bytes of departed hosts told in one answer (a proxy's buffer for an
/// answer's head is often 4 KB).
const MAX_DEPARTED_TOLD: usize = 1024;
/// Most coordinators taken from a file.
const MAX_PEERS_READ: usize = 1_000;
/// Most bytes of a file's head read for its coordinators.
const MAX_HEAD_BYTES: u64 = 16 << 20;
/// Most listings remembered, and written, as having left lately.
const MAX_LEFT: usize = 10_000;
/// For how many TTLs a listing that left is remembered: the original's
/// coordinators keep a listing a TTL and an expiry pass after its last
/// heartbeat, more when they were stopped meanwhile (they take the heartbeats
/// that waited, and count a TTL from then), and a watch may have it from one of
/// them.
const LEFT_TTLS: u32 = 3;

/// The first line of the file.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    /// Format version; this is 1.
    #[serde(rename = "hakkenRegistry")]
    version: u32,
    /// When it was written: milliseconds since the Unix epoch.
    #[serde(rename = "writtenAt")]
    written_at: u64,
    /// When the coordinator that wrote it had read its own file back, if it had
    /// (milliseconds since the Unix epoch).
    #[serde(
        rename = "readBackAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    read_back_at: Option<u64>,
    /// The writer's heartbeat interval and listing TTL (milliseconds): the times
    /// left are judged against the settings they were counted under.
    #[serde(rename = "heartbeatMs", default)]
    heartbeat_ms: Option<u64>,
    #[serde(rename = "ttlMs", default)]
    ttl_ms: Option<u64>,
    /// How many listing lines follow.
    count: usize,
    /// Listings that left lately (withdrawn in the last three TTLs, expired in
    /// the last one) before the file was written, and were not held again when
    /// it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    left: Vec<Left>,
    /// The coordinators its writer knew, answering when last asked (their
    /// descriptors, as `GET /v1/coordinator` lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers: Vec<Value>,
}

/// How a listing left the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum How {
    /// Its time ran out: its publisher went silent, here at least.
    #[default]
    Expired,
    /// Its publisher withdrew it.
    Withdrawn,
}

/// A listing that left the registry, as the file's head lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Left {
    service: String,
    host: String,
    /// How long before the file was written it left (milliseconds): ages are
    /// counted from `writtenAt`, like the listings' times left.
    #[serde(rename = "msBefore")]
    before: u64,
    #[serde(default)]
    how: How,
}

/// A listing that left the registry, in memory.
#[derive(Debug)]
struct Departure {
    key: (Arc<str>, Arc<str>),
    at: Instant,
    how: How,
}

/// Per service, hosts of listings presumed gone, in the order they came.
#[derive(Default)]
struct Hosts {
    by_service: HashMap<String, Vec<String>>,
    len: usize,
}

impl Hosts {
    /// Adds `host` of `service`, unless `max` are here.
    fn add(&mut self, service: &str, host: &str, max: usize) {
        if self.len >= max {
            return;
        }
        let hosts = self.by_service.entry(service.to_owned()).or_default();
        hosts.push(host.to_owned());
        self.len += 1;
    }

    /// Takes `host` of `service` out.
    fn strike(&mut self, service: &str, host: &str) {
        if let Some(hosts) = self.by_service.get_mut(service) {
            let before = hosts.len();
            hosts.retain(|h| h != host);
            self.len -= before - hosts.len();
            if hosts.is_empty() {
                self.by_service.remove(service);
            }
        }
    }

    fn of(&self, service: &str) -> &[String] {
        self.by_service.get(service).map_or(&[], Vec::as_slice)
    }
}

/// What a coordinator that is not complete names gone: what was withdrawn from
/// it since it started, (service, host) each once, oldest first (the surest:
/// told first, the newest first; the newest [`MAX_WITHDRAWN`], so that a flood
/// of them neither crowds out what the file named nor what is withdrawn
/// after it), and what it read back from its file as gone (at most
/// [`MAX_DEPARTED`]).
#[derive(Default)]
struct Departed {
    withdrawn: VecDeque<(String, String)>,
    read: Hosts,
}

impl Departed {
    fn withdrawn_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let withdrawn = self.withdrawn.iter().rev();
        withdrawn.filter(move |(s, _)| s == service).map(|(_, h)| h)
    }
}

/// What the writer and the start share (in `Shared`).
#[derive(Default)]
pub(crate) struct State {
    /// A listing was added, replaced, withdrawn or expired, or the coordinators
    /// known changed: write soon.
    pub wanted: Notify,
    /// Set once the start has settled what the coordinator holds (the file read
    /// back or not needed): nothing is written before.
    settled: watch::Sender<bool>,
    /// When the file was read back (Unix milliseconds); 0: it was not.
    read_back_at: AtomicU64,
    /// Listings presumed gone unless heard from again (see the module): told to
    /// watchers while the coordinator is partial (`X-Hakken-Departed`),
    /// forgotten once complete.
    departed: Mutex<Departed>,
    /// Whether `departed` has any entry.
    any_departed: AtomicBool,
    /// Listings that left the registry, in the order they left: at most
    /// [`MAX_LEFT`] (the oldest go first), none older than [`LEFT_TTLS`] TTLs
    /// once pruned.
    /// Kept only with a data directory, for the file's head.
    left: Mutex<VecDeque<Departure>>,
}

impl State {
    /// The start has settled what the coordinator holds: writing may begin.
    pub fn settle(&self) {
        self.settled.send_replace(true);
    }

    fn is_settled(&self) -> bool {
        *self.settled.borrow()
    }

    /// `X-Hakken-Departed` for `service`'s answers (see [`State::departed`]):
    /// at most [`MAX_DEPARTED_TOLD`] bytes, hosts that a comma-separated header
    /// carries as they are (visible ASCII, no comma) only; `None` when there is
    /// none. A host left out is kept by the watches, as before.
    pub fn departed(&self, service: &str) -> Option<String> {
        if !self.any_departed.load(Ordering::Acquire) {
            return None;
        }
        let departed = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        let withdrawn = departed.withdrawn_of(service);
        let mut seen = HashSet::new();
        let mut told = String::new();
        for host in withdrawn.chain(departed.read.of(service)) {
            if told.len() + 4 > MAX_DEPARTED_TOLD {
                break;
            }
            let plain = host.bytes().all(|b| b.is_ascii_graphic() && b != b',');
            if !plain || told.len() + host.len() + 1 > MAX_DEPARTED_TOLD || !seen.insert(host) {
                continue;
            }
            if !told.is_empty() {
                told.push(',');
            }
            told.push_str(host);
        }
        (!told.is_empty()).then_some(told)
    }

    /// Remembers `departed` (service, host) as presumed gone.
    fn remember(&self, departed: Vec<(String, String)>) {
        let mut told = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        // A file's names come each once (a listing line, or what left and is
        // not held).
        for (service, host) in departed {
            told.read.add(&service, &host, MAX_DEPARTED);
        }
        if told.read.len > 0 {
            self.any_departed.store(true, Ordering::Release);
        }
    }

    /// A publisher withdrew `host` of `service` before the coordinator was
    /// complete, whether it held the listing or not: a watch may hold it from
    /// before (another coordinator, another run of this one), and this one may
    /// never list it to take it back. Named gone until heard from again (see
    /// [`Departed`]). Called under the registry's lock while it records
    /// withdrawals: the name is there by the time the index it moved is read,
    /// and never after the coordinator is complete (it stops recording, then
    /// forgets).
    pub fn withdrawn(&self, service: &str, host: &str) {
        let mut told = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        let withdrawn = &mut told.withdrawn;
        if withdrawn.iter().any(|(s, h)| s == service && h == host) {
            return;
        }
        if withdrawn.len() >= MAX_WITHDRAWN {
            withdrawn.pop_front();
        }
        withdrawn.push_back((service.to_owned(), host.to_owned()));
        self.any_departed.store(true, Ordering::Release);
    }

    /// `host` of `service` was heard from: not gone after all. Costs an atomic
    /// load when nothing is presumed gone (every heartbeat that is not a plain
    /// refresh comes here).
    pub fn heard(&self, service: &str, host: &str) {
        if !self.any_departed.load(Ordering::Acquire) {
            return;
        }
        let mut departed = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        departed
            .withdrawn
            .retain(|(s, h)| s != service || h != host);
        departed.read.strike(service, host);
        // All heard from again: back to the atomic load (set again under this
        // lock by whatever names one gone next).
        if departed.withdrawn.is_empty() && departed.read.len == 0 {
            self.any_departed.store(false, Ordering::Release);
        }
    }

    /// `keys` (service, host) left the registry now, `how`. Called under the
    /// registry's lock, so that a write's snapshot and what it says left agree.
    pub fn left(
        &self,
        keys: impl IntoIterator<Item = (Arc<str>, Arc<str>)>,
        how: How,
        ttl: Duration,
    ) {
        let now = Instant::now();
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut left, now, ttl);
        for key in keys {
            if left.len() >= MAX_LEFT {
                left.pop_front();
            }
            left.push_back(Departure { key, at: now, how });
        }
    }

    /// Takes back what a file read back names gone (still so after the join),
    /// so that the next file names it too.
    fn carry(&self, carried: impl IntoIterator<Item = Departure>, ttl: Duration) {
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        left.extend(carried);
        left.make_contiguous().sort_by_key(|d| d.at);
        while left.len() > MAX_LEFT {
            left.pop_front();
        }
        prune(&mut left, Instant::now(), ttl);
    }

    /// The listings that left within their [`window`] before `now`, newest
    /// first, each once, that `held` says are not back; letting go of those
    /// older than any window.
    fn recently_left(
        &self,
        now: Instant,
        ttl: Duration,
        held: impl Fn(&str, &str) -> bool,
    ) -> Vec<Left> {
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut left, now, ttl);
        let mut seen = HashSet::new();
        left.iter()
            .rev()
            .filter(|d| seen.insert(&d.key) && !held(&d.key.0, &d.key.1))
            .filter(|d| now.saturating_duration_since(d.at) <= window(d.how, ttl))
            .map(|d| Left {
                service: d.key.0.to_string(),
                host: d.key.1.to_string(),
                before: millis(now.saturating_duration_since(d.at)),
                how: d.how,
            })
            .collect()
    }

    /// The coordinator is complete: its answers are the truth, nothing to tell.
    pub fn forget_departed(&self) {
        let mut departed = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        *departed = Departed::default();
        self.any_departed.store(false, Ordering::Release);
    }
}

/// For how long after it left a listing is named gone: [`LEFT_TTLS`] TTLs when
/// it was withdrawn, one when it expired (its publisher may be alive and have
/// missed only this coordinator: the original's client drops a coordinator that
/// failed once).
fn window(how: How, ttl: Duration) -> Duration {
    match how {
        How::Withdrawn => ttl.saturating_mul(LEFT_TTLS),
        How::Expired => ttl,
    }
}

/// Lets go of what left more than [`LEFT_TTLS`] times `ttl` before `now`.
fn prune(left: &mut VecDeque<Departure>, now: Instant, ttl: Duration) {
    while left
        .front()
        .is_some_and(|d| now.saturating_duration_since(d.at) > ttl.saturating_mul(LEFT_TTLS))
    {
        left.pop_front();
    }
}

/// A data directory in use: held locked for as long as the coordinator runs.
pub(crate) struct DataDir {
    path: PathBuf,
    _lock: File,
    /// Held by a write, so that two never share the temporary file.
    writing: Mutex<()>,
    /// Whether the last write failed (its failure was logged).
    failing: AtomicBool,
}

impl DataDir {
    /// Creates `path` if needed and locks it for this coordinator.
    pub fn open(path: &Path) -> Result<Self, CoordinatorError> {
        let failed = |error: std::io::Error| CoordinatorError::DataDir {
            path: path.to_owned(),
            error,
        };
        if path.exists() && !path.is_dir() {
            return Err(failed(std::io::Error::other("not a directory")));
        }
        std::fs::create_dir_all(path).map_err(failed)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))
            .map_err(failed)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(failed(std::io::Error::other(
                    "in use by another coordinator (each coordinator needs its own)",
                )))
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(failed(error)),
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
            writing: Mutex::new(()),
            failing: AtomicBool::new(false),
        })
    }
}

/// `d` in whole milliseconds, at most `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a file says beside its listings.
#[derive(Debug, Default)]
struct Written {
    /// When (Unix milliseconds).
    at: u64,
    /// When its writer read its own file back (Unix milliseconds), if it did.
    read_back_at: Option<u64>,
    settings: Settings,
    /// What left lately.
    left: Vec<Left>,
    /// The coordinators it knew (descriptors), answering when last asked.
    peers: Vec<Value>,
}

/// Writes the file for `entries` (each listing as compact JSON, with the time it
/// has left) to `out`, with what `written` says in its head.
fn encode(
    out: &mut impl Write,
    entries: &[(Bytes, Duration)],
    written: Written,
) -> std::io::Result<()> {
    let head = Head {
        version: 1,
        written_at: written.at,
        read_back_at: written.read_back_at,
        heartbeat_ms: Some(written.settings.heartbeat.as_millis() as u64),
        ttl_ms: Some(written.settings.ttl.as_millis() as u64),
        count: entries.len(),
        left: written.left,
        peers: written.peers,
    };
    serde_json::to_writer(&mut *out, &head)?;
    out.write_all(b"\n")?;
    let mut line = Vec::new();
    for (body, left) in entries {
        line.clear();
        write_snapshot_entry(&mut line, *left, body);
        out.write_all(&line)?;
    }
    out.write_all(&snapshot_end(entries.len()))
}

/// The settings times to live are counted under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Settings {
    /// `H`.
    pub heartbeat: Duration,
    /// A listing's time to live.
    pub ttl: Duration,
}

/// A registry file as it was written.
#[derive(Debug)]
pub(super) struct Parsed {
    head: Head,
    /// Every listing valid here, with the time it had left when written.
    entries: Vec<SnapshotEntry>,
    /// Listings this coordinator's limits refuse.
    invalid: usize,
}

/// What a file read back holds, at the time it is read back.
#[derive(Debug)]
struct Loaded {
    /// The listings still alive, each with the time it lives here from now.
    entries: Vec<SnapshotEntry>,
    /// How long ago the file was written.
    age: Duration,
    /// Listings whose time ran out while the file was on disk.
    expired: usize,
    /// Listings presumed gone (see [`State::departed`]).
    departed: Vec<(String, String)>,
    /// Those of them the file's head listed as having left, with how long ago
    /// they left and how: the next file lists them too.
    left: Vec<(String, String, Duration, How)>,
}

/// Reads a file's bytes; `Err` when it is not a whole registry file.
fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, String> {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let head: Head = serde_json::from_slice(lines.next().ok_or("the file is empty")?)
        .map_err(|e| format!("not a registry file: {e}"))?;
    if head.version != 1 {
        return Err(format!(
            "registry file version {} (this coordinator reads 1)",
            head.version
        ));
    }
    let mut entries = Vec::new();
    let mut invalid = 0;
    let mut seen = 0;
    for line in lines {
        match read_snapshot_line(line, limits)? {
            SnapshotLine::Entry(entry) => {
                seen += 1;
                entries.push(entry);
            }
            SnapshotLine::Invalid(_) => {
                seen += 1;
                invalid += 1;
            }
            SnapshotLine::End(count) if count == head.count && count == seen => {
                return Ok(Parsed {
                    head,
                    entries,
                    invalid,
                })
            }
            SnapshotLine::End(count) => {
                return Err(format!("the file says {count} listings, and holds {seen}"))
            }
        }
    }
    Err("the file was cut short (no end marker)".into())
}

impl Parsed {
    /// The listings still alive at `now` (Unix milliseconds), each with the time
    /// it lives here from then (see the module) under the settings `now_settings`.
    fn alive(self, now: u64, now_settings: Settings) -> Loaded {
        // A clock set back since: the file counts as just written.
        let age = Duration::from_millis(now.saturating_sub(self.head.written_at));
        let Settings { heartbeat, ttl } = now_settings;
        let floor = heartbeat.saturating_add(heartbeat / 4);
        // What the file's times were counted under; a file that does not say, or
        // was written under other settings, names nothing gone.
        let written_under = match (self.head.heartbeat_ms, self.head.ttl_ms) {
            (Some(h), Some(t)) => Some(Settings {
                heartbeat: Duration::from_millis(h),
                ttl: Duration::from_millis(t),
            }),
            _ => None,
        };
        let judged = written_under.unwrap_or(now_settings);
        // At the millisecond the file counts in.
        let same_settings = written_under.is_some_and(|w| {
            millis(w.heartbeat) == millis(heartbeat) && millis(w.ttl) == millis(ttl)
        });
        // Silence means something (a TTL of at least 5/2 H leaves room for
        // missed heartbeats) under the settings the times were counted in.
        let judges_silence = same_settings && judged.ttl >= judged.heartbeat.saturating_mul(5) / 2;
        let mut loaded = Loaded {
            entries: Vec::new(),
            age,
            expired: 0,
            departed: Vec::new(),
            left: Vec::new(),
        };
        for entry in self.entries {
            // Heartbeating when written: it had most of a TTL left.
            let floor_then = judged.heartbeat.saturating_add(judged.heartbeat / 4);
            let heartbeating = entry.ttl >= judged.ttl.saturating_sub(floor_then);
            // Raised to the floor when its writer read it back, and not heard
            // from since: its deadline is still that floor (give or take the
            // milliseconds the file rounds to).
            let deadline = (self.head.written_at).saturating_add(millis(entry.ttl));
            let unheard = self.head.read_back_at.is_some_and(|at| {
                deadline <= at.saturating_add(millis(floor_then).saturating_add(2))
            });
            let raised = heartbeating && !unheard;
            // Gone: not heard from for more than 1.5 H when written.
            let missed = judged.heartbeat.saturating_mul(3) / 2;
            let gone = judges_silence && entry.ttl.saturating_add(missed) < judged.ttl;
            if gone && loaded.departed.len() < MAX_DEPARTED {
                let key = (entry.listing.service(), entry.listing.host());
                loaded.departed.push((key.0.to_owned(), key.1.to_owned()));
            }
            let left = entry.ttl.saturating_sub(age);
            if left.is_zero() {
                loaded.expired += 1;
                continue;
            }
            let lives = if raised { left.max(floor) } else { left };
            loaded.entries.push(SnapshotEntry {
                ttl: lives.min(ttl),
                listing: entry.listing,
            });
        }
        // Left lately (see `window`): withdrawn, or expired under settings that say
        // its publisher had been silent long enough.
        for left in self.head.left {
            let since = age.saturating_add(Duration::from_millis(left.before));
            let named = match left.how {
                How::Withdrawn => true,
                How::Expired => judges_silence,
            };
            let recent = since <= window(left.how, ttl);
            if !recent || !named || loaded.departed.len() >= MAX_DEPARTED {
                continue;
            }
            loaded
                .departed
                .push((left.service.clone(), left.host.clone()));
            loaded.left.push((left.service, left.host, since, left.how));
        }
        loaded
    }
}

/// Learns the coordinators the file in `dir` says its writer knew, when it was
/// written within a resync period (10 H): see the module.
pub(super) async fn learn_peers(shared: &Arc<Shared>, dir: &Path) {
    let path = dir.join(FILE);
    let limits = shared.config.listing_limits;
    let within = shared.config.heartbeat().saturating_mul(10);
    let peers = tokio::task::spawn_blocking(move || known_peers(&path, &limits, within))
        .await
        .unwrap_or_default();
    let now = Instant::now();
    for peer in peers {
        shared.update_membership(|m| m.learn(peer, now));
    }
}

/// The coordinators the file at `path` says its writer knew (valid
/// descriptors, at most [`MAX_PEERS_READ`]), when it was written at most
/// `within` ago; none when it cannot be read. Only its head is read.
fn known_peers(path: &Path, limits: &Limits, within: Duration) -> Vec<Peer> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut head = Vec::new();
    let mut reader = std::io::BufReader::new(file).take(MAX_HEAD_BYTES);
    if std::io::BufRead::read_until(&mut reader, b'\n', &mut head).is_err() {
        return Vec::new();
    }
    let Ok(head) = serde_json::from_slice::<Head>(&head) else {
        return Vec::new();
    };
    let age = now_ms().saturating_sub(head.written_at);
    if head.version != 1 || age > millis(within) {
        return Vec::new();
    }
    (head.peers.into_iter().take(MAX_PEERS_READ))
        .filter_map(|peer| Peer::from_value(peer, limits).ok())
        .collect()
}

/// A registry file being parsed: `None` when there is none yet.
pub(super) type Parsing = JoinHandle<Result<Option<Parsed>, String>>;

/// Starts parsing the registry file in `dir`, while the join runs.
pub(super) fn parse_file(dir: &Path, limits: Limits) -> Parsing {
    let path = dir.join(FILE);
    tokio::task::spawn_blocking(move || {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        parse(&bytes, &limits).map(Some)
    })
}

/// Imports what `parsed` (from [`parse_file`]) holds that is still alive. Runs
/// after a join sync that found no complete peer of ours; what a publisher sent
/// meanwhile and what a peer gave win. Returns whether a file was read back.
pub(super) async fn read_back(shared: &Arc<Shared>, dir: &Path, parsed: Parsing) -> bool {
    let path = dir.join(FILE);
    let parsed = match parsed.await {
        Ok(Ok(Some(parsed))) => parsed,
        Ok(Ok(None)) => {
            tracing::info!(path = %path.display(), "no registry file yet: starting empty");
            return false;
        }
        Ok(Err(error)) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the registry file: starting without it");
            return false;
        }
        Err(error) => {
            tracing::error!(%error, "reading the registry file failed");
            return false;
        }
    };
    let invalid = parsed.invalid;
    let now = now_ms();
    let loaded = parsed.alive(now, settings(shared));
    shared.persist.read_back_at.store(now, Ordering::Release);
    // A publisher heard from during the join is not gone.
    let departed: Vec<(String, String)> = loaded
        .departed
        .into_iter()
        .filter(|(service, host)| !shared.read_registry(|r| r.holds(service, host)))
        .collect();
    let departed_count = departed.len();
    shared.persist.remember(departed);
    let now_instant = Instant::now();
    let carried = loaded
        .left
        .into_iter()
        .filter_map(|(service, host, since, how)| {
            let held = shared.read_registry(|r| r.holds(&service, &host));
            Some(Departure {
                at: now_instant.checked_sub(since).filter(|_| !held)?,
                key: (Arc::from(service), Arc::from(host)),
                how,
            })
        });
    shared
        .persist
        .carry(carried.collect::<Vec<_>>(), settings(shared).ttl);
    let read = loaded.entries.len();
    let mut imported = 0;
    let mut entries = loaded.entries.into_iter().peekable();
    while entries.peek().is_some() {
        imported += shared.import(entries.by_ref().take(IMPORT_BATCH).collect());
        tokio::task::yield_now().await;
    }
    tracing::info!(
        path = %path.display(),
        age_ms = loaded.age.as_millis() as u64,
        read,
        imported,
        expired = loaded.expired,
        departed = departed_count,
        invalid,
        "registry file read back"
    );
    true
}

/// Writes the registry to `dir` (see the module for when) until shutdown, from
/// the moment the start has settled what the coordinator holds.
pub(super) async fn write_loop(shared: Arc<Shared>, dir: Arc<DataDir>) {
    let mut settled = shared.persist.settled.subscribe();
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => return,
        _ = settled.wait_for(|s| *s) => {}
    }
    let period = (shared.config.heartbeat() / 2).max(MIN_GAP);
    loop {
        let started = Instant::now();
        let written = write(&shared, &dir).await;
        // A failure waits a period.
        let gap = if written {
            paced(started.elapsed(), period)
        } else {
            period
        };
        let next_after = Instant::now() + gap;
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            _ = shared.persist.wanted.notified() => {}
        }
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_after) => {}
        }
    }
}

/// The time to wait after a write that took `took`: at most about a tenth of
/// the time goes to writing, but never more than [`MAX_GAP_PERIODS`] write
/// periods between two writes (a write the process was stopped in looks long).
fn paced(took: Duration, period: Duration) -> Duration {
    (took * 9).clamp(MIN_GAP, period * MAX_GAP_PERIODS)
}

/// The last write, at shutdown, once in-flight requests are done; none when
/// the start never settled.
pub(super) async fn final_write(shared: &Arc<Shared>, dir: &Arc<DataDir>) {
    if shared.persist.is_settled() {
        write(shared, dir).await;
    }
}

/// Writes every live listing to the file, replacing it whole; whether it worked.
async fn write(shared: &Arc<Shared>, dir: &Arc<DataDir>) -> bool {
    let settings = settings(shared);
    // The registry's lock first, as where listings leave: what the file says
    // left agrees with what it holds.
    let (entries, left, at) = shared.read_registry(|r| {
        let now = Instant::now();
        let left = (shared.persist).recently_left(now, settings.ttl, |s, h| r.holds(s, h));
        (r.snapshot(now), left, now_ms())
    });
    let peers = shared.read_membership(|m| {
        m.peers()
            .filter(|p| p.strikes == 0)
            .filter_map(|p| serde_json::to_value(&p.peer).ok())
            .collect()
    });
    let read_back_at =
        Some(shared.persist.read_back_at.load(Ordering::Acquire)).filter(|at| *at > 0);
    let written = Written {
        at,
        read_back_at,
        settings,
        left,
        peers,
    };
    let written = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || -> std::io::Result<usize> {
            let _writing = dir.writing.lock().unwrap_or_else(PoisonError::into_inner);
            let temporary = dir.path.join(TEMPORARY);
            let result = write_file(&temporary, &entries, written)
                .and_then(|()| std::fs::rename(&temporary, dir.path.join(FILE)));
            if result.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            result.map(|()| entries.len())
        }
    })
    .await;
    let failed = match written {
        Ok(Ok(count)) => {
            tracing::debug!(count, "registry file written");
            if dir.failing.swap(false, Ordering::AcqRel) {
                tracing::info!(dir = %dir.path.display(), "registry file written again");
            }
            return true;
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    if dir.failing.swap(true, Ordering::AcqRel) {
        tracing::debug!(dir = %dir.path.display(), error = failed, "cannot write the registry file");
    } else {
        tracing::warn!(dir = %dir.path.display(), error = failed, "cannot write the registry file; trying again every period, logged again once it works");
    }
    false
}

/// The coordinator's settings, as the file records them.
fn settings(shared: &Shared) -> Settings {
    Settings {
        heartbeat: shared.config.heartbeat(),
        ttl: shared.config.listing_ttl(),
    }
}

/// Writes the file to `path` (readable by its owner only) and syncs it.
fn write_file(path: &Path, entries: &[(Bytes, Duration)], written: Written) -> std::io::Result<()> {
    let mut options = File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = BufWriter::new(options.open(path)?);
    encode(&mut out, entries, written)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Listing;

    const H: Duration = Duration::from_secs(4);
    const TTL: Duration = Duration::from_secs(12);

    fn listing(host: &str) -> Bytes {
        Bytes::from(format!(r#"{{"service":"s","host":"{host}"}}"#))
    }

    const SETTINGS: Settings = Settings {
        heartbeat: H,
        ttl: TTL,
    };

    fn file(entries: &[(Bytes, Duration)], written_at: u64, read_back_at: Option<u64>) -> Vec<u8> {
        file_under(entries, written_at, read_back_at, SETTINGS)
    }

    fn file_under(
        entries: &[(Bytes, Duration)],
        written_at: u64,
        read_back_at: Option<u64>,
        settings: Settings,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let written = Written {
            at: written_at,
            read_back_at,
            settings,
            ..Written::default()
        };
        encode(&mut out, entries, written).unwrap();
        out
    }

    fn hosts_and_times(loaded: &Loaded) -> Vec<(String, u64)> {
        loaded
            .entries
            .iter()
            .map(|e| (e.listing.host().to_owned(), e.ttl.as_millis() as u64))
            .collect()
    }

    #[test]
    fn a_listing_read_back_lives_what_it_had_left_less_the_time_on_disk() {
        let ms = Duration::from_millis;
        // H = 4 s, TTL = 12 s: a publisher heartbeating leaves at least 7 s.
        let entries = [
            (listing("gone:1"), ms(2_000)),
            (listing("missed:1"), ms(4_000)),
            (listing("heartbeating:1"), ms(7_500)),
            (listing("long:1"), ms(11_000)),
        ];
        let bytes = file(&entries, 100_000, None);
        let limits = Limits::default();
        // Read back 3 s later.
        let loaded = parse(&bytes, &limits).unwrap().alive(103_000, SETTINGS);
        assert_eq!(loaded.age, ms(3_000));
        assert_eq!(loaded.expired, 1, "2 s left when written, gone 3 s later");
        assert_eq!(
            hosts_and_times(&loaded),
            [
                // Had missed a heartbeat: what it had left.
                ("missed:1".to_owned(), 1_000),
                // Was heartbeating: until its next heartbeat is surely in, 5/4 H.
                ("heartbeating:1".to_owned(), 5_000),
                // Long enough anyway: what it had left.
                ("long:1".to_owned(), 8_000),
            ]
        );
        // Those whose publisher was silent for more than 1.5 H are gone unless heard
        // from again, expired or not.
        let departed: Vec<&str> = loaded.departed.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(departed, ["gone:1", "missed:1"]);
        // Read back under other settings (a deploy that changed them restarts
        // every coordinator): the times left mean something else, nothing is
        // named gone.
        let other = Settings {
            heartbeat: H,
            ttl: TTL * 2,
        };
        let loaded = parse(&bytes, &limits).unwrap().alive(103_000, other);
        assert!(loaded.departed.is_empty());
        // A clock set back: the file counts as just written.
        let loaded = parse(&bytes, &limits).unwrap().alive(90_000, SETTINGS);
        assert_eq!(loaded.age, Duration::ZERO);
        assert_eq!(loaded.entries.len(), 4);
        // Never more than a TTL.
        let short_ttl = Duration::from_secs(4);
        let loaded = parse(&bytes, &limits).unwrap().alive(
            100_000,
            Settings {
                heartbeat: H,
                ttl: short_ttl,
            },
        );
        assert!(loaded.entries.iter().all(|e| e.ttl <= short_ttl));
    }

    #[test]
    fn a_listing_raised_when_read_back_is_not_raised_again_unless_heard_from() {
        // TTL = 2 H: a listing raised to 5/4 H when read back would look
        // heartbeating again in the next file.
        let ttl = H * 2;
        let read_back_at = 100_000;
        // Written 1 s after that read back: one raised then and not heard from
        // (its deadline is the floor, 5 s after), one refreshed since.
        let entries = [
            (listing("raised:1"), Duration::from_millis(4_000)),
            (listing("heard:1"), Duration::from_millis(7_900)),
        ];
        let under = Settings { heartbeat: H, ttl };
        let bytes = file_under(&entries, read_back_at + 1_000, Some(read_back_at), under);
        let loaded = parse(&bytes, &Limits::default())
            .unwrap()
            .alive(read_back_at + 1_500, under);
        assert_eq!(
            hosts_and_times(&loaded),
            [
                ("raised:1".to_owned(), 3_500),
                ("heard:1".to_owned(), 7_400)
            ]
        );
        // A TTL under 5/2 H: nothing is named gone.
        assert!(loaded.departed.is_empty());
        // The same file from a coordinator that had not read one back: raised.
        let bytes = file_under(&entries, read_back_at + 1_000, None, under);
        let loaded = parse(&bytes, &Limits::default())
            .unwrap()
            .alive(read_back_at + 1_500, under);
        assert_eq!(loaded.entries[0].ttl, H + H / 4);
    }

    #[test]
    fn what_left_in_the_last_three_ttls_is_named_gone() {
        let left = |host: &str, before: u64, how| Left {
            service: "s".to_owned(),
            host: host.to_owned(),
            before,
            how,
        };
        let gone = vec![
            left("withdrawn:1", 5_000, How::Withdrawn),
            left("expired:1", 5_000, How::Expired),
            left("old:1", 40_000, How::Withdrawn),
        ];
        let written = |settings| {
            let mut bytes = Vec::new();
            let written = Written {
                at: 100_000,
                settings,
                left: gone.clone(),
                ..Written::default()
            };
            encode(&mut bytes, &[], written).unwrap();
            bytes
        };
        let limits = Limits::default();
        let named = |loaded: &Loaded| -> Vec<String> {
            loaded.departed.iter().map(|(_, h)| h.clone()).collect()
        };
        // Read back 3 s after the write: 8 s and 43 s after they left, TTL 12 s
        // (remembered for three).
        let bytes = written(SETTINGS);
        let loaded = parse(&bytes, &limits).unwrap().alive(103_000, SETTINGS);
        assert_eq!(named(&loaded), ["withdrawn:1", "expired:1"]);
        // What the next file will list again: when they left, counted from now.
        let carried: Vec<(&str, u64)> = loaded
            .left
            .iter()
            .map(|(_, h, since, _)| (h.as_str(), since.as_millis() as u64))
            .collect();
        assert_eq!(carried, [("withdrawn:1", 8_000), ("expired:1", 8_000)]);
        // 15 s after they left, more than a TTL: the withdrawn one is still named,
        // the expired one no longer (its publisher may have missed only this
        // coordinator).
        let loaded = parse(&bytes, &limits).unwrap().alive(110_000, SETTINGS);
        assert_eq!(named(&loaded), ["withdrawn:1"]);
        // Read back 40 s after the write: none is that recent. A clock set back:
        // the file counts as just written.
        let loaded = parse(&bytes, &limits).unwrap().alive(140_000, SETTINGS);
        assert!(loaded.departed.is_empty());
        let loaded = parse(&bytes, &limits).unwrap().alive(50_000, SETTINGS);
        assert_eq!(named(&loaded), ["withdrawn:1", "expired:1"]);
        // Under other settings, or a TTL too short for an expiry to say much
        // (under 5/2 H), only a withdrawal is named.
        let other = Settings {
            heartbeat: H / 2,
            ttl: TTL,
        };
        let loaded = parse(&bytes, &limits).unwrap().alive(103_000, other);
        assert_eq!(named(&loaded), ["withdrawn:1"]);
        let short = Settings {
            heartbeat: H,
            ttl: H * 2,
        };
        let loaded = parse(&written(short), &limits)
            .unwrap()
            .alive(101_000, short);
        assert_eq!(named(&loaded), ["withdrawn:1"]);
    }

    #[test]
    fn what_left_is_remembered_for_a_ttl_within_a_bound_and_told_once() {
        let state = State::default();
        let key = |i: usize| (Arc::from("s"), Arc::from(format!("h{i}:1").as_str()));
        let none = |_: &str, _: &str| false;
        state.left((0..MAX_LEFT + 5).map(key), How::Withdrawn, TTL);
        let now = Instant::now();
        let left = state.recently_left(now, TTL, none);
        assert_eq!(left.len(), MAX_LEFT);
        // The oldest went first; the newest is told first.
        assert_eq!(left[0].host, format!("h{}:1", MAX_LEFT + 4));
        assert!(left.iter().all(|l| l.host != "h4:1"));
        // Withdrawn: told for three TTLs, then let go.
        assert!(!state.recently_left(now + TTL * 2, TTL, none).is_empty());
        assert!(state.recently_left(now + TTL * 4, TTL, none).is_empty());
        // Expired: told for one.
        let expired = State::default();
        expired.left([key(0)], How::Expired, TTL);
        let now = Instant::now();
        assert_eq!(expired.recently_left(now, TTL, none).len(), 1);
        assert!(expired.recently_left(now + TTL * 2, TTL, none).is_empty());
        // One that left twice is told once, as it left last; one held again is not told.
        state.left([key(1)], How::Expired, TTL);
        state.left([key(2)], How::Expired, TTL);
        state.left([key(1)], How::Withdrawn, TTL);
        let left = state.recently_left(Instant::now(), TTL, |_, h| h == "h2:1");
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].host.as_str(), left[0].how),
            ("h1:1", How::Withdrawn)
        );
        // Carried over from a file, in the order they left.
        let carried = Departure {
            key: key(3),
            at: Instant::now() - Duration::from_secs(1),
            how: How::Withdrawn,
        };
        state.carry([carried], TTL);
        let left = state.recently_left(Instant::now(), TTL, none);
        let hosts: Vec<&str> = left.iter().map(|l| l.host.as_str()).collect();
        assert_eq!(hosts, ["h1:1", "h2:1", "h3:1"]);
        assert!(left[2].before >= 1_000);
    }

    #[test]
    fn the_coordinators_a_recent_file_knew_are_read_from_its_head() {
        let dir = std::env::temp_dir().join(format!("hakken-peers-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE);
        let limits = Limits::default();
        let hour = Duration::from_secs(3_600);
        let write = |at: u64, version: u32| {
            let peers = vec![
                serde_json::json!({"host": "c1:8082"}),
                serde_json::json!({"host": "not a host"}),
            ];
            let mut bytes = Vec::new();
            let written = Written {
                at,
                peers,
                ..Written::default()
            };
            encode(&mut bytes, &[], written).unwrap();
            let text = String::from_utf8(bytes).unwrap();
            let text = text.replacen(
                r#""hakkenRegistry":1"#,
                &format!(r#""hakkenRegistry":{version}"#),
                1,
            );
            std::fs::write(&path, text).unwrap();
        };
        let hosts = || -> Vec<String> {
            known_peers(&path, &limits, hour)
                .iter()
                .map(|p| p.host().to_owned())
                .collect()
        };
        assert!(hosts().is_empty(), "no file yet");
        write(now_ms(), 1);
        assert_eq!(hosts(), ["c1:8082"], "valid descriptors only");
        write(now_ms() - 2 * 3_600_000, 1);
        assert!(hosts().is_empty(), "older than `within`");
        write(now_ms(), 2);
        assert!(hosts().is_empty(), "another version");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_are_paced_within_a_bound() {
        let period = Duration::from_millis(500);
        let ms = Duration::from_millis;
        assert_eq!(paced(ms(1), period), MIN_GAP);
        assert_eq!(paced(ms(100), period), ms(900));
        // Found by a test: a write the process was stopped in for 6 s held the
        // next one back 54 s.
        assert_eq!(paced(Duration::from_secs(6), period), ms(2_000));
    }

    #[test]
    fn absurd_numbers_in_a_file_are_no_panic() {
        let huge = Settings {
            heartbeat: Duration::from_millis(u64::MAX),
            ttl: Duration::from_millis(u64::MAX),
        };
        let entries = [(listing("a:1"), Duration::from_millis(u64::MAX))];
        let bytes = file_under(&entries, u64::MAX, Some(u64::MAX), huge);
        let parsed = parse(&bytes, &Limits::default()).unwrap();
        let loaded = parsed.alive(u64::MAX, huge);
        assert_eq!(loaded.entries.len(), 1);
        let parsed = parse(&bytes, &Limits::default()).unwrap();
        assert!(parsed.alive(0, SETTINGS).entries[0].ttl <= TTL);
    }

    #[test]
    fn a_damaged_file_is_refused_whole() {
        let entries = [(listing("a:1"), H), (listing("b:1"), H)];
        let bytes = file(&entries, 0, None);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let cut = &bytes[..text.find(r#"{"end""#).unwrap()];
        let limits = Limits::default();
        assert!(parse(cut, &limits).unwrap_err().contains("cut short"));
        let missing_line = text.replacen(
            r#"{"ttl":4000,"listing":{"service":"s","host":"a:1"}}"#,
            "",
            1,
        );
        assert!(parse(missing_line.as_bytes(), &limits).is_err());
        assert!(parse(b"", &limits).is_err());
        assert!(parse(b"garbage\n", &limits).is_err());
        let other_version = text.replacen(r#""hakkenRegistry":1"#, r#""hakkenRegistry":2"#, 1);
        assert!(parse(other_version.as_bytes(), &limits)
            .unwrap_err()
            .contains("version 2"));
        // A listing these limits refuse is skipped, not the file.
        let tight = Limits {
            max_host_len: 2,
            ..Limits::default()
        };
        let parsed = parse(&bytes, &tight).unwrap();
        assert_eq!((parsed.entries.len(), parsed.invalid), (0, 2));
        let parsed = parse(&bytes, &limits).unwrap();
        let hosts: Vec<&str> = parsed.entries.iter().map(|e| e.listing.host()).collect();
        assert_eq!(hosts, ["a:1", "b:1"]);
        assert_eq!(parsed.entries[0].listing, Listing::new("s", "a:1").unwrap());
    }

    #[test]
    fn only_plain_hosts_are_told_within_a_byte_bound() {
        let state = State::default();
        let long = "h".repeat(600);
        let hosts = ["a:1", "with,comma:1", " b:1", &long, &long, "c:1"];
        state.remember(
            hosts
                .iter()
                .map(|h| ("s".to_owned(), h.to_string()))
                .collect(),
        );
        let told = state.departed("s").unwrap();
        assert_eq!(told, format!("a:1,{long},c:1"));
        state.heard("s", "a:1");
        assert_eq!(state.departed("s").unwrap(), format!("{long},c:1"));
        assert_eq!(state.departed("other"), None);
        state.forget_departed();
        assert_eq!(state.departed("s"), None);
    }

    #[test]
    fn what_is_withdrawn_is_told_first_once_and_within_a_bound() {
        let state = State::default();
        state.remember(vec![
            ("s".into(), "file:1".into()),
            ("s".into(), "b:1".into()),
        ]);
        state.withdrawn("s", "a:1");
        state.withdrawn("s", "b:1");
        state.withdrawn("s", "a:1");
        assert_eq!(state.departed("s").unwrap(), "b:1,a:1,file:1");
        for host in ["a:1", "b:1", "file:1"] {
            assert!(state.any_departed.load(Ordering::Acquire));
            state.heard("s", host);
        }
        assert_eq!(state.departed("s"), None);
        // Nothing left presumed gone: a heartbeat costs an atomic load again.
        assert!(!state.any_departed.load(Ordering::Acquire));
        // A flood of withdrawals is bounded, and leaves room for the file's
        // names, and for what is withdrawn after it.
        for i in 0..MAX_WITHDRAWN + 5 {
            state.withdrawn("many", &format!("h{i}:1"));
        }
        state.remember(vec![("s".into(), "file:2".into())]);
        assert_eq!(state.departed("s").unwrap(), "file:2");
        state.withdrawn("s", "late:1");
        assert_eq!(state.departed("s").unwrap(), "late:1,file:2");
        let told = state.departed.lock().unwrap();
        assert_eq!(told.withdrawn.len(), MAX_WITHDRAWN);
        assert_eq!(told.withdrawn_of("many").count(), MAX_WITHDRAWN - 1);
    }

    #[test]
    fn one_coordinator_per_directory() {
        let dir = std::env::temp_dir().join(format!("hakken-persist-{}", fastrand::u64(..)));
        let first = DataDir::open(&dir).unwrap();
        let second = DataDir::open(&dir)
            .err()
            .expect("refused while the first holds it");
        assert!(
            second.to_string().contains("in use by another coordinator"),
            "{second}"
        );
        drop(first);
        let again = DataDir::open(&dir).expect("free once the first is gone");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
