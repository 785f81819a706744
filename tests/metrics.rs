//! `GET /metrics`: the numbers move as the coordinator works.

mod common;

use common::Address;

use common::{config, current_index, delete, eventually, http, post, start};
use std::time::Duration;

#[tokio::test]
async fn the_numbers_move_as_they_should() {
    // Listings that cannot expire during the test: every count below is exact.
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 1_000_000;
    let c = start(cfg).await;
    let addr = c.address();
    let text = common::scrape(&addr).await;
    assert_eq!(common::sample(&text, "hakken_listings"), 0.0);
    assert_eq!(common::sample(&text, "hakken_coordinators"), 1.0);

    post(&addr, "/v1/listings", r#"{"service":"a","host":"h:1"}"#).await;
    post(
        &addr,
        "/v1/listings?heartbeat=true",
        r#"{"service":"a","host":"h:1"}"#,
    )
    .await;
    post(
        &addr,
        "/v1/listings?heartbeat=true",
        r#"{"service":"a","host":"h:1","v":2}"#,
    )
    .await;
    post(&addr, "/v1/listings", r#"{"service":"b","host":"h:1"}"#).await;
    post(&addr, "/v1/listings", r#"{"service":"b","host":"h:2"}"#).await;
    post(&addr, "/v1/listings", "[1]").await;
    delete(&addr, "/v1/listings/b/h:2").await;
    let text = common::scrape(&addr).await;
    assert_eq!(common::sample(&text, "hakken_listings"), 2.0);
    assert_eq!(common::sample(&text, "hakken_services"), 2.0);
    assert_eq!(
        common::sample(&text, "hakken_heartbeats_received_total"),
        5.0
    );
    assert_eq!(common::sample(&text, "hakken_listings_added_total"), 3.0);
    assert_eq!(common::sample(&text, "hakken_listings_replaced_total"), 1.0);
    assert_eq!(common::sample(&text, "hakken_listings_deleted_total"), 1.0);
    assert_eq!(
        common::sample(
            &text,
            r#"hakken_http_requests_total{method="POST",route="/v1/listings",status="201"}"#
        ),
        5.0
    );
    assert_eq!(
        common::sample(
            &text,
            r#"hakken_http_requests_total{method="POST",route="/v1/listings",status="400"}"#
        ),
        1.0
    );
    assert!(
        text.contains(r#"hakken_http_request_duration_seconds_count{route="/v1/listings"} 6"#),
        "{text}"
    );

    // A held query shows while held.
    let index = current_index(&addr, "/v1/listings/zzz").await;
    let waiter = {
        let addr = addr.clone();
        tokio::spawn(async move {
            http()
                .get(format!(
                    "http://{addr}/v1/listings/zzz?index={index}&wait=5m"
                ))
                .send()
                .await
        })
    };
    eventually("the held query shows", || async {
        (common::sample(&common::scrape(&addr).await, "hakken_held_queries") == 1.0).then_some(())
    })
    .await;

    // Gossip failures against a coordinator that is not there.
    post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:1"}"#).await;
    eventually("the dead peer's poll fails", || async {
        let text = common::scrape(&addr).await;
        (common::sample(&text, "hakken_gossip_poll_failures_total") >= 1.0).then_some(())
    })
    .await;
    post(&addr, "/v1/listings", r#"{"service":"zzz","host":"h:1"}"#).await;
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        common::metric(&addr, "hakken_listings_expired_total").await,
        0.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn expiries_are_counted() {
    // Listings live 200 ms without a heartbeat.
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 2;
    let c = start(cfg).await;
    let addr = c.address();
    post(&addr, "/v1/listings", r#"{"service":"a","host":"h:1"}"#).await;
    post(&addr, "/v1/listings", r#"{"service":"b","host":"h:1"}"#).await;
    eventually("both listings expire", || async {
        let text = common::scrape(&addr).await;
        (common::sample(&text, "hakken_listings_expired_total") == 2.0
            && common::sample(&text, "hakken_listings") == 0.0)
            .then_some(())
    })
    .await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_metric_is_in_the_readme() {
    const README: &str = include_str!("../README.md");
    let mut cfg = config(60_000);
    cfg.dns_port = Some(0);
    let c = start(cfg).await;
    let text = common::scrape(&c.address()).await;
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.len() > 10, "{text}");
    for name in names {
        // Named whole, or by its last word after a sibling (`_replaced`).
        let last = name.rsplit('_').next().unwrap_or(name);
        assert!(
            README.contains(&format!("`{name}")) || README.contains(&format!("`_{last}`")),
            "README lists no metric {name}"
        );
    }
    c.shutdown().await.unwrap();
}
