//! `GET /metrics`: the numbers move as the coordinator works.

mod common;

use common::{config, current_index, delete, eventually, http, post, start};
use std::time::Duration;

async fn scrape(addr: &str) -> String {
    let response = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_numbers_move_as_they_should() {
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 2;
    let c = start(cfg).await;
    let addr = c.address();
    let text = scrape(&addr).await;
    assert_eq!(value(&text, "hakken_listings"), 0.0);
    assert_eq!(value(&text, "hakken_coordinators"), 1.0);

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
    let text = scrape(&addr).await;
    assert_eq!(value(&text, "hakken_listings"), 2.0);
    assert_eq!(value(&text, "hakken_services"), 2.0);
    assert_eq!(value(&text, "hakken_heartbeats_received_total"), 5.0);
    assert_eq!(value(&text, "hakken_listings_added_total"), 3.0);
    assert_eq!(value(&text, "hakken_listings_replaced_total"), 1.0);
    assert_eq!(value(&text, "hakken_listings_deleted_total"), 1.0);
    assert_eq!(
        value(
            &text,
            r#"hakken_http_requests_total{method="POST",route="/v1/listings",status="201"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
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
        (value(&scrape(&addr).await, "hakken_held_queries") == 1.0).then_some(())
    })
    .await;

    // Expiry, and gossip failures against a coordinator that is not there.
    post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:1"}"#).await;
    eventually("listings expire and the dead peer's poll fails", || async {
        let text = scrape(&addr).await;
        (value(&text, "hakken_listings_expired_total") == 2.0
            && value(&text, "hakken_gossip_poll_failures_total") >= 1.0
            && value(&text, "hakken_listings") == 0.0)
            .then_some(())
    })
    .await;
    post(&addr, "/v1/listings", r#"{"service":"zzz","host":"h:1"}"#).await;
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    c.shutdown().await.unwrap();
}
