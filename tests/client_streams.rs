//! Streams, the client's side (issue #18): watches follow ours with one stream per
//! service and client, shared by every watch of the service, and fall back to
//! blocking queries when a coordinator refuses streams (at its cap) or does not
//! know them (an older coordinator of ours, played here by a small fake).

mod common;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{config, eventually, metric, sees, start, Address};
use hakken::client::{Client, ClientConfig};
use hakken::coordinator::CoordinatorConfig;
use hakken::Listing;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

fn client(host: &str) -> Client {
    Client::new(
        ClientConfig::new(host)
            .poll_interval(Duration::from_millis(200))
            .request_timeout(Duration::from_secs(2)),
    )
}

#[tokio::test]
async fn the_watches_of_a_service_share_one_stream() {
    let coordinator = start(config(200)).await;
    let addr = coordinator.address();
    let watcher = client(&addr);
    watcher.start().await.unwrap();
    let all = watcher.watch("billing").build();
    let https = watcher.watch("billing").filter("protocol", "https").build();
    let one = watcher.watch("billing").random(1).build();
    let ledger = watcher.watch("ledger").build();
    for watch in [&all, &https, &one, &ledger] {
        watch.start().await.unwrap();
    }
    eventually("one stream per service watched", || async {
        (metric(&addr, "hakken_streams").await == 2.0).then_some(())
    })
    .await;

    let publisher = client(&addr);
    publisher.start().await.unwrap();
    let listing = Listing::new("billing", "a:1")
        .unwrap()
        .with("protocol", "https");
    publisher.publish(listing).await.unwrap();
    for watch in [&all, &https, &one] {
        sees(watch, &["a:1"]).await;
    }
    publisher
        .publish(Listing::new("billing", "b:1").unwrap())
        .await
        .unwrap();
    sees(&all, &["a:1", "b:1"]).await;
    sees(&https, &["a:1"]).await;
    assert_eq!(
        metric(&addr, "hakken_streams").await,
        2.0,
        "still one stream per service"
    );

    // The stream goes when the last watch of its service does: not before.
    drop(all);
    https.close();
    assert_eq!(https.coordinator(), None, "a closed watch follows nothing");
    publisher
        .publish(Listing::new("billing", "a:1").unwrap().with("v", 2))
        .await
        .unwrap();
    eventually("`one` sees the new payload", || async {
        let got = one.get();
        (got.len() == 1 && got[0].get("v") == Some(&serde_json::json!(2))).then_some(())
    })
    .await;
    assert_eq!(
        metric(&addr, "hakken_streams").await,
        2.0,
        "`one` still uses it"
    );
    drop(one);
    eventually("the billing stream closed", || async {
        (metric(&addr, "hakken_streams").await == 1.0).then_some(())
    })
    .await;
    // A new watch of it opens a new one, and starts from what the coordinator holds.
    let again = watcher.watch("billing").build();
    again.start().await.unwrap();
    sees(&again, &["a:1", "b:1"]).await;
    eventually("a billing stream again", || async {
        (metric(&addr, "hakken_streams").await == 2.0).then_some(())
    })
    .await;
    watcher.close().await;
    publisher.close().await;
}

#[tokio::test]
async fn a_coordinator_at_its_cap_on_streams_is_followed_with_blocking_queries() {
    let coordinator = start(CoordinatorConfig {
        max_streams: 0,
        ..config(200)
    })
    .await;
    let addr = coordinator.address();
    let watcher = client(&addr);
    watcher.start().await.unwrap();
    let watch = watcher.watch("billing").build();
    watch.start().await.unwrap();
    // The client's list of coordinators is one held query; the watch, the other.
    eventually("the watch holds a blocking query", || async {
        (metric(&addr, "hakken_held_queries").await >= 2.0).then_some(())
    })
    .await;
    let publisher = client(&addr);
    publisher.start().await.unwrap();
    publisher
        .publish(Listing::new("billing", "a:1").unwrap())
        .await
        .unwrap();
    sees(&watch, &["a:1"]).await;
    assert_eq!(metric(&addr, "hakken_streams").await, 0.0);
    let refused = common::scrape(&addr)
        .await
        .lines()
        .filter(|l| l.starts_with("hakken_http_requests_total") && l.contains(r#"status="503""#))
        .count();
    assert!(refused > 0, "the watch asked for a stream first");
    watcher.close().await;
    publisher.close().await;
}

#[tokio::test]
async fn a_stream_moves_to_another_coordinator_when_its_own_goes() {
    let first = start(config(200)).await;
    let second = start(CoordinatorConfig {
        discovery_host: Some(first.address()),
        ..config(200)
    })
    .await;
    let hosts = [first.address(), second.address()];
    let watcher = client(&hosts[0]);
    watcher.start().await.unwrap();
    common::knows(&watcher, &hosts).await;
    let watch = watcher.watch("billing").build();
    watch.start().await.unwrap();
    let followed = eventually("the watch holds a stream", || async {
        let host = watch.coordinator()?;
        (metric(&host, "hakken_streams").await == 1.0).then_some(host)
    })
    .await;
    let (going, staying) = if followed == hosts[0] {
        (first, second)
    } else {
        (second, first)
    };
    going.shutdown().await.unwrap();
    let other = staying.address();
    eventually("a stream on the other coordinator", || async {
        (metric(&other, "hakken_streams").await == 1.0).then_some(())
    })
    .await;
    let publisher = client(&other);
    publisher.start().await.unwrap();
    publisher
        .publish(Listing::new("billing", "a:1").unwrap())
        .await
        .unwrap();
    sees(&watch, &["a:1"]).await;
    assert_eq!(watch.coordinator().as_deref(), Some(other.as_str()));
    watcher.close().await;
    publisher.close().await;
}

/// A coordinator of ours from before streams: answers with an index, holds
/// blocking queries, and answers a stream request like any other.
#[derive(Default)]
struct Older {
    index: AtomicU64,
    hosts: Mutex<Vec<String>>,
    changed: Notify,
    /// Requests by kind: `stream` (asked for one), `blocking`, `once`.
    asked: Mutex<HashMap<&'static str, u64>>,
    me: Mutex<String>,
}

impl Older {
    fn answer(&self) -> axum::response::Response {
        let hosts = self.hosts.lock().unwrap().clone();
        let listings: Vec<serde_json::Value> = hosts
            .iter()
            .map(|h| serde_json::json!({"service": "billing", "host": h}))
            .collect();
        let mut headers = HeaderMap::new();
        let index = self.index.load(Ordering::SeqCst);
        headers.insert("x-hakken-index", index.into());
        headers.insert("x-hakken-complete", "true".parse().unwrap());
        headers.insert("x-hakken-instance", 1.into());
        (headers, axum::Json(listings)).into_response()
    }

    fn change(&self, hosts: &[&str]) {
        *self.hosts.lock().unwrap() = hosts.iter().map(|h| h.to_string()).collect();
        self.index.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn asked(&self, kind: &str) -> u64 {
        self.asked.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

async fn older_listings(
    State(older): State<Arc<Older>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let kind = match (params.get("index"), headers.get("accept")) {
        (Some(_), _) => "blocking",
        (None, Some(accept)) if accept.to_str().unwrap().contains("event-stream") => "stream",
        _ => "once",
    };
    *older.asked.lock().unwrap().entry(kind).or_default() += 1;
    if let Some(seen) = params.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let changed = older.changed.notified();
        if older.index.load(Ordering::SeqCst) == seen {
            let _ = tokio::time::timeout(Duration::from_secs(30), changed).await;
        }
    }
    older.answer()
}

async fn older_coordinators(State(older): State<Arc<Older>>) -> axum::response::Response {
    let me = older.me.lock().unwrap().clone();
    axum::Json(serde_json::json!([{ "host": me }])).into_response()
}

#[tokio::test]
async fn an_older_coordinator_of_ours_is_followed_with_blocking_queries() {
    let older = Arc::new(Older::default());
    let app = axum::Router::new()
        .route("/v1/listings/billing", get(older_listings))
        .route("/v1/coordinator", get(older_coordinators))
        .with_state(older.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    *older.me.lock().unwrap() = addr.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    older.change(&["a:1"]);

    let watcher = client(&addr);
    watcher.start().await.unwrap();
    let watch = watcher.watch("billing").build();
    watch.start().await.unwrap();
    sees(&watch, &["a:1"]).await;
    eventually("asked for a stream, then held blocking queries", || async {
        (older.asked("stream") >= 1 && older.asked("blocking") >= 1).then_some(())
    })
    .await;
    older.change(&["a:1", "b:1"]);
    sees(&watch, &["a:1", "b:1"]).await;
    assert_eq!(
        older.asked("stream"),
        1,
        "asked for a stream once, not at every step"
    );
    watcher.close().await;
    server.abort();
}

#[tokio::test]
async fn a_stream_silent_for_three_keep_alive_intervals_is_given_up() {
    // 3 × 400 ms: above the least silence a stream is allowed (1 s).
    use hakken::remote::Remote;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A coordinator that names a keep-alive interval of 400 ms, sends the first
    // state, and then nothing at all, its connection held open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if socket.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let event = "id: 1\ndata: [{\"service\":\"pay\",\"host\":\"a:1\"}]\n\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-hakken-keepalive: 400\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        // Held, silent, until the client goes.
        let mut rest = [0u8; 64];
        while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
    });
    let remote = Remote::new(Duration::from_secs(5));
    let mut events = common::open_stream(&remote, &addr, "pay").await;
    let first = events.next().await.unwrap();
    assert_eq!(first.value.len(), 1);
    let error = tokio::time::timeout(common::PATIENCE, events.next())
        .await
        .expect("a silent stream is given up, not waited on for ever")
        .unwrap_err();
    assert!(
        error.to_string().contains("stayed silent for 1200 ms"),
        "{error}"
    );
    drop(events);
    tokio::time::timeout(common::PATIENCE, silent)
        .await
        .expect("the client closed the connection")
        .unwrap();
}
