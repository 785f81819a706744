//! `hakken coordinator`: runs a coordinator until Ctrl-C or SIGTERM.
//!
//! Reads the original's environment variables so an existing deployment's settings
//! work unchanged; each also has a flag, and flags win.

use super::logging::{self, LogFormat};
use anyhow::Context;
use clap::builder::BoolishValueParser;
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
        default_value = "localhost"
    )]
    announce_host: String,
    /// HOST:PORT to ask for the other coordinators, often a load balancer [default: none, single node].
    #[arg(long, env = "DISCOVERY_HOST", value_name = "HOST:PORT")]
    discovery_host: Option<String>,
    /// Heartbeat interval H in milliseconds: peers are polled every H, listings live H × missed heartbeats.
    #[arg(long, env = "DISCOVERY_HEARTBEAT_INTERVAL", value_name = "MS", default_value_t = 60_000, value_parser = positive_ms)]
    heartbeat_interval: u64,
    /// Heartbeats a listing may miss before it expires.
    #[arg(long, env = "MISSED_HEARTBEATS_ALLOWED", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    missed_heartbeats_allowed: u32,
    /// How often to ask the discovery host again, in milliseconds [default: H × 10].
    #[arg(long, env = "RESYNC_POLL_INTERVAL", value_name = "MS", value_parser = positive_ms)]
    resync_interval: Option<u64>,
    /// Log every heartbeat received.
    #[arg(long, env = "LOG_HEARTBEATS", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    log_heartbeats: bool,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Parses a strictly positive number of milliseconds.
fn positive_ms(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 millisecond".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err("expected a positive whole number of milliseconds".into()),
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
            ..CoordinatorConfig::default()
        }
    }
}

/// Runs the coordinator until a shutdown signal, then stops it cleanly.
pub async fn run(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format, "info");
    let address = SocketAddr::new(args.listen, args.port);
    let coordinator = Coordinator::bind(address, args.config())
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    coordinator.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
