//! The client commands: `publish`, `watch`, `services`, `listings`, `coordinators`.
//!
//! `publish` and `watch` run the client library until Ctrl-C or SIGTERM; the other
//! three are one-shot reads of one coordinator, printed as an aligned table for
//! people or as JSON (`--json`) for scripts. Data goes to stdout, diagnostics to
//! stderr; a coordinator that does not answer is a one-line error and exit code 1.

use super::coordinator::shutdown_signal;
use super::logging::{self, LogFormat};
use anyhow::{bail, Context};
use hakken::client::{Client, ClientConfig, Watch};
use hakken::remote::Remote;
use hakken::Listing;
use serde_json::{Map, Value};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How the client commands reach a coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Coordinator (or load balancer) to talk to.
    #[arg(
        long,
        env = "HAKKEN_COORDINATOR",
        value_name = "HOST:PORT",
        default_value = "localhost:8082"
    )]
    coordinator: String,
    /// Bearer token for coordinators that require one.
    #[arg(
        long,
        env = "HAKKEN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Timeout of each call to a coordinator, in milliseconds.
    #[arg(
        long,
        env = "HAKKEN_TIMEOUT",
        value_name = "MS",
        default_value_t = 5_000
    )]
    timeout: u64,
}

impl Connection {
    fn remote(&self) -> Remote {
        Remote::new(Duration::from_millis(self.timeout.max(1))).with_token(self.token.clone())
    }

    /// A started client (`heartbeat_ms`: the interval, else the coordinator's).
    async fn start(&self, heartbeat_ms: Option<u64>) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(self.coordinator.clone())
            .request_timeout(Duration::from_millis(self.timeout.max(1)))
            .token(self.token.clone());
        config.heartbeat_interval = heartbeat_ms.map(Duration::from_millis);
        let client = Client::new(config);
        client
            .start()
            .await
            .with_context(|| format!("cannot reach coordinator {}", self.coordinator))?;
        Ok(client)
    }
}

/// `hakken publish SERVICE HOST [KEY=VALUE ...]`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    connection: Connection,
    /// Service name.
    service: String,
    /// Where the service is reached, `name:port`.
    host: String,
    /// Extra fields; values that parse as JSON (numbers, true, objects) stay JSON.
    #[arg(value_name = "KEY=VALUE", value_parser = parse_field)]
    fields: Vec<(String, Value)>,
    /// Heartbeat interval in ms [default: the coordinator's, else 20000].
    #[arg(long, value_name = "MS")]
    heartbeat_interval: Option<u64>,
}

/// `hakken watch SERVICE [--filter KEY=VALUE ...] [--random N]`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Service name.
    service: String,
    /// Only listings whose field KEY equals VALUE (JSON-parsed like publish's fields).
    #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = parse_field)]
    filters: Vec<(String, Value)>,
    /// Hand out N random listings instead of all.
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Poll interval in ms for coordinators without blocking queries (the
    /// original's) [default: the coordinator's heartbeat interval, else 20000].
    #[arg(long, value_name = "MS")]
    heartbeat_interval: Option<u64>,
}

/// `hakken services` and `hakken coordinators`.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `hakken listings SERVICE`.
#[derive(Debug, clap::Args)]
pub struct ListingsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Service name.
    service: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses `KEY=VALUE`, keeping the value as JSON when it parses as JSON.
fn parse_field(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{text}`"))?;
    if key.is_empty() {
        return Err(format!("empty key in `{text}`"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// Publishes one listing and keeps it alive until interrupted, then withdraws it.
pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection;
    logging::init(LogFormat::Text, "warn");
    let mut fields = Map::new();
    fields.insert("service".into(), Value::String(args.service));
    fields.insert("host".into(), Value::String(args.host));
    for (key, value) in args.fields {
        if key == "service" || key == "host" {
            bail!("`{key}` is given as an argument, not as a field");
        }
        fields.insert(key, value);
    }
    let listing =
        Listing::from_map(fields, &hakken::Limits::default()).context("invalid listing")?;
    let client = connection.start(args.heartbeat_interval).await?;
    client.publish(listing.clone()).await?;
    eprintln!(
        "published {listing} to {} coordinator(s); heartbeat every {} ms; Ctrl-C to withdraw",
        client.coordinators().len().max(1),
        client.heartbeat_interval().as_millis()
    );
    shutdown_signal().await;
    client.close().await;
    eprintln!("withdrawn {listing}");
    Ok(ExitCode::SUCCESS)
}

/// Prints the watched listings as one JSON array per line, again at every change.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection;
    logging::init(LogFormat::Text, "warn");
    let client = connection.start(args.heartbeat_interval).await?;
    let mut builder = client.watch(&args.service);
    for (key, value) in args.filters {
        builder = builder.filter(key, value);
    }
    if let Some(n) = args.random {
        builder = builder.random(n);
    }
    let watch = builder.build();
    watch
        .start()
        .await
        .with_context(|| format!("cannot watch `{}`", args.service))?;
    let printed = print_changes(&watch);
    tokio::select! {
        result = printed => result?,
        _ = shutdown_signal() => {}
    }
    watch.close();
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Prints the current selection, then each new one, until the watch ends.
async fn print_changes(watch: &Watch) -> anyhow::Result<()> {
    let mut changes = watch.subscribe();
    loop {
        let current = changes.borrow_and_update().clone();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&current)?)?;
        out.flush()?;
        drop(out);
        if changes.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// `hakken services`: names of services with live listings, and how many each has.
pub async fn services(output: OutputArgs) -> anyhow::Result<ExitCode> {
    let connection = output.connection;
    let remote = connection.remote();
    let host = &connection.coordinator;
    let names = remote.services(host, None).await?.value;
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let count = remote.listings(host, &name, None).await?.value.len();
        rows.push((name, count));
    }
    let json: Vec<Value> = rows
        .iter()
        .map(|(name, count)| serde_json::json!({"service": name, "listings": count}))
        .collect();
    print_output(output.json, &json, &["SERVICE", "LISTINGS"], || {
        rows.iter()
            .map(|(name, count)| vec![name.clone(), count.to_string()])
            .collect()
    })
}

/// `hakken listings SERVICE`: the live listings of one service.
pub async fn listings(args: ListingsArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection;
    let remote = connection.remote();
    let listings = remote
        .listings(&connection.coordinator, &args.service, None)
        .await?
        .value;
    print_output(args.json, &listings, &["HOST", "FIELDS"], || {
        listings
            .iter()
            .map(|listing| {
                let mut extra = listing.fields().clone();
                extra.shift_remove("service");
                extra.shift_remove("host");
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    Value::Object(extra).to_string()
                };
                vec![listing.host().to_owned(), extra]
            })
            .collect()
    })
}

/// `hakken coordinators`: the coordinators a coordinator knows, itself first.
pub async fn coordinators(output: OutputArgs) -> anyhow::Result<ExitCode> {
    let connection = output.connection;
    let remote = connection.remote();
    let peers = remote
        .coordinators(&connection.coordinator, None)
        .await?
        .value;
    print_output(output.json, &peers, &["HOST"], || {
        peers.iter().map(|p| vec![p.host().to_owned()]).collect()
    })
}

/// Prints `json` pretty, or the table `rows` builds under `header`.
fn print_output(
    json: bool,
    value: &impl serde::Serialize,
    header: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print_table(header, rows());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows under a header, columns padded to their widest cell.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_keep_json_values() {
        assert_eq!(parse_field("port=8080"), Ok(("port".into(), json!(8080))));
        assert_eq!(parse_field("tls=true"), Ok(("tls".into(), json!(true))));
        assert_eq!(
            parse_field(r#"meta={"a":[1]}"#),
            Ok(("meta".into(), json!({"a": [1]})))
        );
        assert_eq!(
            parse_field("name=billing"),
            Ok(("name".into(), json!("billing")))
        );
        assert_eq!(parse_field("eq=a=b"), Ok(("eq".into(), json!("a=b"))));
        assert_eq!(parse_field("empty="), Ok(("empty".into(), json!(""))));
        assert!(parse_field("novalue").is_err());
        assert!(parse_field("=x").is_err());
    }
}
