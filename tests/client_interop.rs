//! Our client against the original hakken's coordinator (npm 0.1.12): no blocking
//! queries, no announced heartbeat, no DELETE. Needs Node 20 and `npm ci` in
//! `interop/node` (done by `scripts/test`).

mod common;

use common::eventually;
use common::node::{NodeClient, NodeCoordinator};
use hakken::client::{Client, ClientConfig};
use hakken::Listing;
use serde_json::json;
use std::time::Duration;

const H: u64 = 200;

#[tokio::test]
async fn our_client_publishes_and_watches_through_the_original_coordinator() {
    let coordinator = NodeCoordinator::start(None, H, H * 10).await;
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

    // The original client sees it too, and heartbeats keep it alive past its TTL.
    let mut theirs = NodeClient::start(&coordinator.address(), H, H).await;
    theirs
        .ok(json!({"cmd": "watch", "watch": "w", "service": "mixed"}))
        .await;
    let got = theirs.get_until("w", |got| !got.is_empty()).await;
    assert_eq!(got, vec![blue.clone()]);
    tokio::time::sleep(Duration::from_millis(H * 6)).await;
    assert_eq!(watch.get(), want, "still listed after twice the TTL");

    // A change reaches our watch at a poll.
    let red = Listing::new("mixed", "red:1").unwrap();
    ours.publish(red.clone()).await.unwrap();
    eventually("our watch sees the second listing", || async {
        (watch.get().len() == 2).then_some(())
    })
    .await;

    // No DELETE there: unpublish and close still succeed; the listing expires.
    ours.unpublish(&red).await.unwrap();
    eventually("the unpublished listing expires", || async {
        (watch.get() == want).then_some(())
    })
    .await;
    theirs.close().await;
    ours.close().await;
    assert_eq!(ours.running_tasks(), 0);
    coordinator.kill().await;
}
