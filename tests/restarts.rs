//! Restarts under readers (issue #12): coordinators as real processes, killed with
//! SIGKILL and started again on the same address while readers keep asking.
//!
//! - A member of a cluster that restarts answers no read with fewer listings than
//!   its peers hold: reads that arrive while it copies wait for the copy.
//! - When every coordinator restarts at once there is nobody to copy from: a watch
//!   keeps its listings throughout (not one change of its selection), and every
//!   coordinator holds every listing again once the publishers have republished.
//!
//! - A coordinator that restarts without announcing itself (its announcement lost,
//!   as the original's is when a load balancer routes it back) is taken back by
//!   the peers that dropped it: they probe it while it is on their blacklist.
//!
//! Heartbeats every 200 ms, but listings live far longer than any test, so that
//! nothing here can expire on a slow machine: every listing missing from an answer
//! is missing because of a restart.

mod common;

use common::process::CoordinatorProcess;
use common::{coordinators_of, eventually, holds, hosts_of, knows, strings, PATIENCE};
use hakken::{Client, ClientConfig, Listing};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const H: Duration = Duration::from_millis(200);

/// A coordinator process: heartbeat `H`, listings living 1,000 `H`.
async fn coordinator(discovery: Option<&str>) -> CoordinatorProcess {
    coordinator_with(discovery, &[]).await
}

/// Like [`coordinator`], with more arguments.
async fn coordinator_with(discovery: Option<&str>, extra: &[&str]) -> CoordinatorProcess {
    let mut args = strings(&[
        "--announce-host",
        "127.0.0.1",
        "--heartbeat-interval",
        "200",
        "--missed-heartbeats-allowed",
        "1000",
        // A coordinator that had nobody to copy from is complete H plus this
        // after the cluster can know of it.
        "--request-timeout",
        "1000",
    ]);
    if let Some(discovery) = discovery {
        args.extend(strings(&["--discovery-host", discovery]));
    }
    args.extend(strings(extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    CoordinatorProcess::loopback(&args).await
}

/// Waits until the coordinator at `addr` says it is complete.
async fn complete(addr: &str) {
    eventually(&format!("{addr} is complete"), || async {
        let (status, body) = common::get(addr, "/ready").await;
        (status == 200 && body["complete"] == true).then_some(())
    })
    .await;
}

async fn client(host: &str) -> Client {
    let client = Client::new(
        ClientConfig::new(host)
            .heartbeat_interval(H)
            .poll_interval(H)
            .request_timeout(Duration::from_secs(2)),
    );
    tokio::time::timeout(PATIENCE, client.start())
        .await
        .expect("start is bounded")
        .expect("client starts");
    client
}

/// What a reader saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Answers listing every listing.
    complete: usize,
    /// Answers listing fewer.
    incomplete: usize,
    /// No answer: refused while the coordinator was down, or timed out.
    failed: usize,
}

/// Reads `service` from `addr` until `stop`, counting answers by how many of
/// `expected` listings they hold.
fn reader(
    addr: String,
    service: &'static str,
    expected: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        hakken::tls::install_default_provider();
        let http = reqwest::Client::new();
        let mut seen = Seen::default();
        while !stop.load(Ordering::SeqCst) {
            let answer = http
                .get(format!("http://{addr}/v1/listings/{service}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let count = match answer {
                Ok(response) if response.status() == 404 => Some(0),
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|body| body.as_array().map(Vec::len)),
                Err(_) => None,
            };
            match count {
                Some(n) if n >= expected => seen.complete += 1,
                Some(_) => seen.incomplete += 1,
                None => seen.failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

#[tokio::test]
async fn a_restarted_member_never_answers_with_fewer_listings_than_its_peers() {
    let a = coordinator(None).await;
    let b = coordinator(Some(&a.address())).await;
    let mut c = coordinator(Some(&a.address())).await;
    let all = [a.address(), b.address(), c.address()];
    // 20 listings from 5 publishers, on all three.
    let mut publishers = Vec::new();
    let mut expected = Vec::new();
    for p in 0..5 {
        let publisher = client(&a.address()).await;
        knows(&publisher, &all).await;
        for l in 0..4 {
            let host = format!("p{p}-{l}:1");
            publisher
                .publish(Listing::new("pay", &host).unwrap())
                .await
                .unwrap();
            expected.push(host);
        }
        publishers.push(publisher);
    }
    expected.sort();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    for addr in &all {
        complete(addr).await;
        holds(addr, "pay", &expected).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(c.address(), "pay", expected.len(), stop.clone());
    for round in 0..3 {
        c.kill9().await;
        c.restart().await;
        let restarted = Instant::now();
        holds(&c.address(), "pay", &expected).await;
        eprintln!(
            "restart {round}: complete again {:?} after it started",
            restarted.elapsed()
        );
    }
    // Some more reads after the last restart, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = reading.await.unwrap();
    eprintln!("reads of the restarted coordinator: {seen:?}");
    assert_eq!(seen.incomplete, 0, "{seen:?}");
    assert!(seen.complete > 0, "{seen:?}");
    for publisher in publishers {
        publisher.close().await;
    }
}

#[tokio::test]
async fn when_every_coordinator_restarts_at_once_a_watch_keeps_its_listings() {
    let mut a = coordinator(None).await;
    let mut b = coordinator(Some(&a.address())).await;
    let all = [a.address(), b.address()];
    let mut publishers = Vec::new();
    let hosts = ["x:1", "y:1", "z:1"];
    for host in hosts {
        let publisher = client(&a.address()).await;
        knows(&publisher, &all).await;
        publisher
            .publish(Listing::new("svc", host).unwrap())
            .await
            .unwrap();
        publishers.push(publisher);
    }
    for addr in &all {
        complete(addr).await;
        holds(addr, "svc", &hosts).await;
    }
    let watcher = client(&a.address()).await;
    let watch = watcher.watch("svc").build();
    watch.start().await.unwrap();
    common::sees(&watch, &hosts).await;
    let mut selection = watch.subscribe();
    selection.borrow_and_update();

    // Every coordinator dies, and comes back with nothing and nobody to copy from.
    a.kill9().await;
    b.kill9().await;
    a.restart().await;
    b.restart().await;
    let restarted = Instant::now();
    for addr in &all {
        holds(addr, "svc", &hosts).await;
    }
    eprintln!(
        "whole-cluster restart: every listing on every coordinator {:?} after the restarts",
        restarted.elapsed()
    );
    for addr in &all {
        complete(addr).await;
    }
    // Not one change of the selection through all of it (the channel counts every
    // change, however brief).
    assert!(!selection.has_changed().unwrap(), "the selection changed");
    assert_eq!(hosts_of(&watch.get()), hosts);
    // And changes still reach the watch afterwards.
    publishers[0]
        .unpublish(&Listing::new("svc", "x:1").unwrap())
        .await
        .unwrap();
    common::sees(&watch, &["y:1", "z:1"]).await;
    for publisher in publishers {
        publisher.close().await;
    }
    watcher.close().await;
}

/// Found by the soak: the original's coordinator restarted, its announcement went
/// through nginx back to itself and was lost, and our coordinators, having dropped
/// it, did not know it again until its resync ten heartbeats later; publishers that
/// started meanwhile never sent it their listings.
#[tokio::test]
async fn a_dropped_coordinator_that_comes_back_unannounced_is_taken_back() {
    // A probes B while B is on its blacklist, which lasts a resync period: made
    // long, so that B's restart always comes within it on a slow machine.
    let a = coordinator_with(None, &["--resync-interval", "600000"]).await;
    // B has no discovery host: it never announces itself, so only A's probes can
    // find it again after its restart.
    let mut b = coordinator(None).await;
    common::post_created(
        &a.address(),
        "/v1/coordinator",
        serde_json::json!({ "host": b.address() }).to_string(),
    )
    .await;
    let both = {
        let mut both = vec![a.address(), b.address()];
        both.sort();
        both
    };
    eventually("A lists B", || async {
        (coordinators_of(&a.address()).await == both).then_some(())
    })
    .await;

    b.kill9().await;
    eventually("A drops B", || async {
        (coordinators_of(&a.address()).await == vec![a.address()]).then_some(())
    })
    .await;
    b.restart().await;
    eventually("A takes B back", || async {
        (coordinators_of(&a.address()).await == both).then_some(())
    })
    .await;
}
