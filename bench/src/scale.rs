//! Workloads 6 (10,000 held watch requests) and 7 (an expiry wave of 100,000
//! listings). Ours only: the original has no blocking queries, and its expiry is
//! measured alongside where it applies.

use crate::util::*;
use crate::workloads::{listing, metric};
use crate::{Check, Ctx, Section};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELD: usize = 10_000;

pub async fn watchers(ctx: &Ctx) -> Result<Section> {
    // The 10,000 client sockets live in this driver, the 10,000 server sockets in
    // the coordinator's process: each stays under the 20,000 descriptors allowed.
    let server = start_ours(&ctx.paths, "ours-watchers", &CoordOpts::default()).await?;
    let addr = server.addr();
    let client = http();
    client
        .post(format!("http://{addr}/v1/listings"))
        .body(listing("w6", 0))
        .send()
        .await?;
    let first = client
        .get(format!("http://{addr}/v1/listings/w6"))
        .send()
        .await?;
    let index: u64 = first
        .headers()
        .get("x-hakken-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kb();
    let watchers = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("http://{addr}/v1/listings/w6?index={index}&wait=60s");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool)>();
    let opened = Instant::now();
    for i in 0..HELD {
        let (watchers, url, tx) = (watchers.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let ok = match watchers.get(&url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let _ = tx.send((Instant::now(), ok));
        });
        // Open them at a bounded pace so the listen backlog never overflows.
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut held = 0.0;
    while Instant::now() < deadline {
        held = metric(&addr, "hakken_held_queries", &[], &[]).await?;
        if held as usize >= HELD {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_rss = server.rss_kb();
    // Anything answered before the change was not held.
    let mut early = 0usize;
    while let Ok((_, _)) = rx.try_recv() {
        early += 1;
    }
    let t0 = Instant::now();
    client
        .post(format!("http://{addr}/v1/listings"))
        .body(listing("w6", 1))
        .send()
        .await?;
    let mut lat = Vec::with_capacity(HELD);
    let mut failed = 0;
    let limit = tokio::time::Instant::now() + Duration::from_secs(20);
    while lat.len() + failed + early < HELD {
        match tokio::time::timeout_at(limit, rx.recv()).await {
            Ok(Some((at, ok))) => {
                if ok {
                    lat.push(at.saturating_duration_since(t0).as_micros() as u64);
                } else {
                    failed += 1;
                }
            }
            _ => break,
        }
    }
    let answered = lat.len();
    lat.sort_unstable();
    let all = lat.last().copied().unwrap_or(0);
    let peak = hwm_kb(server.pid());
    let mut md = format!(
        "{HELD} blocking queries `GET /v1/listings/w6?index=N&wait=60s` held at once on one \
         coordinator of ours (core 0), each on its own connection, opened by this driver \
         (core 1; 500 every 50 ms). The client sockets live in the driver and the server \
         sockets in the coordinator, so each process stays under this machine's 20,000 \
         descriptor limit (`ulimit -n`; root cannot raise it here: `prlimit` is refused). \
         Then one listing is published, and every held request must be answered.\n\n\
         | | value |\n| --- | ---: |\n\
         | coordinator RSS before | {} |\n\
         | held (`hakken_held_queries`) | {held} (after {:.1} s) |\n\
         | coordinator RSS with {HELD} held | {} |\n\
         | answered before the change (not held) | {early} |\n\
         | answered after the change | {answered} (failed {failed}) |\n\
         | time until the first saw it | {} |\n\
         | p50 / p99 | {} / {} |\n\
         | time until all saw it | {} |\n\
         | coordinator peak RSS (VmHWM) | {} |\n",
        mib(idle_rss),
        open_time.as_secs_f64(),
        mib(held_rss),
        ms(lat.first().copied().unwrap_or(0)),
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(all),
        mib(peak),
    );
    md.push_str("\nThe original has no blocking queries: n/a. The ceiling holds nothing: n/a.\n");
    let ok = answered == HELD && early == 0;
    let checks = vec![
        Check {
            what: "6. 10,000 held watchers: memory".into(),
            target: "≤ 300 MB resident".into(),
            measured: format!("{} with {} held", mib(held_rss), held),
            met: Some(held_rss * 1024 <= 300_000_000 && held as usize >= HELD),
        },
        Check {
            what: "6. 10,000 held watchers: one change".into(),
            target: "all notified within 1 s".into(),
            measured: format!("all {answered} in {}", ms(all)),
            met: Some(ok && all <= 1_000_000),
        },
    ];
    Ok(Section {
        order: 6,
        title: "6. 10,000 held watch requests".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}

struct Wave {
    load_s: f64,
    gone_after_s: Option<f64>,
    base: Vec<u64>,
    wave: Vec<u64>,
    errors: usize,
    rss_full: u64,
}

/// Loads 100,000 listings, keeps the 3 of `small` alive, and probes latency (GET
/// `small` and a heartbeat POST of one of its listings, alternately, 4 connections,
/// each pausing 2 ms between requests) until the 100,000 have expired.
async fn wave(ctx: &Ctx, target: Target, heartbeat_ms: u64) -> Result<Wave> {
    const N: usize = 100_000;
    let opts = CoordOpts {
        heartbeat_ms,
        missed: 3,
        ..CoordOpts::default()
    };
    let name = format!("{}-expiry", target.label());
    let server = match target {
        Target::Ours => start_ours(&ctx.paths, &name, &opts).await?,
        _ => start_original(&ctx.paths, &name, &opts).await?,
    };
    let addr = server.addr();
    let ttl = Duration::from_millis(heartbeat_ms * 3);
    load(&addr, (0..3).map(|i| listing("small", i)).collect(), 3).await?;
    let bodies: Vec<String> = (0..N)
        .map(|i| listing(&format!("exp-{}", i % 100), i))
        .collect();
    let load_start = Instant::now();
    load(&addr, bodies, 64).await?;
    let load_s = load_start.elapsed().as_secs_f64();
    let rss_full = server.rss_kb();
    if load_start.elapsed() > ttl {
        bail!("loading took {load_s:.1} s, longer than the TTL");
    }
    // Probe from now until every exp-* service is gone (bounded).
    let stop = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut probes = tokio::task::JoinSet::new();
    for p in 0..4 {
        let (addr, done) = (addr.clone(), done.clone());
        probes.spawn(async move {
            let client = http();
            let mut out: Vec<(Instant, u64, bool)> = Vec::new();
            let mut i = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && out.len() < 200_000 {
                let t = Instant::now();
                let ok = if i.is_multiple_of(2) {
                    client
                        .get(format!("http://{addr}/v1/listings/small"))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                } else {
                    client
                        .post(format!("http://{addr}/v1/listings?heartbeat=true"))
                        .header("content-type", "application/json")
                        .body(listing("small", (p % 3) as usize))
                        .send()
                        .await
                        .map(|r| r.status().as_u16() == 201)
                        .unwrap_or(false)
                };
                out.push((t, t.elapsed().as_micros() as u64, ok));
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            out
        });
    }
    // Watch the service list: the wave is over when no exp-* service is left.
    let client = http();
    let limit = load_start
        + ttl
        + Duration::from_secs_f64(load_s)
        + Duration::from_millis(heartbeat_ms)
        + Duration::from_secs(15);
    let mut first_drop: Option<Instant> = None;
    let mut gone: Option<Instant> = None;
    while Instant::now() < limit {
        let names: Vec<String> = client
            .get(format!("http://{addr}/v1/listings"))
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        let left = names.iter().filter(|n| n.starts_with("exp-")).count();
        if left < 100 && first_drop.is_none() {
            first_drop = Some(Instant::now());
        }
        if left == 0 {
            gone = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    stop.notify_waiters();
    // The wave: from one second before the first listing was due to half a second
    // after the last service vanished.
    let wave_start = load_start + ttl - Duration::from_secs(1);
    let wave_end = gone.unwrap_or_else(Instant::now) + Duration::from_millis(500);
    let (mut base, mut wave, mut errors) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = probes.join_next().await {
        for (t, us, ok) in r? {
            if !ok {
                errors += 1;
            }
            if t >= wave_start && t <= wave_end {
                wave.push(us);
            } else if t < wave_start {
                base.push(us);
            }
        }
    }
    base.sort_unstable();
    wave.sort_unstable();
    let _ = first_drop;
    Ok(Wave {
        load_s,
        gone_after_s: gone.map(|g| (g - load_start).as_secs_f64()),
        base,
        wave,
        errors,
        rss_full,
    })
}

pub async fn expiry(ctx: &Ctx) -> Result<Section> {
    let ours = wave(ctx, Target::Ours, 10_000).await?;
    let original = wave(ctx, Target::Original, 10_000).await;
    let mut md = String::from(
        "100,000 listings (100 services) are loaded with 64 concurrent POSTs and never \
         refreshed, so they all come due within the time the load took; meanwhile 4 probe \
         connections alternate `GET /v1/listings/small` and a heartbeat POST of one of \
         `small`'s 3 listings (pausing 2 ms after each), and `GET /v1/listings` every 50 ms \
         tells when no `exp-*` service is left. The wave window runs from 1 s before the \
         first listing is due to 0.5 s after the last service vanished. Both with H = 10 s \
         (TTL 30 s, so that loading fits well within it on a shared machine). Ours expires each \
         listing at its deadline, in batches of 1,000 per lock hold, so its wave is as dense as \
         the load was fast; the original scans every listing every H and drops the overdue \
         ones at once.\n\n\
         | target | load time | all gone after | probes before wave p50 / p99 | probes in wave | wave p50 | wave p99 | wave max | probe errors | RSS full |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let row = |label: &str, w: &Wave| {
        format!(
            "| {label} | {:.1} s | {} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            w.load_s,
            w.gone_after_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or("not within limit".into()),
            ms(pct(&w.base, 50.0)),
            ms(pct(&w.base, 99.0)),
            w.wave.len(),
            ms(pct(&w.wave, 50.0)),
            ms(pct(&w.wave, 99.0)),
            ms(w.wave.last().copied().unwrap_or(0)),
            w.errors,
            mib(w.rss_full)
        )
    };
    md.push_str(&row("ours", &ours));
    match &original {
        Ok(w) => md.push_str(&row("original", w)),
        Err(e) => {
            let _ = writeln!(md, "| original | failed: {e:#} | | | | | | | | |");
        }
    }
    md.push_str("\nThe ceiling holds nothing: n/a.\n");
    let p99 = pct(&ours.wave, 99.0);
    let checks = vec![Check {
        what: "7. Expiry wave of 100,000".into(),
        target: "p99 of other requests ≤ 50 ms".into(),
        measured: format!(
            "p99 {} over {} probes{}",
            ms(p99),
            ours.wave.len(),
            original
                .as_ref()
                .map(|w| format!("; original: p99 {}", ms(pct(&w.wave, 99.0))))
                .unwrap_or_default()
        ),
        met: Some(p99 <= 50_000 && ours.gone_after_s.is_some() && !ours.wave.is_empty()),
    }];
    Ok(Section {
        order: 7,
        title: "7. Expiry at scale".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}
