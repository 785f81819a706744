//! The client commands: `publish`, `watch`, `services`, `listings`, `coordinators`.
//!
//! `publish` and `watch` run the client library until Ctrl-C, SIGTERM or SIGHUP
//! (unless SIGHUP is ignored, as under `nohup`); the other
//! three are one-shot reads of one coordinator, printed as an aligned table for
//! people or as JSON (`--json`) for scripts. Data goes to stdout, diagnostics to
//! stderr (nothing found; an answer flagged partial); a coordinator that does not
//! answer is a one-line error and exit code 1.

use super::coordinator::shutdown_signal;
use super::logging::{self, LogFormat};
use super::values::{
    at_least_one, coordinator_address, listing_host, parse_field, parse_published_field,
    service_name,
};
use super::{explain, positive_ms, OutgoingTls, UsageError};
use anyhow::anyhow;
use hakken::client::{Client, ClientConfig, ClientError, Watch};
use hakken::remote::{split_scheme, Remote, RemoteError};
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
        default_value = "localhost:8082",
        value_parser = coordinator_address
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
        default_value_t = 5_000,
        value_parser = positive_ms
    )]
    timeout: u64,
    #[command(flatten)]
    tls: OutgoingTls,
}

impl Connection {
    /// The token to send: none for an empty one.
    fn token(&self) -> Option<String> {
        self.token.clone().filter(|t| !t.is_empty())
    }

    /// A client for single calls; the TLS files are read now (a bad one is an
    /// argument error).
    fn remote(&self) -> anyhow::Result<Remote> {
        let (https, _) = split_scheme(&self.coordinator);
        let remote = Remote::with_tls(
            Duration::from_millis(self.timeout),
            &self.tls.settings(),
            https,
        )
        .map_err(|e| UsageError(e.to_string()))?;
        Ok(remote.with_token(self.token()))
    }

    /// A started client (`heartbeat_ms`: the interval, else the coordinator's).
    async fn start(&self, heartbeat_ms: Option<u64>) -> anyhow::Result<Client> {
        // The files are checked here, so that a bad one is an argument error.
        self.tls
            .settings()
            .config()
            .map_err(|e| UsageError(e.to_string()))?;
        let mut config = ClientConfig::new(self.coordinator.clone())
            .request_timeout(Duration::from_millis(self.timeout))
            .token(self.token())
            .tls(self.tls.settings());
        config.heartbeat_interval = heartbeat_ms.map(Duration::from_millis);
        let client = Client::new(config);
        match client.start().await {
            Ok(()) => Ok(client),
            Err(error) => Err(anyhow!(self.explain_client(error).await)),
        }
    }

    /// The value of a call, or a one-line error saying why it failed.
    async fn check<T>(&self, result: Result<T, RemoteError>) -> anyhow::Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => Err(anyhow!(self.explain(&error).await)),
        }
    }

    /// Why a client call failed, in one line.
    async fn explain_client(&self, error: ClientError) -> String {
        match error {
            ClientError::NoCoordinator {
                source: Some(error),
                ..
            }
            | ClientError::Remote(error) => self.explain(&error).await,
            other => other.to_string(),
        }
    }

    /// Why a call to a coordinator failed, in one line.
    async fn explain(&self, error: &RemoteError) -> String {
        explain::remote_error(
            error,
            self.token().is_some(),
            Duration::from_millis(self.timeout),
        )
        .await
    }
}

/// `hakken publish SERVICE HOST [KEY=VALUE | KEY:=JSON ...]`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    connection: Connection,
    /// Service name.
    #[arg(value_parser = service_name)]
    service: String,
    /// Where the service is reached, `name:port`.
    #[arg(value_parser = listing_host)]
    host: String,
    /// Extra fields. KEY=VALUE is a string unless it is a number, true, false or
    /// null that JSON writes back exactly as typed (8080, true; not 7.10, 007 or
    /// 1e3, which stay strings); KEY:=JSON is any JSON value (tags:='["a","b"]',
    /// meta:='{"a":1}', version:=7.10).
    #[arg(value_name = "FIELD", value_parser = parse_published_field)]
    fields: Vec<(String, Value)>,
    /// Heartbeat interval in ms [default: the coordinator's, else 20000].
    #[arg(long, value_name = "MS", value_parser = positive_ms)]
    heartbeat_interval: Option<u64>,
}

impl PublishArgs {
    /// The listing the arguments describe; a usage error when it is not valid.
    fn listing(&self) -> Result<Listing, UsageError> {
        let mut fields = Map::new();
        fields.insert("service".into(), Value::String(self.service.clone()));
        fields.insert("host".into(), Value::String(self.host.clone()));
        for (key, value) in &self.fields {
            if fields.insert(key.clone(), value.clone()).is_some() {
                return Err(UsageError(format!("field `{key}` is given twice")));
            }
        }
        Listing::from_map(fields, &hakken::Limits::default())
            .map_err(|e| UsageError(format!("invalid listing: {e}")))
    }
}

/// `hakken watch SERVICE [--filter KEY=VALUE ...] [--random N]`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Service name.
    #[arg(value_parser = service_name)]
    service: String,
    /// Only listings whose field KEY equals VALUE (KEY=VALUE and KEY:=JSON as in
    /// publish's fields).
    #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = parse_field)]
    filters: Vec<(String, Value)>,
    /// Hand out N random listings instead of all (N at least 1).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    random: Option<usize>,
    /// Poll interval in ms for coordinators without blocking queries (the
    /// original's) [default: the coordinator's heartbeat interval, else 20000].
    #[arg(long, value_name = "MS", value_parser = positive_ms)]
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
    #[arg(value_parser = service_name)]
    service: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Publishes one listing and keeps it alive until interrupted, then withdraws it.
/// Exits 1 when it could not be withdrawn from every coordinator, naming those.
pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let listing = args.listing()?;
    let connection = args.connection;
    logging::init(LogFormat::Text, "warn");
    let stop = shutdown_signal(true);
    tokio::pin!(stop);
    let stopped = || {
        anyhow!("stopped before a coordinator took {listing} (one that took it meanwhile lets it expire)")
    };
    // Starting and the first publication can take a while (each call up to
    // --timeout): a signal meanwhile ends them. Biased: a step that is done goes
    // on, so a listing that was published is withdrawn below.
    let client = tokio::select! {
        biased;
        client = connection.start(args.heartbeat_interval) => client?,
        () = &mut stop => return Err(stopped()),
    };
    let first = tokio::select! {
        biased;
        first = first_publication(&connection, &client, &listing) => first,
        () = &mut stop => {
            client.close().await;
            return Err(stopped());
        }
    };
    if let Err(error) = first {
        client.close().await;
        return Err(error);
    }
    client.publish(listing.clone()).await?;
    eprintln!(
        "published {listing}; heartbeat to each of the {} coordinator(s) known, every {} ms; Ctrl-C to withdraw",
        client.coordinators().len().max(1),
        client.heartbeat_interval().as_millis()
    );
    stop.await;
    let failed = client.close_reporting().await;
    if failed.is_empty() {
        eprintln!("withdrawn {listing}");
        return Ok(ExitCode::SUCCESS);
    }
    for error in &failed {
        let why = connection.explain(error).await;
        eprintln!("hakken: {listing} not withdrawn: {why}; it expires there");
    }
    Ok(ExitCode::FAILURE)
}

/// Rounds of the first publication before `publish` gives up, and the pause
/// between them: a coordinator briefly at its limits or slow is waited for.
const FIRST_ROUNDS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// Publishes `listing` to the first coordinator the client knows that takes it,
/// so that a refusal (a token missing or refused, a listing it will not take),
/// coordinators that keep failing, or coordinators this machine cannot connect to
/// are an error now, rather than a warning at every heartbeat while nothing is
/// published. A coordinator that fails is left to the client, which publishes to
/// every coordinator next and retries those that failed. (Not through the
/// configured host: behind a load balancer that could land the listing on a
/// coordinator the client does not know yet, where it would expire.)
async fn first_publication(
    connection: &Connection,
    client: &Client,
    listing: &Listing,
) -> anyhow::Result<()> {
    let remote = connection.remote()?;
    let mut hosts = client.coordinators();
    if hosts.is_empty() {
        hosts.push(connection.coordinator.clone());
    }
    let mut failures = Vec::new();
    for round in 1..=FIRST_ROUNDS {
        failures.clear();
        for host in &hosts {
            match remote.publish(host, listing, false).await {
                Ok(()) => return Ok(()),
                Err(
                    error @ RemoteError::Status {
                        status: 400..=499, ..
                    },
                ) => return Err(anyhow!(connection.explain(&error).await)),
                Err(error) => failures.push(error),
            }
        }
        // Nothing to wait for when no connection could be made at all.
        if round < FIRST_ROUNDS && !failures.iter().all(RemoteError::never_connected) {
            tokio::time::sleep(FIRST_PAUSE).await;
        } else {
            break;
        }
    }
    let Some(last) = failures.last() else {
        return Ok(());
    };
    let mut message = format!(
        "no coordinator took {listing}: {}",
        connection.explain(last).await
    );
    // Clients publish to the names the coordinators announce, not to the address
    // they were given: a name that cannot be connected to from here, while that
    // address answers, is a coordinator's setting.
    if failures.iter().all(RemoteError::never_connected) && !hosts.contains(&connection.coordinator)
    {
        message.push_str(&format!(
            " (listings go to the names coordinators announce, here {}, not to {}: \
             give each coordinator an --announce-host this machine can reach)",
            hosts.join(", "),
            connection.coordinator
        ));
    }
    Err(anyhow!(message))
}

/// Prints the watched listings as one JSON array per line, again at every change.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection;
    // Which coordinator the watch follows, and when one answers again after an
    // outage (the outage itself is a warning): a watch that says nothing while it
    // shows what it last had would leave its user guessing.
    logging::init(LogFormat::Text, "warn,hakken::client::follow=info");
    let stop = shutdown_signal(true);
    tokio::pin!(stop);
    // Starting can take a while (each call up to --timeout): a signal meanwhile
    // ends the command.
    let client = tokio::select! {
        biased;
        client = connection.start(args.heartbeat_interval) => client?,
        () = &mut stop => return Ok(ExitCode::SUCCESS),
    };
    let mut builder = client.watch(&args.service);
    for (key, value) in args.filters {
        builder = builder.filter(key, value);
    }
    if let Some(n) = args.random {
        builder = builder.random(n);
    }
    let watch = builder.build();
    let started = tokio::select! {
        biased;
        started = watch.start() => started,
        () = &mut stop => {
            watch.close();
            client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Err(error) = started {
        let why = connection.explain_client(error).await;
        watch.close();
        client.close().await;
        return Err(anyhow!("cannot watch `{}`: {why}", args.service));
    }
    let printed = print_changes(&watch);
    tokio::select! {
        result = printed => result?,
        () = &mut stop => {}
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
    let remote = connection.remote()?;
    let host = &connection.coordinator;
    let answer = connection.check(remote.services(host, None).await).await?;
    let mut partial = answer.complete == Some(false);
    let mut rows = Vec::with_capacity(answer.value.len());
    for name in answer.value {
        let listings = connection
            .check(remote.listings(host, &name, None).await)
            .await?;
        partial |= listings.complete == Some(false);
        let count = listings.value.len();
        rows.push((name, count));
    }
    note(
        host,
        partial,
        rows.is_empty(),
        "no service has live listings",
    );
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
    let remote = connection.remote()?;
    let host = &connection.coordinator;
    let answer = connection
        .check(remote.listings(host, &args.service, None).await)
        .await?;
    let listings = answer.value;
    note(
        host,
        answer.complete == Some(false),
        listings.is_empty(),
        &format!("`{}` has no live listings", args.service),
    );
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
    let remote = connection.remote()?;
    let peers = connection
        .check(remote.coordinators(&connection.coordinator, None).await)
        .await?
        .value;
    print_output(output.json, &peers, &["HOST"], || {
        peers.iter().map(|p| vec![p.host().to_owned()]).collect()
    })
}

/// Tells on stderr what the output alone does not: that `host` answered before
/// it had every listing (it started with no complete peer to copy from, less than
/// a heartbeat interval ago, so publishers may not have reached it yet), and
/// `none` when nothing was found.
fn note(host: &str, partial: bool, empty: bool, none: &str) {
    if partial {
        eprintln!(
            "hakken: {host} is still warming up (it started with no complete peer to \
             copy listings from): listings whose publishers have not reached it yet are missing"
        );
    }
    if empty {
        eprintln!("hakken: {none} on {host}");
    }
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
