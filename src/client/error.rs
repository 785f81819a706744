//! The client library's error type.
//!
//! One enum for every fallible client call. Coordinators that fail during
//! background work (heartbeats, polls, watches) are logged and worked around,
//! never reported here: these errors are what the caller can act on.

use crate::listing::ListingError;
use crate::remote::RemoteError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No coordinator could be used (none answered, or each answered with an
    /// error): `host` was the last one asked, and `source` says how that call
    /// failed (also in the message).
    #[error("no coordinator could be used (last asked: {host}){}", cause(.source))]
    NoCoordinator {
        /// The coordinator (or load balancer) asked last.
        host: String,
        /// How that call failed, when one was made.
        #[source]
        source: Option<RemoteError>,
    },
    /// The listing is not one a coordinator would accept.
    #[error("invalid listing: {0}")]
    Invalid(#[from] ListingError),
    /// The client or the watch was closed.
    #[error("closed")]
    Closed,
    /// The watch's filter or selector panicked: the watch has stopped (its
    /// selection stays readable, and never changes again).
    #[error("the watch's filter or selector panicked; the watch has stopped")]
    WatchPanicked,
    /// A configuration value is missing or malformed.
    #[error("configuration: {0}")]
    Config(String),
    /// A coordinator answered a call with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// `: why` for a call that failed, to follow a message.
fn cause(source: &Option<RemoteError>) -> String {
    source
        .as_ref()
        .map(|error| format!(": {error}"))
        .unwrap_or_default()
}
