//! Coordinator settings: a plain struct with the original's defaults.
//!
//! Parsing (environment variables, flags) lives in the binary; this is what the
//! library takes. Durations are durations, not milliseconds, and every bound a
//! coordinator enforces is a field here.

use super::RegistryLimits;
use crate::listing::Limits;
use std::time::Duration;

/// The shortest period a coordinator honours (a zero one would spin).
const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The longest period or lifetime a coordinator honours (a year).
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a coordinator behaves. `Default` gives the original's defaults.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Host name this coordinator announces to others; its descriptor's `host` is
    /// `announce_host:port`, the port being the listener's. Default `localhost`.
    pub announce_host: String,
    /// `host:port` asked for the set of coordinators (often a load balancer).
    /// `None`: a single coordinator that only learns of others when they announce.
    pub discovery_host: Option<String>,
    /// `H`: how often known coordinators are polled; listings live `H × missed`.
    pub heartbeat_interval: Duration,
    /// Heartbeats a listing may miss before it expires.
    pub missed_heartbeats_allowed: u32,
    /// How often the discovery host is asked again. `None`: `H × 10`.
    pub resync_interval: Option<Duration>,
    /// Log every heartbeat received (at info level).
    pub log_heartbeats: bool,
    /// Timeout of each call this coordinator makes to another one.
    pub request_timeout: Duration,
    /// Shape limits of listings and coordinator descriptors.
    pub listing_limits: Limits,
    /// Size limits of the registry.
    pub registry_limits: RegistryLimits,
    /// Most coordinators known at once, this one included.
    pub max_coordinators: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most blocking queries held at once; past it, queries are answered at once.
    pub max_held_queries: usize,
    /// How long a blocking query is held when it names no `wait`.
    pub default_wait: Duration,
    /// The longest `wait` honoured.
    pub max_wait: Duration,
    /// Most connections open at once; past it a connection gets a `503` and is closed.
    pub max_connections: usize,
    /// Longest time to receive a request's head; slower senders are disconnected.
    pub header_timeout: Duration,
    /// Longest time to receive a request's body; slower senders get a `408`.
    pub body_timeout: Duration,
    /// Longest time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Shared secret: when set, writes need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// With a token, protect reads too (`/status` stays open for health checks).
    pub protect_reads: bool,
    /// Longest time a starting coordinator spends copying its cluster's listings
    /// before it answers reads anyway (reads that arrive meanwhile wait).
    pub sync_timeout: Duration,
    /// Polls in a row that must find a peer broken (unreachable, or not speaking
    /// the protocol) before it is dropped and blacklisted. Refusals never count.
    pub failures_before_drop: u32,
    /// How often the dashboard's charts are sampled (`history.rs`); they keep the
    /// last 360 samples, an hour at the default 10 s.
    pub history_interval: Duration,
    /// Serve HTTPS from these files (and with a client CA, require client
    /// certificates). Every call to a peer then uses TLS too.
    pub tls: Option<super::ServerTls>,
    /// For calls to peers: roots trusted beyond the system's, and the client
    /// certificate presented (needed where peers require one).
    pub peer_tls: crate::tls::ClientTls,
    /// Most streams (Server-Sent Events) open at once; past it a stream request
    /// is answered `503`.
    pub max_streams: usize,
    /// How often an open stream carries a keep-alive comment when nothing changes.
    pub stream_keepalive: Duration,
    /// Longest time one write to a connection may wait for its reader to take
    /// anything; past it the connection is closed. A stream whose reader fell this
    /// far behind is cut off (it gets the newest state when it reconnects).
    pub stall_timeout: Duration,
    /// Serve DNS (UDP and TCP) on this port of the listen address; off when
    /// `None`. Port 0 picks a free one ([`Coordinator::dns_addr`](super::Coordinator::dns_addr)).
    pub dns_port: Option<u16>,
    /// The DNS domain (`SERVICE.service.DOMAIN`); checked at start even with DNS off.
    pub dns_domain: String,
    /// TTL of every DNS record, in seconds.
    pub dns_ttl: u32,
    /// Most DNS-over-TCP connections open at once; one past it takes the place
    /// of the connection waiting longest for its next question (or its first),
    /// or is closed as it is accepted when every connection is busy with one or
    /// its answer (UDP is not affected).
    pub dns_max_connections: usize,
    /// Keep the registry in this directory, so that a restart keeps the listings
    /// (see `persist.rs`); created if missing, one coordinator per directory.
    /// `None`: listings live in memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            announce_host: "localhost".into(),
            discovery_host: None,
            heartbeat_interval: Duration::from_millis(60_000),
            missed_heartbeats_allowed: 3,
            resync_interval: None,
            log_heartbeats: false,
            request_timeout: Duration::from_secs(5),
            listing_limits: Limits::default(),
            registry_limits: RegistryLimits::default(),
            max_coordinators: 1_000,
            max_body_bytes: 64 * 1024,
            max_held_queries: 10_000,
            default_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
            max_connections: 16_384,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            token: None,
            protect_reads: false,
            sync_timeout: Duration::from_secs(10),
            failures_before_drop: 3,
            history_interval: Duration::from_secs(10),
            tls: None,
            peer_tls: crate::tls::ClientTls::default(),
            max_streams: 10_000,
            stream_keepalive: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(60),
            dns_port: None,
            dns_domain: "hakken".into(),
            dns_ttl: 0,
            dns_max_connections: 512,
            data_dir: None,
        }
    }
}

impl CoordinatorConfig {
    /// How long a listing lives after its last heartbeat: `H × missed`, at most
    /// a year (so deadlines never overflow).
    pub fn listing_ttl(&self) -> Duration {
        self.heartbeat()
            .saturating_mul(self.missed_heartbeats_allowed.max(1))
            .min(MAX_PERIOD)
    }

    /// The resync period: the setting, or `H × 10`; between 1 ms and a year.
    pub fn resync_period(&self) -> Duration {
        self.resync_interval
            .unwrap_or(self.heartbeat().saturating_mul(10))
            .clamp(MIN_PERIOD, MAX_PERIOD)
    }

    /// The dashboard's sampling period, between 1 ms and a year.
    pub fn history_period(&self) -> Duration {
        self.history_interval.clamp(MIN_PERIOD, MAX_PERIOD)
    }

    /// The heartbeat interval `H`, between 1 ms and a year.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval.clamp(MIN_PERIOD, MAX_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_bounded() {
        let config = CoordinatorConfig {
            heartbeat_interval: Duration::MAX,
            missed_heartbeats_allowed: u32::MAX,
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.listing_ttl(), MAX_PERIOD);
        assert_eq!(config.resync_period(), MAX_PERIOD);
        let config = CoordinatorConfig {
            heartbeat_interval: Duration::ZERO,
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.heartbeat(), MIN_PERIOD);
        assert_eq!(config.resync_period(), Duration::from_millis(10));
        let config = CoordinatorConfig {
            history_interval: Duration::ZERO,
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.history_period(), MIN_PERIOD);
    }
}
