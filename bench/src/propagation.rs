//! Workload 5: how fast a change reaches 1,000 watchers. Ours: our client's watches
//! (blocking queries) on our coordinator; the original: the original client's
//! watches (polling) on the original coordinator, driven by bench/node/propagation.js.

use crate::util::*;
use crate::{Check, Ctx, Section};
use anyhow::{anyhow, Context, Result};
use hakken::client::{Client, ClientConfig};
use hakken::listing::{Limits, Listing};
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const WATCHERS: usize = 1_000;
const CHANGES: u64 = 1_000;
const CLOSES: u64 = 300;
const SERVICE: &str = "prop";
const PUBLISHER: &str = "pub:1";
/// Longest wait for one change to reach every watcher.
const CHANGE_LIMIT: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Expect {
    active: bool,
    state: u64,
    t0: Option<Instant>,
    seen: usize,
    samples: Vec<u64>,
}

struct Shared {
    expect: Mutex<Expect>,
    all_seen: Notify,
}

/// What a watcher sees: the `v` of the publisher's listing, 0 when it is absent.
fn state_of(listings: &[Listing]) -> u64 {
    listings
        .iter()
        .find(|l| l.host() == PUBLISHER)
        .and_then(|l| l.get("v"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn make_listing(v: u64) -> Result<Listing> {
    Ok(Listing::from_value(
        json!({"service": SERVICE, "host": PUBLISHER, "v": v, "zone": "z1"}),
        &Limits::default(),
    )?)
}

#[derive(Default)]
struct Stats {
    /// Every (change, watcher) latency, µs.
    samples: Vec<u64>,
    /// Per change: until the last watcher saw it, µs.
    all: Vec<u64>,
    /// Watchers that had not seen a change within the limit, summed.
    missed: usize,
    changes: u64,
}

impl Stats {
    fn row(&self, what: &str) -> String {
        let mut s = self.samples.clone();
        s.sort_unstable();
        let mut a = self.all.clone();
        a.sort_unstable();
        format!(
            "| {what} | {} × {} | {} | {} | {} | {} | {} | {} |",
            self.changes,
            WATCHERS,
            ms(pct(&s, 50.0)),
            ms(pct(&s, 99.0)),
            ms(s.last().copied().unwrap_or(0)),
            ms(pct(&a, 50.0)),
            ms(pct(&a, 99.0)),
            self.missed
        )
    }
    fn p99(&self) -> u64 {
        let mut s = self.samples.clone();
        s.sort_unstable();
        pct(&s, 99.0)
    }
}

/// Sets what the watchers should reach, runs `act`, and waits for all of them.
async fn change<F, Fut>(shared: &Shared, state: u64, stats: &mut Stats, act: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    {
        let mut e = shared.expect.lock().unwrap();
        *e = Expect {
            active: true,
            state,
            t0: Some(Instant::now()),
            seen: 0,
            samples: Vec::with_capacity(WATCHERS),
        };
    }
    act().await?;
    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    loop {
        if shared.expect.lock().unwrap().seen >= WATCHERS {
            break;
        }
        if tokio::time::timeout_at(deadline, shared.all_seen.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let mut e = shared.expect.lock().unwrap();
    e.active = false;
    stats.missed += WATCHERS - e.seen.min(WATCHERS);
    stats.all.push(e.samples.iter().copied().max().unwrap_or(0));
    stats.samples.append(&mut e.samples);
    stats.changes += 1;
    Ok(())
}

async fn ours(ctx: &Ctx) -> Result<(Stats, Stats, Stats, u64)> {
    let server = start_ours(&ctx.paths, "ours-propagation", &CoordOpts::default()).await?;
    let addr = server.addr();
    let shared = Arc::new(Shared {
        expect: Mutex::new(Expect::default()),
        all_seen: Notify::new(),
    });
    let watching = Client::new(ClientConfig::new(addr.clone()));
    watching.start().await?;
    let mut watches = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WATCHERS {
        let watch = watching.watch(SERVICE).build();
        watch.start().await?;
        let mut rx = watch.subscribe();
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut last = state_of(&rx.borrow_and_update());
            while rx.changed().await.is_ok() {
                let state = state_of(&rx.borrow_and_update());
                if state == last {
                    continue;
                }
                last = state;
                let now = Instant::now();
                let mut e = shared.expect.lock().unwrap();
                if e.active && e.state == state {
                    let t0 = e.t0.expect("set");
                    e.samples.push((now - t0).as_micros() as u64);
                    e.seen += 1;
                    if e.seen == WATCHERS {
                        shared.all_seen.notify_one();
                    }
                }
            }
        });
        watches.push(watch);
    }
    let held_rss = server.rss_kb();
    // Publish → seen: one long-lived publisher replaces its listing's payload.
    let publisher = Client::new(ClientConfig::new(addr.clone()));
    publisher.start().await?;
    let mut publish = Stats::default();
    let started = Instant::now();
    for v in 1..=CHANGES {
        let listing = make_listing(v)?;
        change(&shared, v, &mut publish, || async {
            publisher.publish(listing).await.map_err(|e| anyhow!(e))
        })
        .await?;
        if started.elapsed() > Duration::from_secs(90) {
            break;
        }
    }
    publisher.close().await;
    // close() → departure seen: a fresh client per cycle publishes, then closes.
    let mut arrive = Stats::default();
    let mut depart = Stats::default();
    let started = Instant::now();
    for c in 1..=CLOSES {
        let v = CHANGES + c;
        let client = Client::new(ClientConfig::new(addr.clone()));
        client.start().await?;
        let listing = make_listing(v)?;
        change(&shared, v, &mut arrive, || async {
            client.publish(listing).await.map_err(|e| anyhow!(e))
        })
        .await?;
        change(&shared, 0, &mut depart, || async {
            client.close().await;
            Ok(())
        })
        .await?;
        if started.elapsed() > Duration::from_secs(45) {
            break;
        }
    }
    watching.close().await;
    drop(watches);
    tasks.abort_all();
    Ok((publish, arrive, depart, held_rss))
}

#[derive(Debug, Deserialize)]
struct NodeStats {
    samples: u64,
    changes: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    all_p50_ms: f64,
    all_p99_ms: f64,
    missed: u64,
}

#[derive(Debug, Deserialize)]
struct NodeResult {
    watchers: u64,
    poll_ms: u64,
    every_ms: u64,
    publish: NodeStats,
    close: NodeStats,
}

fn node_row(what: &str, s: &NodeStats, watchers: u64) -> String {
    format!(
        "| {what} | {} × {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        s.changes, watchers, s.p50_ms, s.p99_ms, s.max_ms, s.all_p50_ms, s.all_p99_ms, s.missed
    )
}

async fn original(ctx: &Ctx) -> Result<NodeResult> {
    let opts = CoordOpts {
        heartbeat_ms: 1_000,
        ..CoordOpts::default()
    };
    let server = start_original(&ctx.paths, "original-propagation", &opts).await?;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(ctx.paths.bench().join("node/propagation.js"))
        .args([
            "--coord",
            &server.addr(),
            "--watchers",
            &WATCHERS.to_string(),
        ])
        .args(["--poll", "1000", "--changes", "1000", "--every", "10"])
        .args(["--closes", "50", "--close-every", "100"])
        .env("NODE_PATH", ctx.paths.node_dir().join("node_modules"))
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            ctx.paths.out.join("logs/original-propagation-client.log"),
        )?)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(150), cmd.output())
        .await
        .context("propagation.js did not finish in 150 s")??;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("propagation.js printed no RESULT: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let (publish, arrive, depart, held_rss) = ours(ctx).await?;
    let orig = original(ctx).await;
    let mut md = format!(
        "1,000 watchers of one service; a change is made, and each watcher's latency is the \
         time from just before the change was made until that watcher saw it. `all seen` is, \
         per change, the time until the last of the 1,000 saw it.\n\n\
         - **Ours**: one `hakken::client::Client` with 1,000 watches (`watch(\"prop\").build()`), \
           which share one upstream, a stream (our coordinator's RSS with it open: {}): the \
           client hands each change to the 1,000 watches. Watchers on separate connections, \
           as separate processes would have them, are in section 11. The client and this \
           driver on core 1; our coordinator on core 0. *Publish*: one publisher \
           client publishes a new payload (`v`) of its listing, {CHANGES} times in sequence, \
           each after the previous one reached every watcher. *close()*: {CLOSES} cycles of a \
           fresh client that publishes a listing (the `publish (new client)` row), then \
           `close()`s, which withdraws it; the latency is from the `close()` call until the \
           watcher's selection lost it.\n\
         - **Original**: the original client (npm hakken 0.1.12) in one Node process on core 1 \
           (bench/node/propagation.js) with 1,000 `watch()`es, polling every 1,000 ms (its \
           `heartbeatInterval`; its default is 20,000 ms, which scales every number below by \
           20), starts staggered over one interval; the original coordinator with \
           H = 1,000 ms on core 0. *Publish*: a change every 10 ms (a new listing carrying `v`; \
           the original never replaces a payload), 1,000 changes; a watcher sees change k \
           when its view first holds `v ≥ k`. *close()*: 50 clients each publish a listing, \
           then `close()` one every 100 ms; the original's close withdraws nothing, so the \
           listing is seen gone only after it expires (H × 3, reaped every H) and the next poll.\n\n\
         | target, event | changes × watchers | p50 | p99 | max | all seen p50 | all seen p99 | missed |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        mib(held_rss)
    );
    let _ = writeln!(md, "{}", publish.row("ours, publish → seen"));
    let _ = writeln!(md, "{}", arrive.row("ours, publish (new client) → seen"));
    let _ = writeln!(md, "{}", depart.row("ours, close() → departure seen"));
    match &orig {
        Ok(o) => {
            let _ = writeln!(
                md,
                "{}",
                node_row("original, publish → seen", &o.publish, o.watchers)
            );
            let _ = writeln!(
                md,
                "{}",
                node_row("original, close() → departure seen", &o.close, o.watchers)
            );
            let _ = writeln!(
                md,
                "\nOriginal run: poll {} ms, a change every {} ms; `missed` counts watchers that \
                 never saw a change before the run ended. {} publish samples, {} close samples.",
                o.poll_ms, o.every_ms, o.publish.samples, o.close.samples
            );
        }
        Err(e) => {
            let _ = writeln!(md, "| original | failed: {e:#} | | | | | | |");
        }
    }
    let checks = vec![
        Check {
            what: "5. Propagation, publish → 1,000 watchers".into(),
            target: "p99 ≤ 10 ms".into(),
            measured: format!(
                "p99 {} over {} changes ({} missed){}",
                ms(publish.p99()),
                publish.changes,
                publish.missed,
                orig.as_ref()
                    .map(|o| format!("; original client polling: p99 {:.0} ms", o.publish.p99_ms))
                    .unwrap_or_default()
            ),
            met: Some(publish.p99() <= 10_000 && publish.missed == 0),
        },
        Check {
            what: "5. Propagation, close() → departure".into(),
            target: "p99 ≤ 10 ms".into(),
            measured: format!(
                "p99 {} over {} closes ({} missed){}",
                ms(depart.p99()),
                depart.changes,
                depart.missed,
                orig.as_ref()
                    .map(|o| format!("; original: p99 {:.0} ms", o.close.p99_ms))
                    .unwrap_or_default()
            ),
            met: Some(depart.p99() <= 10_000 && depart.missed == 0),
        },
    ];
    Ok(Section {
        order: 5,
        title: "5. Propagation".into(),
        measured_at: String::new(),
        body: md,
        checks,
    })
}
