//! Workload 9 (issue #12): a coordinator that joins or restarts.
//!
//! - **Join**: two coordinators hold N listings; a third starts with the first as
//!   discovery host. Measured: from spawning it until it answers every service's
//!   listings exactly as its peers do.
//! - **Whole-cluster restart**: three coordinators and their publishers; all three
//!   are killed with SIGKILL and started again at once. Measured: from the
//!   restart until every coordinator answers every listing again; until then,
//!   readers get incomplete answers.
//!
//! Publishers are the original's client (interop/node/client.js, 10 processes of
//! 100 listings) for the original, and our client library (10 clients of 100
//! listings, in this driver) for ours; both heartbeat every 2 s and poll for
//! coordinators every 6 s, a tenth of the original client's defaults (20 s and
//! 60 s), so that a run takes seconds rather than minutes.

use crate::util::*;
use crate::{Check, Ctx, Section};
use anyhow::{anyhow, bail, Context, Result};
use hakken::client::{Client, ClientConfig};
use hakken::listing::Listing;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const PUBLISHERS: usize = 10;
const PER_PUBLISHER: usize = 100;
const CLIENT_HEARTBEAT_MS: u64 = 2_000;
const CLIENT_POLL_MS: u64 = 6_000;
/// Longest wait for a coordinator to answer like its peers.
const LIMIT: Duration = Duration::from_secs(120);

/// The original's client in a Node process, driven by JSON lines.
struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl NodeClient {
    async fn start(ctx: &Ctx, host: &str) -> Result<NodeClient> {
        let mut child = Command::new("taskset")
            .args(["-c", "1", "node"])
            .arg(ctx.paths.node_dir().join("client.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start node client.js")?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut client = NodeClient {
            child,
            stdin,
            lines,
            next_id: 0,
        };
        client
            .call(
                json!({"cmd": "start", "host": host, "heartbeatInterval": CLIENT_HEARTBEAT_MS,
                         "pollInterval": CLIENT_POLL_MS, "resyncInterval": CLIENT_POLL_MS * 10}),
            )
            .await?;
        Ok(client)
    }

    async fn call(&mut self, mut request: Value) -> Result<Value> {
        self.next_id += 1;
        request["id"] = json!(self.next_id);
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .map_err(|_| anyhow!("client.js did not answer {request}"))??
            .ok_or_else(|| anyhow!("client.js exited"))?;
        let reply: Value = serde_json::from_str(&line)?;
        if reply["ok"] != true {
            bail!("client.js: {request} failed: {reply}");
        }
        Ok(reply)
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The publishers of one run, of whichever kind.
enum Publishers {
    Node(Vec<NodeClient>),
    Ours(Vec<Client>),
}

fn listing_of(publisher: usize, i: usize) -> Value {
    json!({
        "service": format!("join-{}", i % 10),
        "host": format!("10.0.{publisher}.{i}:8080"),
        "zone": format!("z{}", i % 3),
    })
}

impl Publishers {
    /// 10 publishers of 100 listings each, all entering through `host`.
    async fn start(ctx: &Ctx, target: Target, host: &str) -> Result<Publishers> {
        match target {
            Target::Original => {
                let mut all = Vec::new();
                for p in 0..PUBLISHERS {
                    let mut client = NodeClient::start(ctx, host).await?;
                    for i in 0..PER_PUBLISHER {
                        client
                            .call(json!({"cmd": "publish", "listing": listing_of(p, i)}))
                            .await?;
                    }
                    all.push(client);
                }
                Ok(Publishers::Node(all))
            }
            _ => {
                let mut all = Vec::new();
                for p in 0..PUBLISHERS {
                    let client = Client::new(
                        ClientConfig::new(host)
                            .heartbeat_interval(Duration::from_millis(CLIENT_HEARTBEAT_MS))
                            .poll_interval(Duration::from_millis(CLIENT_POLL_MS)),
                    );
                    client.start().await?;
                    for i in 0..PER_PUBLISHER {
                        let listing: Listing = serde_json::from_value(listing_of(p, i))?;
                        client.publish(listing).await?;
                    }
                    all.push(client);
                }
                Ok(Publishers::Ours(all))
            }
        }
    }

    async fn close(self) {
        match self {
            Publishers::Ours(clients) => {
                for client in clients {
                    client.close().await;
                }
            }
            // Killed: the original's close() does not withdraw anything anyway.
            Publishers::Node(clients) => drop(clients),
        }
    }
}

/// Listings per service at `addr`, for `services`; `None` if any read failed.
async fn counts(client: &reqwest::Client, addr: &str, services: &[String]) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(services.len());
    for service in services {
        let response = client
            .get(format!("http://{addr}/v1/listings/{service}"))
            .send()
            .await
            .ok()?;
        if response.status() == 404 {
            out.push(0);
            continue;
        }
        let body: Vec<Value> = response.json().await.ok()?;
        out.push(body.len());
    }
    Some(out)
}

/// Reads `addr` until each of `services` has `want` listings; the time from `t0`.
async fn until_like(
    addr: &str,
    services: &[String],
    want: &[usize],
    t0: Instant,
) -> Option<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()?;
    while t0.elapsed() < LIMIT {
        if counts(&client, addr, services).await.as_deref() == Some(want) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn start_kind(ctx: &Ctx, target: Target, name: &str, opts: &CoordOpts) -> Result<Proc> {
    match target {
        Target::Original => start_original(&ctx.paths, name, opts).await,
        _ => start_ours(&ctx.paths, name, opts).await,
    }
}

fn opts(discovery: Option<String>, port: Option<u16>) -> CoordOpts {
    CoordOpts {
        heartbeat_ms: 60_000,
        discovery,
        port,
        ..CoordOpts::default()
    }
}

fn services(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("join-{i}")).collect()
}

/// A third coordinator joins two that hold the listings of the publishers (1,000).
async fn join_with_publishers(ctx: &Ctx, target: Target) -> Result<Option<Duration>> {
    let a = start_kind(
        ctx,
        target,
        &format!("{}-join-a", target.label()),
        &opts(None, None),
    )
    .await?;
    let b = start_kind(
        ctx,
        target,
        &format!("{}-join-b", target.label()),
        &opts(Some(a.addr()), None),
    )
    .await?;
    let publishers = Publishers::start(ctx, target, &a.addr()).await?;
    let services = services(10);
    let want = vec![PUBLISHERS * PER_PUBLISHER / 10; 10];
    for peer in [&a, &b] {
        until_like(&peer.addr(), &services, &want, Instant::now())
            .await
            .with_context(|| format!("{} never held every listing", peer.name))?;
    }
    let t0 = Instant::now();
    let c = start_kind(
        ctx,
        target,
        &format!("{}-join-c", target.label()),
        &opts(Some(a.addr()), None),
    )
    .await?;
    let time = until_like(&c.addr(), &services, &want, t0).await;
    publishers.close().await;
    Ok(time)
}

/// Ours only: two coordinators loaded with `n` listings (`n / 1000` services),
/// straight through the API; a third joins.
async fn join_loaded(ctx: &Ctx, n: usize) -> Result<Option<Duration>> {
    let a = start_ours(&ctx.paths, &format!("ours-join{n}-a"), &opts(None, None)).await?;
    let b = start_ours(
        &ctx.paths,
        &format!("ours-join{n}-b"),
        &opts(Some(a.addr()), None),
    )
    .await?;
    let per_service = 1_000;
    let service_count = n / per_service;
    let bodies: Vec<String> = (0..n)
        .map(|i| crate::workloads::listing(&format!("join-{}", i / per_service), i))
        .collect();
    for peer in [&a, &b] {
        load(&peer.addr(), bodies.clone(), 32).await?;
    }
    let services = services(service_count);
    let want = vec![per_service; service_count];
    let t0 = Instant::now();
    let c = start_ours(
        &ctx.paths,
        &format!("ours-join{n}-c"),
        &opts(Some(a.addr()), None),
    )
    .await?;
    Ok(until_like(&c.addr(), &services, &want, t0).await)
}

/// Three coordinators and their publishers; all three killed and restarted at
/// once. The time until the slowest answers every listing again.
async fn whole_cluster_restart(ctx: &Ctx, target: Target) -> Result<Option<Duration>> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let discovery = format!("127.0.0.1:{}", ports[0]);
    let options: Vec<CoordOpts> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| opts((i > 0).then(|| discovery.clone()), Some(*port)))
        .collect();
    let mut procs = Vec::new();
    for (i, o) in options.iter().enumerate() {
        procs.push(start_kind(ctx, target, &format!("{}-restart-{i}", target.label()), o).await?);
    }
    let publishers = Publishers::start(ctx, target, &discovery).await?;
    let services = services(10);
    let want = vec![PUBLISHERS * PER_PUBLISHER / 10; 10];
    for p in &procs {
        until_like(&p.addr(), &services, &want, Instant::now())
            .await
            .with_context(|| format!("{} never held every listing", p.name))?;
    }
    // Every coordinator dies at once, and comes back at once.
    for p in &mut procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let t0 = Instant::now();
    let mut restarted = Vec::new();
    for (i, o) in options.iter().enumerate() {
        let name = format!("{}-restart-{i}-again", target.label());
        restarted.push(start_kind(ctx, target, &name, o).await?);
    }
    drop(procs);
    let mut slowest = Some(Duration::ZERO);
    for p in &restarted {
        let time = until_like(&p.addr(), &services, &want, t0).await;
        slowest = match (slowest, time) {
            (Some(s), Some(t)) => Some(s.max(t)),
            _ => None,
        };
    }
    publishers.close().await;
    Ok(slowest)
}

/// Hosts `addr` lists, or `None` when it does not answer.
async fn listed(client: &reqwest::Client, addr: &str) -> Option<Vec<String>> {
    let response = client
        .get(format!("http://{addr}/v1/coordinator"))
        .send()
        .await
        .ok()?;
    let list: Vec<Value> = response.json().await.ok()?;
    Some(
        list.iter()
            .filter_map(|d| d["host"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Polls until `check` holds for the lists of every one of `addrs`.
async fn until_lists(
    addrs: &[String],
    check: impl Fn(&[String]) -> bool,
    t0: Instant,
) -> Option<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    while t0.elapsed() < LIMIT {
        let mut all = true;
        for addr in addrs {
            all &= listed(&client, addr).await.is_some_and(|l| check(&l));
        }
        if all {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Three coordinators behind nginx (H = 1 s), nginx their discovery host; one is
/// killed, left down until its peers drop it, and restarted, `runs` times. The
/// time from each restart until every peer lists it again.
async fn restarts_behind_nginx(
    ctx: &Ctx,
    target: Target,
    runs: usize,
) -> Result<Vec<Option<Duration>>> {
    let dir = ctx
        .paths
        .out
        .join(format!("nginx-restart-{}", target.label()));
    std::fs::create_dir_all(&dir)?;
    let lb = free_port()?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let conf = dir.join("nginx.conf");
    write(&conf, &crate::convergence::nginx_conf(&dir, lb, &ports))?;
    let nginx = std::process::Command::new("taskset")
        .args(["-c", "1", "nginx", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .spawn()
        .context("start nginx")?;
    let _nginx = Proc {
        name: "nginx".into(),
        child: nginx,
        port: lb,
    };
    let options: Vec<CoordOpts> = ports
        .iter()
        .map(|port| CoordOpts {
            heartbeat_ms: 1_000,
            discovery: Some(format!("127.0.0.1:{lb}")),
            port: Some(*port),
            ..CoordOpts::default()
        })
        .collect();
    let mut procs = Vec::new();
    for (i, o) in options.iter().enumerate() {
        procs.push(start_kind(ctx, target, &format!("{}-lbrestart-{i}", target.label()), o).await?);
    }
    let addrs: Vec<String> = procs.iter().map(|p| p.addr()).collect();
    let peers: Vec<String> = addrs[1..].to_vec();
    let host = addrs[0].clone();
    let hosts_of = |l: &[String]| -> Vec<String> {
        l.iter()
            .map(|h| h.replace("localhost", "127.0.0.1"))
            .collect()
    };
    let mut times = Vec::new();
    if crate::convergence::converge(&addrs, 3, Instant::now())
        .await
        .is_none()
    {
        // The original behind nginx may keep resyncing with itself (section 8).
        eprintln!("{}: the three never converged behind nginx", target.label());
        return Ok(times);
    }
    for run in 0..runs {
        let p = &mut procs[0];
        let _ = p.child.kill();
        let _ = p.child.wait();
        until_lists(&peers, |l| !hosts_of(l).contains(&host), Instant::now())
            .await
            .context("the peers never dropped the killed one")?;
        let t0 = Instant::now();
        procs[0] = start_kind(
            ctx,
            target,
            &format!("{}-lbrestart-0-{run}", target.label()),
            &options[0],
        )
        .await?;
        let time = until_lists(&peers, |l| hosts_of(l).contains(&host), t0).await;
        eprintln!(
            "{} restart {run} behind nginx: {}",
            target.label(),
            secs(time)
        );
        times.push(time);
    }
    Ok(times)
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| format!("not within {} s", LIMIT.as_secs()))
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let ours_1k = join_with_publishers(ctx, Target::Ours).await?;
    eprintln!("join 1,000: ours {}", secs(ours_1k));
    let original_1k = join_with_publishers(ctx, Target::Original).await?;
    eprintln!("join 1,000: original {}", secs(original_1k));
    let ours_100k = join_loaded(ctx, 100_000).await?;
    eprintln!("join 100,000: ours {}", secs(ours_100k));
    let ours_restart = whole_cluster_restart(ctx, Target::Ours).await?;
    eprintln!("whole-cluster restart: ours {}", secs(ours_restart));
    let original_restart = whole_cluster_restart(ctx, Target::Original).await?;
    eprintln!("whole-cluster restart: original {}", secs(original_restart));
    let ours_lb = restarts_behind_nginx(ctx, Target::Ours, 6).await?;
    let original_lb = restarts_behind_nginx(ctx, Target::Original, 3).await?;
    let list = |times: &[Option<Duration>]| {
        if times.is_empty() {
            return "never converged behind nginx (see section 8)".to_owned();
        }
        times
            .iter()
            .map(|t| secs(*t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut md = format!(
        "**Join.** Two coordinators hold N listings; a third starts with the first as its \
         discovery host (H = 60 s). Measured from spawning the third until it answers every \
         service's listings exactly as its peers do (read every 10 ms, all services each \
         time), so it includes process start. With 1,000 listings the publishers are real \
         clients ({PUBLISHERS} × {PER_PUBLISHER}; the original's client for the original, \
         ours for ours) with heartbeats every {CLIENT_HEARTBEAT_MS} ms and coordinator polls \
         every {CLIENT_POLL_MS} ms, a tenth of the original client's defaults. With 100,000 \
         (100 services of 1,000) the listings are loaded through the API, ours only: the \
         original's joiner gets nothing without its publishers, and from them only at their \
         next poll plus heartbeat (80 s at the defaults).\n\n\
         | listings | ours: answers like its peers after | original: after |\n\
         | ---: | ---: | ---: |\n\
         | 1,000 | {} | {} |\n\
         | 100,000 | {} | not run (see above) |\n\n\
         **Whole-cluster restart.** Three coordinators (H = 60 s) and the same publishers \
         (1,000 listings); all three killed with SIGKILL and started again at once, so there \
         is nobody to copy from. Measured from the restart until the slowest coordinator \
         answers every listing again; until then readers get incomplete answers (ours flag \
         them `X-Hakken-Complete: false`, and our watches keep what they held).\n\n\
         | | ours | original |\n| --- | ---: | ---: |\n\
         | readers incomplete for | {} | {} |\n",
        secs(ours_1k),
        secs(original_1k),
        secs(ours_100k),
        secs(ours_restart),
        secs(original_restart),
    );
    let _ = writeln!(
        md,
        "\nOurs: the restarted coordinators' new `X-Hakken-Instance` (and their \
         partial answers) make our clients publish everything at once instead of at the \
         next heartbeat. The original: its clients find the coordinators again at their \
         next heartbeat or poll.\n\n\
         **Restarts behind nginx.** Three coordinators behind nginx (round robin, \
         `max_fails=0`), nginx their discovery host, H = 1 s. One is killed, left down \
         until both peers have dropped it, and started again; measured from the restart \
         until both peers list it. Ours announce themselves straight to every peer the \
         discovery answer names, and again when the balancer routes an announcement back \
         to them.\n\n\
         | target | restarts | known to every peer after (each) |\n| --- | ---: | --- |\n\
         | ours | {} | {} |\n| original | {} | {} |",
        ours_lb.len(),
        list(&ours_lb),
        original_lb.len(),
        list(&original_lb),
    );
    let within = |d: Option<Duration>, limit: f64| d.map(|d| d.as_secs_f64() <= limit);
    let checks = vec![
        Check {
            what: "9. Join, 1,000 listings".into(),
            target: "complete ≤ 1 s after start".into(),
            measured: format!("ours {}; original {}", secs(ours_1k), secs(original_1k)),
            met: within(ours_1k, 1.0),
        },
        Check {
            what: "9. Join, 100,000 listings".into(),
            target: "complete ≤ 5 s after start".into(),
            measured: format!("ours {}", secs(ours_100k)),
            met: within(ours_100k, 5.0),
        },
        Check {
            what: "9. Restarts behind nginx".into(),
            target: "known to all peers ≤ 2 s".into(),
            measured: format!(
                "ours: max {}; original: {}",
                secs(
                    ours_lb
                        .iter()
                        .copied()
                        .try_fold(Duration::ZERO, |m, t| t.map(|t| m.max(t)))
                ),
                list(&original_lb)
            ),
            met: Some(
                ours_lb
                    .iter()
                    .all(|t| t.is_some_and(|t| t.as_secs_f64() <= 2.0)),
            ),
        },
        Check {
            what: "9. Whole-cluster restart".into(),
            target: "as short as our clients allow (documented)".into(),
            measured: format!(
                "ours {}; original {}",
                secs(ours_restart),
                secs(original_restart)
            ),
            met: None,
        },
    ];
    Ok(Section {
        order: 9,
        title: "9. Join and restart (issue #12)".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}
