//! Interoperability with the original hakken (npm 0.1.12), both directions: its
//! client against our coordinator, mixed clusters, and expiry parity.
//! Needs Node 20 and `npm ci` in `interop/node` (done by `scripts/test`).

mod common;

use common::Address;

use common::node::{NodeClient, NodeCoordinator};
use common::{config, coordinators_of, eventually, get, post, start};
use hakken::coordinator::CoordinatorConfig;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const H: u64 = 200;

fn ours(discovery: Option<String>) -> CoordinatorConfig {
    let mut cfg = config(H);
    cfg.discovery_host = discovery;
    cfg.resync_interval = Some(Duration::from_millis(H * 2));
    cfg
}

#[tokio::test]
async fn the_original_client_publishes_and_watches_through_our_coordinator() {
    let coordinator = start(ours(None)).await;
    let mut client = NodeClient::start(&coordinator.address(), H, H).await;
    let blue = json!({
        "service": "interop-1", "host": "blue:1", "color": "blue",
        "extra": {"nested": [1, {"deep": true}], "n": 1.5}
    });
    let red = json!({"service": "interop-1", "host": "red:1", "color": "red"});
    client.ok(json!({"cmd": "publish", "listing": blue})).await;
    client.ok(json!({"cmd": "publish", "listing": red})).await;

    // Our coordinator holds both, every field intact.
    let (status, listings) = get(&coordinator.address(), "/v1/listings/interop-1").await;
    assert_eq!(status, 200);
    assert_eq!(listings, json!([blue, red]));

    client
        .ok(json!({"cmd": "randomWatch", "watch": "any", "service": "interop-1"}))
        .await;
    client
        .ok(json!({"cmd": "watch", "watch": "blue", "service": "interop-1", "filter": {"color": "blue"}}))
        .await;
    let picked = client.get_until("any", |got| got.len() == 1).await;
    assert!(picked[0] == blue || picked[0] == red, "{picked:?}");
    let filtered = client.get_until("blue", |got| !got.is_empty()).await;
    assert_eq!(filtered, vec![blue.clone()]);
    client.close().await;
    coordinator.shutdown().await.unwrap();
}

async fn all_list(addresses: &[String], expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    for addr in addresses {
        eventually(&format!("{addr} lists {expected:?}"), || {
            let (addr, expected) = (addr.clone(), expected.clone());
            async move { (coordinators_of(&addr).await == expected).then_some(()) }
        })
        .await;
    }
}

/// One original and two of ours, `discovery` being the one all start from.
async fn mixed_cluster(original_is_discovery: bool) {
    let (node, a) = if original_is_discovery {
        let node = NodeCoordinator::start(None, H, H * 2).await;
        let a = start(ours(Some(node.address()))).await;
        (node, a)
    } else {
        let a = start(ours(None)).await;
        let node = NodeCoordinator::start(Some(&a.address()), H, H * 2).await;
        (node, a)
    };
    let discovery = if original_is_discovery {
        node.address()
    } else {
        a.address()
    };
    let b = start(ours(Some(discovery))).await;
    let addresses = [node.address(), a.address(), b.address()];
    let hosts = [node.host(), a.host().to_owned(), b.host().to_owned()];
    all_list(&addresses, &hosts).await;

    // A client given one coordinator publishes to all three.
    let mut client = NodeClient::start(&b.address(), H, H).await;
    let listing = json!({"service": "mixed", "host": "svc:1", "v": [1, 2]});
    client
        .ok(json!({"cmd": "publish", "listing": listing}))
        .await;
    for addr in &addresses {
        eventually(&format!("{addr} has the listing"), || {
            let (addr, listing) = (addr.clone(), listing.clone());
            async move { (get(&addr, "/v1/listings/mixed").await.1 == json!([listing])).then_some(()) }
        })
        .await;
    }
    client.close().await;

    // A stopped coordinator is dropped by the others: first one of ours...
    b.shutdown().await.unwrap();
    all_list(&addresses[..2], &hosts[..2]).await;
    // ...then the original.
    node.kill().await;
    all_list(&addresses[1..2], &hosts[1..2]).await;
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_mixed_cluster_from_an_original_discovery_host() {
    mixed_cluster(true).await;
}

#[tokio::test]
async fn a_mixed_cluster_from_our_discovery_host() {
    mixed_cluster(false).await;
}

/// How long after a listing was POSTed once (from just before the POST was sent)
/// an answer saying it is gone came back (the GET may have been sent before the
/// listing expired, and answered after).
async fn time_to_expiry(addr: &str, service: &str) -> Duration {
    let body = json!({"service": service, "host": "h:1"}).to_string();
    let sent = Instant::now();
    assert_eq!(post(addr, "/v1/listings", body).await.0, 201);
    let path = format!("/v1/listings/{service}");
    eventually(&format!("{service} expires on {addr}"), || {
        let path = path.clone();
        async move { (get(addr, &path).await.0 == 404).then(|| sent.elapsed()) }
    })
    .await
}

#[tokio::test]
async fn listings_expire_in_the_same_window_as_the_original() {
    // H = 200 ms, 3 missed heartbeats: a listing lives 600 ms; the original reaps
    // every H, so it goes between 600 and 800 ms after its heartbeat.
    let ttl = Duration::from_millis(H * 3);
    let node = NodeCoordinator::start(None, H, H * 10).await;
    let ours = start(ours(None)).await;
    let (node_addr, our_addr) = (node.address(), ours.address());
    let (theirs, mine) = tokio::join!(
        time_to_expiry(&node_addr, "parity"),
        time_to_expiry(&our_addr, "parity"),
    );
    eprintln!("expired after: original {theirs:?}, ours {mine:?} (ttl {ttl:?}, H {H} ms)");
    // The answer that first said it is gone came after the expiry, which is at
    // least one ttl after the POST was sent: neither may expire a listing early.
    assert!(mine >= ttl, "ours expired early: {mine:?}");
    assert!(theirs >= ttl, "the original expired early: {theirs:?}");
    // Both expire it: the eventually() above waits for it on each.
    node.kill().await;
    ours.shutdown().await.unwrap();
}

#[tokio::test]
async fn our_watch_sees_what_the_original_client_publishes_on_the_original_coordinator() {
    let node = NodeCoordinator::start(None, H, H * 10).await;
    let mut theirs = NodeClient::start(&node.address(), H, H).await;
    let listing = json!({"service": "theirs", "host": "n:1", "deep": {"a": [1, {"b": null}]}});
    theirs
        .ok(json!({"cmd": "publish", "listing": listing}))
        .await;

    let config = hakken::ClientConfig::new(node.address())
        .heartbeat_interval(Duration::from_millis(H))
        .poll_interval(Duration::from_millis(H));
    let ours = hakken::Client::new(config);
    ours.start().await.unwrap();
    let watch = ours.watch("theirs").build();
    watch.start().await.unwrap();
    let want = vec![hakken::Listing::try_from(listing.clone()).unwrap()];
    eventually("our watch sees the original client's listing", || async {
        (watch.get() == want).then_some(())
    })
    .await;
    ours.close().await;
    theirs.close().await;
    node.kill().await;
}

/// Runs the `hakken` binary against `coordinator`; returns (exit code, stdout).
async fn hakken_cli(coordinator: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hakken"))
        .env_remove("HAKKEN_TOKEN")
        .env("HAKKEN_COORDINATOR", coordinator)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn our_commands_work_against_the_original_coordinator() {
    use tokio::io::AsyncBufReadExt;
    let node = NodeCoordinator::start(None, H, H * 10).await;
    let addr = node.address();
    let mut theirs = NodeClient::start(&addr, H, H).await;
    let first = json!({"service": "cli", "host": "a:1", "zone": "eu"});
    theirs.ok(json!({"cmd": "publish", "listing": first})).await;

    let (code, out) = hakken_cli(&addr, &["services"]).await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "SERVICE  LISTINGS\ncli      1\n")
    );
    let (code, out) = hakken_cli(&addr, &["listings", "cli", "--json"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!([first])
    );
    let (code, out) = hakken_cli(&addr, &["listings", "none"]).await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "HOST  FIELDS\n"),
        "the original's 404 is empty"
    );
    let (code, out) = hakken_cli(&addr, &["coordinators", "--json"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!([{"host": node.host()}])
    );

    // `watch` polls the original (no blocking queries there).
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_hakken"))
        .env("HAKKEN_COORDINATOR", &addr)
        .args(["watch", "cli", "--heartbeat-interval", &H.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(common::PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("watch keeps running");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await, json!([first]));
    let second = json!({"service": "cli", "host": "b:1"});
    theirs
        .ok(json!({"cmd": "publish", "listing": second}))
        .await;
    assert_eq!(next().await.as_array().unwrap().len(), 2);
    theirs.close().await;
    node.kill().await;
}

#[tokio::test]
async fn ours_joining_a_cluster_of_the_original_is_complete_on_its_first_answer() {
    // The original's coordinator holds listings (its heartbeat is a minute, so
    // none expires); ours copies them through the v1 routes when it joins.
    let node = NodeCoordinator::start(None, 60_000, 600_000).await;
    let listings: Vec<serde_json::Value> = (0..12)
        .map(|i| json!({"service": if i % 2 == 0 { "even" } else { "odd" }, "host": format!("n{i}:1"), "i": i}))
        .collect();
    for listing in &listings {
        assert_eq!(
            post(&node.address(), "/v1/listings", listing.to_string())
                .await
                .0,
            201
        );
    }
    let mut cfg = config(60_000);
    cfg.discovery_host = Some(node.address());
    let c = start(cfg).await;
    // The first answers, asked at once.
    let (status, even) = get(&c.address(), "/v1/listings/even").await;
    assert_eq!(status, 200);
    let by_host = |l: &&serde_json::Value| l["host"].as_str().unwrap().to_owned();
    let mut expected: Vec<&serde_json::Value> = listings.iter().step_by(2).collect();
    expected.sort_by_key(by_host);
    assert_eq!(
        even.as_array().unwrap().iter().collect::<Vec<_>>(),
        expected,
        "every field intact"
    );
    assert_eq!(
        get(&c.address(), "/v1/listings").await.1,
        json!(["even", "odd"])
    );
    assert!(c.is_complete());
    // And the original learns of ours from its announcement.
    eventually("the original lists ours", || async {
        coordinators_of(&node.address())
            .await
            .contains(&c.host().to_owned())
            .then_some(())
    })
    .await;
    c.shutdown().await.unwrap();
}
