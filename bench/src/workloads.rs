//! The throughput and memory workloads (heartbeats, reads, memory), and the
//! helpers every section shares (listings, rounds, tables, metrics); `main.rs`'s
//! `run` dispatches by name. Servers run on core 0 (`taskset -c 0`); this
//! driver, wrk, the watchers and every other load run on core 1.

use crate::util::*;
use crate::{Check, Ctx, Section};
use anyhow::{anyhow, Result};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The throughput and memory workloads of this module, by name; `None` for
/// another name.
pub async fn run(ctx: &Ctx, name: &str) -> Option<Result<Section>> {
    Some(match name {
        "heartbeats" => heartbeats(ctx).await,
        "largeread" => read(ctx, true).await,
        "smallread" => read(ctx, false).await,
        "memory" => memory(ctx).await,
        _ => return None,
    })
}

/// The `i`-th heartbeat listing: the same bytes as `listing(i)` in bench/wrk/heartbeats.lua.
pub fn hb_listing(i: usize, services: usize) -> String {
    format!(
        r#"{{"service":"hb-{}","host":"10.{}.{}.{}:8080","zone":"z{}"}}"#,
        i % services,
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255,
        i % 3
    )
}

/// A listing of `service` number `i` (about 56 bytes as JSON for a short name).
pub fn listing(service: &str, i: usize) -> String {
    format!(
        r#"{{"service":"{service}","host":"10.{}.{}.{}:8080","zone":"z{}"}}"#,
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255,
        i % 3
    )
}

const TARGETS: [Target; 3] = [Target::Ours, Target::Original, Target::Ceiling];
/// Workloads 1–3 also run ours and the ceiling on both cores (the load generator
/// then shares the second one with them).
const THROUGHPUT_TARGETS: [Target; 5] = [
    Target::Ours,
    Target::Original,
    Target::Ceiling,
    Target::OursTwoCores,
    Target::CeilingTwoCores,
];

#[derive(Clone)]
pub struct Row {
    pub target: Target,
    pub wrk: WrkResult,
    pub rss_kb: u64,
    pub note: String,
    /// How busy cores 0 (servers) and 1 (load) were during the median run, 0..=1.
    pub busy: [f64; 2],
}

pub fn table(rows: &[Row]) -> String {
    let mut md = String::from(
        "| target | req/s | p50 | p99 | max | errors | server RSS after | note |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target.label(),
            rps(r.wrk.rps()),
            ms(r.wrk.p50_us),
            ms(r.wrk.p99_us),
            ms(r.wrk.max_us),
            r.wrk.errors(),
            mib(r.rss_kb),
            r.note
        );
    }
    md
}

fn ratio_check(what: &str, rows: &[Row], vs: Target, min: f64) -> Check {
    let ours_target = if vs == Target::CeilingTwoCores {
        Target::OursTwoCores
    } else {
        Target::Ours
    };
    let ours = rows.iter().find(|r| r.target == ours_target);
    let other = rows.iter().find(|r| r.target == vs);
    match (ours, other) {
        (Some(o), Some(v)) if v.wrk.rps() > 0.0 => {
            let ratio = o.wrk.rps() / v.wrk.rps();
            let text = if min >= 1.0 {
                format!(
                    "{ratio:.1}× ({} vs {} req/s)",
                    rps(o.wrk.rps()),
                    rps(v.wrk.rps())
                )
            } else {
                format!(
                    "{:.0} % ({} vs {} req/s)",
                    ratio * 100.0,
                    rps(o.wrk.rps()),
                    rps(v.wrk.rps())
                )
            };
            Check {
                what: what.into(),
                target: if min >= 1.0 {
                    format!("≥ {min}× the {}", vs.label())
                } else {
                    format!("≥ {:.0} % of the {}", min * 100.0, vs.label())
                },
                measured: text,
                met: Some(ratio >= min),
            }
        }
        _ => Check {
            what: what.into(),
            target: format!("vs {}", vs.label()),
            measured: "not measured".into(),
            met: None,
        },
    }
}

/// Per-run length and number of rounds: the three servers run side by side (idle
/// but for the one under load) and are measured in turn, ROUNDS times; a row keeps
/// the median run by req/s. Interleaving keeps slow drifts of a shared machine
/// from landing on one target only.
pub const ROUNDS: usize = 3;

pub async fn rounds(
    ctx: &Ctx,
    servers: &[(Target, Proc, String)],
    path: &str,
    script: &'static str,
    env: Vec<(String, String)>,
) -> Result<(Vec<Row>, String)> {
    let seconds = (ctx.seconds / 2).max(3);
    let mut runs: Vec<Vec<(WrkResult, [f64; 2])>> = vec![Vec::new(); servers.len()];
    let mut line = String::new();
    for _ in 0..ROUNDS {
        for (i, (target, server, _)) in servers.iter().enumerate() {
            let spec = WrkSpec {
                url: format!("{}://{}{path}", target.scheme(), server.addr()),
                script,
                connections: 32,
                seconds,
                env: env.clone(),
            };
            line = wrk_command_line(&spec);
            let before = core_times();
            let result = run_wrk(&ctx.paths, &spec).await?;
            runs[i].push((result, busy_since(&before)));
        }
    }
    let mut rows = Vec::new();
    for ((target, server, note), mut results) in servers.iter().zip(runs) {
        results.sort_by(|a, b| a.0.rps().total_cmp(&b.0.rps()));
        let all: Vec<String> = results.iter().map(|r| rps(r.0.rps())).collect();
        let (median, busy) = results[results.len() / 2].clone();
        let mut note = note.clone();
        if path.starts_with("/v1/listings/") {
            note = format!(
                "{:.0} MB/s",
                median.bytes as f64 / (median.duration_us.max(1) as f64 / 1e6) / 1e6
            );
        }
        let note = if note.is_empty() {
            format!("runs: {}", all.join(" / "))
        } else {
            format!("{note}; runs: {}", all.join(" / "))
        };
        rows.push(Row {
            target: *target,
            wrk: median,
            rss_kb: server.rss_kb(),
            note,
            busy,
        });
    }
    Ok((
        rows,
        format!("{line}  ({ROUNDS} rounds of {seconds} s per target, interleaved; median shown)"),
    ))
}

async fn heartbeats(ctx: &Ctx) -> Result<Section> {
    const N: usize = 62_500;
    const SERVICES: usize = 50;
    let bodies: Vec<String> = (0..N).map(|i| hb_listing(i, SERVICES)).collect();
    let mut servers = Vec::new();
    for target in THROUGHPUT_TARGETS {
        let server = start_target(target, &ctx.paths, &CoordOpts::default(), &[]).await?;
        let mut note = String::new();
        if !matches!(target, Target::Ceiling | Target::CeilingTwoCores) {
            // Every listing is known before the timed runs, so they measure heartbeats
            // (refreshes), not first publications.
            let took = load(&server.addr(), bodies.clone(), 32).await?;
            note = format!("62,500 preloaded in {:.1} s", took.as_secs_f64());
        }
        servers.push((target, server, note));
    }
    let env = vec![
        ("BENCH_LISTINGS".to_string(), N.to_string()),
        ("BENCH_SERVICES".to_string(), SERVICES.to_string()),
    ];
    let (rows, wrk_line) = rounds(
        ctx,
        &servers,
        "/v1/listings?heartbeat=true",
        "heartbeats.lua",
        env,
    )
    .await?;
    let mut body = format!(
        "`POST /v1/listings?heartbeat=true`, 32 connections, one wrk thread, {} s in all per target, \
         rotating through 62,500 distinct listings over 50 services (bench/wrk/heartbeats.lua; \
         each body like `{}`). Ours and the original hold all 62,500 beforehand; the ceiling \
         reads the body and answers `201`.\n\nCommand: `{}`\n\n",
        ROUNDS as u32 * (ctx.seconds / 2).max(3),
        hb_listing(0, SERVICES),
        wrk_line
    );
    body.push_str(&table(&rows));
    let checks = vec![
        ratio_check("1. Heartbeats", &rows, Target::Original, 2.0),
        ratio_check("1. Heartbeats", &rows, Target::Ceiling, 0.9),
        ratio_check(
            "1. Heartbeats, 2 cores",
            &rows,
            Target::CeilingTwoCores,
            0.9,
        ),
    ];
    Ok(Section {
        order: 1,
        title: "1. Heartbeats".into(),
        measured_at: String::new(),
        body,
        checks,
    })
}

async fn read(ctx: &Ctx, large: bool) -> Result<Section> {
    let (service, count) = if large {
        ("large", 1_250)
    } else {
        ("small", 3)
    };
    let bodies: Vec<String> = (0..count).map(|i| listing(service, i)).collect();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut sizes = Vec::new();
    let mut servers = Vec::new();
    for target in THROUGHPUT_TARGETS {
        let server = start_target(target, &ctx.paths, &CoordOpts::default(), &files).await?;
        if !matches!(target, Target::Ceiling | Target::CeilingTwoCores) {
            load(&server.addr(), bodies.clone(), 16).await?;
        }
        let answer = get_body(&server.addr(), service).await?;
        if !matches!(target, Target::OursTwoCores | Target::CeilingTwoCores) {
            sizes.push(format!("{}: {} bytes", target.label(), answer.len()));
        }
        if target == Target::Ours {
            let file = ctx.paths.out.join(format!("{service}.json"));
            write(&file, std::str::from_utf8(&answer)?)?;
            files.push((service.to_owned(), file));
        }
        servers.push((target, server, String::new()));
    }
    let path = format!("/v1/listings/{service}");
    let (rows, wrk_line) = rounds(ctx, &servers, &path, "get.lua", vec![]).await?;
    let mut body = format!(
        "`GET /v1/listings/{service}`, a service with {count} listings; 32 connections, one wrk \
         thread, {} s in all per target. Body sizes: {}. The ceiling answers the exact bytes ours \
         answered.\n\nCommand: `{}`\n\n",
        ROUNDS as u32 * (ctx.seconds / 2).max(3),
        sizes.join(", "),
        wrk_line
    );
    body.push_str(&table(&rows));
    let (order, title, checks) = if large {
        (
            2,
            "2. Large read",
            vec![
                ratio_check("2. Large read", &rows, Target::Original, 20.0),
                ratio_check("2. Large read", &rows, Target::Ceiling, 0.7),
                ratio_check(
                    "2. Large read, 2 cores",
                    &rows,
                    Target::CeilingTwoCores,
                    0.7,
                ),
            ],
        )
    } else {
        (
            3,
            "3. Small read",
            vec![
                ratio_check("3. Small read", &rows, Target::Ceiling, 0.9),
                ratio_check(
                    "3. Small read, 2 cores",
                    &rows,
                    Target::CeilingTwoCores,
                    0.9,
                ),
            ],
        )
    };
    Ok(Section {
        order,
        title: title.into(),
        measured_at: String::new(),
        body,
        checks,
    })
}

async fn memory(ctx: &Ctx) -> Result<Section> {
    const N: usize = 100_000;
    const SERVICES: usize = 100;
    let bodies: Vec<String> = (0..N)
        .map(|i| listing(&format!("mem-{}", i % SERVICES), i))
        .collect();
    let mut md = String::from(
        "Resident set size (VmRSS) of the server process: idle (1 s after start, one \
         `/status` answered), then with 100,000 listings over 100 services (loaded with 64 \
         concurrent POSTs, measured 2 s after the load; peak VmHWM too).\n\n\
         | target | idle RSS | RSS with 100,000 | peak (VmHWM) | load time |\n\
         | --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut with = std::collections::HashMap::new();
    for target in TARGETS {
        let server = start_target(target, &ctx.paths, &CoordOpts::default(), &[]).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = server.rss_kb();
        if target == Target::Ceiling {
            let _ = writeln!(md, "| ceiling | {} | n/a (holds nothing) | | |", mib(idle));
            continue;
        }
        let took = load(&server.addr(), bodies.clone(), 64).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let full = server.rss_kb();
        let hwm = hwm_kb(server.pid());
        with.insert(target.label(), full);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} s |",
            target.label(),
            mib(idle),
            mib(full),
            mib(hwm),
            took.as_secs_f64()
        );
    }
    let checks = match (with.get("ours"), with.get("original")) {
        (Some(&o), Some(&v)) => vec![Check {
            what: "4. Memory, 100,000 listings".into(),
            target: "≤ 1/3 of the original's".into(),
            measured: format!(
                "{} vs {} ({:.2} of it)",
                mib(o),
                mib(v),
                o as f64 / v as f64
            ),
            met: Some(o as f64 * 3.0 <= v as f64),
        }],
        _ => vec![],
    };
    Ok(Section {
        order: 4,
        title: "4. Memory".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}

/// Fetches ours' Prometheus text and sums the samples of `metric` whose labels
/// contain every one of `labels`.
pub async fn metric(addr: &str, metric: &str, labels: &[&str], exclude: &[&str]) -> Result<f64> {
    let text = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or("");
        if name != metric {
            continue;
        }
        if labels.iter().all(|l| name_labels.contains(l))
            && !exclude.iter().any(|l| name_labels.contains(l))
        {
            sum += value.parse::<f64>().map_err(|e| anyhow!("{line}: {e}"))?;
        }
    }
    Ok(sum)
}
