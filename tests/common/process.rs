//! Coordinators as real processes: the built `hakken` binary, started on port 0 (or
//! a given port), optionally inside a network namespace, killed with SIGKILL and
//! started again on the same address.
//!
//! The port a process got is read from its JSON log line `coordinator started`.
//! Its log lines are drained (so it never blocks on a full pipe) and the last ones
//! kept: when a test panics, dropping the process prints them. Dropping it kills it.

use serde_json::Value;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_hakken");

/// The coordinator's settings read from the environment: none is inherited from
/// the test's own environment.
pub const SETTINGS: &[&str] = &[
    "PORT",
    "LISTEN_ADDRESS",
    "ANNOUNCE_HOST",
    "DISCOVERY_HOST",
    "DISCOVERY_HEARTBEAT_INTERVAL",
    "MISSED_HEARTBEATS_ALLOWED",
    "RESYNC_POLL_INTERVAL",
    "LOG_HEARTBEATS",
    "LOG_FORMAT",
    "RUST_LOG",
    "HAKKEN_TOKEN",
    "HAKKEN_PROTECT_READS",
    "HAKKEN_SYNC_TIMEOUT",
    "HAKKEN_DATA_DIR",
    "HAKKEN_FAILURES_BEFORE_DROP",
    "HAKKEN_TLS_CERT",
    "HAKKEN_TLS_KEY",
    "HAKKEN_TLS_CLIENT_CA",
    "HAKKEN_CA",
    "HAKKEN_CERT",
    "HAKKEN_KEY",
];

/// Log lines kept per process, printed when a test fails.
const LOG_TAIL: usize = 300;

/// How long a process may take to log that it started.
const START_PATIENCE: Duration = Duration::from_secs(30);

type Logs = Arc<Mutex<VecDeque<String>>>;

/// A `hakken coordinator` process.
pub struct CoordinatorProcess {
    child: Option<Child>,
    /// Network namespace it runs in (`ip netns exec`), if any.
    netns: Option<String>,
    /// Listen address (`--listen`).
    listen: String,
    /// The port it listens on (known once started).
    port: u16,
    /// Every other argument of `hakken coordinator`.
    args: Vec<String>,
    logs: Logs,
    /// How many times it was started.
    starts: u32,
}

impl CoordinatorProcess {
    /// Starts `hakken coordinator --listen LISTEN --port PORT ARGS...` (port 0: any
    /// free port), in `netns` if given, and waits until it logs that it started.
    pub async fn start(
        netns: Option<&str>,
        listen: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Self, String> {
        let mut process = CoordinatorProcess {
            child: None,
            netns: netns.map(str::to_owned),
            listen: listen.to_owned(),
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            logs: Arc::new(Mutex::new(VecDeque::new())),
            starts: 0,
        };
        process.spawn().await?;
        Ok(process)
    }

    /// On the loopback interface, any free port.
    pub async fn loopback(args: &[&str]) -> Self {
        match Self::start(None, "127.0.0.1", 0, args).await {
            Ok(process) => process,
            Err(error) => panic!("coordinator process starts: {error}"),
        }
    }

    /// `listen:port`: where to reach it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.listen, self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Its log lines so far (the last [`LOG_TAIL`]), all starts included.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).iter().cloned().collect()
    }

    /// Kills it with SIGKILL and waits until it is gone.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the process runs");
        child.start_kill().expect("SIGKILL sent");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("a killed process exits within 10 s")
            .expect("exit status");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        self.note(format!("--- killed with SIGKILL ({status}) ---"));
    }

    /// Stops it with SIGTERM and returns its exit code once it exits (within 30 s).
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the process runs");
        let code = terminate(&mut child).await;
        self.note(format!("--- stopped with SIGTERM (exit code {code:?}) ---"));
        code
    }

    /// Replaces the arguments it is started with from now on (a restart takes them).
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts it again on the same address and settings, retrying while the port
    /// is not free yet.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a process that was killed");
        assert_ne!(self.port, 0, "the port is known");
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            match self.spawn().await {
                Ok(()) => return,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    self.note(format!("--- restart failed, retrying: {error} ---"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the coordinator restarts on {}: {error}", self.address()),
            }
        }
    }

    fn note(&self, line: String) {
        push(&self.logs, line);
    }

    /// Spawns the binary and waits for `coordinator started`; learns the port.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        for var in SETTINGS {
            command.env_remove(var);
        }
        let port = self.port.to_string();
        command
            .arg("coordinator")
            .args(["--listen", &self.listen, "--port", &port])
            .args(["--log-format", "json"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot spawn {BIN}: {e}"))?;
        self.starts += 1;
        let start = self.starts;
        self.note(format!("--- start #{start} on port {port} ---"));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let started = tokio::time::timeout(START_PATIENCE, async {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    Ok(None) | Err(_) => return None,
                };
                push(&self.logs, line.clone());
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["fields"]["message"] == "coordinator started" {
                    return event["fields"]["address"].as_str().map(str::to_owned);
                }
            }
        })
        .await;
        let address = match started {
            Ok(Some(address)) => address,
            Ok(None) => {
                let status = child.wait().await.map(|s| s.to_string());
                return Err(format!(
                    "exited before it started ({status:?}): {}",
                    self.tail(5)
                ));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(format!(
                    "did not log `coordinator started` within {START_PATIENCE:?}: {}",
                    self.tail(5)
                ));
            }
        };
        let bound: u16 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in the logged address {address}"))?;
        assert!(
            self.port == 0 || self.port == bound,
            "asked for port {}, bound {bound}",
            self.port
        );
        self.port = bound;
        // Keep draining its logs so it never blocks on a full pipe.
        let logs = self.logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                push(&logs, line);
            }
        });
        self.child = Some(child);
        Ok(())
    }

    fn tail(&self, n: usize) -> String {
        let logs = lock(&self.logs);
        let skip = logs.len().saturating_sub(n);
        logs.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "=== logs of the coordinator process on {} ===\n{}\n=== end of logs ===",
                self.address(),
                self.tail(LOG_TAIL)
            );
        }
    }
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, ...) to process `pid`.
pub async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Sends SIGTERM to `child` and returns its exit code once it exits (within 30 s).
pub async fn terminate(child: &mut Child) -> Option<i32> {
    signal(child.id().expect("running"), "TERM").await;
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("exit status")
        .code()
}

fn lock(logs: &Logs) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    logs.lock().unwrap_or_else(PoisonError::into_inner)
}

fn push(logs: &Logs, line: String) {
    let mut logs = lock(logs);
    if logs.len() == LOG_TAIL {
        logs.pop_front();
    }
    logs.push_back(line);
}
