//! Our client against the original hakken's coordinator (npm 0.1.12): no blocking
//! queries, no announced heartbeat, no DELETE. Needs Node 20 and `npm ci` in
//! `interop/node` (done by `scripts/test`).

mod common;

use common::node::{NodeClient, NodeCoordinator};
use common::{eventually, Address};
use hakken::client::{Client, ClientConfig};
use hakken::Listing;
use serde_json::json;
use std::time::Duration;

const H: u64 = 200;

/// One of ours, with heartbeat `h_ms`, joining through `original`.
async fn ours_through(original: &NodeCoordinator, h_ms: u64) -> hakken::coordinator::Coordinator {
    let mut config = common::config(h_ms);
    config.discovery_host = Some(original.address());
    common::start(config).await
}

#[tokio::test]
async fn our_client_publishes_and_watches_through_the_original_coordinator() {
    // Listings live 1,000 H there: nothing can expire during the test, and what
    // shows that heartbeats go on is the original's own count of them.
    let coordinator = NodeCoordinator::start_reporting(H, 1_000).await;
    // The original announces no heartbeat interval: set it, or listings expire.
    let config = ClientConfig::new(coordinator.address())
        .heartbeat_interval(Duration::from_millis(H))
        .poll_interval(Duration::from_millis(H));
    let ours = Client::new(config);
    ours.start().await.unwrap();
    assert_eq!(ours.heartbeat_interval(), Duration::from_millis(H));

    let blue = json!({"service": "mixed", "host": "blue:1", "extra": {"n": [1, 2]}});
    ours.publish(Listing::try_from(blue.clone()).unwrap())
        .await
        .unwrap();
    let watch = ours.watch("mixed").build();
    watch.start().await.unwrap();
    let want = vec![Listing::try_from(blue.clone()).unwrap()];
    eventually("our watch sees the listing (by polling)", || async {
        (watch.get() == want).then_some(())
    })
    .await;

    // The original client sees it too, and our heartbeats reach the original.
    let mut theirs = NodeClient::start(&coordinator.address(), H, H).await;
    theirs
        .ok(json!({"cmd": "watch", "watch": "w", "service": "mixed"}))
        .await;
    let got = theirs.get_until("w", |got| !got.is_empty()).await;
    assert_eq!(got, vec![blue.clone()]);
    eventually("six heartbeats reach the original", || async {
        (coordinator.requests("POST /v1/listings?heartbeat=true 201") >= 6).then_some(())
    })
    .await;
    assert_eq!(watch.get(), want);

    // A change reaches our watch at a poll.
    let red = Listing::new("mixed", "red:1").unwrap();
    ours.publish(red.clone()).await.unwrap();
    eventually("our watch sees the second listing", || async {
        (watch.get().len() == 2).then_some(())
    })
    .await;

    // No DELETE there: unpublish still succeeds (the original answered the
    // withdrawal with an error, and the listing will expire there).
    ours.unpublish(&red).await.unwrap();
    eventually("the original got the withdrawal", || async {
        (coordinator.requests("DELETE /v1/listings/mixed/red%3A1 4") == 1).then_some(())
    })
    .await;
    assert_eq!(ours.published(), want);
    theirs.close().await;
    ours.close().await;
    assert_eq!(ours.running_tasks(), 0);
    coordinator.kill().await;
}

#[tokio::test]
async fn a_watch_leaves_the_original_coordinator_for_one_of_ours() {
    // The original is the way in, and the only coordinator when the watch starts:
    // the watch follows it, by polling.
    let original = NodeCoordinator::start(None, 60_000, 600_000).await;
    let config = ClientConfig::new(original.address())
        .heartbeat_interval(Duration::from_millis(H))
        .poll_interval(Duration::from_secs(60));
    let client = Client::new(config);
    client.start().await.unwrap();
    client
        .publish(Listing::new("mixed", "blue:1").unwrap())
        .await
        .unwrap();
    let watch = client.watch("mixed").build();
    watch.start().await.unwrap();
    assert_eq!(
        watch.coordinator().as_deref(),
        Some(original.host().as_str())
    );
    // One of ours joins through the original. The client learns of it (its polls
    // a minute apart: through its coordinator list, followed on the original every
    // heartbeat), and the watch moves to it for its blocking queries.
    let ours = ours_through(&original, 60_000).await;
    let host = ours.host().to_owned();
    eventually("the watch follows our coordinator", || async {
        (watch.coordinator().as_deref() == Some(host.as_str())).then_some(())
    })
    .await;
    client.close().await;
    ours.shutdown().await.unwrap();
}

/// Found by the 30-minute soak: a publisher whose way in (through the load
/// balancer) was the original's coordinator, which announces no heartbeat
/// interval, heartbeated at the 20 s default until its follower reached one of
/// ours, seconds later; in a cluster with H = 1 s its new listing expired meanwhile.
#[tokio::test]
async fn a_client_started_through_the_original_learns_the_interval_from_ours_at_start() {
    let original = NodeCoordinator::start(None, 60_000, 600_000).await;
    let ours = ours_through(&original, 700).await;
    let ours_host = ours.host().to_owned();
    eventually("the original lists ours", || async {
        common::coordinators_of(&original.address())
            .await
            .contains(&ours_host)
            .then_some(())
    })
    .await;
    let client = Client::new(ClientConfig::new(original.address()));
    client.start().await.unwrap();
    assert_eq!(
        client.heartbeat_interval(),
        Duration::from_millis(700),
        "ours announced its interval before start returned"
    );
    client.close().await;
    ours.shutdown().await.unwrap();
}

/// The same, when the original's coordinator lists only itself (it shunned the
/// others): the way in (a load balancer) is asked again, and reaches one of ours.
#[tokio::test]
async fn a_client_asks_the_way_in_again_when_the_original_lists_only_itself() {
    let original = NodeCoordinator::start(None, 60_000, 600_000).await;
    let ours = common::start(common::config(700)).await;
    let (balancer, _task) = common::scripted_balancer(vec![
        original.address(),
        original.address(),
        ours.local_addr().to_string(),
    ])
    .await;
    let client = Client::new(ClientConfig::new(balancer));
    client.start().await.unwrap();
    assert_eq!(client.heartbeat_interval(), Duration::from_millis(700));
    client.close().await;
    ours.shutdown().await.unwrap();
}

/// Found by the 30-minute soak: every one of ours went down at once (a restart of
/// the whole cluster), and a watch failed over to the original's coordinator, which
/// has no withdrawal and still listed a publisher that had closed seconds before.
/// The watch took that listing back, and kept it until ours were complete again.
#[tokio::test]
async fn a_watch_failing_over_to_the_original_does_not_take_back_what_ours_withdrew() {
    // Listings live 3 minutes on the original: the withdrawn one is still there
    // when the watch reaches it, whatever the machine's pace.
    let original = NodeCoordinator::start(None, 60_000, 600_000).await;
    let ours = ours_through(&original, 60_000).await;
    let both = vec![ours.host().to_owned(), original.host()];
    let publisher = Client::new(ClientConfig::new(ours.address()));
    publisher.start().await.unwrap();
    common::knows(&publisher, &both).await;
    let stay = Listing::new("stale", "stay:1").unwrap();
    let gone = Listing::new("stale", "gone:1").unwrap();
    publisher.publish(stay.clone()).await.unwrap();
    publisher.publish(gone.clone()).await.unwrap();
    common::holds(&original.address(), "stale", &["gone:1", "stay:1"]).await;

    // The watch follows ours (complete, with streams), and sees the withdrawal.
    let watcher =
        Client::new(ClientConfig::new(ours.address()).poll_interval(Duration::from_millis(H)));
    watcher.start().await.unwrap();
    common::knows(&watcher, &both).await;
    let watch = watcher.watch("stale").build();
    watch.start().await.unwrap();
    common::sees(&watch, &["gone:1", "stay:1"]).await;
    assert_eq!(watch.coordinator().as_deref(), Some(ours.host()));
    publisher.unpublish(&gone).await.unwrap();
    common::sees(&watch, &["stay:1"]).await;
    assert_eq!(
        common::held(&original.address(), "stale").await,
        Some(common::strings(&["gone:1", "stay:1"])),
        "the original has no withdrawal"
    );

    // A listing only the original has (ours copies nothing after its join): once
    // the watch has it, the watch has taken an answer of the original's.
    common::post_created(
        &original.address(),
        "/v1/listings",
        r#"{"service":"stale","host":"new:1"}"#,
    )
    .await;
    assert_eq!(
        common::held(ours.address().as_str(), "stale").await,
        Some(common::strings(&["stay:1"]))
    );

    // Ours goes: the watch moves to the original. (Which coordinator it follows at
    // a given moment is not asserted: with one of ours still known, it tries ours
    // again between polls of the original.)
    ours.shutdown().await.unwrap();
    eventually("the watch takes the original's answer", || async {
        watch
            .get()
            .iter()
            .any(|l| l.host() == "new:1")
            .then_some(())
    })
    .await;
    assert_eq!(
        common::hosts_of(&watch.get()),
        ["new:1", "stay:1"],
        "the withdrawn listing stays out"
    );
    watcher.close().await;
    publisher.close().await;
}
