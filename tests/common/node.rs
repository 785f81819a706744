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

/// How to run the original coordinator.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Its discovery host (itself when `None`).
    pub discovery: Option<String>,
    /// Heartbeat interval, ms.
    pub h_ms: u64,
    /// Resync period, ms.
    pub resync_ms: u64,
    /// Port to listen on (0: a free one, picked by coordinator.js).
    pub port: u16,
    /// The name it announces (`localhost` by default, as the original does).
    pub announce: Option<String>,
    /// Further arguments of coordinator.js.
    pub extra: Vec<String>,
}

impl NodeOptions {
    /// Heartbeat `h_ms`, resync `resync_ms`, any port, announced as `localhost`.
    pub fn new(discovery: Option<&str>, h_ms: u64, resync_ms: u64) -> Self {
        NodeOptions {
            discovery: discovery.map(str::to_owned),
            h_ms,
            resync_ms,
            port: 0,
            announce: None,
            extra: Vec::new(),
        }
    }
}

/// The original coordinator, running until dropped (killed on drop).
pub struct NodeCoordinator {
    child: Option<Child>,
    pub port: u16,
    options: NodeOptions,
    /// The requests it answered, as `METHOD URL STATUS` (see `start_reporting`).
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeCoordinator {
    /// Like [`NodeCoordinator::start`], with listings living `missed` heartbeats,
    /// and every request it answers recorded (see [`NodeCoordinator::requests`]).
    pub async fn start_reporting(h_ms: u64, missed: u32) -> Self {
        let mut options = NodeOptions::new(None, h_ms, h_ms * 10);
        options.extra = vec![
            "--missed".into(),
            missed.to_string(),
            "--report-requests".into(),
        ];
        Self::start_with(options).await
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
        Self::start_with(NodeOptions::new(discovery, h_ms, resync_ms)).await
    }

    /// Starts one as `options` say. Waits until it listens.
    pub async fn start_with(options: NodeOptions) -> Self {
        let mut coordinator = NodeCoordinator {
            child: None,
            port: options.port,
            options,
            requests: Default::default(),
        };
        coordinator.spawn().await;
        coordinator
    }

    async fn spawn(&mut self) {
        require_node();
        // With port 0 coordinator.js picks a free port and may lose it to another
        // process before the original listens; it then exits 75 and we try again.
        let mut attempts = 0;
        let (child, mut lines, line) = loop {
            let mut child = self.command().spawn().expect("node starts");
            let stdout = child.stdout.take().expect("stdout piped");
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the original coordinator reports READY within 30 s")
                .expect("stdout readable");
            if let Some(line) = line {
                break (child, lines, line);
            }
            let status = child.wait().await.expect("coordinator.js is waited for");
            attempts += 1;
            assert!(
                self.port == 0 && status.code() == Some(75) && attempts < 20,
                "the original coordinator exited before READY ({status})"
            );
        };
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from coordinator.js: {line}"));
        // Drained so that it never blocks on a full pipe.
        let recorded = self.requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(request) = line.strip_prefix("REQUEST ") {
                    recorded.lock().unwrap().push(request.to_owned());
                }
            }
        });
        self.port = port;
        self.child = Some(child);
    }

    /// The command that runs coordinator.js as the options say.
    fn command(&self) -> Command {
        let options = &self.options;
        let mut command = Command::new("node");
        command
            .current_dir(node_dir())
            .arg("coordinator.js")
            .args(["--port", &self.port.to_string()])
            .args(["--heartbeat", &options.h_ms.to_string()])
            .args(["--resync", &options.resync_ms.to_string()])
            .args(&options.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(discovery) = &options.discovery {
            command.args(["--discovery", discovery]);
        }
        if let Some(announce) = &options.announce {
            command.args(["--announce", announce]);
        }
        command
    }

    /// Where to reach it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The host it announces (`localhost:PORT` unless told otherwise).
    pub fn host(&self) -> String {
        let name = self.options.announce.as_deref().unwrap_or("localhost");
        format!("{name}:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills it with SIGKILL and waits until it is gone; [`NodeCoordinator::restart`]
    /// starts it again.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, with `discovery` from now on when given.
    pub async fn restart(&mut self, discovery: Option<&str>) {
        if let Some(discovery) = discovery {
            self.options.discovery = Some(discovery.to_owned());
        }
        self.spawn().await;
    }

    /// Kills it and waits for it to be gone.
    pub async fn kill(mut self) {
        self.kill9().await;
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
        match Self::start_lenient(host, h_ms, poll_ms).await {
            Some(client) => client,
            None => panic!("the original client starts against {host}"),
        }
    }

    /// Like [`NodeClient::start`], but `None` when the client cannot start (no
    /// coordinator answered).
    pub async fn start_lenient(host: &str, h_ms: u64, poll_ms: u64) -> Option<Self> {
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
        let reply = client
            .request(json!({
                "cmd": "start", "host": host, "heartbeatInterval": h_ms,
                "pollInterval": poll_ms, "resyncInterval": poll_ms * 10,
            }))
            .await;
        (reply["ok"] == json!(true)).then_some(client)
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
