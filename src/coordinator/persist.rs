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
//! sync found no complete peer to copy from (a complete peer knows better: it saw
//! what was withdrawn while this one was down): each listing then lives what it
//! had left, less the time the file was on disk. A dead publisher's listing
//! leaves on time; a live one's is refreshed by its next heartbeat.
//!
//! **A listing near its end.** The file may be up to one write period old when
//! the coordinator stops, and a live publisher's next heartbeat after a restart
//! may come up to `H` later, so a live publisher's listing could be read back
//! with less time left than it takes its publisher to refresh it. A listing whose
//! publisher was heartbeating when the file was written (it had at least
//! `TTL - 5/4 H` left then) lives at least `5/4 H` after it is read back; one whose
//! publisher had already missed a heartbeat lives only what it had left. So a
//! dead publisher's listing leaves when it would have, unless the coordinators
//! were down for more than `H/4`: then it may stay up to that long more.
//!
//! **When it is written:** after the coordinator is ready (before, it would
//! overwrite the file with less than it held), then at least every `H/2`, soon
//! after any listing is added, replaced or withdrawn (so that a withdrawn
//! listing does not come back with a restart), and once more at shutdown. Writes
//! are paced: the coordinator spends at most about a tenth of its time writing.
//! Each write goes to a temporary file, synced, then renamed over the old one,
//! so a crash leaves the old file or the new one, never half of one. A file that
//! cannot be read (missing, damaged, another version) is logged and the
//! coordinator starts without it; a write that fails is logged and retried at
//! the next period. One coordinator per directory: a second one is refused at
//! start (`DIR/lock`).

use super::{CoordinatorError, Shared};
use crate::listing::Limits;
use crate::protocol::{
    read_snapshot_line, snapshot_end, write_snapshot_entry, SnapshotEntry, SnapshotLine,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The file the registry is written to, in the data directory.
const FILE: &str = "registry.ndjson";
/// Where a write goes before it is renamed over [`FILE`].
const TEMPORARY: &str = "registry.ndjson.tmp";
/// Held locked by the coordinator that uses the directory.
const LOCK: &str = "lock";
/// The shortest time between two writes.
const MIN_GAP: Duration = Duration::from_millis(20);
/// Listings imported under one hold of the registry lock.
const IMPORT_BATCH: usize = 1_000;

/// The first line of the file.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    /// Format version; this is 1.
    #[serde(rename = "hakkenRegistry")]
    version: u32,
    /// When it was written: milliseconds since the Unix epoch.
    #[serde(rename = "writtenAt")]
    written_at: u64,
    /// How many listing lines follow.
    count: usize,
}

/// A data directory in use: held locked for as long as the coordinator runs.
pub(crate) struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and locks it for this coordinator.
    pub fn open(path: &Path) -> Result<Self, CoordinatorError> {
        let failed = |error: std::io::Error| CoordinatorError::DataDir {
            path: path.to_owned(),
            error,
        };
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
        })
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The file's bytes for `entries` (each listing as compact JSON, with the time it
/// has left), written at `written_at` (Unix milliseconds).
fn encode(entries: &[(Bytes, Duration)], written_at: u64) -> Vec<u8> {
    let head = Head {
        version: 1,
        written_at,
        count: entries.len(),
    };
    let mut out = serde_json::to_vec(&head).expect("serializes");
    out.push(b'\n');
    for (body, left) in entries {
        write_snapshot_entry(&mut out, *left, body);
    }
    out.extend_from_slice(&snapshot_end(entries.len()));
    out
}

/// What a file read back holds.
#[derive(Debug)]
struct Loaded {
    /// The listings still alive, each with the time it lives here from now.
    entries: Vec<SnapshotEntry>,
    /// How long ago the file was written.
    age: Duration,
    /// Listings whose time ran out while the file was on disk.
    expired: usize,
    /// Listings this coordinator's limits refuse.
    invalid: usize,
}

/// How long a listing read back lives here: what it has `left`, or at least
/// `5/4 H` when its publisher was heartbeating when the file was written (it had
/// `written` left then, at least `TTL - 5/4 H`). See the module.
fn lives(left: Duration, written: Duration, ttl: Duration, heartbeat: Duration) -> Duration {
    let next_heartbeat = heartbeat + heartbeat / 4;
    if written >= ttl.saturating_sub(next_heartbeat) {
        left.max(next_heartbeat)
    } else {
        left
    }
}

/// Reads a file's bytes at `now` (Unix milliseconds): the listings it holds that
/// are still alive, with the time each lives here (see [`lives`]) under a TTL of
/// `ttl` and a heartbeat interval of `heartbeat`.
fn decode(
    bytes: &[u8],
    limits: &Limits,
    now: u64,
    ttl: Duration,
    heartbeat: Duration,
) -> Result<Loaded, String> {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let head: Head = serde_json::from_slice(lines.next().ok_or("the file is empty")?)
        .map_err(|e| format!("not a registry file: {e}"))?;
    if head.version != 1 {
        return Err(format!(
            "registry file version {} (this coordinator reads 1)",
            head.version
        ));
    }
    // A clock set back since: the file counts as just written.
    let age = Duration::from_millis(now.saturating_sub(head.written_at));
    let mut loaded = Loaded {
        entries: Vec::new(),
        age,
        expired: 0,
        invalid: 0,
    };
    let mut seen = 0;
    for line in lines {
        match read_snapshot_line(line, limits)? {
            SnapshotLine::Entry(entry) => {
                seen += 1;
                let left = entry.ttl.saturating_sub(age);
                if left.is_zero() {
                    loaded.expired += 1;
                    continue;
                }
                loaded.entries.push(SnapshotEntry {
                    ttl: lives(left, entry.ttl, ttl, heartbeat),
                    listing: entry.listing,
                });
            }
            SnapshotLine::Invalid(_) => {
                seen += 1;
                loaded.invalid += 1;
            }
            SnapshotLine::End(count) if count == head.count && count == seen => return Ok(loaded),
            SnapshotLine::End(count) => {
                return Err(format!("the file says {count} listings, and holds {seen}"))
            }
        }
    }
    Err("the file was cut short (no end marker)".into())
}

/// Reads the registry file in `dir` back into the registry, if there is one.
/// Runs after a join sync that found no complete peer; what a publisher sent
/// meanwhile and what a partial peer gave win.
pub(super) async fn load(shared: &Arc<Shared>, dir: &Path) {
    let path = dir.join(FILE);
    let limits = shared.config.listing_limits;
    let heartbeat = shared.config.heartbeat();
    let ttl = shared.config.listing_ttl();
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<Loaded>, String> {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(error.to_string()),
            };
            decode(&bytes, &limits, now_ms(), ttl, heartbeat).map(Some)
        })
    };
    let loaded = match read.await {
        Ok(Ok(Some(loaded))) => loaded,
        Ok(Ok(None)) => {
            tracing::info!(path = %path.display(), "no registry file yet: starting empty");
            return;
        }
        Ok(Err(error)) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the registry file: starting without it");
            return;
        }
        Err(error) => {
            tracing::error!(%error, "reading the registry file failed");
            return;
        }
    };
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
        invalid = loaded.invalid,
        "registry file read back"
    );
}

/// Writes the registry to `dir` (see the module for when), until shutdown.
pub(super) async fn write_loop(shared: Arc<Shared>, dir: Arc<DataDir>) {
    // Not before the file was read back and the join is done.
    tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = shared.wait_ready() => {}
    }
    let period = (shared.config.heartbeat() / 2).max(MIN_GAP);
    let mut next_after = Instant::now();
    loop {
        let took = {
            let started = Instant::now();
            write(&shared, &dir).await;
            started.elapsed()
        };
        // At most about a tenth of the time spent writing.
        next_after = next_after.max(Instant::now() + (took * 9).max(MIN_GAP));
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
            _ = shared.persist_wanted.notified() => {}
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_after) => {}
        }
    }
    write(&shared, &dir).await;
}

/// Writes every live listing to the file, replacing it whole.
async fn write(shared: &Arc<Shared>, dir: &Arc<DataDir>) {
    let entries = shared.read_registry(|r| r.snapshot(Instant::now()));
    let written = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || -> std::io::Result<usize> {
            let bytes = encode(&entries, now_ms());
            let temporary = dir.path.join(TEMPORARY);
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::rename(&temporary, dir.path.join(FILE))?;
            Ok(entries.len())
        }
    })
    .await;
    match written {
        Ok(Ok(count)) => tracing::debug!(count, "registry file written"),
        Ok(Err(error)) => {
            tracing::warn!(dir = %dir.path.display(), %error, "cannot write the registry file")
        }
        Err(error) => tracing::error!(%error, "writing the registry file failed"),
    }
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
        let bytes = encode(&entries, 100_000);
        // Read back 3 s later.
        let loaded = decode(&bytes, &Limits::default(), 103_000, TTL, H).unwrap();
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
        // A clock set back: the file counts as just written.
        let loaded = decode(&bytes, &Limits::default(), 90_000, TTL, H).unwrap();
        assert_eq!(loaded.age, Duration::ZERO);
        assert_eq!(loaded.entries.len(), 4);
    }

    #[test]
    fn a_damaged_file_is_refused_whole() {
        let entries = [(listing("a:1"), H), (listing("b:1"), H)];
        let bytes = encode(&entries, 0);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let cut = &bytes[..text.find(r#"{"end""#).unwrap()];
        let limits = Limits::default();
        assert!(decode(cut, &limits, 0, TTL, H)
            .unwrap_err()
            .contains("cut short"));
        let missing_line = text.replacen(
            r#"{"ttl":4000,"listing":{"service":"s","host":"a:1"}}"#,
            "",
            1,
        );
        assert!(decode(missing_line.as_bytes(), &limits, 0, TTL, H).is_err());
        assert!(decode(b"", &limits, 0, TTL, H).is_err());
        assert!(decode(b"garbage\n", &limits, 0, TTL, H).is_err());
        let other_version = text.replacen(r#""hakkenRegistry":1"#, r#""hakkenRegistry":2"#, 1);
        assert!(decode(other_version.as_bytes(), &limits, 0, TTL, H)
            .unwrap_err()
            .contains("version 2"));
        // A listing these limits refuse is skipped, not the file.
        let tight = Limits {
            max_host_len: 2,
            ..Limits::default()
        };
        let loaded = decode(&bytes, &tight, 0, TTL, H).unwrap();
        assert_eq!((loaded.entries.len(), loaded.invalid), (0, 2));
        let loaded = decode(&bytes, &limits, 0, TTL, H).unwrap();
        let hosts: Vec<&str> = loaded.entries.iter().map(|e| e.listing.host()).collect();
        assert_eq!(hosts, ["a:1", "b:1"]);
        assert_eq!(loaded.entries[0].listing, Listing::new("s", "a:1").unwrap());
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
