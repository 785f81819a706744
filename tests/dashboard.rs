//! The dashboard: its JSON over HTTP (the charts' series, the listings' times), and
//! the page in a real browser.
//!
//! In the browser: two in-process coordinators, and headless Chromium driven by
//! `tests/browser/dashboard.js` (playwright-core).
//!
//! The script does its own HTTP: against the first coordinator (heartbeat 200 ms, so
//! listings expire 600 ms after their last heartbeat) it publishes, withdraws and lets
//! listings expire, and checks that the page follows without a reload; it announces
//! the second coordinator to the first and checks the page shows it; it makes the
//! coordinator unreachable (by intercepting requests) and checks the status line
//! and the backoff. Into the second (default heartbeat) it loads 1,000 services and
//! a service of 5,000 listings, and checks the page at desktop and phone sizes.
//! Both sample their charts often (20 ms and 50 ms, where the default is 10 s),
//! so the script sees sparklines fill in; it checks them by their number of
//! points, never by timing. Screenshots go to `target/test-artifacts/`.
//!
//! Needs Chromium (`apt-get install -y chromium`) and the script's npm packages
//! (`npm ci` in `tests/browser`); `scripts/test` installs both when missing. Without
//! them this test fails, saying what to install.

mod common;

use common::{eventually, get, post, Address};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// Longest the whole browser script may run; it has its own, shorter, watchdog.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"));
    target.join("test-artifacts")
}

/// Fails, naming what to install, when the browser or the script's packages are missing.
fn require_tools() {
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "the dashboard test needs headless Chromium at {}: install it with \
         `apt-get update && apt-get install -y chromium` (scripts/test does this when it is missing), \
         or point CHROMIUM_PATH at a Chromium binary",
        chromium.display()
    );
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok,
        "the dashboard test needs Node.js (`node`) on the PATH: install Node 20 with npm"
    );
    let playwright = manifest_dir().join("tests/browser/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "the dashboard test needs playwright-core in tests/browser/node_modules: \
         run `npm ci` in tests/browser (scripts/test does this when it is missing)"
    );
}

async fn start(heartbeat: Duration, history: Duration) -> Coordinator {
    Coordinator::bind(
        "127.0.0.1:0",
        CoordinatorConfig {
            announce_host: "127.0.0.1".into(),
            heartbeat_interval: heartbeat,
            request_timeout: Duration::from_secs(2),
            history_interval: history,
            ..CoordinatorConfig::default()
        },
    )
    .await
    .expect("coordinator starts")
}

/// Publishes `listing` (a JSON object) and expects it accepted.
async fn publish(addr: &str, listing: Value) {
    let (status, body) = post(addr, "/v1/listings", listing.to_string()).await;
    assert_eq!(status, 201, "publish {listing}: {body}");
}

/// The last value of a per-service series, sent as runs `[[count, samples], ...]`.
fn last_of_runs(runs: &Value) -> Option<u64> {
    runs.as_array()?.last()?.get(0)?.as_u64()
}

fn len_of(series: &Value) -> usize {
    series.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn history_series_are_sampled_and_served() {
    let coordinator = start(Duration::from_secs(60), Duration::from_millis(100)).await;
    let addr = coordinator.address();
    // One sample before anything is published, so a later one sees the changes.
    let before = eventually("a first sample", || async {
        let (_, state) = get(&addr, "/ui/api/state").await;
        let samples = state["historySamples"].as_u64()?;
        (samples >= 1).then_some(samples)
    })
    .await;
    publish(&addr, json!({"service": "web", "host": "a:1"})).await;
    publish(&addr, json!({"service": "web", "host": "b:1"})).await;
    publish(&addr, json!({"service": "db", "host": "c:1"})).await;
    publish(&addr, json!({"service": "db", "host": "c:1"})).await;

    let history = eventually("samples with the three listings", || async {
        let (status, history) = get(&addr, "/ui/api/history").await;
        assert_eq!(status, 200);
        let web = last_of_runs(&history["services"]["web"])?;
        let db = last_of_runs(&history["services"]["db"])?;
        let changed = history["changesPerSec"]
            .as_array()?
            .iter()
            .any(|rate| rate.as_f64().is_some_and(|r| r > 0.0));
        (web == 2 && db == 1 && changed).then_some(history)
    })
    .await;
    let samples = history["samples"].as_u64().unwrap();
    assert!(samples > before, "{history}");
    assert_eq!(history["periodMs"], 100);
    assert_eq!(history["points"], 360);
    assert_eq!(history["untracked"], 0);
    assert_eq!(
        history["listings"].as_array().unwrap().last(),
        Some(&json!(3))
    );
    // Every sample is in the series, while fewer than the ring holds; a rate
    // needs two samples.
    let kept = (samples as usize).min(360);
    assert_eq!(len_of(&history["listings"]), kept, "{history}");
    assert_eq!(
        len_of(&history["heartbeatsPerSec"]),
        kept.min(samples as usize - 1)
    );
    assert_eq!(
        len_of(&history["changesPerSec"]),
        kept.min(samples as usize - 1)
    );
    let heartbeats = history["heartbeatsPerSec"].as_array().unwrap();
    assert!(
        heartbeats
            .iter()
            .any(|r| r.as_f64().is_some_and(|r| r > 0.0)),
        "four heartbeats were counted: {history}"
    );
    // Runs add up to the samples that saw the service, at most the ring's size.
    let web: u64 = history["services"]["web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run[1].as_u64().unwrap())
        .sum();
    assert!(web >= 1 && web < samples && web <= 360, "{history}");

    // The state tells the page when to ask again.
    let (_, state) = get(&addr, "/ui/api/state").await;
    assert!(state["historySamples"].as_u64().unwrap() >= samples);
    coordinator.shutdown().await.expect("stops cleanly");
}

#[tokio::test]
async fn the_state_says_whether_the_coordinator_is_still_warming_up() {
    // Started alone: partial for its first heartbeat interval (an hour here).
    let warming = start(Duration::from_secs(3600), Duration::from_secs(10)).await;
    let (_, state) = get(&warming.address(), "/ui/api/state").await;
    assert_eq!(state["complete"], false, "{state}");
    // Complete after its first 100 ms.
    let complete = start(Duration::from_millis(100), Duration::from_secs(10)).await;
    let addr = complete.address();
    eventually("the state complete", || async {
        let (_, state) = get(&addr, "/ui/api/state").await;
        (state["complete"] == true).then_some(())
    })
    .await;
    warming.shutdown().await.expect("stops cleanly");
    complete.shutdown().await.expect("stops cleanly");
}

#[tokio::test]
async fn listings_show_when_first_seen_and_last_changed() {
    let coordinator = start(Duration::from_secs(60), Duration::from_secs(10)).await;
    let addr = coordinator.address();
    let v1 = json!({"service": "web", "host": "a:1", "v": 1});
    publish(&addr, v1.clone()).await;
    let listing = |state: &Value| state["listings"][0].clone();
    // Wait until its first sighting is at least a millisecond old, so that a
    // change from now on is seen as later.
    let first = eventually("the listing a millisecond old", || async {
        let (_, state) = get(&addr, "/ui/api/state?service=web").await;
        let first = listing(&state)["firstSeenMsAgo"].as_u64()?;
        (first >= 1).then_some(first)
    })
    .await;
    // Heartbeats that change nothing leave both times alone (both paths: a
    // plain publish, and the byte-for-byte heartbeat).
    publish(&addr, v1.clone()).await;
    common::post_created(&addr, "/v1/listings?heartbeat=true", v1.to_string()).await;
    let (_, state) = get(&addr, "/ui/api/state?service=web").await;
    let unchanged = listing(&state);
    assert!(unchanged["firstSeenMsAgo"].as_u64().unwrap() >= first);
    assert_eq!(
        unchanged["changedMsAgo"], unchanged["firstSeenMsAgo"],
        "never changed: {unchanged}"
    );

    publish(&addr, json!({"service": "web", "host": "a:1", "v": 2})).await;
    let (_, state) = get(&addr, "/ui/api/state?service=web").await;
    let changed = listing(&state);
    assert_eq!(changed["listing"]["v"], 2);
    let first_seen = changed["firstSeenMsAgo"].as_u64().unwrap();
    let changed_at = changed["changedMsAgo"].as_u64().unwrap();
    assert!(first_seen >= first, "{changed}");
    assert!(
        changed_at < first_seen,
        "changed after it was first seen: {changed}"
    );
    coordinator.shutdown().await.expect("stops cleanly");
}

/// Echoes a child's output line by line (captured by the test harness) and keeps it.
async fn collect(stream: impl AsyncRead + Unpin, prefix: &'static str) -> Vec<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut kept = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix}{line}");
        kept.push(line);
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    require_tools();
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");

    // Listings on `live` expire 600 ms after their last heartbeat; `load` keeps
    // its thousands of listings for the default 3 minutes. Both sample their
    // charts far more often than the default, so the script sees them fill in.
    // `warming` started alone with an hour's heartbeat: it is warming up
    // (partial) for the whole script, and knows no peer to copy from.
    let live = start(Duration::from_millis(200), Duration::from_millis(20)).await;
    let load = start(Duration::from_secs(60), Duration::from_millis(50)).await;
    let warming = start(Duration::from_secs(3600), Duration::from_secs(10)).await;

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(manifest_dir().join("tests/browser/dashboard.js"))
        .arg(format!("http://{}", live.local_addr()))
        .arg(format!("http://{}", load.local_addr()))
        .arg(format!("http://{}", warming.local_addr()))
        .arg(&artifacts)
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let stdout = tokio::spawn(collect(child.stdout.take().expect("stdout"), ""));
    let stderr = tokio::spawn(collect(child.stderr.take().expect("stderr"), "stderr: "));

    let status = tokio::time::timeout(SCRIPT_DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the browser script ran longer than {SCRIPT_DEADLINE:?}"))
        .expect("wait for node");
    let stdout = stdout.await.expect("stdout reader");
    let stderr = stderr.await.expect("stderr reader");
    println!("browser script finished in {:?}", started.elapsed());

    live.shutdown()
        .await
        .expect("live coordinator stops cleanly");
    load.shutdown()
        .await
        .expect("load coordinator stops cleanly");
    warming
        .shutdown()
        .await
        .expect("warming coordinator stops cleanly");

    let failure = stdout
        .iter()
        .find(|l| l.starts_with("FAIL"))
        .cloned()
        .unwrap_or_default();
    assert!(
        status.success() && stdout.last().map(String::as_str) == Some("PASS"),
        "the browser script failed ({status}): {failure}\n\
         screenshots in {}\n--- stdout\n{}\n--- stderr\n{}",
        artifacts.display(),
        stdout.join("\n"),
        stderr.join("\n"),
    );
}
