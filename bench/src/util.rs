//! Processes, ports, HTTP helpers, statistics and the wrk wrapper.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Paths the benchmark needs: the repo root and what was built.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub hakken: PathBuf,
    pub ceiling: PathBuf,
    pub out: PathBuf,
}

impl Paths {
    pub fn bench(&self) -> PathBuf {
        self.root.join("bench")
    }
    pub fn node_dir(&self) -> PathBuf {
        self.root.join("interop/node")
    }
}

/// A child process, killed (and reaped) when dropped.
#[allow(dead_code)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub port: u16,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released: the window for a collision is tiny).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Resident set size of a process, in KiB (0 if it is gone).
pub fn rss_kb(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size of a process, in KiB.
pub fn hwm_kb(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Which server is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Ours,
    Original,
    Ceiling,
    /// Ours with both cores (the load generator shares the second).
    OursTwoCores,
    /// The ceiling with both cores.
    CeilingTwoCores,
    /// Ours serving HTTPS itself (rustls); workload 10 only.
    OursTls,
    /// nginx terminating TLS in front of ours in plain HTTP; workload 10 only.
    NginxTls,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Original => "original",
            Target::Ceiling => "ceiling",
            Target::OursTwoCores => "ours, 2 cores",
            Target::CeilingTwoCores => "ceiling, 2 cores",
            Target::OursTls => "ours, TLS",
            Target::NginxTls => "nginx TLS → ours",
        }
    }

    /// The scheme wrk and the driver use to reach it.
    pub fn scheme(self) -> &'static str {
        match self {
            Target::OursTls | Target::NginxTls => "https",
            _ => "http",
        }
    }
}

/// Settings of a coordinator started by the benchmark.
#[derive(Clone, Debug)]
pub struct CoordOpts {
    pub heartbeat_ms: u64,
    pub missed: u32,
    pub discovery: Option<String>,
    pub resync_ms: Option<u64>,
    /// Extra flags (ours only).
    pub extra: Vec<String>,
    /// `taskset -c` core list for the server.
    pub cores: String,
    pub port: Option<u16>,
}

impl Default for CoordOpts {
    fn default() -> Self {
        CoordOpts {
            heartbeat_ms: 60_000,
            missed: 3,
            discovery: None,
            resync_ms: None,
            extra: Vec::new(),
            cores: "0".into(),
            port: None,
        }
    }
}

fn log_file(paths: &Paths, name: &str) -> Result<std::fs::File> {
    let dir = paths.out.join("logs");
    std::fs::create_dir_all(&dir)?;
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

/// Starts our coordinator (release build), pinned, and waits until it answers.
pub async fn start_ours(paths: &Paths, name: &str, opts: &CoordOpts) -> Result<Proc> {
    let proc = spawn_ours(paths, name, opts)?;
    wait_status(&proc.addr(), Duration::from_secs(30)).await?;
    Ok(proc)
}

/// Starts our coordinator (release build), pinned, without waiting for it.
pub fn spawn_ours(paths: &Paths, name: &str, opts: &CoordOpts) -> Result<Proc> {
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(&opts.cores).arg(&paths.hakken);
    cmd.args(["coordinator", "--listen", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--heartbeat-interval")
        .arg(opts.heartbeat_ms.to_string())
        .arg("--missed-heartbeats-allowed")
        .arg(opts.missed.to_string());
    if let Some(d) = &opts.discovery {
        cmd.arg("--discovery-host").arg(d);
    }
    if let Some(r) = opts.resync_ms {
        cmd.arg("--resync-interval").arg(r.to_string());
    }
    cmd.args(&opts.extra);
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(paths, name)?);
    let child = cmd.spawn().context("start our coordinator")?;
    Ok(Proc {
        name: name.into(),
        child,
        port,
    })
}

/// Starts a process that prints `READY <port>` on stdout; waits for that line.
fn start_ready(name: &str, mut cmd: Command, paths: &Paths) -> Result<Proc> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(paths, name)?);
    let mut child = cmd.spawn().with_context(|| format!("start {name}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not print READY within 30 s (see out/logs/{name}.log)");
        }
    };
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("{name}: unexpected first line {line:?}"))?;
    Ok(Proc {
        name: name.into(),
        child,
        port,
    })
}

/// Starts the original coordinator (npm hakken 0.1.12 through interop/node), pinned.
pub async fn start_original(paths: &Paths, name: &str, opts: &CoordOpts) -> Result<Proc> {
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(&opts.cores)
        .arg("node")
        .arg(paths.node_dir().join("coordinator.js"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--heartbeat")
        .arg(opts.heartbeat_ms.to_string())
        .arg("--missed")
        .arg(opts.missed.to_string());
    if let Some(d) = &opts.discovery {
        cmd.arg("--discovery").arg(d);
    }
    if let Some(r) = opts.resync_ms {
        cmd.arg("--resync").arg(r.to_string());
    }
    let proc = start_ready(name, cmd, paths)?;
    wait_status(&proc.addr(), Duration::from_secs(30)).await?;
    Ok(proc)
}

/// Starts the ceiling server, pinned, serving `bodies` (service, file).
pub async fn start_ceiling(
    paths: &Paths,
    bodies: &[(String, PathBuf)],
    cores: &str,
) -> Result<Proc> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cores)
        .arg(&paths.ceiling)
        .args(["--port", "0"]);
    for (service, file) in bodies {
        cmd.arg("--body")
            .arg(format!("{service}={}", file.display()));
    }
    let proc = start_ready("ceiling", cmd, paths)?;
    wait_status(&proc.addr(), Duration::from_secs(30)).await?;
    Ok(proc)
}

pub async fn start_target(
    target: Target,
    paths: &Paths,
    opts: &CoordOpts,
    bodies: &[(String, PathBuf)],
) -> Result<Proc> {
    match target {
        Target::Ours => start_ours(paths, "ours", opts).await,
        Target::Original => start_original(paths, "original", opts).await,
        Target::Ceiling => start_ceiling(paths, bodies, "0").await,
        Target::OursTwoCores => {
            let opts = CoordOpts {
                cores: "0-1".into(),
                ..opts.clone()
            };
            start_ours(paths, "ours-2cores", &opts).await
        }
        Target::CeilingTwoCores => start_ceiling(paths, bodies, "0-1").await,
        Target::OursTls | Target::NginxTls => bail!("workload 10 starts {}", target.label()),
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Polls `GET /status` until it answers 200.
pub async fn wait_status(addr: &str, limit: Duration) -> Result<()> {
    wait_status_at(&http(), &format!("http://{addr}"), limit).await
}

/// Polls `GET {base}/status` with `client` until it answers 200.
pub async fn wait_status_at(client: &reqwest::Client, base: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.get(format!("{base}/status")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{base} did not answer /status within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs every body to `/v1/listings?heartbeat=true` with `concurrency` requests in
/// flight; fails on any answer but 201. Returns how long it took.
pub async fn load(addr: &str, bodies: Vec<String>, concurrency: usize) -> Result<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()?;
    load_at(&client, &format!("http://{addr}"), bodies, concurrency).await
}

/// [`load`] to `base` (`http://…` or `https://…`) with `client`.
pub async fn load_at(
    client: &reqwest::Client,
    base: &str,
    bodies: Vec<String>,
    concurrency: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let bodies = std::sync::Arc::new(bodies);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{base}/v1/listings?heartbeat=true");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, bodies, next, url) =
            (client.clone(), bodies.clone(), next.clone(), url.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok(());
                };
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if r.status().as_u16() != 201 {
                    bail!("POST answered {}", r.status());
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

/// The body of `GET /v1/listings/:service`.
pub async fn get_body(addr: &str, service: &str) -> Result<bytes::Bytes> {
    let r = http()
        .get(format!("http://{addr}/v1/listings/{service}"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("GET {service} answered {}", r.status());
    }
    Ok(r.bytes().await?)
}

/// What wrk's summary line reports.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_status: u64,
    pub errors_timeout: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }
    pub fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
    }
}

/// How wrk is run: one thread pinned to core 1.
pub struct WrkSpec<'a> {
    pub url: String,
    pub script: &'a str,
    pub connections: u32,
    pub seconds: u32,
    pub env: Vec<(String, String)>,
}

pub fn wrk_command_line(spec: &WrkSpec) -> String {
    format!(
        "taskset -c 1 wrk -t1 -c{} -d{}s --timeout 5s -s bench/wrk/{} {}",
        spec.connections,
        spec.seconds,
        spec.script,
        generic_port(&spec.url)
    )
}

/// Runs wrk (bounded by its own duration, and killed after duration + 30 s).
pub async fn run_wrk(paths: &Paths, spec: &WrkSpec<'_>) -> Result<WrkResult> {
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{}s", spec.seconds))
        .args(["--timeout", "5s", "-s"])
        .arg(paths.bench().join("wrk").join(spec.script))
        .arg(&spec.url)
        .env("BENCH_WRK_DIR", paths.bench().join("wrk"))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let limit = Duration::from_secs(spec.seconds as u64 + 60);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("wrk did not finish in {limit:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or_else(|| {
            anyhow!(
                "wrk printed no summary: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

/// Busy and total jiffies of cores 0 and 1 (from /proc/stat), for [`busy_since`].
pub fn core_times() -> [(u64, u64); 2] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = [(0, 0); 2];
    for (core, slot) in out.iter_mut().enumerate() {
        let prefix = format!("cpu{core} ");
        let Some(line) = stat.lines().find(|l| l.starts_with(&prefix)) else {
            continue;
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // idle and iowait
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        *slot = (total - idle, total);
    }
    out
}

/// How busy cores 0 and 1 were since `before` (0..=1 each).
pub fn busy_since(before: &[(u64, u64); 2]) -> [f64; 2] {
    let now = core_times();
    std::array::from_fn(|i| {
        let busy = now[i].0.saturating_sub(before[i].0) as f64;
        let total = now[i].1.saturating_sub(before[i].1) as f64;
        if total > 0.0 {
            busy / total
        } else {
            0.0
        }
    })
}

/// Percentile (0..=100) of sorted values.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

pub fn rps(v: f64) -> String {
    let whole = v.round() as u64;
    let s = whole.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// `http://127.0.0.1:4711/x` → `http://127.0.0.1:PORT/x`.
pub fn generic_port(url: &str) -> String {
    match url.split_once("127.0.0.1:") {
        Some((head, tail)) => {
            let rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{head}127.0.0.1:PORT{rest}")
        }
        None => url.to_owned(),
    }
}
