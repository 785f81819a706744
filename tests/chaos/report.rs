//! The report of a soak run, in Markdown: what ran, the faults, convergence per
//! kind of fault, how fast departed publishers left, resources, and every
//! violation. Written to the output folder, and to RELIABILITY.md when asked.

use crate::check::{quantile, Bounds, Findings};
use crate::record::{FaultKind, Kind, Record};
use crate::Settings;
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn ms(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} s", v as f64 / 1000.0)
    } else {
        format!("{v} ms")
    }
}

pub fn markdown(
    settings: &Settings,
    record: &Record,
    findings: &Findings,
    bounds: Bounds,
) -> String {
    let mut md = String::new();
    let ours = record
        .coordinators
        .iter()
        .filter(|c| c.0 == Kind::Ours)
        .count();
    let originals = record.coordinators.len() - ours;
    let count = |kind| record.publishers.iter().filter(|p| p.kind == kind).count();
    let watchers = |kind| record.watchers.iter().filter(|w| **w == kind).count();
    let _ = writeln!(
        md,
        "## Run: {} s, seed {}\n",
        record.duration / 1000,
        settings.seed
    );
    let _ = writeln!(
        md,
        "- **Replay:** `{}`\n\
         - **Cluster:** {ours} of our coordinators and {originals} of the original's, behind nginx (its address is \
         every coordinator's discovery host and every client's way in); H = {} ms, TTL = {} ms.\n\
         - **Publishers:** {} of ours (`hakken publish`) and {} of the original's client, joining and leaving all \
         the time (one listing each){}.\n\
         - **Watchers:** {} of ours (`hakken watch`) and {} of the original's client (`watch.get()` every 250 ms).\n\
         - **Probes:** every coordinator asked directly for the service every 250 ms ({} answers and failures).\n\
         - **Bounds checked:** removal {} after a death ({} after a clean close among our coordinators only), \
         consistency within {} of a heal, a listing of ours missing from a coordinator at most {} (but within {} \
         of that coordinator's own fault).",
        settings.replay,
        settings.h_ms,
        3 * settings.h_ms,
        count(Kind::Ours),
        count(Kind::Original),
        if record.publishers.iter().any(|p| p.inside) {
            "; one of ours runs the whole time in the network namespace with the coordinator a partition cuts \
             off, so that a partition also separates it from the rest of the cluster"
        } else {
            ""
        },
        watchers(Kind::Ours),
        watchers(Kind::Original),
        record.probes.len(),
        ms(bounds.death),
        ms(bounds.close),
        ms(bounds.liveness),
        ms(bounds.h + bounds.h / 2),
        ms(bounds.excuse),
    );
    for why in &record.skipped {
        let _ = writeln!(md, "- **Skipped:** {why}");
    }
    let mut injected: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for fault in &record.faults {
        *injected.entry(fault.kind).or_default() += 1;
    }
    let _ = writeln!(
        md,
        "\n**Violations: {}.**\n\n\
         Convergence after a coordinator fault heals: until every watcher holds every publisher out for {} and \
         none past its removal bound; then the same for our watchers alone (the original's client never \
         moves off a coordinator that fails, nor do its watches).\n\n\
         | fault | injected | measured | p50 | p99 | max | ours: p50 | ours: p99 | ours: max |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        findings.violations.len(),
        ms(bounds.grace)
    );
    for (kind, n) in &injected {
        let Some(times) = findings.convergence.get(kind) else {
            if !matches!(
                kind,
                FaultKind::PublisherKilled | FaultKind::PublisherClosed
            ) {
                let _ = writeln!(md, "| {} | {n} | 0 | | | | | | |", kind.label());
            }
            continue;
        };
        let mut times = times.clone();
        let mut ours = findings
            .convergence_ours
            .get(kind)
            .cloned()
            .unwrap_or_default();
        let stats = |times: &mut Vec<u64>| {
            if times.is_empty() {
                return " | |".to_owned();
            }
            let (p50, p99) = (quantile(times, 0.5), quantile(times, 0.99));
            let max = *times.iter().max().unwrap_or(&0);
            format!("{} | {} | {}", ms(p50), ms(p99), ms(max))
        };
        let _ = writeln!(
            md,
            "| {} | {n} | {} | {} | {} |",
            kind.label(),
            times.len(),
            stats(&mut times),
            stats(&mut ours),
        );
    }
    let _ = writeln!(
        md,
        "\nDepartures: from a publisher's end until no watcher holds its listing.\n\n\
         | publisher | count | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for (key, times) in &findings.departures {
        let mut times = times.clone();
        let _ = writeln!(
            md,
            "| {key} | {} | {} | {} | {} |",
            times.len(),
            ms(quantile(&mut times, 0.5)),
            ms(quantile(&mut times, 0.99)),
            ms(*times.iter().max().unwrap_or(&0)),
        );
    }
    if !findings.resources.is_empty() {
        let _ = writeln!(
            md,
            "\nResources of our coordinators (each run that lived 30 s or more: 10 s after its start, and at the end).\n\n\
             | coordinator | pid | RSS start | RSS end | descriptors start | descriptors end |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (c, pid, rss0, rss1, fd0, fd1) in &findings.resources {
            let _ = writeln!(
                md,
                "| {} | {pid} | {:.1} MiB | {:.1} MiB | {fd0} | {fd1} |",
                record.coordinators[*c].1,
                *rss0 as f64 / 1024.0,
                *rss1 as f64 / 1024.0
            );
        }
    }
    if !findings.violations.is_empty() {
        let _ = writeln!(md, "\nViolations:\n");
        for v in &findings.violations {
            let _ = writeln!(md, "- **{}** at {} ms: {}", v.invariant, v.at, v.detail);
        }
    }
    md
}
