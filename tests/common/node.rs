//! Drivers for the original hakken (npm 0.1.12) in `interop/node/`: its
//! coordinator as a child process, and its client controlled by JSON lines.
//!
//! Node and the npm packages are required: `scripts/test` installs the packages.
//! When either is missing the tests fail with a message saying so; they never skip.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/node")
}

/// Panics with a clear message unless `node` and the npm packages are installed.
fn require_node() {
    let dir = node_dir();
    let node = std::process::Command::new("node").arg("--version").output();
    match node {
        Ok(out) if out.status.success() => {}
        _ => panic!("interop tests need Node.js 20 (`node` on PATH); it was not found"),
    }
    assert!(
        dir.join("node_modules/hakken").is_dir(),
        "interop tests need the original hakken installed: run `scripts/test` \
         (or `npm ci` in {})",
        dir.display()
    );
}

/// The original coordinator, running until dropped (killed on drop).
pub struct NodeCoordinator {
    child: Child,
    pub port: u16,
    /// The requests it answered, as `METHOD URL STATUS` (see `start_reporting`).
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeCoordinator {
    /// Like [`NodeCoordinator::start`], with listings living `missed` heartbeats,
    /// and every request it answers recorded (see [`NodeCoordinator::requests`]).
    pub async fn start_reporting(h_ms: u64, missed: u32) -> Self {
        Self::spawn(
            None,
            h_ms,
            h_ms * 10,
            &["--missed", &missed.to_string(), "--report-requests"],
        )
        .await
    }

    /// How many requests it answered whose `METHOD URL STATUS` starts with `prefix`
    /// (only when started with [`NodeCoordinator::start_reporting`]).
    pub fn requests(&self, prefix: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|r| r.starts_with(prefix)).count()
    }

    /// Starts one with heartbeat `h_ms`, resync `resync_ms`, and a discovery host
    /// (itself when `None`). Waits until it listens.
    pub async fn start(discovery: Option<&str>, h_ms: u64, resync_ms: u64) -> Self {
        Self::spawn(discovery, h_ms, resync_ms, &[]).await
    }

    async fn spawn(discovery: Option<&str>, h_ms: u64, resync_ms: u64, extra: &[&str]) -> Self {
        require_node();
        let mut command = Command::new("node");
        command
            .current_dir(node_dir())
            .arg("coordinator.js")
            .args(["--port", "0", "--heartbeat", &h_ms.to_string()])
            .args(["--resync", &resync_ms.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(discovery) = discovery {
            command.args(["--discovery", discovery]);
        }
        let mut child = command.spawn().expect("node starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the original coordinator reports READY within 30 s")
            .expect("stdout readable")
            .expect("the original coordinator exited before READY");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from coordinator.js: {line}"));
        // Drained so that it never blocks on a full pipe.
        let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(request) = line.strip_prefix("REQUEST ") {
                    recorded.lock().unwrap().push(request.to_owned());
                }
            }
        });
        NodeCoordinator {
            child,
            port,
            requests,
        }
    }

    /// Where to reach it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The host it announces (the original always announces `localhost:PORT`).
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Kills it and waits for it to be gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The original client, in its own Node process.
pub struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl NodeClient {
    /// Spawns the driver and starts a client against `host`.
    pub async fn start(host: &str, h_ms: u64, poll_ms: u64) -> Self {
        require_node();
        let mut child = Command::new("node")
            .current_dir(node_dir())
            .arg("client.js")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut client = NodeClient {
            child,
            stdin,
            stdout,
            next_id: 0,
        };
        client
            .ok(json!({
                "cmd": "start", "host": host, "heartbeatInterval": h_ms,
                "pollInterval": poll_ms, "resyncInterval": poll_ms * 10,
            }))
            .await;
        client
    }

    /// Sends one request and returns the reply.
    pub async fn request(&mut self, mut request: Value) -> Value {
        self.next_id += 1;
        request["id"] = json!(self.next_id);
        let line = format!("{request}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("client.js reads");
        self.stdin.flush().await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("client.js replies within 60 s")
            .expect("stdout readable")
            .expect("client.js exited");
        let reply: Value = serde_json::from_str(&reply).expect("a JSON reply");
        assert_eq!(reply["id"], json!(self.next_id), "replies come in order");
        reply
    }

    /// Sends one request and panics unless it succeeded.
    pub async fn ok(&mut self, request: Value) -> Value {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{request} failed: {reply}");
        reply
    }

    /// `watch.get()` of the named watch.
    pub async fn get(&mut self, watch: &str) -> Vec<Value> {
        let reply = self.ok(json!({"cmd": "get", "watch": watch})).await;
        reply["listings"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `watch.get()` until `done` holds, within the tests' patience.
    pub async fn get_until(&mut self, watch: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            let got = self.get(watch).await;
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "watch {watch} never got there; last: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the client and ends the process.
    pub async fn close(mut self) {
        let _ = self.request(json!({"cmd": "close"})).await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
