//! The cluster under test: our coordinators and the original's, behind nginx,
//! which is every coordinator's discovery host and every client's way in. One of
//! ours lives in the network namespace when there is one.

use crate::common::nginx::Nginx;
use crate::common::node::{NodeCoordinator, NodeOptions};
use crate::common::process::{signal, CoordinatorProcess};
use crate::net::Net;
use crate::record::{Kind, Recorder, Resources};
use crate::Settings;
use std::path::{Path, PathBuf};

/// A coordinator of either kind.
pub enum Node {
    Ours(CoordinatorProcess),
    Original(NodeCoordinator),
}

pub struct Coordinator {
    pub kind: Kind,
    pub node: Node,
    /// `ip:port` where everything reaches it.
    pub address: String,
    /// Its number in the record.
    pub id: usize,
    /// Whether it lives in the network namespace.
    pub in_namespace: bool,
}

impl Coordinator {
    pub fn pid(&self) -> Option<u32> {
        match &self.node {
            Node::Ours(p) => p.pid(),
            Node::Original(n) => n.pid(),
        }
    }

    pub async fn kill9(&mut self) {
        match &mut self.node {
            Node::Ours(p) => p.kill9().await,
            Node::Original(n) => n.kill9().await,
        }
    }

    pub async fn restart(&mut self) {
        match &mut self.node {
            Node::Ours(p) => p.restart().await,
            Node::Original(n) => n.restart(None).await,
        }
    }

    pub async fn stop(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP").await;
        }
    }

    pub async fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT").await;
        }
    }
}

pub struct Cluster {
    pub coordinators: Vec<Coordinator>,
    /// Runs as long as the cluster (killed when dropped).
    _nginx: Nginx,
    /// nginx's address: the way in.
    pub lb: String,
    /// Our coordinators' data directories, removed with the cluster.
    _data: DataRoot,
}

/// A directory of this cluster's own (another run of the same test, from the
/// same checkout, must not read its coordinators' files), removed when dropped
/// unless the test failed; those of processes gone are removed at the next start.
struct DataRoot(PathBuf);

/// The name of every cluster's directory of data: `hakken-chaos-PID-N`.
const DATA_ROOT_PREFIX: &str = "hakken-chaos-";

impl DataRoot {
    fn new() -> DataRoot {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let temp = std::env::temp_dir();
        // Left by a run that was interrupted (its process is gone).
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(DATA_ROOT_PREFIX))
                .and_then(|rest| rest.split('-').next());
            if let Some(pid) = pid {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = temp.join(format!("{DATA_ROOT_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        DataRoot(root)
    }

    fn of(&self, i: usize) -> PathBuf {
        self.0.join(format!("data-{i}"))
    }
}

impl Drop for DataRoot {
    fn drop(&mut self) {
        // A failed run's files are kept for whoever looks into it.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The arguments of one of our coordinators (`hakken coordinator`).
fn our_args(announce: &str, h_ms: u64, discovery: Option<&str>, data_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--announce-host",
        announce,
        "--heartbeat-interval",
        &h_ms.to_string(),
        "--request-timeout",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(discovery) = discovery {
        args.extend(["--discovery-host".to_owned(), discovery.to_owned()]);
    }
    // Each keeps its registry on disk, as a deployment would: a restart of every
    // coordinator at once then keeps every listing's remaining time.
    args.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl Cluster {
    /// Starts every coordinator on a port of its own, then nginx in front of them,
    /// then each one again with nginx as its discovery host.
    pub async fn start(settings: &Settings, net: &Net, recorder: &Recorder) -> Cluster {
        let h = settings.h_ms;
        let data = DataRoot::new();
        let mut coordinators = Vec::new();
        for i in 0..settings.ours {
            let namespace = if i == 0 { net.namespace.as_ref() } else { None };
            let ip = namespace.map_or(net.host_ip.as_str(), |ns| ns.ip.as_str());
            let args = our_args(ip, h, None, &data.of(i));
            let process = CoordinatorProcess::start(
                namespace.map(|ns| ns.name.as_str()),
                ip,
                0,
                &strs(&args),
            )
            .await
            .unwrap_or_else(|e| panic!("our coordinator starts: {e}"));
            let address = process.address();
            coordinators.push(Coordinator {
                kind: Kind::Ours,
                id: recorder.coordinator(Kind::Ours, &address),
                node: Node::Ours(process),
                address,
                in_namespace: namespace.is_some(),
            });
        }
        for _ in 0..settings.originals {
            let mut options = NodeOptions::new(None, h, h * 10);
            options.announce = Some(net.host_ip.clone());
            let node = NodeCoordinator::start_with(options).await;
            let address = format!("{}:{}", net.host_ip, node.port);
            coordinators.push(Coordinator {
                kind: Kind::Original,
                id: recorder.coordinator(Kind::Original, &address),
                node: Node::Original(node),
                address,
                in_namespace: false,
            });
        }
        let upstreams: Vec<String> = coordinators.iter().map(|c| c.address.clone()).collect();
        let nginx = Nginx::start(&upstreams, &net.host_ip).await;
        let lb = nginx.address();
        for (i, c) in coordinators.iter_mut().enumerate() {
            c.kill9().await;
            match &mut c.node {
                Node::Ours(p) => {
                    let ip = c.address.rsplit_once(':').expect("ip:port").0.to_owned();
                    p.set_args(&strs(&our_args(&ip, h, Some(&lb), &data.of(i))));
                    p.restart().await;
                }
                Node::Original(n) => n.restart(Some(&lb)).await,
            }
        }
        // The original hears of coordinators only from what the discovery host
        // answers it once a resync period, and from the lists of those it knows.
        // nginx's round robin can hand one original the same backend (itself, or
        // the other original) period after period, so that it never hears of ours
        // within the test's minute (it happened). The faults, not the original's
        // discovery, are under test here: each original is told of every other
        // coordinator once, as an operator would. Ours find each other alone.
        for original in coordinators.iter().filter(|c| c.kind == Kind::Original) {
            for other in coordinators
                .iter()
                .filter(|c| c.address != original.address)
            {
                let descriptor = serde_json::json!({ "host": other.address }).to_string();
                let (status, _) =
                    crate::common::post(&original.address, "/v1/coordinator", descriptor).await;
                assert!(
                    (200..300).contains(&status),
                    "the original at {} takes {}: {status}",
                    original.address,
                    other.address
                );
            }
        }
        Cluster {
            coordinators,
            _nginx: nginx,
            lb,
            _data: data,
        }
    }

    /// Records the memory and descriptors of each of our coordinators.
    pub fn sample_resources(&self, recorder: &Recorder) {
        for c in &self.coordinators {
            let (Kind::Ours, Some(pid)) = (c.kind, c.pid()) else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss_kb = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
            if rss_kb > 0 {
                recorder.resources(Resources {
                    coordinator: c.id,
                    pid,
                    at: recorder.now(),
                    rss_kb,
                    fds,
                });
            }
        }
    }
}
