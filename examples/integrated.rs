//! Two coordinators, a client that publishes and a client that watches, all in one
//! process: the original's `examples/integrated.js`, without the callbacks.
//!
//! ```text
//! cargo run --example integrated
//! ```
//!
//! Prints what the watch sees as a service comes, grows and goes; exits 0 when it
//! saw all of it, non-zero otherwise. Set `RUST_LOG=info` to see the machinery.

use anyhow::{bail, Context};
use hakken::client::{Client, ClientConfig};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use hakken::{Listing, Watch};
use std::time::Duration;
use tokio::time::timeout;

/// The coordinators' heartbeat; clients adopt it.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long any one step may take.
const STEP: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    timeout(Duration::from_secs(9), run())
        .await
        .context("the example took too long")?
}

async fn run() -> anyhow::Result<()> {
    // 1. Two coordinators: the second finds the first through its discovery host.
    let config = |discovery: Option<String>| CoordinatorConfig {
        announce_host: "127.0.0.1".into(),
        heartbeat_interval: HEARTBEAT,
        discovery_host: discovery,
        ..CoordinatorConfig::default()
    };
    let first = Coordinator::bind("127.0.0.1:0", config(None)).await?;
    let second =
        Coordinator::bind("127.0.0.1:0", config(Some(first.local_addr().to_string()))).await?;
    println!("coordinators: {} and {}", first.host(), second.host());

    // 2. A client publishes through the first coordinator...
    let publisher =
        Client::new(ClientConfig::new(first.local_addr().to_string()).poll_interval(HEARTBEAT));
    publisher.start().await?;
    let hello = Listing::new("hello", "localhost:1234")?.with("protocol", "http");
    publisher.publish(hello).await?;

    // 3. ...and another watches through the second. Publishing reaches every
    //    coordinator the publisher knows, so the watch may need a heartbeat or two.
    let watcher =
        Client::new(ClientConfig::new(second.local_addr().to_string()).poll_interval(HEARTBEAT));
    watcher.start().await?;
    let watch = watcher.watch("hello").build();
    watch.start().await?;
    let seen = until(&watch, |l| l.len() == 1).await?;
    println!("the watch sees: {}", show(&seen));

    // 4. A second instance appears; the watch follows.
    publisher
        .publish(Listing::new("hello", "localhost:1235")?.with("protocol", "http"))
        .await?;
    let seen = until(&watch, |l| l.len() == 2).await?;
    println!("then: {}", show(&seen));

    // 5. The publisher closes: its listings are withdrawn, the watch empties.
    publisher.close().await;
    let seen = until(&watch, |l| l.is_empty()).await?;
    println!("after the publisher closed: {}", show(&seen));

    watcher.close().await;
    first.shutdown().await?;
    second.shutdown().await?;
    println!("ok");
    Ok(())
}

/// Waits (at most one [`STEP`]) until the watch's selection satisfies `done`.
async fn until(watch: &Watch, done: impl Fn(&[Listing]) -> bool) -> anyhow::Result<Vec<Listing>> {
    let mut selection = watch.subscribe();
    let wait = async {
        loop {
            let current = selection.borrow_and_update().clone();
            if done(&current) {
                return Ok(current);
            }
            if selection.changed().await.is_err() {
                bail!("the watch stopped");
            }
        }
    };
    timeout(STEP, wait)
        .await
        .with_context(|| format!("the watch still shows {}", show(&watch.get())))?
}

fn show(listings: &[Listing]) -> String {
    if listings.is_empty() {
        return "nothing".into();
    }
    let all: Vec<String> = listings.iter().map(|l| l.to_value().to_string()).collect();
    all.join(", ")
}
