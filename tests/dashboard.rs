//! The dashboard in a real browser: two in-process coordinators, and headless
//! Chromium driven by `tests/browser/dashboard.js` (playwright-core).
//!
//! The script does its own HTTP: against the first coordinator (heartbeat 200 ms, so
//! listings expire 600 ms after their last heartbeat) it publishes, withdraws and lets
//! listings expire, and checks that the page follows without a reload; it announces
//! the second coordinator to the first and checks the page shows it; it makes the
//! coordinator unreachable (by intercepting requests) and checks the status line
//! and the backoff. Into the second (default heartbeat) it loads 1,000 services and
//! a service of 5,000 listings, and checks the page at desktop and phone sizes.
//! Screenshots go to `target/test-artifacts/`.
//!
//! Needs Chromium (`apt-get install -y chromium`) and the script's npm packages
//! (`npm ci` in `tests/browser`); `scripts/test` installs both when missing. Without
//! them this test fails, saying what to install.

use hakken::coordinator::{Coordinator, CoordinatorConfig};
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

async fn start(heartbeat: Duration) -> Coordinator {
    Coordinator::bind(
        "127.0.0.1:0",
        CoordinatorConfig {
            announce_host: "127.0.0.1".into(),
            heartbeat_interval: heartbeat,
            request_timeout: Duration::from_secs(2),
            ..CoordinatorConfig::default()
        },
    )
    .await
    .expect("coordinator starts")
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
    // its thousands of listings for the default 3 minutes.
    let live = start(Duration::from_millis(200)).await;
    let load = start(Duration::from_secs(60)).await;

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(manifest_dir().join("tests/browser/dashboard.js"))
        .arg(format!("http://{}", live.local_addr()))
        .arg(format!("http://{}", load.local_addr()))
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
