//! Property test: the registry against a simple model, over random sequences of
//! publish / heartbeat / delete / advance time. Same live set, same payloads, same
//! expiries, and each service's index changes exactly when the model's view of
//! that service changes.

use hakken::coordinator::registry::{Registry, RegistryLimits, Upsert};
use hakken::Listing;
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
    Delete {
        service: usize,
        host: u8,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3u8, 0..3u8).prop_map(|(service, host, version)| Op::Publish { service, host, version }),
        1 => (0..3usize, 0..3u8).prop_map(|(service, host)| Op::Delete { service, host }),
        2 => (0..400u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The model: (service, host) → (version, time of last heartbeat in ms).
type Model = BTreeMap<(String, String), (u8, u64)>;

fn listing(service: &str, host: &str, version: u8) -> Listing {
    Listing::new(service, host)
        .unwrap()
        .with("version", version)
}

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
        let mut now_ms = 0u64;
        let mut registry = Registry::new(Duration::from_millis(TTL_MS), RegistryLimits::default());
        let mut model = Model::new();
        for op in ops {
            let op_copy = op.clone();
            let views: Vec<_> = SERVICES.iter().map(|s| view(&model, s)).collect();
            let indexes: Vec<u64> = SERVICES.iter().map(|s| registry.index(s)).collect();
            let names: BTreeSet<String> = model.keys().map(|(s, _)| s.clone()).collect();
            let names_index = registry.names_index();
            match op_copy {
                Op::Publish { service, host, version } => {
                    let (s, h) = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let before = model.insert((s.clone(), h.clone()), (version, now_ms));
                    let outcome = registry
                        .upsert(listing(&s, &h, version), start + Duration::from_millis(now_ms))
                        .unwrap();
                    let expected = match before {
                        None => Upsert::Added,
                        Some((v, _)) if v != version => Upsert::Replaced,
                        Some(_) => Upsert::Refreshed,
                    };
                    prop_assert_eq!(outcome, expected);
                }
                Op::Delete { service, host } => {
                    let key = (SERVICES[service].to_owned(), format!("h:{host}"));
                    let in_model = model.remove(&key).is_some();
                    let removed = registry.remove(&key.0, &key.1).is_some();
                    prop_assert_eq!(removed, in_model);
                }
                Op::Advance { ms } => {
                    now_ms += ms;
                    let due: BTreeSet<(String, String)> = model
                        .iter()
                        .filter(|(_, (_, stamped))| stamped + TTL_MS <= now_ms)
                        .map(|(k, _)| k.clone())
                        .collect();
                    model.retain(|k, _| !due.contains(k));
                    let expired: BTreeSet<(String, String)> = registry
                        .expire(start + Duration::from_millis(now_ms), usize::MAX)
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
                if !now_view.is_empty() || !views[i].is_empty() {
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
            // The expiry pass is due no later than the earliest model deadline, and
            // nothing is due right after a pass.
            let earliest = model.values().map(|(_, t)| t + TTL_MS).min();
            match (registry.next_deadline(), earliest) {
                (None, None) => {}
                (Some(next), Some(ms)) => {
                    prop_assert!(next <= start + Duration::from_millis(ms));
                }
                (next, earliest) => prop_assert!(false, "queue {:?} vs model {:?}", next, earliest),
            }
            if matches!(op, Op::Advance { .. }) {
                prop_assert!(!registry.is_due(start + Duration::from_millis(now_ms)));
            }
        }
    }
}
