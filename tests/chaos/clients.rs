//! The soak's clients, each a process of its own: publishers of one listing each
//! (`hakken publish`, or the original's client through interop/node/client.js),
//! and watchers of the service (`hakken watch`, or the original's `watch` read
//! every 250 ms) whose every view is recorded with when it was seen.

use crate::common::node::NodeClient;
use crate::common::process::{signal, BIN, SETTINGS};
use crate::record::{End, Kind, Recorder};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The service every publisher publishes and every watcher watches.
pub const SERVICE: &str = "chaos";

/// `hakken SUBCOMMAND ARGS...` against `lb`, its settings from the arguments only;
/// in the network namespace `inside` when given.
fn hakken(lb: &str, args: &[&str], inside: Option<&str>) -> Command {
    let mut command = match inside {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, BIN]);
            command
        }
        None => Command::new(BIN),
    };
    for var in SETTINGS {
        command.env_remove(var);
    }
    command
        .env_remove("HAKKEN_COORDINATOR")
        .env_remove("HAKKEN_TIMEOUT")
        .env("RUST_LOG", "hakken=info")
        .args(args)
        .args(["--coordinator", lb, "--timeout", "1000"]);
    command
}

/// A publisher process.
pub enum Publisher {
    Ours(Child),
    Original(NodeClient),
}

/// A running publisher and its number in the record.
pub struct Running {
    pub id: usize,
    pub publisher: Publisher,
}

impl Running {
    /// Starts a publisher of `host` (one of ours in the network namespace `inside`
    /// when given); `None` when it could not publish (no coordinator reachable at
    /// that moment).
    pub async fn start(
        kind: Kind,
        lb: &str,
        h_ms: u64,
        host: &str,
        inside: Option<&str>,
        recorder: &Recorder,
    ) -> Option<Running> {
        match kind {
            Kind::Ours => {
                let mut child = hakken(lb, &["publish", SERVICE, host], inside)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("hakken publish starts");
                let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
                // Its log goes to a file of its own in the output folder.
                let logs = recorder.out.join("publishers");
                let _ = std::fs::create_dir_all(&logs);
                let mut log = std::fs::File::create(logs.join(format!("{host}.log"))).ok();
                let mut keep = move |line: &str| {
                    if let Some(file) = &mut log {
                        use std::io::Write;
                        let _ = writeln!(file, "{line}");
                    }
                };
                let published = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        keep(&line);
                        if line.starts_with("published ") {
                            return true;
                        }
                    }
                    false
                })
                .await
                .unwrap_or(false);
                if !published {
                    let _ = child.start_kill();
                    return None;
                }
                let id = recorder.publisher_started(kind, host, inside.is_some());
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        keep(&line);
                    }
                });
                Some(Running {
                    id,
                    publisher: Publisher::Ours(child),
                })
            }
            Kind::Original => {
                assert!(inside.is_none(), "the original's publishers run outside");
                let mut client = NodeClient::start_lenient(lb, h_ms, h_ms).await?;
                let reply = client
                    .request(
                        json!({"cmd": "publish", "listing": {"service": SERVICE, "host": host}}),
                    )
                    .await;
                if reply["ok"] != true {
                    return None;
                }
                let id = recorder.publisher_started(kind, host, false);
                Some(Running {
                    id,
                    publisher: Publisher::Original(client),
                })
            }
        }
    }

    /// Ends it: SIGKILL, or a clean close (ours withdraw their listing; the
    /// original's client withdraws nothing). Returns when it ended.
    pub async fn end(self, end: End, recorder: &Recorder) -> u64 {
        let at = recorder.publisher_ended(self.id, end);
        match (self.publisher, end) {
            (Publisher::Ours(mut child), End::Killed) => {
                let _ = child.kill().await;
            }
            (Publisher::Ours(mut child), End::Closed) => {
                if let Some(pid) = child.id() {
                    signal(pid, "TERM").await;
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            (Publisher::Original(client), End::Killed) => drop(client),
            (Publisher::Original(client), End::Closed) => client.close().await,
        }
        at
    }
}

/// A watcher: a task recording its views, and its process.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hosts_of(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["host"].as_str().map(str::to_owned))
        .collect()
}

impl Watcher {
    pub async fn start(kind: Kind, lb: &str, h_ms: u64, recorder: Arc<Recorder>) -> Watcher {
        let id = recorder.watcher(kind);
        let task = match kind {
            Kind::Ours => {
                let logs = recorder.out.join("watchers");
                let _ = std::fs::create_dir_all(&logs);
                let log =
                    std::fs::File::create(logs.join(format!("{id}.log"))).expect("a log file");
                // It polls the original's coordinators (no blocking queries) every H,
                // as the original's watchers do: it cannot learn their H from them.
                let h = h_ms.to_string();
                let mut child = hakken(lb, &["watch", SERVICE, "--heartbeat-interval", &h], None)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("hakken watch starts");
                let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
                tokio::spawn(async move {
                    let _child = child;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Ok(view) = serde_json::from_str::<Value>(&line) {
                            recorder.view(id, hosts_of(&view));
                        }
                    }
                })
            }
            Kind::Original => {
                let mut client = loop {
                    if let Some(client) = NodeClient::start_lenient(lb, h_ms, h_ms).await {
                        break client;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                client
                    .ok(json!({"cmd": "watch", "watch": "w", "service": SERVICE}))
                    .await;
                tokio::spawn(async move {
                    let mut last: Option<BTreeSet<String>> = None;
                    loop {
                        let reply = client.request(json!({"cmd": "get", "watch": "w"})).await;
                        let hosts = hosts_of(&reply["listings"]);
                        if last.as_ref() != Some(&hosts) {
                            recorder.view(id, hosts.clone());
                            last = Some(hosts);
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                })
            }
        };
        Watcher { task }
    }
}
