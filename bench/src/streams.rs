//! Workload 11 (issue #18): streams against blocking queries, in the same run, on
//! our coordinator (core 0). Every watcher is its own connection from this driver
//! (core 1), as separate processes would have them: a stream (`Accept:
//! text/event-stream`), or a blocking query re-asked after each answer on a
//! kept-alive connection. A watcher has a change when the bytes of the new state
//! have arrived: the driver only looks for the payload's `"v":N` in them, so what
//! is timed is the coordinator and the network, not a client's decoding.
//!
//! 1. 1,000 watchers, each way: per (change, watcher) latency from just before
//!    the write until that watcher has the change.
//! 2. 10,000 watchers, each way: until every watcher has the change; coordinator
//!    memory per open stream (and per held query).
//! 3. Heartbeat throughput (wrk, as in section 1) without streams, with 10,000
//!    streams open, and without again.

use crate::util::*;
use crate::workloads::{hb_listing, metric};
use crate::{Check, Ctx, Section};
use anyhow::{anyhow, bail, Result};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SERVICE: &str = "s11";
const SMALL: usize = 1_000;
const LARGE: usize = 10_000;
const SMALL_CHANGES: u64 = 200;
const LARGE_CHANGES: u64 = 20;
/// Longest wait for one change to reach every watcher.
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Stream,
    Blocking,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Stream => "stream",
            Way::Blocking => "blocking query",
        }
    }
}

/// The payload version `v` in a state's bytes (the last one, for several events).
fn version(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(4).rposition(|w| w == b"\"v\":")?;
    let digits: Vec<u8> = bytes[at + 4..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn publication(v: u64) -> String {
    format!(r#"{{"service":"{SERVICE}","host":"p:1","v":{v}}}"#)
}

/// One watcher reading a stream: reports each new `v` with when it arrived.
async fn stream_watcher(
    http: reqwest::Client,
    url: String,
    id: usize,
    seen: mpsc::UnboundedSender<(usize, u64, Instant)>,
) -> Result<()> {
    let mut response = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    if response.status() != 200 {
        bail!("stream answered {}", response.status());
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let now = Instant::now();
        pending.extend_from_slice(&chunk);
        if let Some(end) = pending.windows(2).rposition(|w| w == b"\n\n") {
            if let Some(v) = version(&pending[..end]) {
                let _ = seen.send((id, v, now));
            }
            pending.drain(..end + 2);
        }
    }
    Ok(())
}

/// One watcher asking blocking queries: reports each new `v` with when it arrived.
async fn blocking_watcher(
    http: reqwest::Client,
    base: String,
    id: usize,
    seen: mpsc::UnboundedSender<(usize, u64, Instant)>,
) -> Result<()> {
    let mut index: Option<u64> = None;
    loop {
        let url = match index {
            Some(i) => format!("{base}?index={i}&wait=300s"),
            None => base.clone(),
        };
        let response = http.get(&url).send().await?;
        index = response
            .headers()
            .get("x-hakken-index")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.bytes().await?;
        let now = Instant::now();
        if let Some(v) = version(&body) {
            let _ = seen.send((id, v, now));
        }
    }
}

/// `n` watchers of one way, open.
struct Watchers {
    seen: mpsc::UnboundedReceiver<(usize, u64, Instant)>,
    tasks: tokio::task::JoinSet<Result<()>>,
    n: usize,
}

async fn open(addr: &str, way: Way, n: usize) -> Result<Watchers> {
    // One pool, no limit on idle connections: concurrent requests each have a
    // connection of their own, and a blocking watcher asks again on a kept one.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let url = format!("http://{addr}/v1/listings/{SERVICE}");
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..n {
        let (http, url, tx) = (http.clone(), url.clone(), tx.clone());
        match way {
            Way::Stream => tasks.spawn(stream_watcher(http, url, id, tx)),
            Way::Blocking => tasks.spawn(blocking_watcher(http, url, id, tx)),
        };
        // At a bounded pace, so the listen backlog never overflows.
        if id % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Every watcher has the current state (v = 0) before the first change.
    let mut ready = vec![false; n];
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count < n {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((id, _, _))) if !ready[id] => {
                ready[id] = true;
                count += 1;
            }
            Ok(Some(_)) => {}
            _ => bail!("{count} of {n} {} watchers ready", way.label()),
        }
    }
    Ok(Watchers { seen, tasks, n })
}

/// CPU time (user and system) of process `pid` ("self" for this driver), µs.
fn cpu_us(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 a second here).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)) * 10_000
}

/// What one series of changes measured.
#[derive(Default)]
struct Stats {
    /// Every (change, watcher) latency, µs.
    samples: Vec<u64>,
    /// Per change: until the last watcher had it, µs.
    all: Vec<u64>,
    missed: usize,
    changes: u64,
    /// CPU time of the coordinator and of this driver over the changes, µs.
    coordinator_cpu: u64,
    driver_cpu: u64,
}

/// Makes `changes` changes (payload `v` = `first`, `first + 1`, …), each once the
/// previous reached every watcher and, for blocking queries, every watcher asks
/// again (held again), so each change is timed from the same steady state.
async fn changes(
    addr: &str,
    pid: u32,
    way: Way,
    watchers: &mut Watchers,
    first: u64,
    changes: u64,
) -> Result<Stats> {
    let http = http();
    let mut stats = Stats::default();
    let pid = pid.to_string();
    let (coordinator_before, driver_before) = (cpu_us(&pid), cpu_us("self"));
    for v in first..first + changes {
        if way == Way::Blocking {
            let deadline = Instant::now() + Duration::from_secs(30);
            while (metric(addr, "hakken_held_queries", &[], &[]).await? as usize) < watchers.n {
                if Instant::now() > deadline {
                    bail!("the blocking watchers were not all held again");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut got = vec![false; watchers.n];
        let mut count = 0;
        let t0 = Instant::now();
        http.post(format!("http://{addr}/v1/listings"))
            .body(publication(v))
            .send()
            .await?
            .error_for_status()?;
        let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
        let mut last = 0;
        while count < watchers.n {
            match tokio::time::timeout_at(deadline, watchers.seen.recv()).await {
                Ok(Some((id, seen, at))) if seen >= v && !got[id] => {
                    got[id] = true;
                    count += 1;
                    let us = at.saturating_duration_since(t0).as_micros() as u64;
                    last = last.max(us);
                    stats.samples.push(us);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        stats.missed += watchers.n - count;
        stats.all.push(last);
        stats.changes += 1;
    }
    stats.coordinator_cpu = cpu_us(&pid).saturating_sub(coordinator_before);
    stats.driver_cpu = cpu_us("self").saturating_sub(driver_before);
    Ok(stats)
}

fn row(what: &str, n: usize, stats: &Stats) -> String {
    let mut s = stats.samples.clone();
    s.sort_unstable();
    let mut a = stats.all.clone();
    a.sort_unstable();
    let events = (stats.changes * n as u64).max(1) as f64;
    format!(
        "| {what} | {} × {n} | {} | {} | {} | {} | {} | {} | {:.1} µs | {:.1} µs |",
        stats.changes,
        ms(pct(&s, 50.0)),
        ms(pct(&s, 99.0)),
        ms(s.last().copied().unwrap_or(0)),
        ms(pct(&a, 50.0)),
        ms(a.last().copied().unwrap_or(0)),
        stats.missed,
        stats.coordinator_cpu as f64 / events,
        stats.driver_cpu as f64 / events,
    )
}

fn p99(samples: &[u64]) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    pct(&s, 99.0)
}

/// Heartbeat throughput on `addr` (wrk, 32 connections, as section 1), requests/s.
async fn heartbeat_rps(ctx: &Ctx, addr: &str, seconds: u32) -> Result<(f64, String)> {
    let spec = WrkSpec {
        url: format!("http://{addr}/v1/listings?heartbeat=true"),
        script: "heartbeats.lua",
        connections: 32,
        seconds,
        env: vec![
            ("BENCH_LISTINGS".into(), HB_LISTINGS.to_string()),
            ("BENCH_SERVICES".into(), HB_SERVICES.to_string()),
        ],
    };
    let result = run_wrk(&ctx.paths, &spec).await?;
    if result.errors() > 0 {
        bail!("wrk saw {} errors", result.errors());
    }
    Ok((result.rps(), wrk_command_line(&spec)))
}

const HB_LISTINGS: usize = 62_500;
const HB_SERVICES: usize = 50;

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let mut body = String::new();
    let mut checks = Vec::new();
    writeln!(
        body,
        "Our coordinator on core 0; this driver on core 1, holding every watcher's \
         connection: {SMALL} and then {LARGE} watchers of one service, each on its own \
         connection, as separate processes would have them. *Stream*: `GET \
         /v1/listings/{SERVICE}` with `Accept: text/event-stream`, held open. *Blocking \
         query*: `GET /v1/listings/{SERVICE}?index=N&wait=300s`, asked again on the same \
         kept-alive connection after each answer. One publisher changes the listing's \
         payload (`POST /v1/listings`, `v` = 1, 2, …); a watcher has the change when the \
         bytes of the new state have arrived (the driver only looks for `\"v\":N` in \
         them). Each change is made once the previous one reached every watcher and, \
         for blocking queries, every watcher is held again (`hakken_held_queries`), so \
         both ways start each change from the same steady state. The latency is from \
         just before the write until the watcher has the change; `all` is, per change, \
         until the last watcher had it. *CPU per delivery* is the CPU time (user and \
         system, from /proc) the coordinator and this driver spent over the series, \
         divided by changes × watchers (for blocking queries it includes a `/metrics` \
         read every 5 ms while the driver waits for every watcher to be held again).\n"
    )?;

    // 1. 1,000 watchers, both ways, one coordinator.
    let server = start_ours(&ctx.paths, "ours-streams-1k", &CoordOpts::default()).await?;
    let addr = server.addr();
    http()
        .post(format!("http://{addr}/v1/listings"))
        .body(publication(0))
        .send()
        .await?
        .error_for_status()?;
    let mut v = 1;
    let mut small = Vec::new();
    for way in [Way::Stream, Way::Blocking] {
        let mut watchers = open(&addr, way, SMALL).await?;
        let stats = changes(&addr, server.pid(), way, &mut watchers, v, SMALL_CHANGES).await?;
        v += SMALL_CHANGES;
        watchers.tasks.abort_all();
        small.push((way, stats));
    }
    drop(server);

    // 2. and 3. 10,000 watchers, memory, heartbeats: one coordinator holding the
    // heartbeat workload's listings.
    let opts = CoordOpts {
        extra: ["--max-streams", "20000", "--max-held-queries", "20000"]
            .map(String::from)
            .to_vec(),
        ..CoordOpts::default()
    };
    let server = start_ours(&ctx.paths, "ours-streams-10k", &opts).await?;
    let addr = server.addr();
    let bodies: Vec<String> = (0..HB_LISTINGS)
        .map(|i| hb_listing(i, HB_SERVICES))
        .collect();
    load(&addr, bodies, 32).await?;
    http()
        .post(format!("http://{addr}/v1/listings"))
        .body(publication(v))
        .send()
        .await?
        .error_for_status()?;
    v += 1;
    let hb_seconds = (ctx.seconds / 2).max(5);
    let (hb_before, wrk_line) = heartbeat_rps(ctx, &addr, hb_seconds).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kb();
    let mut large = Vec::new();
    let mut per_watcher = Vec::new();
    let mut hb_with = 0.0;
    for way in [Way::Stream, Way::Blocking] {
        let before = server.rss_kb();
        let mut watchers = open(&addr, way, LARGE).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with = server.rss_kb();
        let open_gauge = match way {
            Way::Stream => metric(&addr, "hakken_streams", &[], &[]).await?,
            Way::Blocking => metric(&addr, "hakken_held_queries", &[], &[]).await?,
        };
        if (open_gauge as usize) < LARGE {
            bail!("only {open_gauge} {} open", way.label());
        }
        if way == Way::Stream {
            hb_with = heartbeat_rps(ctx, &addr, hb_seconds).await?.0;
        }
        let stats = changes(&addr, server.pid(), way, &mut watchers, v, LARGE_CHANGES).await?;
        v += LARGE_CHANGES;
        watchers.tasks.abort_all();
        while watchers.tasks.join_next().await.is_some() {}
        per_watcher.push((way, with.saturating_sub(before) * 1024 / LARGE as u64));
        large.push((way, stats));
        // Until the coordinator has let go of them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&addr, "hakken_streams", &[], &[]).await?
            + metric(&addr, "hakken_held_queries", &[], &[]).await?
            > 0.0
        {
            if Instant::now() > deadline {
                return Err(anyhow!("the watchers' connections were not let go"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (hb_after, _) = heartbeat_rps(ctx, &addr, hb_seconds).await?;
    let peak = hwm_kb(server.pid());
    drop(server);

    body.push_str(
        "\n| way, watchers | changes × watchers | p50 | p99 | max | all p50 | all max | missed | coordinator CPU per delivery | driver CPU per delivery |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (way, stats) in &small {
        writeln!(body, "{}", row(way.label(), SMALL, stats))?;
    }
    for (way, stats) in &large {
        writeln!(body, "{}", row(way.label(), LARGE, stats))?;
    }
    writeln!(
        body,
        "\nCoordinator memory with {LARGE} watchers open (RSS with them, less RSS before; \
         idle RSS {} with {HB_LISTINGS} listings held; peak {}):\n",
        mib(idle_rss),
        mib(peak)
    )?;
    body.push_str("| way | per open watcher |\n| --- | ---: |\n");
    for (way, bytes) in &per_watcher {
        writeln!(body, "| {} | {:.1} KB |", way.label(), *bytes as f64 / 1024.0)?;
    }
    writeln!(
        body,
        "\nHeartbeat throughput, as in section 1 (`{wrk_line}`), on the same coordinator: \
         {} before any stream, {} with {LARGE} streams open, {} after they closed.",
        rps(hb_before),
        rps(hb_with),
        rps(hb_after)
    )?;

    let stream_small = &small[0].1;
    let blocking_small = &small[1].1;
    let p = p99(&stream_small.samples);
    checks.push(Check {
        what: "11. Streams, 1,000 watchers".into(),
        target: "p99 ≤ 5 ms".into(),
        measured: format!(
            "{} (blocking queries: {})",
            ms(p),
            ms(p99(&blocking_small.samples))
        ),
        met: Some(p <= 5_000 && stream_small.missed == 0),
    });
    let all = large[0].1.all.iter().copied().max().unwrap_or(0);
    let blocking_all = large[1].1.all.iter().copied().max().unwrap_or(0);
    checks.push(Check {
        what: "11. Streams, 10,000 watchers".into(),
        target: "all notified ≤ 100 ms".into(),
        measured: format!("max {} (blocking queries: {})", ms(all), ms(blocking_all)),
        met: Some(all <= 100_000 && large[0].1.missed == 0),
    });
    let per_stream = per_watcher[0].1;
    checks.push(Check {
        what: "11. Streams, memory".into(),
        target: "≤ 10 KB per open stream".into(),
        measured: format!("{:.1} KB", per_stream as f64 / 1024.0),
        met: Some(per_stream <= 10 * 1024),
    });
    let ratio = hb_with / ((hb_before + hb_after) / 2.0);
    checks.push(Check {
        what: "11. Streams, heartbeats".into(),
        target: "no effect with 10,000 streams open".into(),
        measured: format!("{:.0} % of without", ratio * 100.0),
        met: Some(ratio >= 0.95),
    });
    writeln!(
        body,
        "\nWith streams open, heartbeats ran at {:.0} % of the mean without. The original \
         has neither streams nor blocking queries: n/a (its polling is in section 5).",
        ratio * 100.0
    )?;
    Ok(Section {
        order: 11,
        title: "11. Streams (issue #18)".into(),
        measured_at: String::new(),
        body,
        checks,
    })
}
