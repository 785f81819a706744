//! Helpers shared by the integration tests: in-process coordinators on
//! `127.0.0.1:0`, raw HTTP calls, and waiting on a condition with a deadline.
#![allow(dead_code)]

use hakken::coordinator::{Coordinator, CoordinatorConfig};
use std::future::Future;
use std::time::Duration;

/// `addr:port` of an in-process coordinator, as the tests write it.
pub trait Address {
    /// Where to reach it: its local address as text.
    fn address(&self) -> String;
}

impl Address for Coordinator {
    fn address(&self) -> String {
        self.local_addr().to_string()
    }
}

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

/// A plain HTTP client for poking at a coordinator: one for every test of the
/// binary. It keeps no idle connections, for each test has its own runtime and a
/// pooled connection belongs to the runtime that opened it.
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            hakken::tls::install_default_provider();
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        })
        .clone()
}

/// The `X-Hakken-Index` of an answer.
pub fn index_of(response: &reqwest::Response) -> u64 {
    response.headers()["x-hakken-index"]
        .to_str()
        .unwrap()
        .parse()
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

/// POSTs `body` to `path` on `addr` and expects `201 Created`.
pub async fn post_created(addr: &str, path: &str, body: impl Into<reqwest::Body>) {
    let (status, answer) = post(addr, path, body).await;
    assert_eq!(status, 201, "POST {path} on {addr}: {answer}");
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
    index_of(&response)
}

/// The coordinator's `/metrics` text (checked to be the exposition format).
pub async fn scrape(addr: &str) -> String {
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
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// One sample of the coordinator's metrics, scraped now.
pub async fn metric(addr: &str, series: &str) -> f64 {
    sample(&scrape(addr).await, series)
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

/// Hosts of the listings of `service` at `addr`, sorted; `None` when it does not
/// answer (it may be down).
pub async fn held(addr: &str, service: &str) -> Option<Vec<String>> {
    let response = http()
        .get(format!("http://{addr}/v1/listings/{service}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if response.status() == 404 {
        return Some(Vec::new());
    }
    let body: serde_json::Value = response.json().await.ok()?;
    let mut hosts: Vec<String> = body
        .as_array()?
        .iter()
        .filter_map(|l| l["host"].as_str().map(str::to_owned))
        .collect();
    hosts.sort();
    Some(hosts)
}

/// Waits until the coordinator at `addr` holds exactly `hosts` for `service`.
pub async fn holds(addr: &str, service: &str, hosts: &[&str]) {
    let want = strings(hosts);
    eventually(&format!("{addr} holds {service} = {want:?}"), || async {
        (held(addr, service).await.as_ref() == Some(&want)).then_some(())
    })
    .await;
}

/// The hosts of `listings`, sorted.
pub fn hosts_of(listings: &[hakken::Listing]) -> Vec<String> {
    let mut hosts: Vec<String> = listings.iter().map(|l| l.host().to_owned()).collect();
    hosts.sort();
    hosts
}

/// Owned copies of `items`.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits until the watch hands out exactly `hosts`.
pub async fn sees(watch: &hakken::Watch, hosts: &[&str]) {
    let want = strings(hosts);
    eventually(&format!("the watch sees {want:?}"), || async {
        (hosts_of(&watch.get()) == want).then_some(())
    })
    .await;
}

/// Waits until `client` knows exactly `hosts`.
pub async fn knows(client: &hakken::Client, hosts: &[String]) {
    let mut want = hosts.to_vec();
    want.sort();
    eventually(&format!("the client knows {want:?}"), || async {
        (client.coordinators() == want).then_some(())
    })
    .await;
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

/// A fake load balancer: forwards each request to the next backend of a script
/// (the last one repeating), copying status, body and headers.
pub async fn scripted_balancer(script: Vec<String>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use std::sync::{Arc, Mutex};

    type Script = Arc<Mutex<std::collections::VecDeque<String>>>;
    async fn forward(State(script): State<Script>, request: Request) -> Response {
        let backend = {
            let mut script = script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script[0].clone()
            }
        };
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let answer = http()
            .request(parts.method, format!("http://{backend}{uri}"))
            .body(body)
            .send()
            .await;
        let Ok(answer) = answer else {
            return axum::http::StatusCode::BAD_GATEWAY.into_response();
        };
        let status = answer.status();
        let headers = answer.headers().clone();
        let body: Bytes = answer.bytes().await.unwrap_or_default();
        (status, headers, body).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script: Script = Arc::new(Mutex::new(script.into()));
    let app = axum::Router::new().fallback(forward).with_state(script);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// A stream of `service`'s listings from `addr`, which must stream.
pub async fn open_stream(
    remote: &hakken::remote::Remote,
    addr: &str,
    service: &str,
) -> Box<hakken::remote::Events<Vec<hakken::Listing>>> {
    use hakken::remote::{Ask, Opened};
    match remote.open_listings(addr, service, Ask::Stream).await {
        Ok(Opened::Stream(events)) => events,
        Ok(Opened::Answer(_)) => panic!("{addr} answered once: a stream was expected"),
        Err(error) => panic!("{addr}: {error}"),
    }
}

pub mod nginx;
pub mod node;
pub mod pki;
pub mod process;

/// Runs `ip ARGS` (iproute2, for network namespaces), returning why on failure.
#[allow(dead_code)]
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
