//! The wire vocabulary both sides speak: header names, our extension routes, and
//! the format of a registry snapshot.
//!
//! The coordinator (`coordinator/http`) writes these and the client side
//! ([`crate::remote`]) reads them; keeping them here means the two cannot drift.
//! The v1 routes themselves are the original's (see the README's API table); what
//! is here is only what we add, all of it ignorable by the original's clients and
//! coordinators.

use crate::listing::{Limits, Listing};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Response header: a change index (blocking queries).
pub const INDEX_HEADER: &str = "x-hakken-index";
/// Response header: the coordinator's heartbeat interval, in milliseconds.
pub const HEARTBEAT_HEADER: &str = "x-hakken-heartbeat-interval";
/// Response header: which coordinator answered (its announced host).
pub const COORDINATOR_HEADER: &str = "x-hakken-coordinator";
/// Response header on every answer: `true` when the answering coordinator holds
/// every listing its cluster holds (it copied them from a peer at start, or has
/// run long enough for every publisher to have reached it); `false` during the
/// warm-up after a start with nobody to copy from. Absent from the original's
/// answers.
pub const COMPLETE_HEADER: &str = "x-hakken-complete";

/// Response header on a partial coordinator's answer for one service's listings:
/// hosts (comma-separated, at most 1 KB) of listings it presumes gone, from what
/// it read back from its data directory, not heard from since: listings whose
/// publisher had not been heard from for more than 1.5 H then (with a TTL of at
/// least 5/2 H), and listings withdrawn from it in the last three TTLs, or
/// expired there in the last TTL under the same terms; and, with a data directory
/// or not, listings withdrawn from it since it started, while not complete
/// (held or not; those it did not hold are kept in memory only), and not
/// published again since. A
/// watch may drop them where it keeps other listings a partial coordinator does
/// not list (a listed host wins). Absent otherwise.
pub const DEPARTED_HEADER: &str = "x-hakken-departed";

/// Response header on every answer: a number that identifies one run of the
/// answering coordinator (the time it started, in microseconds since 1970). When
/// it changes, the coordinator restarted and may have lost what it was sent.
pub const INSTANCE_HEADER: &str = "x-hakken-instance";

/// Response header on an answer to a blocking query: how long the coordinator
/// agreed to hold it, in milliseconds (`0` when it was at its cap on held queries
/// and answered at once). A client can tell a query answered early from one held
/// to its end even when the coordinator caps `wait` below what was asked.
pub const WAIT_HEADER: &str = "x-hakken-wait";

/// Response header on a stream: how often the coordinator sends a keep-alive
/// comment when nothing changes, in milliseconds. A reader that hears nothing for
/// a few of these takes the stream for dead.
pub const KEEPALIVE_HEADER: &str = "x-hakken-keepalive";

/// The longest hold a client asks of a coordinator for a blocking query (ours
/// grant at most 5 minutes); a longer wait is asked as this.
pub const MAX_WAIT: Duration = Duration::from_secs(3_600);

/// Readiness route: `200` once the coordinator has its copy of the cluster's
/// listings (or found nobody to copy from), `503` before.
pub const READY_PATH: &str = "/ready";
/// Bulk route: every live listing with its remaining time to live, as
/// newline-delimited JSON (see [`SnapshotHead`]).
pub const SNAPSHOT_PATH: &str = "/v1/snapshot";
/// Content type of a snapshot.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/x-ndjson";

/// The first line of a snapshot. Then come `count` lines of
/// `{"ttl": MS, "listing": {...}}` (the listing's remaining time to live and its
/// payload as published), then `{"end": COUNT}`, which proves the stream was not
/// cut short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHead {
    /// Format version; this is 1.
    #[serde(rename = "hakkenSnapshot")]
    pub version: u32,
    /// The coordinator that wrote it.
    pub coordinator: String,
    /// Whether that coordinator was complete (see [`COMPLETE_HEADER`]).
    pub complete: bool,
    /// How many listing lines follow.
    pub count: usize,
}

/// One listing of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    /// How long the listing has left to live on the coordinator that sent it.
    pub ttl: Duration,
    /// The listing.
    pub listing: Listing,
}

/// Appends one snapshot line for a listing stored as compact JSON.
pub fn write_snapshot_entry(out: &mut Vec<u8>, ttl: Duration, listing_json: &[u8]) {
    out.extend_from_slice(b"{\"ttl\":");
    out.extend_from_slice(ttl.as_millis().to_string().as_bytes());
    out.extend_from_slice(b",\"listing\":");
    out.extend_from_slice(listing_json);
    out.extend_from_slice(b"}\n");
}

/// The last line of a snapshot of `count` listings.
pub fn snapshot_end(count: usize) -> Vec<u8> {
    format!("{{\"end\":{count}}}\n").into_bytes()
}

/// What one line after the head holds.
#[derive(Debug)]
pub enum SnapshotLine {
    /// A listing, valid under the limits given.
    Entry(SnapshotEntry),
    /// A listing line whose listing is not valid here (another coordinator may
    /// have accepted it under other limits): skipped, with the reason.
    Invalid(String),
    /// The end marker, with the count it claims.
    End(usize),
}

/// Decodes one line after the head; `Err` when it is not the format at all.
pub fn read_snapshot_line(line: &[u8], limits: &Limits) -> Result<SnapshotLine, String> {
    #[derive(Deserialize)]
    struct Line {
        ttl: Option<u64>,
        listing: Option<Value>,
        end: Option<usize>,
    }
    let line: Line = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    match line {
        Line {
            end: Some(count), ..
        } => Ok(SnapshotLine::End(count)),
        Line {
            ttl: Some(ttl),
            listing: Some(listing),
            ..
        } => Ok(match Listing::from_value(listing, limits) {
            Ok(listing) => SnapshotLine::Entry(SnapshotEntry {
                ttl: Duration::from_millis(ttl),
                listing,
            }),
            Err(error) => SnapshotLine::Invalid(error.to_string()),
        }),
        _ => Err("expected a listing line or the end marker".into()),
    }
}

/// The start of the body a TLS coordinator answers plain HTTP with (`400`).
pub const PLAIN_ON_TLS: &str = "this coordinator speaks TLS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lines_round_trip() {
        let listing = Listing::new("s", "h:1").unwrap().with("x", [1, 2]);
        let mut out = Vec::new();
        write_snapshot_entry(
            &mut out,
            Duration::from_millis(1500),
            &serde_json::to_vec(&listing).unwrap(),
        );
        assert_eq!(
            out,
            br#"{"ttl":1500,"listing":{"service":"s","host":"h:1","x":[1,2]}}
"#
        );
        let limits = Limits::default();
        match read_snapshot_line(&out, &limits).unwrap() {
            SnapshotLine::Entry(entry) => {
                assert_eq!(entry.ttl, Duration::from_millis(1500));
                assert_eq!(entry.listing, listing);
            }
            other => panic!("expected an entry, got {other:?}"),
        }
        assert!(matches!(
            read_snapshot_line(&snapshot_end(7), &limits),
            Ok(SnapshotLine::End(7))
        ));
        assert!(matches!(
            read_snapshot_line(br#"{"ttl":1,"listing":{"host":"h:1"}}"#, &limits),
            Ok(SnapshotLine::Invalid(_))
        ));
        assert!(read_snapshot_line(b"[1]", &limits).is_err());
        assert!(read_snapshot_line(br#"{"ttl":1}"#, &limits).is_err());
    }
}
