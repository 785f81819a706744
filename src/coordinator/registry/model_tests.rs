//! Property test: the registry against a simple model, over random sequences of
//! publish / heartbeat (the byte-for-byte fast path) / delete / import from a peer
//! / recording withdrawals / advance time. Same live set, same payloads, same
//! expiries, and each service's index changes exactly when the model's view of
//! that service changes, or a withdrawal reached it while recording them. Each listing was first seen when the model first held it
//! and last changed when its version last changed.

use super::{Registry, RegistryLimits, Upsert};
use crate::Listing;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

const TTL_MS: u64 = 300;
const SERVICES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Publish {
        service: usize,
        host: u8,
        version: u8,
    },
    Heartbeat {
        service: usize,
        host: u8,
        version: u8,
    },
    Delete {
        service: usize,
        host: u8,
    },
    Import {
        service: usize,
        host: u8,
        version: u8,
        ttl_ms: u64,
    },
    RecordWithdrawals(bool),
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3u8, 0..3u8).prop_map(|(service, host, version)| Op::Publish { service, host, version }),
        3 => (0..3usize, 0..3u8, 0..3u8).prop_map(|(service, host, version)| Op::Heartbeat { service, host, version }),
        1 => (0..3usize, 0..3u8).prop_map(|(service, host)| Op::Delete { service, host }),
        2 => (0..3usize, 0..3u8, 0..3u8, 0..600u64).prop_map(|(service, host, version, ttl_ms)| Op::Import { service, host, version, ttl_ms }),
        1 => any::<bool>().prop_map(Op::RecordWithdrawals),
        2 => (0..400u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The model: (service, host) → (version, deadline in ms).
type Model = BTreeMap<(String, String), (u8, u64)>;

fn listing(service: &str, host: &str, version: u8) -> Listing {
    Listing::new(service, host)
        .unwrap()
        .with("version", version)
}

/// When the model's listings were first seen and last changed, in ms.
type Times = BTreeMap<(String, String), (u64, u64)>;

/// What a watcher of `service` sees in the model: host → version.
fn view(model: &Model, service: &str) -> BTreeMap<String, u8> {
    model
        .iter()
        .filter(|((s, _), _)| s == service)
        .map(|((_, h), (v, _))| (h.clone(), *v))
        .collect()
}

fn registry_view(registry: &Registry, service: &str) -> BTreeMap<String, u8> {
    registry
        .listings(service)
        .map(|l| {
            (
                l.host().to_owned(),
                l.get("version").unwrap().as_u64().unwrap() as u8,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn registry_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut now_ms = 0u64;
        let mut registry = Registry::new(Duration::from_millis(TTL_MS), RegistryLimits::default(), 1);
        let mut model = Model::new();
        let mut times = Times::new();
        let mut withdrawn: Option<BTreeSet<(String, String)>> = None;
        for op in ops {
            let views: Vec<_> = SERVICES.iter().map(|s| view(&model, s)).collect();
            let indexes: Vec<u64> = SERVICES.iter().map(|s| registry.index(s)).collect();
            let names: BTreeSet<String> = model.keys().map(|(s, _)| s.clone()).collect();
            let names_index = registry.names_index();
            // A withdrawal while recording moves its service's index, held or not.
            let mut told = None;
            match op.clone() {
                Op::Publish { service, host, version } => {
                    let (s, h) = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let before = model.insert((s.clone(), h.clone()), (version, now_ms + TTL_MS));
                    let outcome = registry.upsert(listing(&s, &h, version), at(now_ms)).unwrap();
                    let expected = match before {
                        None => Upsert::Added,
                        Some((v, _)) if v != version => Upsert::Replaced,
                        Some(_) => Upsert::Refreshed,
                    };
                    match expected {
                        Upsert::Added => {
                            times.insert((s, h), (now_ms, now_ms));
                        }
                        Upsert::Replaced => {
                            if let Some(t) = times.get_mut(&(s, h)) {
                                t.1 = now_ms;
                            }
                        }
                        Upsert::Refreshed => {}
                    }
                    prop_assert_eq!(outcome, expected);
                }
                Op::Heartbeat { service, host, version } => {
                    let key = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let body = serde_json::to_vec(&listing(&key.0, &key.1, version)).unwrap();
                    let refreshed = registry.refresh_if_same(&key.0, &key.1, &body, at(now_ms));
                    let same = model.get(&key).is_some_and(|(v, _)| *v == version);
                    prop_assert_eq!(refreshed, same);
                    if same {
                        model.insert(key, (version, now_ms + TTL_MS));
                    }
                }
                Op::Delete { service, host } => {
                    let key = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let in_model = model.remove(&key).is_some();
                    times.remove(&key);
                    let removed = registry.remove(&key.0, &key.1).is_some();
                    prop_assert_eq!(removed, in_model);
                    // Remembered whether it was held or not.
                    if let Some(withdrawn) = &mut withdrawn {
                        withdrawn.insert(key);
                        told = Some(service);
                    }
                }
                Op::Import { service, host, version, ttl_ms } => {
                    let key = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let imported = registry
                        .import(&listing(&key.0, &key.1, version), Duration::from_millis(ttl_ms), at(now_ms))
                        .unwrap();
                    let expected = !model.contains_key(&key)
                        && ttl_ms > 0
                        && !withdrawn.as_ref().is_some_and(|w| w.contains(&key));
                    prop_assert_eq!(imported, expected);
                    if expected {
                        model.insert(key.clone(), (version, now_ms + ttl_ms.min(TTL_MS)));
                        times.insert(key, (now_ms, now_ms));
                    }
                }
                Op::RecordWithdrawals(on) => {
                    registry.record_withdrawals(on);
                    withdrawn = match (on, withdrawn.take()) {
                        (true, Some(kept)) => Some(kept),
                        (true, None) => Some(BTreeSet::new()),
                        (false, _) => None,
                    };
                }
                Op::Advance { ms } => {
                    now_ms += ms;
                    let due: BTreeSet<(String, String)> = model
                        .iter()
                        .filter(|(_, (_, deadline))| *deadline <= now_ms)
                        .map(|(k, _)| k.clone())
                        .collect();
                    model.retain(|k, _| !due.contains(k));
                    times.retain(|k, _| !due.contains(k));
                    let expired: BTreeSet<(String, String)> = registry
                        .expire(at(now_ms), usize::MAX)
                        .into_iter()
                        .map(|(s, h)| (s.to_string(), h.to_string()))
                        .collect();
                    prop_assert_eq!(expired, due);
                }
            }
            // Same live set and payloads; indexes move exactly when a view moved.
            prop_assert_eq!(registry.len(), model.len());
            for (i, service) in SERVICES.iter().enumerate() {
                let now_view = view(&model, service);
                prop_assert_eq!(&registry_view(&registry, service), &now_view);
                let moved = registry.index(service) != indexes[i];
                let changed = now_view != views[i];
                // An absent service's index may move when another service vanishes;
                // a present one's moves exactly when its view changes.
                if told == Some(i) {
                    prop_assert!(moved, "service {} index after a withdrawal", service);
                } else if !now_view.is_empty() || !views[i].is_empty() {
                    prop_assert_eq!(moved, changed, "service {} index", service);
                }
                prop_assert!(registry.index(service) >= indexes[i], "indexes never go back");
            }
            let now_names: BTreeSet<String> = model.keys().map(|(s, _)| s.clone()).collect();
            let names_moved = registry.names_index() != names_index;
            prop_assert_eq!(names_moved, now_names != names);
            prop_assert_eq!(
                registry.services().map(str::to_owned).collect::<BTreeSet<_>>(),
                now_names
            );
            // Deadlines are the model's, and the snapshot tells what is left of them.
            for ((s, h), (_, deadline)) in &model {
                prop_assert_eq!(registry.deadline(s, h), Some(at(*deadline)));
                let (first, changed) = times[&(s.clone(), h.clone())];
                prop_assert_eq!(registry.times(s, h), Some((at(first), at(changed))));
            }
            let snapshot = registry.snapshot(at(now_ms));
            prop_assert_eq!(snapshot.len(), model.len());
            // The expiry pass is due no later than the earliest model deadline, and
            // nothing is due right after a pass.
            let earliest = model.values().map(|(_, deadline)| *deadline).min();
            match (registry.next_deadline(), earliest) {
                (None, None) => {}
                (Some(next), Some(ms)) => {
                    prop_assert!(next <= at(ms));
                }
                (next, earliest) => prop_assert!(false, "queue {:?} vs model {:?}", next, earliest),
            }
            if matches!(op, Op::Advance { .. }) {
                prop_assert!(!registry.is_due(at(now_ms)));
            }
        }
    }
}
