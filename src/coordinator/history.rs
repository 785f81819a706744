//! The recent past, for the dashboard's charts: a few numbers sampled at a fixed
//! period and kept in fixed-size rings, in memory.
//!
//! Plain, synchronous data, like the registry: [`History::record`] takes `now` and
//! what was counted, so it is tested with made-up time. One task in the coordinator
//! (`history_loop` in `mod.rs`) calls it every `history_interval` (10 s by default),
//! with the coordinator's counters and the registry's per-service listing counts;
//! the dashboard reads [`History::json`].
//!
//! What is kept, for the last [`POINTS`] samples (an hour at the default period):
//! - the number of listings held;
//! - heartbeats per second and changes per second (listings added, replaced,
//!   expired, withdrawn or copied from a peer): the growth of the coordinator's
//!   counters between two samples over the time measured between them, so the
//!   first sample gives no rate yet;
//! - each service's number of listings, for at most [`MAX_SERVICES`] services.
//!   A service is tracked from the first sample that finds it while there is room
//!   (first come, first served; in name order within one sample). **Services
//!   beyond the cap are not tracked individually**: they count in the totals, and
//!   the answer says how many live services are untracked. A tracked service that
//!   has been gone for a whole window (its ring is all zeros) is forgotten, which
//!   frees its place; while the cap is reached, a live service not tracked takes
//!   the place of the tracked one gone longest, so a burst of short-lived names
//!   cannot hold every place for a window.
//!
//! Bounded: `3 + MAX_SERVICES` rings of at most [`POINTS`] numbers each, plus the
//! tracked names (shared with the registry, not copied). A sample costs a lookup per
//! tracked service, and one per live service while there is room to track more;
//! heartbeats cost nothing here (the counters are the metrics' atomics).
//!
//! Not a time-series store: nothing is persisted, a restart starts empty, and the
//! points are samples, not wall-clock slots (a sample the task missed while
//! stalled is simply not there; the rates stay right, measured over real time).

use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Samples kept per series: an hour at one per 10 s.
pub(crate) const POINTS: usize = 360;

/// Most services whose listing counts are kept individually.
pub(crate) const MAX_SERVICES: usize = 1_000;

/// The coordinator-wide numbers of one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Heartbeats (listing POSTs accepted) since start: a counter.
    pub heartbeats: u64,
    /// Changes to listings since start: a counter.
    pub changes: u64,
    /// Listings held now.
    pub listings: u64,
}

/// The last `capacity` values pushed, oldest first.
#[derive(Debug, Clone)]
struct Ring<T> {
    values: VecDeque<T>,
    capacity: usize,
}

impl<T: Copy> Ring<T> {
    fn new(capacity: usize) -> Self {
        Ring {
            values: VecDeque::new(),
            capacity,
        }
    }

    fn push(&mut self, value: T) {
        if self.values.len() >= self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.values.iter().copied()
    }
}

/// One tracked service.
#[derive(Debug, Clone)]
struct Series {
    counts: Ring<u32>,
    /// Samples in a row that found the service gone.
    absent: usize,
}

/// The rings of one coordinator (see the module docs).
#[derive(Debug)]
pub(crate) struct History {
    period: Duration,
    points: usize,
    max_services: usize,
    /// Samples taken since start; the dashboard asks for the series again when it
    /// moved.
    samples: u64,
    /// The previous sample's time and counters, to turn counters into rates.
    last: Option<(Instant, Totals)>,
    listings: Ring<u64>,
    heartbeats: Ring<f64>,
    changes: Ring<f64>,
    services: BTreeMap<Arc<str>, Series>,
    /// Live services the last sample found but could not track (the cap).
    untracked: usize,
    /// The JSON answer, built by the first read after a sample.
    json: Option<Bytes>,
}

impl History {
    /// Empty rings for samples taken every `period`, with the default bounds.
    pub fn new(period: Duration) -> Self {
        Self::with_bounds(period, POINTS, MAX_SERVICES)
    }

    /// Empty rings of `points` samples (at least 2), tracking at most
    /// `max_services` services individually.
    pub fn with_bounds(period: Duration, points: usize, max_services: usize) -> Self {
        let points = points.max(2);
        History {
            period,
            points,
            max_services,
            samples: 0,
            last: None,
            listings: Ring::new(points),
            heartbeats: Ring::new(points),
            changes: Ring::new(points),
            services: BTreeMap::new(),
            untracked: 0,
            json: None,
        }
    }

    /// Records one sample taken at `now`: the totals, and every live service with
    /// its number of listings, **sorted by name** (the registry's order; a list out
    /// of order gives wrong counts, never a panic).
    pub fn record(&mut self, now: Instant, totals: Totals, services: &[(Arc<str>, u32)]) {
        self.samples = self.samples.saturating_add(1);
        self.json = None;
        self.listings.push(totals.listings);
        if let Some((then, before)) = self.last {
            let seconds = now.saturating_duration_since(then).as_secs_f64();
            self.heartbeats
                .push(rate(before.heartbeats, totals.heartbeats, seconds));
            self.changes
                .push(rate(before.changes, totals.changes, seconds));
        }
        self.last = Some((now, totals));

        let window = self.points;
        let mut present = 0;
        self.services.retain(|name, series| {
            let count = services
                .binary_search_by(|(other, _)| (**other).cmp(&**name))
                .map_or(0, |at| services[at].1);
            if count == 0 {
                series.absent += 1;
            } else {
                series.absent = 0;
                present += 1;
            }
            series.counts.push(count);
            series.absent < window
        });
        // Series of services gone for a while make room for live ones, the one
        // gone longest first (a burst of short-lived names cannot hold every
        // slot for a whole window).
        let mut evictable: Vec<(usize, Arc<str>)> = self
            .services
            .iter()
            .filter(|(_, series)| series.absent > 0)
            .map(|(name, series)| (series.absent, name.clone()))
            .collect();
        if self.services.len() >= self.max_services && evictable.is_empty() {
            // No room: every live service not tracked is untracked, no need to
            // look each one up.
            self.untracked = services.len().saturating_sub(present);
            return;
        }
        evictable.sort_unstable_by_key(|(absent, _)| *absent);
        let mut untracked = 0;
        for (name, count) in services {
            if *count == 0 || self.services.contains_key(&**name) {
                continue;
            }
            if self.services.len() >= self.max_services {
                match evictable.pop() {
                    Some((_, gone)) => {
                        self.services.remove(&gone);
                    }
                    None => {
                        untracked += 1;
                        continue;
                    }
                }
            }
            let mut counts = Ring::new(self.points);
            counts.push(*count);
            self.services
                .insert(name.clone(), Series { counts, absent: 0 });
        }
        self.untracked = untracked;
    }

    /// Samples taken since start.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Services tracked individually now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.services.len()
    }

    /// Every series as JSON, built once per sample and shared until the next:
    ///
    /// ```json
    /// {"periodMs": 10000, "points": 360, "samples": 42, "maxServices": 1000,
    ///  "untracked": 0, "listings": [3, 4], "heartbeatsPerSec": [0.5],
    ///  "changesPerSec": [0.1], "services": {"web": [[2, 1], [3, 1]]}}
    /// ```
    ///
    /// Series are oldest first and all end at the latest sample, so a shorter one
    /// started later. A service's counts come as runs, `[count, samples]`: they
    /// seldom change, and a thousand services of an hour each would be large.
    pub fn json(&mut self) -> Bytes {
        if let Some(json) = &self.json {
            return json.clone();
        }
        let services: Map<String, Value> = self
            .services
            .iter()
            .map(|(name, series)| (name.to_string(), runs(series.counts.iter())))
            .collect();
        let body = json!({
            "periodMs": self.period.as_millis() as u64,
            "points": self.points,
            "samples": self.samples,
            "maxServices": self.max_services,
            "untracked": self.untracked,
            "listings": self.listings.iter().collect::<Vec<_>>(),
            "heartbeatsPerSec": self.heartbeats.iter().map(round).collect::<Vec<_>>(),
            "changesPerSec": self.changes.iter().map(round).collect::<Vec<_>>(),
            "services": services,
        });
        let json = Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()));
        self.json = Some(json.clone());
        json
    }
}

/// Per second, from a counter's values `seconds` apart (0 when no time passed).
fn rate(before: u64, after: u64, seconds: f64) -> f64 {
    let delta = after.saturating_sub(before) as f64;
    if seconds > 0.0 {
        delta / seconds
    } else {
        0.0
    }
}

/// Two decimals are plenty for a chart, and keep the answer short.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Runs of equal values, `[[value, repeat], ...]`.
fn runs(values: impl Iterator<Item = u32>) -> Value {
    let mut runs: Vec<[u64; 2]> = Vec::new();
    for value in values {
        match runs.last_mut() {
            Some([last, repeat]) if *last == u64::from(value) => *repeat += 1,
            _ => runs.push([u64::from(value), 1]),
        }
    }
    json!(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);

    fn names(counts: &[(&str, u32)]) -> Vec<(Arc<str>, u32)> {
        counts.iter().map(|(n, c)| (Arc::from(*n), *c)).collect()
    }

    fn totals(heartbeats: u64, changes: u64, listings: u64) -> Totals {
        Totals {
            heartbeats,
            changes,
            listings,
        }
    }

    fn answer(history: &mut History) -> Value {
        serde_json::from_slice(&history.json()).unwrap()
    }

    #[test]
    fn rates_come_from_counters_over_measured_time() {
        let t0 = Instant::now();
        let mut h = History::new(PERIOD);
        h.record(t0, totals(100, 7, 2), &[]);
        let first = answer(&mut h);
        assert_eq!(first["samples"], 1);
        assert_eq!(first["listings"], json!([2]));
        assert_eq!(
            first["heartbeatsPerSec"],
            json!([]),
            "no rate from one sample"
        );
        // 50 heartbeats and 5 changes in 10 s; then 30 and none in 20 s (a late tick).
        h.record(t0 + PERIOD, totals(150, 12, 3), &[]);
        h.record(t0 + PERIOD * 3, totals(180, 12, 3), &[]);
        let later = answer(&mut h);
        assert_eq!(later["samples"], 3);
        assert_eq!(later["listings"], json!([2, 3, 3]));
        assert_eq!(later["heartbeatsPerSec"], json!([5.0, 1.5]));
        assert_eq!(later["changesPerSec"], json!([0.5, 0.0]));
        assert_eq!(later["periodMs"], 10_000);
        assert_eq!(later["points"], POINTS);
    }

    #[test]
    fn odd_clocks_and_counters_give_zero_not_a_panic() {
        let t0 = Instant::now();
        let mut h = History::new(PERIOD);
        h.record(t0 + PERIOD, totals(10, 10, 0), &[]);
        // The same instant, then time going back, then counters going back.
        h.record(t0 + PERIOD, totals(20, 20, 0), &[]);
        h.record(t0, totals(30, 30, 0), &[]);
        h.record(t0 + PERIOD * 2, totals(0, 0, 0), &[]);
        h.record(t0 + PERIOD * 3, totals(1_000, 1_000, u64::MAX), &[]);
        let a = answer(&mut h);
        assert_eq!(a["heartbeatsPerSec"], json!([0.0, 0.0, 0.0, 100.0]));
        assert_eq!(a["listings"][4], u64::MAX);
    }

    #[test]
    fn rings_keep_the_last_points_only() {
        let t0 = Instant::now();
        let mut h = History::with_bounds(PERIOD, 4, 10);
        for i in 0..10u64 {
            let count = i as u32 + 1;
            h.record(
                t0 + PERIOD * i as u32,
                totals(i * 10, 0, i),
                &names(&[("s", count)]),
            );
        }
        let a = answer(&mut h);
        assert_eq!(a["samples"], 10);
        assert_eq!(a["listings"], json!([6, 7, 8, 9]));
        assert_eq!(a["heartbeatsPerSec"], json!([1.0, 1.0, 1.0, 1.0]));
        assert_eq!(a["services"]["s"], json!([[7, 1], [8, 1], [9, 1], [10, 1]]));
    }

    #[test]
    fn services_are_tracked_from_their_first_sample_and_end_together() {
        let t0 = Instant::now();
        let mut h = History::new(PERIOD);
        h.record(t0, totals(0, 0, 2), &names(&[("a", 2)]));
        h.record(t0 + PERIOD, totals(0, 0, 3), &names(&[("a", 2), ("b", 1)]));
        h.record(
            t0 + PERIOD * 2,
            totals(0, 0, 4),
            &names(&[("a", 3), ("b", 1)]),
        );
        h.record(t0 + PERIOD * 3, totals(0, 0, 1), &names(&[("b", 1)]));
        let a = answer(&mut h);
        // `a` is gone at the last sample: recorded as 0, still tracked.
        assert_eq!(a["services"]["a"], json!([[2, 2], [3, 1], [0, 1]]));
        assert_eq!(a["services"]["b"], json!([[1, 3]]));
        assert_eq!(a["untracked"], 0);
    }

    #[test]
    fn a_service_gone_for_a_whole_window_is_forgotten() {
        let t0 = Instant::now();
        let mut h = History::with_bounds(PERIOD, 3, 10);
        h.record(t0, totals(0, 0, 1), &names(&[("a", 1)]));
        for i in 1..=2u32 {
            h.record(t0 + PERIOD * i, totals(0, 0, 1), &names(&[("b", 1)]));
        }
        assert_eq!(answer(&mut h)["services"]["a"], json!([[1, 1], [0, 2]]));
        // Gone for a whole window (3 samples): `a` is forgotten.
        h.record(t0 + PERIOD * 3, totals(0, 0, 1), &names(&[("b", 1)]));
        let a = answer(&mut h);
        assert_eq!(a["services"], json!({"b": [[1, 3]]}));
        assert_eq!(a["untracked"], 0);
        // Back before a window is over: kept, and its gap shows.
        h.record(t0 + PERIOD * 4, totals(0, 0, 0), &[]);
        h.record(t0 + PERIOD * 5, totals(0, 0, 1), &names(&[("b", 2)]));
        assert_eq!(
            answer(&mut h)["services"]["b"],
            json!([[1, 1], [0, 1], [2, 1]]),
            "the last 3 samples"
        );
    }

    #[test]
    fn when_full_a_service_gone_longest_makes_room_for_a_live_one() {
        let t0 = Instant::now();
        let mut h = History::with_bounds(PERIOD, 10, 2);
        h.record(t0, totals(0, 0, 2), &names(&[("a", 1), ("b", 1)]));
        // `a` goes first, then `b`: both are absent when `c` and `d` come.
        h.record(t0 + PERIOD, totals(0, 0, 1), &names(&[("b", 1)]));
        h.record(t0 + PERIOD * 2, totals(0, 0, 0), &[]);
        h.record(t0 + PERIOD * 3, totals(0, 0, 1), &names(&[("c", 1)]));
        let a = answer(&mut h);
        let tracked: Vec<&String> = a["services"].as_object().unwrap().keys().collect();
        assert_eq!(tracked, ["b", "c"], "`a`, gone longest, made room");
        h.record(
            t0 + PERIOD * 4,
            totals(0, 0, 2),
            &names(&[("c", 1), ("d", 1)]),
        );
        let a = answer(&mut h);
        let tracked: Vec<&String> = a["services"].as_object().unwrap().keys().collect();
        assert_eq!(tracked, ["c", "d"]);
        assert_eq!(a["untracked"], 0);
        // Every tracked one live: a newcomer waits.
        h.record(
            t0 + PERIOD * 5,
            totals(0, 0, 3),
            &names(&[("c", 1), ("d", 1), ("e", 1)]),
        );
        assert_eq!(answer(&mut h)["untracked"], 1);
    }

    #[test]
    fn tracked_services_are_capped() {
        let t0 = Instant::now();
        let mut h = History::with_bounds(PERIOD, 10, 3);
        let many: Vec<(Arc<str>, u32)> = (0..100)
            .map(|i| (Arc::from(format!("svc-{i:03}")), 1))
            .collect();
        for i in 0..20u32 {
            h.record(t0 + PERIOD * i, totals(0, 0, 100), &many);
        }
        assert_eq!(h.tracked(), 3);
        let a = answer(&mut h);
        assert_eq!(a["untracked"], 97);
        let tracked: Vec<&String> = a["services"].as_object().unwrap().keys().collect();
        assert_eq!(
            tracked,
            ["svc-000", "svc-001", "svc-002"],
            "first come, in name order"
        );
        assert_eq!(a["services"]["svc-001"], json!([[1, 10]]));
    }

    #[test]
    fn the_answer_is_built_once_per_sample() {
        let t0 = Instant::now();
        let mut h = History::new(PERIOD);
        assert_eq!(h.samples(), 0);
        let empty = answer(&mut h);
        assert_eq!(empty["listings"], json!([]));
        assert_eq!(empty["services"], json!({}));
        h.record(t0, totals(0, 0, 1), &names(&[("s", 1)]));
        let first = h.json();
        assert_eq!(first, h.json(), "cached");
        h.record(t0 + PERIOD, totals(0, 0, 2), &names(&[("s", 2)]));
        assert_ne!(first, h.json(), "rebuilt after a sample");
        assert_eq!(h.samples(), 2);
    }
}
