//! Helpers shared by the integration tests: in-process coordinators on
//! `127.0.0.1:0`, raw HTTP calls, and waiting on a condition with a deadline.
#![allow(dead_code)]

use hakken::coordinator::{Coordinator, CoordinatorConfig};
use std::future::Future;
use std::time::Duration;

/// The longest any condition is waited for. Generous: the machine is noisy, and a
/// condition that holds returns at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A config for tests: announced as `127.0.0.1`, short heartbeat `h_ms`.
pub fn config(h_ms: u64) -> CoordinatorConfig {
    CoordinatorConfig {
        announce_host: "127.0.0.1".into(),
        heartbeat_interval: Duration::from_millis(h_ms),
        request_timeout: Duration::from_secs(2),
        ..CoordinatorConfig::default()
    }
}

/// Starts a coordinator on an ephemeral loopback port.
pub async fn start(config: CoordinatorConfig) -> Coordinator {
    Coordinator::bind("127.0.0.1:0", config)
        .await
        .expect("coordinator starts")
}

/// Polls `check` until it returns `Some`, or panics after [`PATIENCE`] naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP client for poking at a coordinator.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET http://addr{path}` → (status, body as JSON or Null).
pub async fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let response = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("GET answered");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST http://addr{path}` with a raw body → (status, body as JSON or Null).
pub async fn post(
    addr: &str,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = http()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST answered");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The current `X-Hakken-Index` of a list route (`/v1/listings/s`, ...): asked
/// with `index=0`, which no coordinator ever hands out, so it is answered at once.
/// A blocking query with this index is then really held.
pub async fn current_index(addr: &str, path: &str) -> u64 {
    let response = http()
        .get(format!("http://{addr}{path}?index=0"))
        .send()
        .await
        .expect("GET answered");
    response.headers()["x-hakken-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `DELETE http://addr{path}` → the status.
pub async fn delete(addr: &str, path: &str) -> u16 {
    http()
        .delete(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("DELETE answered")
        .status()
        .as_u16()
}

/// Hosts listed by `GET /v1/coordinator` at `addr`, sorted.
pub async fn coordinators_of(addr: &str) -> Vec<String> {
    let (_, body) = get(addr, "/v1/coordinator").await;
    let mut hosts: Vec<String> = body
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    hosts
}

pub mod node;
pub mod process;
