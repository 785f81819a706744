//! `hakken-bench`: the benchmark suite of the hakken coordinator. Run it through
//! `scripts/bench` (which installs wrk, nginx and the original, builds, pins this
//! driver to core 1 and passes the paths); see BENCHMARKS.md for what it measures.
//!
//! ```text
//! hakken-bench --root DIR --hakken BIN --ceiling BIN [--seconds 10] [WORKLOAD...]
//! ```
//!
//! Each workload writes its section to `bench/sections/` (kept in git); BENCHMARKS.md is then
//! assembled from every section there (a subset run refreshes its own sections
//! and keeps the others, each stamped with when it was measured).

mod convergence;
mod join;
mod propagation;
mod scale;
mod streams;
mod tls;
mod util;
mod workloads;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use util::Paths;

pub const WORKLOADS: &[&str] = &[
    "heartbeats",
    "largeread",
    "smallread",
    "memory",
    "propagation",
    "watchers",
    "expiry",
    "convergence",
    "join",
    "tls",
    "streams",
];

/// One line of the summary table: a target of the issue and whether it was met.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// A workload's part of BENCHMARKS.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub order: usize,
    pub title: String,
    pub measured_at: String,
    pub body: String,
    pub checks: Vec<Check>,
}

pub struct Ctx {
    pub paths: Paths,
    pub seconds: u32,
    pub now: String,
}

fn now_text() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = mem
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let wrk = std::process::Command::new("sh")
        .args(["-c", "wrk -v 2>&1 | head -1"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "- CPU: {model}, CPUs online {} (this driver sees {cores} core(s) after pinning)\n\
         - Memory: {:.1} GiB\n- Kernel: Linux {}\n- {rustc}; Node {node}; {wrk}\n",
        online.trim(),
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim(),
    )
}

fn assemble(ctx: &Ctx, ran: &[String]) -> Result<()> {
    let dir = ctx.paths.bench().join("sections");
    let mut sections: Vec<Section> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(e.path())?;
                sections.push(serde_json::from_str(&text)?);
            }
        }
    }
    sections.sort_by_key(|s| s.order);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    let _ = ran;
    md.push_str(&format!(
        "Written by `scripts/bench` on {}; each section says when it was measured.\n\n",
        ctx.now
    ));
    md.push_str(include_str!("intro.md"));
    md.push_str("\n## Machine\n\n");
    md.push_str(&machine());
    md.push_str(
        "\nThe machine runs other work at times (a developer's builds and test suites), so \
         absolute numbers are noisy, and one 5 s run of the same server can differ from the \
         next by up to 2×; the three targets of one workload are measured in interleaved \
         rounds, and the ratios between them are what the targets are about.\n",
    );
    md.push_str("\n## Summary: the issue's targets\n\n");
    md.push_str("| workload | target | measured | met |\n| --- | --- | --- | --- |\n");
    for s in &sections {
        for c in &s.checks {
            let met = match c.met {
                Some(true) => "**met**",
                Some(false) => "**missed**",
                None => "n/a",
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.what, c.target, c.measured, met
            ));
        }
    }
    for s in &sections {
        md.push_str(&format!(
            "\n## {}\n\n_Measured {}._\n\n{}\n",
            s.title, s.measured_at, s.body
        ));
    }
    md.push_str(include_str!("outro.md"));
    util::write(&ctx.paths.root.join("BENCHMARKS.md"), &md)?;
    Ok(())
}

/// Runs the workload `name`: its section of BENCHMARKS.md.
async fn run(ctx: &Ctx, name: &str) -> Result<Section> {
    if let Some(section) = workloads::run(ctx, name).await {
        return section;
    }
    match name {
        "propagation" => propagation::run(ctx).await,
        "watchers" => scale::watchers(ctx).await,
        "expiry" => scale::expiry(ctx).await,
        "convergence" => convergence::run(ctx).await,
        "join" => join::run(ctx).await,
        "tls" => tls::run(ctx).await,
        "streams" => streams::run(ctx).await,
        other => bail!("unknown workload {other}"),
    }
}

fn main() -> Result<()> {
    // hakken builds reqwest with rustls and no provider: ours need one.
    hakken::tls::install_default_provider();
    let mut root = None;
    let mut hakken = None;
    let mut ceiling = None;
    let mut seconds = 10u32;
    let mut chosen: Vec<String> = Vec::new();
    let mut report_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--hakken" => hakken = args.next().map(PathBuf::from),
            "--ceiling" => ceiling = args.next().map(PathBuf::from),
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "all" => chosen.extend(WORKLOADS.iter().map(|s| s.to_string())),
            // Only rewrite BENCHMARKS.md from the sections measured earlier.
            "report" => report_only = true,
            w if WORKLOADS.contains(&w) => chosen.push(w.to_owned()),
            other => bail!(
                "unknown argument {other}; workloads: {} (or all)",
                WORKLOADS.join(" ")
            ),
        }
    }
    if chosen.is_empty() && !report_only {
        chosen.extend(WORKLOADS.iter().map(|s| s.to_string()));
    }
    let root = root.context("--root")?;
    let paths = Paths {
        out: root.join("bench/out"),
        hakken: hakken.context("--hakken")?,
        ceiling: ceiling.context("--ceiling")?,
        root,
    };
    let ctx = Ctx {
        paths,
        seconds,
        now: now_text(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut failures = Vec::new();
    for w in &chosen {
        eprintln!("=== {w} ({})", now_text());
        let started = std::time::Instant::now();
        let result = runtime.block_on(run(&ctx, w));
        match result {
            Ok(mut section) => {
                section.measured_at = now_text();
                let path = ctx.paths.bench().join("sections").join(format!("{w}.json"));
                util::write(&path, &serde_json::to_string_pretty(&section)?)?;
                eprintln!("{}", section.body);
                for c in &section.checks {
                    eprintln!("  {} | {} | {} | {:?}", c.what, c.target, c.measured, c.met);
                }
            }
            Err(error) => {
                eprintln!("!!! {w} failed: {error:#}");
                failures.push(format!("{w}: {error:#}"));
            }
        }
        eprintln!("=== {w} took {:.0} s", started.elapsed().as_secs_f64());
    }
    assemble(&ctx, &chosen)?;
    eprintln!("wrote {}", ctx.paths.root.join("BENCHMARKS.md").display());
    if !failures.is_empty() {
        bail!("failed workloads: {}", failures.join("; "));
    }
    Ok(())
}
