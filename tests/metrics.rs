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

/// The metrics the README's `GET /metrics` paragraph lists, each whole: a name
/// after a sibling (`hakken_listings_added`, `_replaced`) takes the sibling's
/// words before its own.
fn metrics_in_the_readme() -> std::collections::BTreeSet<String> {
    const README: &str = include_str!("../README.md");
    let start = README
        .find("`GET /metrics` is Prometheus' text format:")
        .expect("the README has the metrics paragraph");
    let paragraph = README[start..].split("\n\n").next().unwrap();
    let mut names = std::collections::BTreeSet::new();
    let mut last = String::new();
    // Every other piece between backquotes is quoted.
    for quoted in paragraph.split('`').skip(1).step_by(2) {
        if quoted.starts_with("hakken_") {
            last = quoted.to_owned();
        } else if quoted.starts_with('_') && quoted != "_total" {
            let words = quoted.matches('_').count();
            let kept: Vec<&str> = last.split('_').collect();
            let kept = kept[..kept.len() - words].join("_");
            last = format!("{kept}{quoted}");
        } else {
            continue;
        }
        names.insert(last.clone());
    }
    names
}

#[tokio::test]
async fn the_readme_lists_every_metric_and_no_other() {
    let mut cfg = config(60_000);
    cfg.dns_port = Some(0);
    let c = start(cfg).await;
    // A family with labels is exported once it has a sample: one HTTP request
    // (the first scrape) and one DNS question give them theirs.
    common::scrape(&c.address()).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut question = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["x", "service", "hakken"] {
        question.push(label.len() as u8);
        question.extend_from_slice(label.as_bytes());
    }
    question.extend_from_slice(&[0, 0, 1, 0, 1]);
    let dns = c.dns_addr().expect("DNS is served");
    socket.send_to(&question, dns).await.unwrap();
    let mut answer = [0u8; 512];
    tokio::time::timeout(common::PATIENCE, socket.recv_from(&mut answer))
        .await
        .expect("a DNS answer")
        .unwrap();
    let text = common::scrape(&c.address()).await;
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exported.len() > 10, "{text}");
    assert_eq!(metrics_in_the_readme(), exported);
    c.shutdown().await.unwrap();
}
