//! A coordinator with a data directory (`--data-dir`) keeps its listings across a
//! restart, even a SIGKILL: real processes, their files, and plain HTTP (no client
//! that would publish again after the restart, so whatever a restarted coordinator
//! holds, it read back from its directory).
//!
//! Heartbeats every hour: nothing expires during a test, and the registry is
//! written at start and when listings change, long before the hourly period.

mod common;

use common::process::CoordinatorProcess;
use common::{eventually, held, holds, strings};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const HOUR_MS: u64 = 3_600_000;

/// A directory of its own under the system's temporary directory, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "hakken-data-dir-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A coordinator process keeping its registry in `dir`.
async fn coordinator(dir: &Path) -> CoordinatorProcess {
    let hour = HOUR_MS.to_string();
    process(&[
        "--heartbeat-interval",
        &hour,
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .await
}

/// A coordinator process with these arguments.
async fn process(extra: &[&str]) -> CoordinatorProcess {
    let mut args = vec!["--announce-host", "127.0.0.1"];
    args.extend_from_slice(extra);
    CoordinatorProcess::loopback(&args).await
}

async fn publish(addr: &str, host: &str) {
    let body = format!(r#"{{"service":"svc","host":"{host}","v":1}}"#);
    let (status, _) = common::post(addr, "/v1/listings", body).await;
    assert_eq!(status, 201);
}

/// The registry file's lines, once its listings' hosts are `hosts`.
async fn written(dir: &Path, hosts: &[&str]) -> Vec<serde_json::Value> {
    let file = dir.join("registry.ndjson");
    let want = strings(hosts);
    eventually(&format!("the registry file holds {want:?}"), || async {
        let text = std::fs::read_to_string(&file).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut found: Vec<String> = lines
            .iter()
            .filter_map(|l| Some(l["listing"]["host"].as_str()?.to_owned()))
            .collect();
        found.sort();
        (found == want).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn a_coordinator_killed_and_restarted_answers_with_what_it_held() {
    let dir = TempDir::new();
    let mut coordinator = coordinator(&dir.0).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    publish(&addr, "b:1").await;
    written(&dir.0, &["a:1", "b:1"]).await;

    coordinator.kill9().await;
    coordinator.restart().await;
    // From the first answer, with the payloads as published.
    let (status, body) = common::get(&addr, "/v1/listings/svc").await;
    assert_eq!(status, 200, "{body}");
    let mut listings = body.as_array().unwrap().clone();
    listings.sort_by_key(|l| l["host"].as_str().unwrap().to_owned());
    assert_eq!(
        listings,
        [
            serde_json::json!({"service": "svc", "host": "a:1", "v": 1}),
            serde_json::json!({"service": "svc", "host": "b:1", "v": 1}),
        ]
    );
    // And it keeps writing: a listing added now survives the next restart too.
    publish(&addr, "c:1").await;
    written(&dir.0, &["a:1", "b:1", "c:1"]).await;
    coordinator.kill9().await;
    coordinator.restart().await;
    holds(&addr, "svc", &["a:1", "b:1", "c:1"]).await;
}

#[tokio::test]
async fn a_withdrawn_listing_does_not_come_back_with_a_restart() {
    let dir = TempDir::new();
    let mut coordinator = coordinator(&dir.0).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    publish(&addr, "b:1").await;
    written(&dir.0, &["a:1", "b:1"]).await;
    assert_eq!(common::delete(&addr, "/v1/listings/svc/a:1").await, 204);
    // Written soon after the withdrawal, not at the next hourly period.
    written(&dir.0, &["b:1"]).await;
    coordinator.kill9().await;
    coordinator.restart().await;
    assert_eq!(held(&addr, "svc").await, Some(strings(&["b:1"])));
}

#[tokio::test]
async fn a_listing_read_back_lives_what_it_had_left_less_the_time_on_disk() {
    let dir = TempDir::new();
    let mut coordinator = coordinator(&dir.0).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    written(&dir.0, &["a:1"]).await;
    coordinator.kill9().await;

    // As if the file had been written an hour ago: the listing (3 hours to live
    // when written) has 2 left; one with half an hour left then is gone.
    let file = dir.0.join("registry.ndjson");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    lines[0]["writtenAt"] = (now_ms - HOUR_MS).into();
    lines[0]["count"] = 2.into();
    let left = lines[1]["ttl"].as_u64().unwrap();
    assert!(left > 2 * HOUR_MS, "3 hours to live, less a moment: {left}");
    let gone =
        serde_json::json!({"ttl": HOUR_MS / 2, "listing": {"service": "svc", "host": "gone:1"}});
    lines.insert(2, gone);
    *lines.last_mut().unwrap() = serde_json::json!({"end": 2});
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();

    coordinator.restart().await;
    assert_eq!(held(&addr, "svc").await, Some(strings(&["a:1"])));
    // What it has left, as the coordinator's snapshot says: what it had, less an
    // hour (more than the 5/4 H a listing read back lives at least).
    let response = common::http()
        .get(format!("http://{addr}/v1/snapshot"))
        .send()
        .await
        .unwrap();
    let snapshot = response.text().await.unwrap();
    let line: serde_json::Value = serde_json::from_str(snapshot.lines().nth(1).unwrap()).unwrap();
    assert_eq!(line["listing"]["host"], "a:1");
    let now_left = line["ttl"].as_u64().unwrap();
    assert!(
        now_left <= left - HOUR_MS && now_left > left - HOUR_MS - 60_000,
        "{now_left} ms left, {left} when written an hour before"
    );
}

#[tokio::test]
async fn a_member_restarted_in_a_cluster_copies_its_peer_and_not_its_file() {
    // Heartbeats every 200 ms, listings living 1,000 of them; a coordinator
    // without a peer to copy from is complete 1.2 s after it starts.
    let fast = [
        "--heartbeat-interval",
        "200",
        "--missed-heartbeats-allowed",
        "1000",
        "--request-timeout",
        "1000",
    ];
    let peer = process(&fast).await;
    let peer_addr = peer.address();
    let dir = TempDir::new();
    let mut args = fast.to_vec();
    args.extend([
        "--discovery-host",
        &peer_addr,
        "--data-dir",
        dir.0.to_str().unwrap(),
    ]);
    let mut member = process(&args).await;
    let addr = member.address();
    for at in [&addr, &peer_addr] {
        publish(at, "a:1").await;
        publish(at, "b:1").await;
    }
    written(&dir.0, &["a:1", "b:1"]).await;
    eventually("the peer is complete", || async {
        let (_, body) = common::get(&peer_addr, "/ready").await;
        (body["complete"] == true).then_some(())
    })
    .await;

    // Withdrawn while the member is down: its file still has it, its peer not.
    member.kill9().await;
    assert_eq!(
        common::delete(&peer_addr, "/v1/listings/svc/a:1").await,
        204
    );
    member.restart().await;
    assert_eq!(held(&addr, "svc").await, Some(strings(&["b:1"])));
    written(&dir.0, &["b:1"]).await;
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_directory_is_refused() {
    let dir = TempDir::new();
    let _first = coordinator(&dir.0).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hakken"))
        .args(["coordinator", "--port", "0", "--data-dir"])
        .arg(&dir.0)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another coordinator"), "{stderr}");
}
