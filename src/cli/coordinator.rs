//! `hakken coordinator`: runs a coordinator until Ctrl-C or SIGTERM.
//!
//! Reads the original's environment variables so an existing deployment's settings
//! work unchanged; each also has a flag, and flags win.

use super::logging::{self, LogFormat};
use super::values::{announce_host, discovery_host};
use super::{positive_ms, OutgoingTls, UsageError};
use anyhow::{bail, Context};
use clap::builder::BoolishValueParser;
use hakken::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, RegistryLimits, ServerTls,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Settings of `hakken coordinator`.
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8082)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    listen: IpAddr,
    /// Host name this coordinator announces to the others (announced as NAME:PORT).
    #[arg(
        long,
        env = "ANNOUNCE_HOST",
        value_name = "NAME",
        default_value = "localhost",
        value_parser = announce_host
    )]
    announce_host: String,
    /// HOST[:PORT][/PATH] to ask for the other coordinators, often a load balancer (port 80 when left out) [default: none, single node].
    #[arg(long, env = "DISCOVERY_HOST", value_name = "HOST[:PORT]", value_parser = discovery_host)]
    discovery_host: Option<String>,
    /// Heartbeat interval H in milliseconds: peers are polled every H, listings live H × missed heartbeats.
    #[arg(long, env = "DISCOVERY_HEARTBEAT_INTERVAL", value_name = "MS", default_value_t = 60_000, value_parser = positive_ms)]
    heartbeat_interval: u64,
    /// Heartbeats a listing may miss before it expires.
    #[arg(long, env = "MISSED_HEARTBEATS_ALLOWED", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    missed_heartbeats_allowed: u32,
    /// How often to ask the discovery host again, in milliseconds [default: H × 10].
    #[arg(long, env = "RESYNC_POLL_INTERVAL", value_name = "MS", value_parser = positive_ms)]
    resync_interval: Option<u64>,
    /// Log every heartbeat received (true or false; yes/no, on/off, 1/0 too).
    #[arg(long, env = "LOG_HEARTBEATS", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    log_heartbeats: bool,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Shared secret: writes (POST, DELETE) need `Authorization: Bearer TOKEN`; gossip sends it [default: none, open].
    #[arg(
        long,
        env = "HAKKEN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    token: Option<String>,
    /// With a token, protect reads too: every route but /status and /ready (kept open for health checks) needs it. Refused without a token.
    #[arg(long, env = "HAKKEN_PROTECT_READS", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), help_heading = "Security")]
    protect_reads: bool,
    /// Serve DNS (UDP and TCP) on this port of the listen address: SERVICE.service.DOMAIN [default: off].
    #[arg(
        long,
        env = "HAKKEN_DNS_PORT",
        value_name = "PORT",
        help_heading = "DNS"
    )]
    dns_port: Option<u16>,
    /// The DNS domain.
    #[arg(
        long,
        env = "HAKKEN_DNS_DOMAIN",
        value_name = "DOMAIN",
        default_value = "hakken",
        help_heading = "DNS"
    )]
    dns_domain: String,
    /// TTL of DNS records, in seconds.
    #[arg(
        long,
        env = "HAKKEN_DNS_TTL",
        value_name = "SECONDS",
        default_value_t = 0,
        help_heading = "DNS"
    )]
    dns_ttl: u32,
    /// Most DNS-over-TCP connections open at once: one more takes the place of the connection waiting longest for a question, or is closed as it is accepted if every one is busy with a question; one idle for --read-timeout is closed.
    #[arg(
        long,
        env = "HAKKEN_DNS_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "DNS"
    )]
    dns_max_connections: u32,
    /// Serve HTTPS with this certificate chain (PEM); reloaded when the file changes or on SIGHUP. Peers are then called over TLS too.
    #[arg(
        long,
        env = "HAKKEN_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "TLS"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "HAKKEN_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "TLS"
    )]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every route but /status and /ready needs a client certificate signed by a CA in this PEM file.
    #[arg(
        long,
        env = "HAKKEN_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "TLS"
    )]
    tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    tls: OutgoingTls,
    /// Largest request body, in bytes.
    #[arg(
        long,
        env = "HAKKEN_MAX_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        help_heading = "Limits"
    )]
    max_body_bytes: usize,
    /// Most listings held.
    #[arg(
        long,
        env = "HAKKEN_MAX_LISTINGS",
        value_name = "N",
        default_value_t = 1_000_000,
        help_heading = "Limits"
    )]
    max_listings: usize,
    /// Most services held.
    #[arg(
        long,
        env = "HAKKEN_MAX_SERVICES",
        value_name = "N",
        default_value_t = 100_000,
        help_heading = "Limits"
    )]
    max_services: usize,
    /// Most coordinators known, this one included.
    #[arg(
        long,
        env = "HAKKEN_MAX_COORDINATORS",
        value_name = "N",
        default_value_t = 1_000,
        help_heading = "Limits"
    )]
    max_coordinators: usize,
    /// Most connections open at once.
    #[arg(
        long,
        env = "HAKKEN_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 16_384,
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Limits"
    )]
    max_connections: u32,
    /// Most blocking queries held at once.
    #[arg(
        long,
        env = "HAKKEN_MAX_HELD_QUERIES",
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    max_held_queries: usize,
    /// Most streams (Server-Sent Events) open at once.
    #[arg(
        long,
        env = "HAKKEN_MAX_STREAMS",
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    max_streams: usize,
    /// How often a stream that has nothing to send sends a keep-alive comment, in milliseconds (below a proxy's idle timeout; our clients take a stream silent for three of these for dead).
    #[arg(long, env = "HAKKEN_STREAM_KEEPALIVE", value_name = "MS", default_value_t = 15_000, value_parser = keepalive_ms, help_heading = "Limits")]
    stream_keepalive: u64,
    /// Timeout of each call to another coordinator (gossip), in milliseconds.
    #[arg(long, env = "HAKKEN_REQUEST_TIMEOUT", value_name = "MS", default_value_t = 5_000, value_parser = positive_ms, help_heading = "Limits")]
    request_timeout: u64,
    /// Longest time a write may wait for a reader that takes nothing (a stream's reader fallen behind) before the connection is closed, in milliseconds.
    #[arg(long, env = "HAKKEN_STALL_TIMEOUT", value_name = "MS", default_value_t = 60_000, value_parser = positive_ms, help_heading = "Limits")]
    stall_timeout: u64,
    /// Time allowed to receive a request's head, and its body, in milliseconds; also how long a DNS-over-TCP connection may idle.
    #[arg(long, env = "HAKKEN_READ_TIMEOUT", value_name = "MS", default_value_t = 10_000, value_parser = positive_ms, help_heading = "Limits")]
    read_timeout: u64,
    /// Longest time spent at start copying the cluster's listings from a peer, in milliseconds; listing reads wait for it.
    #[arg(long, env = "HAKKEN_SYNC_TIMEOUT", value_name = "MS", default_value_t = 10_000, value_parser = positive_ms, help_heading = "Cluster")]
    sync_timeout: u64,
    /// Keep the listings in this directory (created if missing), so that a restart, even after a crash, keeps them: each lives what it had left. One coordinator per directory. Without it, listings live in memory only.
    #[arg(
        long,
        env = "HAKKEN_DATA_DIR",
        value_name = "DIR",
        help_heading = "Cluster"
    )]
    data_dir: Option<std::path::PathBuf>,
    /// Polls in a row that must find a peer unreachable (or not a coordinator) before it is dropped; refusals never count.
    #[arg(long, env = "HAKKEN_FAILURES_BEFORE_DROP", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Cluster")]
    failures_before_drop: u32,
}

/// `--stream-keepalive`: at least 100 ms (a keep-alive is a write to every open
/// stream), at most a day.
fn keepalive_ms(text: &str) -> Result<u64, String> {
    match positive_ms(text)? {
        ms if ms < 100 => Err("must be at least 100 ms".into()),
        ms => Ok(ms),
    }
}

impl CoordinatorArgs {
    fn config(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            announce_host: self.announce_host.clone(),
            discovery_host: self.discovery_host.clone().filter(|h| !h.is_empty()),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            missed_heartbeats_allowed: self.missed_heartbeats_allowed,
            resync_interval: self.resync_interval.map(Duration::from_millis),
            log_heartbeats: self.log_heartbeats,
            token: self.token.clone().filter(|t| !t.is_empty()),
            protect_reads: self.protect_reads,
            max_body_bytes: self.max_body_bytes,
            registry_limits: RegistryLimits {
                max_listings: self.max_listings,
                max_services: self.max_services,
            },
            max_coordinators: self.max_coordinators,
            max_connections: self.max_connections as usize,
            max_held_queries: self.max_held_queries,
            max_streams: self.max_streams,
            stream_keepalive: Duration::from_millis(self.stream_keepalive),
            request_timeout: Duration::from_millis(self.request_timeout),
            header_timeout: Duration::from_millis(self.read_timeout),
            body_timeout: Duration::from_millis(self.read_timeout),
            stall_timeout: Duration::from_millis(self.stall_timeout),
            sync_timeout: Duration::from_millis(self.sync_timeout),
            failures_before_drop: self.failures_before_drop,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(ServerTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            dns_port: self.dns_port,
            dns_domain: self.dns_domain.clone(),
            dns_ttl: self.dns_ttl,
            dns_max_connections: self.dns_max_connections as usize,
            data_dir: self.data_dir.clone().filter(|d| !d.as_os_str().is_empty()),
            peer_tls: self.tls.settings(),
            ..CoordinatorConfig::default()
        }
    }
}

/// Runs the coordinator until a shutdown signal, then stops it cleanly.
pub async fn run(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    if args.protect_reads && args.token.as_deref().is_none_or(str::is_empty) {
        // Reads would stay open to anyone, against what was asked.
        return Err(UsageError(
            "--protect-reads (setting HAKKEN_PROTECT_READS) needs a token: set --token or HAKKEN_TOKEN"
                .into(),
        )
        .into());
    }
    logging::init(args.log_format, "info");
    let stop = shutdown_signal(false);
    keep_on_hangup(args.tls_cert.is_some());
    let address = SocketAddr::new(args.listen, args.port);
    let coordinator = match Coordinator::bind(address, args.config()).await {
        Ok(coordinator) => coordinator,
        Err(CoordinatorError::Io(error)) if error.kind() == std::io::ErrorKind::AddrInUse => {
            bail!(
                "cannot listen on {address}: address already in use; choose another port with --port or PORT"
            )
        }
        Err(CoordinatorError::DnsPort { port, error })
            if error.kind() == std::io::ErrorKind::AddrInUse =>
        {
            bail!(
                "cannot serve DNS on port {port}: address already in use (UDP or TCP); choose another with --dns-port or HAKKEN_DNS_PORT"
            )
        }
        Err(CoordinatorError::Announce(error)) => {
            return Err(bad_setting("--announce-host", "ANNOUNCE_HOST", error))
        }
        Err(CoordinatorError::DnsDomain(domain)) => {
            let why = format!("'{domain}' is not a domain name");
            return Err(bad_setting("--dns-domain", "HAKKEN_DNS_DOMAIN", why));
        }
        Err(
            error @ (CoordinatorError::Tls(_)
            | CoordinatorError::DataDir { .. }
            | CoordinatorError::DnsPort { .. }),
        ) => {
            bail!("{error}")
        }
        Err(error) => return Err(error).with_context(|| format!("cannot listen on {address}")),
    };
    stop.await;
    tracing::info!("shutdown requested");
    coordinator.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// A setting the library refused: a usage error (exit code 2) naming it.
fn bad_setting(flag: &str, env: &str, why: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("invalid value for {flag} (setting {env}): {why}")).into()
}

/// Keeps the coordinator running on SIGHUP, whose default is to end the process
/// (no clean shutdown, no last write of the data directory): with TLS it reloads
/// the certificate (`tls.rs` listens too), without it there is nothing to reload,
/// and the log says so.
#[cfg(unix)]
fn keep_on_hangup(reloads: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if !reloads {
                tracing::info!("SIGHUP ignored: there is nothing to reload without --tls-cert");
            }
        }
    });
}

#[cfg(not(unix))]
fn keep_on_hangup(_reloads: bool) {}

/// Whether `signal` is ignored now (before any handler of ours), as `nohup`
/// leaves SIGHUP.
#[cfg(unix)]
fn ignored(signal: libc::c_int) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into
    // `current`, a zeroed (valid) sigaction of the right type.
    let read = unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) };
    // SAFETY: zeroed, and filled by sigaction when it succeeded.
    read == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// A future that resolves on Ctrl-C or SIGTERM, and on SIGHUP when `hangup` (a
/// client command whose terminal went away stops as cleanly) unless SIGHUP is
/// ignored at start (a handler would undo `nohup`). The handlers are
/// installed when this is called, not when the future is first polled: a signal
/// that arrives in between (a quick SIGTERM after the start) is waited for, not
/// fatal.
#[cfg(unix)]
pub fn shutdown_signal(hangup: bool) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    async fn received(signal: Option<tokio::signal::unix::Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let interrupt = received(signal(SignalKind::interrupt()).ok());
    let terminate = received(signal(SignalKind::terminate()).ok());
    let hangup = hangup && !ignored(SignalKind::hangup().as_raw_value());
    let hangup = received(hangup.then(|| signal(SignalKind::hangup()).ok()).flatten());
    async move {
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
            _ = hangup => {}
        }
    }
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal(_hangup: bool) -> impl std::future::Future<Output = ()> {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CoordinatorArgs,
    }

    #[test]
    fn a_dns_connection_cap_of_zero_is_refused() {
        let parsed = Wrapper::try_parse_from(["x", "--dns-max-connections", "0"]);
        assert!(parsed.is_err(), "0 would serve no TCP at all");
        let parsed = Wrapper::try_parse_from(["x", "--dns-max-connections", "1"]).unwrap();
        assert_eq!(parsed.args.config().dns_max_connections, 1);
        let parsed = Wrapper::try_parse_from(["x", "--stream-keepalive", "250"]).unwrap();
        assert_eq!(
            parsed.args.config().stream_keepalive,
            Duration::from_millis(250)
        );
        assert!(Wrapper::try_parse_from(["x", "--stream-keepalive", "0"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--stream-keepalive", "99"]).is_err());
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let parsed = Wrapper::try_parse_from(["x"]).unwrap().args.config();
        let default = CoordinatorConfig::default();
        assert_eq!(parsed.heartbeat_interval, default.heartbeat_interval);
        assert_eq!(
            parsed.missed_heartbeats_allowed,
            default.missed_heartbeats_allowed
        );
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.registry_limits, default.registry_limits);
        assert_eq!(parsed.max_coordinators, default.max_coordinators);
        assert_eq!(parsed.max_connections, default.max_connections);
        assert_eq!(parsed.max_held_queries, default.max_held_queries);
        assert_eq!(parsed.max_streams, default.max_streams);
        assert_eq!(parsed.stream_keepalive, default.stream_keepalive);
        assert_eq!(parsed.header_timeout, default.header_timeout);
        assert_eq!(parsed.stall_timeout, default.stall_timeout);
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.body_timeout, default.body_timeout);
        assert_eq!(parsed.token, None);
        assert_eq!(parsed.sync_timeout, default.sync_timeout);
        assert_eq!(parsed.failures_before_drop, default.failures_before_drop);
        assert_eq!(parsed.dns_max_connections, default.dns_max_connections);
    }
}
