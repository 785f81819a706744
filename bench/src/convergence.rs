//! Workload 8 (issue #9): gossip convergence. N coordinators started at once, all
//! with the first one as discovery host; and three behind nginx, cold.

use crate::util::*;
use crate::workloads::metric;
use crate::{Check, Ctx, Section};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const H_MS: u64 = 1_000;
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Desc {
    host: String,
}

/// Polls every coordinator's `GET /v1/coordinator` every 25 ms until each lists
/// `n` coordinators; the time from `t0`, or None at the limit.
pub async fn converge(addrs: &[String], n: usize, t0: Instant) -> Option<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let mut done = vec![false; addrs.len()];
    while t0.elapsed() < LIMIT {
        for (i, addr) in addrs.iter().enumerate() {
            if done[i] {
                continue;
            }
            if let Ok(r) = client
                .get(format!("http://{addr}/v1/coordinator"))
                .send()
                .await
            {
                if let Ok(list) = r.json::<Vec<Desc>>().await {
                    let mut hosts: Vec<&str> = list.iter().map(|d| d.host.as_str()).collect();
                    hosts.sort_unstable();
                    hosts.dedup();
                    done[i] = hosts.len() >= n;
                }
            }
        }
        if done.iter().all(|d| *d) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// Requests per second each coordinator received over a quiet window (ours: from
/// /metrics, without the /metrics requests themselves), and polls it sent.
async fn traffic(addrs: &[String]) -> Result<(f64, f64, f64)> {
    let window = Duration::from_secs(5);
    let mut before = Vec::new();
    for a in addrs {
        before.push((
            metric(a, "hakken_http_requests_total", &[], &["/metrics"]).await?,
            metric(a, "hakken_gossip_polls_total", &[], &[]).await?,
        ));
    }
    tokio::time::sleep(window).await;
    let (mut sum_in, mut max_in, mut sum_out) = (0.0f64, 0.0f64, 0.0f64);
    for (a, (r0, p0)) in addrs.iter().zip(before) {
        let r1 = metric(a, "hakken_http_requests_total", &[], &["/metrics"]).await?;
        let p1 = metric(a, "hakken_gossip_polls_total", &[], &[]).await?;
        let rin = (r1 - r0) / window.as_secs_f64();
        sum_in += rin;
        max_in = max_in.max(rin);
        sum_out += (p1 - p0) / window.as_secs_f64();
    }
    let n = addrs.len() as f64;
    Ok((sum_in / n, max_in, sum_out / n))
}

async fn star(
    ctx: &Ctx,
    target: Target,
    n: usize,
) -> Result<(Option<Duration>, Option<(f64, f64, f64)>)> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
    let discovery = format!("127.0.0.1:{}", ports[0]);
    let t0 = Instant::now();
    // Started without waiting for each other: spawn all, then wait for /status.
    let mut procs = Vec::new();
    let mut spawns = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let opts = CoordOpts {
            heartbeat_ms: H_MS,
            discovery: Some(discovery.clone()),
            port: Some(*port),
            ..CoordOpts::default()
        };
        let paths = ctx.paths.clone();
        let name = format!("{}-conv{n}-{i}", target.label());
        spawns.push(tokio::spawn(async move {
            match target {
                Target::Ours => start_ours(&paths, &name, &opts).await,
                _ => start_original(&paths, &name, &opts).await,
            }
        }));
    }
    for s in spawns {
        procs.push(s.await??);
    }
    let addrs: Vec<String> = procs.iter().map(|p| p.addr()).collect();
    let time = converge(&addrs, n, t0).await;
    let traffic = if target == Target::Ours && time.is_some() {
        Some(traffic(&addrs).await?)
    } else {
        None
    };
    Ok((time, traffic))
}

pub fn nginx_conf(dir: &std::path::Path, port: u16, upstreams: &[u16]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
        .collect();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream hakken {{\n{servers}  }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://hakken;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
               proxy_next_upstream error timeout;\n      proxy_connect_timeout 1s;\n    }}\n  }}\n}}\n",
        d = dir.display()
    )
}

/// Three coordinators behind one nginx (round robin), all with nginx as discovery
/// host, started at once, cold.
async fn behind_nginx(ctx: &Ctx, target: Target, run: usize) -> Result<Option<Duration>> {
    let dir = ctx
        .paths
        .out
        .join(format!("nginx-{}-{run}", target.label()));
    std::fs::create_dir_all(&dir)?;
    let lb = free_port()?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let conf = dir.join("nginx.conf");
    write(&conf, &nginx_conf(&dir, lb, &ports))?;
    let t0 = Instant::now();
    let nginx = std::process::Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .spawn()
        .context("start nginx")?;
    let _nginx = Proc {
        name: "nginx".into(),
        child: nginx,
        port: lb,
    };
    let mut spawns = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let opts = CoordOpts {
            heartbeat_ms: H_MS,
            discovery: Some(format!("127.0.0.1:{lb}")),
            port: Some(*port),
            ..CoordOpts::default()
        };
        let paths = ctx.paths.clone();
        let name = format!("{}-nginx{run}-{i}", target.label());
        spawns.push(tokio::spawn(async move {
            match target {
                Target::Ours => start_ours(&paths, &name, &opts).await,
                _ => start_original(&paths, &name, &opts).await,
            }
        }));
    }
    let mut procs = Vec::new();
    for s in spawns {
        procs.push(s.await??);
    }
    let addrs: Vec<String> = procs.iter().map(|p| p.addr()).collect();
    Ok(converge(&addrs, 3, t0).await)
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| format!("not within {} s", LIMIT.as_secs()))
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let mut md = format!(
        "**Star.** N coordinators are started at once (all pinned to core 0), each with \
         the first one (`127.0.0.1:P0`) as discovery host and H = {H_MS} ms (so peers are \
         polled every second; resync H × 10); converged when every coordinator's \
         `GET /v1/coordinator` lists all N (checked every 25 ms from the driver). Time from \
         spawning the processes, so it includes process start (Node takes longer to start \
         than our binary). Gossip traffic: over 5 s after convergence, the requests each of \
         ours received (from /metrics, minus /metrics itself) and the polls it sent.\n\n\
         | N | ours: converged after | ours: requests received per s per coordinator (avg / max) | ours: polls sent per s per coordinator | original: converged after |\n\
         | ---: | ---: | ---: | ---: | ---: |\n"
    );
    let mut checks = Vec::new();
    for n in [3usize, 10, 30] {
        let (t, traffic) = star(ctx, Target::Ours, n).await?;
        let orig = if n <= 10 {
            secs(star(ctx, Target::Original, n).await?.0)
        } else {
            "not run (30 Node processes on one core)".into()
        };
        let (tin, tout) = match traffic {
            Some((avg, max, out)) => (format!("{avg:.1} / {max:.1}"), format!("{out:.1}")),
            None => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(md, "| {n} | {} | {tin} | {tout} | {orig} |", secs(t));
        checks.push(Check {
            what: format!("8. Convergence, N = {n}"),
            target: "all list all N (no numeric target)".into(),
            measured: secs(t),
            met: None,
        });
    }
    let _ = write!(
        md,
        "\n**Behind nginx, cold.** nginx (Debian nginx-light, `daemon off`, round robin over \
         three upstreams, on loopback) and three coordinators with nginx as discovery host, \
         H = {H_MS} ms, all started at once; a coordinator routed to itself recognises it by \
         the `X-Hakken-Coordinator` header and asks again soon. 5 cold starts of ours, 1 of \
         the original (its resync period is H × 10 = 10 s, and it can keep resyncing with \
         itself).\n\n| target | runs | converged after (each run) |\n| --- | ---: | --- |\n"
    );
    let mut ours = Vec::new();
    for run in 0..5 {
        ours.push(secs(behind_nginx(ctx, Target::Ours, run).await?));
    }
    let _ = writeln!(md, "| ours | 5 | {} |", ours.join(", "));
    let orig = behind_nginx(ctx, Target::Original, 0).await?;
    let _ = writeln!(md, "| original | 1 | {} |", secs(orig));
    checks.push(Check {
        what: "8. Cold start behind nginx, 3".into(),
        target: "converges (no numeric target)".into(),
        measured: format!("ours: {}; original: {}", ours.join(", "), secs(orig)),
        met: None,
    });
    Ok(Section {
        order: 8,
        title: "8. Convergence (issue #9)".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}
