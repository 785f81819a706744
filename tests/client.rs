//! The client library against real coordinators, in process, on ephemeral ports.
//!
//! Coordinators announce `127.0.0.1:port` and use a 200 ms heartbeat; clients poll
//! for coordinators every 200 ms and adopt the coordinators' heartbeat. Every wait
//! for something to happen is on a condition, with a deadline; the few fixed waits
//! check that something does *not* happen, and say so.

mod common;

use common::Address;

use common::{eventually, hosts_of, sees, PATIENCE};
use hakken::client::{Client, ClientConfig, ClientError, Random, Selector};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use hakken::remote::Remote;
use hakken::Listing;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The coordinators' heartbeat interval.
const H: Duration = Duration::from_millis(200);

fn coordinator_config(discovery: Option<String>) -> CoordinatorConfig {
    CoordinatorConfig {
        announce_host: "127.0.0.1".into(),
        heartbeat_interval: H,
        discovery_host: discovery,
        request_timeout: Duration::from_secs(2),
        ..CoordinatorConfig::default()
    }
}

async fn coordinator(discovery: Option<String>) -> Coordinator {
    Coordinator::bind("127.0.0.1:0", coordinator_config(discovery))
        .await
        .expect("coordinator starts")
}

/// `n` coordinators that all know each other (the first is the discovery host).
async fn cluster(n: usize) -> Vec<Coordinator> {
    let first = coordinator(None).await;
    let discovery = first.address();
    let mut all = vec![first];
    for _ in 1..n {
        all.push(coordinator(Some(discovery.clone())).await);
    }
    let hosts: Vec<String> = all.iter().map(|c| c.host().to_owned()).collect();
    for c in &all {
        eventually("the coordinators know each other", || async {
            let mut known = c.known_coordinators();
            known.sort();
            let mut want = hosts.clone();
            want.sort();
            (known == want).then_some(())
        })
        .await;
    }
    all
}

fn client_config(host: &str) -> ClientConfig {
    ClientConfig::new(host)
        .poll_interval(H)
        .request_timeout(Duration::from_secs(2))
}

async fn started(host: &str) -> Client {
    let client = Client::new(client_config(host));
    client.start().await.expect("client starts");
    client
}

fn listing(service: &str, host: &str) -> Listing {
    Listing::new(service, host).unwrap()
}

/// Hosts of the listings of `service` held by the coordinator at `addr`, sorted.
async fn held(addr: &str, service: &str) -> Vec<String> {
    let remote = Remote::new(Duration::from_secs(2));
    let answer = remote
        .listings(addr, service, None)
        .await
        .expect("coordinator answers");
    let mut hosts: Vec<String> = answer.value.iter().map(|l| l.host().to_owned()).collect();
    hosts.sort();
    hosts
}

/// A coordinator with heartbeat H whose listings cannot expire during a test.
async fn long_lived() -> Coordinator {
    let mut cfg = coordinator_config(None);
    cfg.missed_heartbeats_allowed = 1_000_000;
    Coordinator::bind("127.0.0.1:0", cfg)
        .await
        .expect("coordinator starts")
}

/// Listing POSTs the coordinator at `addr` has accepted.
async fn heartbeats(addr: &str) -> f64 {
    common::metric(addr, "hakken_heartbeats_received_total").await
}

async fn shutdown(coordinators: Vec<Coordinator>) {
    for c in coordinators {
        c.shutdown().await.expect("coordinator stops cleanly");
    }
}

#[tokio::test]
async fn a_published_listing_reaches_a_watch_with_every_field_intact() {
    let c = coordinator(None).await;
    let publisher = started(&c.address()).await;
    let watcher = started(&c.address()).await;

    let value = json!({
        "service": "billing",
        "host": "10.0.0.7:8080",
        "protocol": "http",
        "meta": {"zone": "eu-1", "tags": ["a", "b"], "weights": {"x": 1.5}},
        "nothing": null
    });
    let published = Listing::try_from(value.clone()).unwrap();
    publisher.publish(published.clone()).await.unwrap();

    let watch = watcher.watch("billing").build();
    watch.start().await.unwrap();
    sees(&watch, &["10.0.0.7:8080"]).await;
    let got = watch.get();
    assert_eq!(got, vec![published]);
    assert_eq!(
        serde_json::to_string(&got[0]).unwrap(),
        value.to_string(),
        "field order kept"
    );

    // A replacement with the same (service, host) updates it.
    let updated = Listing::try_from(value).unwrap().with("protocol", "https");
    publisher.publish(updated.clone()).await.unwrap();
    eventually("the update reaches the watch", || async {
        (watch.get() == vec![updated.clone()]).then_some(())
    })
    .await;
    assert_eq!(publisher.published(), vec![updated]);

    publisher.close().await;
    watcher.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn changes_arrive_through_blocking_queries_not_polls() {
    let c = coordinator(None).await;
    let publisher = started(&c.address()).await;
    // A watcher that would poll only every 30 s: changes must come from blocking queries.
    let watcher =
        Client::new(client_config(&c.address()).heartbeat_interval(Duration::from_secs(30)));
    watcher.start().await.unwrap();
    let watch = watcher.watch("ledger").build();
    watch.start().await.unwrap();
    assert!(watch.get().is_empty());

    let mut receiver = watch.subscribe();
    let started_at = Instant::now();
    publisher.publish(listing("ledger", "l1:1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), receiver.changed())
        .await
        .expect("the change arrives before the next poll")
        .unwrap();
    assert_eq!(hosts_of(&receiver.borrow_and_update()), ["l1:1"]);
    assert!(started_at.elapsed() < Duration::from_secs(10));
    // changed() reports each change once, whichever way it was also observed.
    assert_eq!(hosts_of(&watch.changed().await.unwrap()), ["l1:1"]);

    let next = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish(listing("ledger", "l2:1")).await.unwrap() }
    });
    let changed = tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("changed() returns the next selection")
        .unwrap();
    next.await.unwrap();
    // The selection changes once per change (a second listing may make it two).
    assert!(hosts_of(&changed).contains(&"l2:1".to_owned()));
    sees(&watch, &["l1:1", "l2:1"]).await;

    publisher.close().await;
    watcher.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn watches_filter_by_value_and_by_closure() {
    let c = coordinator(None).await;
    let client = started(&c.address()).await;
    for (host, zone, weight) in [("a:1", "eu", 1), ("b:1", "eu", 5), ("c:1", "us", 5)] {
        let l = listing("api", host)
            .with("zone", zone)
            .with("weight", weight);
        client.publish(l).await.unwrap();
    }
    let eu = client.watch("api").filter("zone", "eu").build();
    let heavy = client
        .watch("api")
        .filter_fn(|l| l.get("weight").and_then(|w| w.as_u64()) > Some(2))
        .build();
    let both = client
        .watch("api")
        .filter("zone", "eu")
        .filter_fn(|l| l.get("weight") == Some(&json!(5)))
        .build();
    let none = client
        .watch("api")
        .filter("zone", json!({"not": "a string"}))
        .build();
    for w in [&eu, &heavy, &both, &none] {
        w.start().await.unwrap();
    }
    sees(&eu, &["a:1", "b:1"]).await;
    sees(&heavy, &["b:1", "c:1"]).await;
    sees(&both, &["b:1"]).await;
    assert!(none.get().is_empty());

    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn random_selection_picks_every_listing_over_many_draws() {
    let all: Vec<Listing> = (0..5).map(|i| listing("r", &format!("r{i}:1"))).collect();
    let mut seen = HashSet::new();
    for _ in 0..1_000 {
        let pick = Random(1).select(&all);
        assert_eq!(pick.len(), 1);
        seen.insert(pick[0].host().to_owned());
    }
    assert_eq!(seen.len(), all.len(), "every listing drawn: {seen:?}");

    // Through real watches: each hands out one of them, and together they cover all.
    let c = coordinator(None).await;
    let client = started(&c.address()).await;
    for l in &all {
        client.publish(l.clone()).await.unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let watch = client.random_watch("r");
        watch.start().await.unwrap();
        let pick = eventually("a random watch picks one", || async {
            let got = watch.get();
            (!got.is_empty()).then_some(got)
        })
        .await;
        assert_eq!(pick.len(), 1);
        seen.insert(pick[0].host().to_owned());
        watch.close();
        if seen.len() == all.len() {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        all.len(),
        "random watches cover every listing: {seen:?}"
    );

    let two = client.watch("r").random(2).build();
    two.start().await.unwrap();
    let pick = eventually("two picked", || async {
        let got = two.get();
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_ne!(pick[0], pick[1]);

    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn a_coordinator_started_later_receives_the_listing() {
    let first = coordinator(None).await;
    let client = started(&first.address()).await;
    client.publish(listing("late", "l:1")).await.unwrap();
    assert_eq!(held(&first.address(), "late").await, ["l:1"]);

    let later = coordinator(Some(first.address())).await;
    eventually("the client learns of the new coordinator", || async {
        client
            .coordinators()
            .contains(&later.host().to_owned())
            .then_some(())
    })
    .await;
    eventually("the new coordinator receives the listing", || async {
        (held(&later.address(), "late").await == ["l:1"]).then_some(())
    })
    .await;

    client.close().await;
    shutdown(vec![first, later]).await;
}

#[tokio::test]
async fn a_watch_moves_on_when_its_coordinator_dies() {
    let mut coordinators: Vec<Option<Coordinator>> =
        cluster(3).await.into_iter().map(Some).collect();
    let discovery = coordinators[0].as_ref().unwrap().address();
    let publisher = started(&discovery).await;
    let watcher = started(&discovery).await;
    for client in [&publisher, &watcher] {
        eventually("the clients know the three coordinators", || async {
            (client.coordinators().len() == 3).then_some(())
        })
        .await;
    }
    publisher.publish(listing("svc", "a:1")).await.unwrap();

    let watch = watcher.watch("svc").build();
    watch.start().await.unwrap();
    sees(&watch, &["a:1"]).await;
    let followed = watch
        .coordinator()
        .expect("the watch follows a coordinator");

    let slot = coordinators
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.host() == followed))
        .expect("the followed coordinator is one of ours");
    coordinators[slot].take().unwrap().shutdown().await.unwrap();
    assert_eq!(hosts_of(&watch.get()), ["a:1"], "listings kept");

    publisher.publish(listing("svc", "b:1")).await.unwrap();
    sees(&watch, &["a:1", "b:1"]).await;
    let now = watch.coordinator().expect("following another coordinator");
    assert_ne!(now, followed);

    // Changes keep arriving from the new one.
    publisher.unpublish(&listing("svc", "a:1")).await.unwrap();
    sees(&watch, &["b:1"]).await;

    publisher.close().await;
    watcher.close().await;
    shutdown(coordinators.into_iter().flatten().collect()).await;
}

/// Binds `addr` again once the old listener has let go of it.
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    eventually("the old port is free again", || async {
        TcpListener::bind(addr).await.ok()
    })
    .await
}

#[tokio::test]
async fn listings_survive_a_total_outage_and_the_watch_recovers() {
    let c = coordinator(None).await;
    let addr = c.local_addr();
    let publisher = started(&c.address()).await;
    let watcher = started(&c.address()).await;
    publisher.publish(listing("svc", "a:1")).await.unwrap();
    let watch = watcher.watch("svc").build();
    watch.start().await.unwrap();
    sees(&watch, &["a:1"]).await;

    c.shutdown().await.unwrap();
    eventually("the watch notices the outage", || async {
        watch.coordinator().is_none().then_some(())
    })
    .await;
    assert_eq!(
        hosts_of(&watch.get()),
        ["a:1"],
        "listings kept while no coordinator answers"
    );
    // Published while every coordinator is down: sent at a later heartbeat.
    publisher.publish(listing("svc", "b:1")).await.unwrap();
    assert_eq!(hosts_of(&watch.get()), ["a:1"]);

    let back = Coordinator::start(rebind(addr).await, coordinator_config(None)).unwrap();
    sees(&watch, &["a:1", "b:1"]).await;
    eventually("both clients know the coordinator again", || async {
        (publisher.coordinators() == [back.host()] && watcher.coordinators() == [back.host()])
            .then_some(())
    })
    .await;

    publisher.close().await;
    watcher.close().await;
    shutdown(vec![back]).await;
}

#[tokio::test]
async fn skip_mode_touches_no_network() {
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(client_config(&trap.local_addr().unwrap().to_string()).skip(true));
    client.start().await.unwrap();
    client.start_background();
    client.publish(listing("s", "h:1")).await.unwrap();
    assert_eq!(client.published(), vec![listing("s", "h:1")]);
    let watch = client.random_watch("s");
    watch.start().await.unwrap();
    assert!(watch.get().is_empty());
    let fixed = Client::static_watch(vec![listing("db", "db:5432")]);
    fixed.start().await.unwrap();
    assert_eq!(fixed.get(), vec![listing("db", "db:5432")]);
    client.unpublish(&listing("s", "h:1")).await.unwrap();
    client.close().await;
    assert_eq!(client.running_tasks(), 0);
    // Every call above has returned: a connection it made would be waiting already.
    let accepted = tokio::time::timeout(Duration::from_millis(100), trap.accept()).await;
    assert!(accepted.is_err(), "skip mode connected to the host");

    // SKIP_HAKKEN as the original spells it.
    let config =
        ClientConfig::from_vars(|name| (name == "SKIP_HAKKEN").then(|| "true".into())).unwrap();
    assert!(config.skip);
}

#[tokio::test]
async fn start_fails_when_no_coordinator_answers() {
    let client = Client::new(client_config("127.0.0.1:1"));
    let started = client.start().await;
    if let Err(error) = &started {
        // The message says why, not only the error's source.
        assert!(error.to_string().contains("refused"), "{error}");
    }
    match started {
        Err(ClientError::NoCoordinator { host, source }) => {
            assert_eq!(host, "127.0.0.1:1");
            let error = source.expect("the call's error");
            assert!(error.is_unreachable());
            assert!(error.to_string().contains("refused"), "says why: {error}");
        }
        other => panic!("expected NoCoordinator, got {other:?}"),
    }
    assert!(client.coordinators().is_empty());
    // A watch on it fails to start the same way, and keeps looking meanwhile.
    let watch = client.random_watch("s");
    assert!(matches!(
        watch.start().await,
        Err(ClientError::NoCoordinator { .. })
    ));
    assert!(watch.get().is_empty());
    // A second watch of the service shares the first one's upstream, which is
    // failing: it fails too, at that upstream's next round, not before.
    let again = client.watch("s").build();
    assert!(matches!(
        again.start().await,
        Err(ClientError::NoCoordinator { .. })
    ));
    assert!(client.running_tasks() > 0, "the watch keeps looking");
    client.close().await;
    assert_eq!(client.running_tasks(), 0);
}

#[tokio::test]
async fn start_background_keeps_trying_until_a_coordinator_answers() {
    // A listener nobody serves yet: connections hang until the timeout, then fail.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = client_config(&addr.to_string()).request_timeout(Duration::from_millis(300));
    let client = Client::new(config);
    client.start_background();
    client.publish(listing("bg", "bg:1")).await.unwrap();
    assert!(client.coordinators().is_empty());
    let c = Coordinator::start(listener, coordinator_config(None)).unwrap();
    eventually("the client finds the coordinator", || async {
        (client.coordinators() == [c.host()]).then_some(())
    })
    .await;
    eventually("the listing reaches it at a heartbeat", || async {
        (held(&c.address(), "bg").await == ["bg:1"]).then_some(())
    })
    .await;
    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn close_withdraws_every_listing_and_stops_every_task() {
    let coordinators = cluster(2).await;
    let client = started(&coordinators[0].address()).await;
    eventually("the client knows both coordinators", || async {
        (client.coordinators().len() == 2).then_some(())
    })
    .await;
    client.publish(listing("gone", "g1:1")).await.unwrap();
    client.publish(listing("gone", "g2:1")).await.unwrap();
    for c in &coordinators {
        assert_eq!(held(&c.address(), "gone").await, ["g1:1", "g2:1"]);
    }
    let watch = client.watch("gone").build();
    watch.start().await.unwrap();
    assert!(
        client.running_tasks() >= 4,
        "heartbeat, poll, resync, watch"
    );

    client.close().await;
    assert_eq!(client.running_tasks(), 0, "no task left running");
    for c in &coordinators {
        assert!(
            held(&c.address(), "gone").await.is_empty(),
            "withdrawn from {}",
            c.host()
        );
    }
    assert!(client.is_closed());
    assert!(matches!(
        client.publish(listing("gone", "g3:1")).await,
        Err(ClientError::Closed)
    ));
    assert!(matches!(watch.start().await, Err(ClientError::Closed)));
    assert!(matches!(watch.changed().await, Err(ClientError::Closed)));
    assert!(matches!(client.start().await, Err(ClientError::Closed)));
    client.close().await; // twice is fine
    shutdown(coordinators).await;
}

#[tokio::test]
async fn unpublish_withdraws_a_listing_for_good() {
    let c = long_lived().await;
    let client = started(&c.address()).await;
    let a = listing("u", "a:1");
    client.publish(a.clone()).await.unwrap();
    client.publish(listing("u", "b:1")).await.unwrap();
    assert_eq!(held(&c.address(), "u").await, ["a:1", "b:1"]);

    client.unpublish(&a).await.unwrap();
    assert_eq!(held(&c.address(), "u").await, ["b:1"], "gone at once");
    assert_eq!(client.published(), vec![listing("u", "b:1")]);
    // Heartbeats go on, for b only: four more rounds do not bring a back.
    let rounds = heartbeats(&c.address()).await;
    eventually("four more heartbeat rounds", || async {
        (heartbeats(&c.address()).await >= rounds + 4.0).then_some(())
    })
    .await;
    assert_eq!(held(&c.address(), "u").await, ["b:1"]);
    // Unpublishing what is not published is fine.
    client.unpublish(&a).await.unwrap();

    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn the_coordinators_heartbeat_interval_is_adopted_unless_set() {
    let c = long_lived().await;
    let adopting = Client::new(client_config(&c.address()));
    assert_eq!(
        adopting.heartbeat_interval(),
        Duration::from_secs(20),
        "the default before any answer"
    );
    adopting.start().await.unwrap();
    assert_eq!(adopting.heartbeat_interval(), H);

    let fixed = Client::new(client_config(&c.address()).heartbeat_interval(Duration::from_secs(7)));
    fixed.start().await.unwrap();
    assert_eq!(fixed.heartbeat_interval(), Duration::from_secs(7));

    // The adopting client heartbeats every H: eight heartbeats arrive well within
    // the patience (at the 20 s default, or the fixed client's 7 s, they would not).
    adopting.publish(listing("hb", "kept:1")).await.unwrap();
    eventually("eight heartbeats at H", || async {
        (heartbeats(&c.address()).await >= 8.0).then_some(())
    })
    .await;
    assert_eq!(held(&c.address(), "hb").await, ["kept:1"]);

    adopting.close().await;
    fixed.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn watches_from_the_originals_config_shapes() {
    let c = coordinator(None).await;
    let client = started(&c.address()).await;
    for (host, zone) in [("a:1", "eu"), ("b:1", "eu"), ("c:1", "us")] {
        client
            .publish(listing("cfg", host).with("zone", zone))
            .await
            .unwrap();
    }

    let by_name = client.watch_from_config(&json!("cfg")).unwrap();
    let random = client
        .watch_from_config(&json!({"type": "random", "service": "cfg", "filter": {"zone": "eu"}, "config": {"numToPull": 2}}))
        .unwrap();
    let all = client
        .watch_from_config(&json!({"type": "all", "service": "cfg", "filter": {"zone": "us"}}))
        .unwrap();
    for w in [&by_name, &random, &all] {
        w.start().await.unwrap();
    }
    eventually("one random listing", || async {
        (by_name.get().len() == 1).then_some(())
    })
    .await;
    sees(&random, &["a:1", "b:1"]).await;
    sees(&all, &["c:1"]).await;

    let fixed = client
        .watch_from_config(&json!({"type": "static", "service": "db", "hosts": [
            {"service": "db", "host": "db1:5432", "role": "primary"},
            {"host": "db2:5432"},
            "db3:5432"
        ]}))
        .unwrap();
    fixed.start().await.unwrap();
    let got = fixed.get();
    assert_eq!(hosts_of(&got), ["db1:5432", "db2:5432", "db3:5432"]);
    assert!(got.iter().all(|l| l.service() == "db"));
    assert_eq!(got[0].get("role"), Some(&json!("primary")));
    let unnamed = client
        .watch_from_config(&json!({"type": "static", "hosts": ["x:1"]}))
        .unwrap();
    assert_eq!(unnamed.get()[0].service(), "static");

    for bad in [
        json!({"type": "bogus", "service": "cfg"}),
        json!({"service": "cfg"}),
        json!({"type": "random"}),
        json!({"type": "random", "service": "cfg", "config": {"numToPull": "two"}}),
        json!({"type": "static", "hosts": [42]}),
        json!({"type": "static"}),
        json!(42),
    ] {
        assert!(
            matches!(client.watch_from_config(&bad), Err(ClientError::Config(_))),
            "{bad} is refused"
        );
    }

    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn a_static_watch_needs_no_coordinator() {
    let listings = vec![
        listing("db", "db1:5432"),
        listing("db", "db2:5432").with("role", "replica"),
    ];
    let watch = Client::static_watch(listings.clone());
    assert_eq!(watch.get(), listings, "ready even before start");
    watch.start().await.unwrap();
    assert_eq!(watch.get(), listings);
    assert_eq!(watch.service(), "db");
    assert!(watch.coordinator().is_none());
    watch.close();
    assert!(matches!(watch.changed().await, Err(ClientError::Closed)));
    assert_eq!(watch.get(), listings, "still readable after close");
}

#[tokio::test]
async fn publish_refuses_what_no_coordinator_would_accept() {
    let client = Client::new(client_config("127.0.0.1:1").skip(true));
    let mut fields = serde_json::Map::new();
    fields.insert("service".into(), json!("s"));
    fields.insert("host".into(), json!("h:1"));
    for i in 0..100 {
        fields.insert(format!("f{i}"), json!(i));
    }
    let huge = Listing::from_map(
        fields,
        &hakken::Limits {
            max_fields: usize::MAX,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        client.publish(huge).await,
        Err(ClientError::Invalid(_))
    ));
    client.close().await;
}

/// The headers of the `n`-th listings answer of a fake coordinator.
type Headers = fn(usize) -> String;

/// A fake coordinator that answers every request at once, whatever it asks: the
/// headers of the `n`-th listings answer come from `headers(n)`. Counts requests.
async fn fake_coordinator(
    headers: Headers,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let server = {
        let (addr, count) = (addr.clone(), count.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (addr, count) = (addr.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let request = String::from_utf8_lossy(&buffer[..end]).into_owned();
                        buffer.drain(..end + 4);
                        let (body, extra) = if request.starts_with("GET /v1/coordinator") {
                            (format!(r#"[{{"host":"{addr}"}}]"#), String::new())
                        } else {
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            (r#"[{"service":"s","host":"x:1"}]"#.to_owned(), headers(n))
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    (addr, count, server)
}

#[tokio::test]
async fn a_watch_never_spins_on_a_coordinator_that_answers_at_once() {
    use std::sync::atomic::Ordering;
    let shapes: [(&str, Headers); 3] = [
        // Ignores `?index`: the same index, at once.
        ("same index", |_| "x-hakken-index: 7\r\n".into()),
        // The original: no index, so the watch polls.
        ("no index", |_| String::new()),
        // Behind a load balancer: two coordinators, two unrelated indexes.
        ("hopping", |n| {
            format!(
                "x-hakken-index: {}\r\nx-hakken-coordinator: c{}:1\r\n",
                n % 2 + 1,
                n % 2
            )
        }),
    ];
    for (shape, headers) in shapes {
        let (addr, count, server) = fake_coordinator(headers).await;
        let client = Client::new(client_config(&addr).heartbeat_interval(H));
        client.start().await.unwrap();
        let watch = client.watch("s").build();
        watch.start().await.unwrap();
        sees(&watch, &["x:1"]).await;
        let before = count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = count.load(Ordering::SeqCst) - before;
        // About one request per heartbeat (200 ms); spinning would be thousands.
        assert!(asked <= 15, "{shape}: {asked} requests in one second");
        client.close().await;
        server.abort();
    }
}

/// Every future the client hands out can be spawned.
#[allow(dead_code)]
fn futures_are_send(client: Client, watch: hakken::Watch, listing: Listing) {
    fn send<T: Send>(_: T) {}
    send(client.start());
    send(client.publish(listing.clone()));
    send(client.unpublish(&listing));
    send(client.close());
    send(watch.start());
    send(watch.changed());
    fn sync<T: Send + Sync + Clone>() {}
    sync::<Client>();
}

#[tokio::test]
async fn changed_loses_no_change_made_while_the_caller_was_busy() {
    let c = coordinator(None).await;
    let client = started(&c.address()).await;
    let watch = client.watch("busy").build();
    watch.start().await.unwrap();
    client.publish(listing("busy", "a:1")).await.unwrap();
    let first = watch.changed().await.unwrap();
    assert_eq!(hosts_of(&first), ["a:1"]);
    // Two changes while nobody waits in changed(): the next call returns at once
    // with what is current, not after yet another change.
    client.publish(listing("busy", "b:1")).await.unwrap();
    eventually("the watch has both", || async {
        (watch.get().len() == 2).then_some(())
    })
    .await;
    let next = tokio::time::timeout(Duration::from_secs(20), watch.changed())
        .await
        .expect("a change made meanwhile is not lost")
        .unwrap();
    assert_eq!(hosts_of(&next), ["a:1", "b:1"]);
    client.close().await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_returns_while_another_task_waits_for_a_change() {
    let c = coordinator(None).await;
    let client = started(&c.address()).await;
    let watch = std::sync::Arc::new(client.watch("nothing-here").build());
    let waiting = {
        let watch = watch.clone();
        tokio::spawn(async move { watch.changed().await })
    };
    // Let the waiter get to its wait first (this runtime has one thread).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(PATIENCE, watch.start())
        .await
        .expect("start returns while changed() waits")
        .unwrap();
    client.close().await;
    let outcome = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Err(ClientError::Closed)), "{outcome:?}");
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn the_longest_wait_a_watch_can_be_given_is_no_panic() {
    let c = coordinator(None).await;
    let addr = c.address();
    let client = started(&addr).await;
    let watch = client.watch("w").wait(Duration::MAX).build();
    watch.start().await.unwrap();
    client.publish(listing("w", "a:1")).await.unwrap();
    sees(&watch, &["a:1"]).await;
    // The call itself, with any wait: answered at once (index 0 is never current).
    let remote = Remote::new(Duration::from_secs(2));
    let blocking = hakken::remote::Blocking {
        index: 0,
        wait: Duration::MAX,
    };
    let answer = remote.listings(&addr, "w", Some(blocking)).await.unwrap();
    assert_eq!(hosts_of(&answer.value), ["a:1"]);
    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn a_watch_keeps_holding_queries_on_a_coordinator_with_a_short_wait_cap() {
    // The coordinator holds queries 100 ms at most; the watch asks for 60 s. An
    // answer after the coordinator's whole hold is no early answer: the next
    // query goes at once, not after a growing pause.
    let mut cfg = coordinator_config(None);
    cfg.max_wait = Duration::from_millis(100);
    cfg.heartbeat_interval = Duration::from_secs(60);
    let c = Coordinator::bind("127.0.0.1:0", cfg).await.unwrap();
    let addr = c.address();
    let client = started(&addr).await;
    let watch = client.watch("capped").build();
    watch.start().await.unwrap();
    let series =
        r#"hakken_http_requests_total{method="GET",route="/v1/listings/{service}",status="200"}"#;
    eventually("a dozen held queries, back to back", || async {
        let text = common::scrape(&addr).await;
        text.contains(series)
            .then(|| common::sample(&text, series))
            .filter(|n| *n >= 12.0)
    })
    .await;
    client.close().await;
    shutdown(vec![c]).await;
}

#[tokio::test]
async fn a_connection_nobody_takes_counts_as_never_connected() {
    // A listener that never accepts, its queue full: a new connection's SYN is
    // dropped, as a firewall would drop it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        // A connection to a queue with room is made by the kernel at once.
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(error)) => panic!("connect failed: {error}"),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the queue never filled");
    }
    let error = Remote::new(Duration::from_millis(500))
        .status(&addr.to_string())
        .await
        .expect_err("no connection");
    assert!(error.never_connected(), "{error}");
    // A connection made and left unanswered is not that.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let error = Remote::new(Duration::from_millis(500))
        .status(&silent_addr)
        .await
        .expect_err("no answer");
    assert!(!error.never_connected(), "{error}");
    drop((listener, silent, queued));
}

#[test]
fn start_background_outside_a_runtime_panics_and_leaves_the_client_startable() {
    // Nothing listens on port 9 of loopback: the client keeps trying, harmlessly.
    let client = Client::new(ClientConfig::new("127.0.0.1:9"));
    let outside = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.start_background();
    }));
    let message = outside.expect_err("no runtime, no start");
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| message.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(message.contains("tokio runtime"), "{message}");
    assert_eq!(client.running_tasks(), 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        client.start_background();
        assert!(client.running_tasks() > 0, "started within a runtime");
        client.close().await;
    });
}

#[tokio::test]
async fn a_watch_at_an_address_with_a_path_fails_rather_than_reading_no_listings() {
    // `host:port/hakken`: every call goes to a route the coordinator does not
    // have. Its 404 says "no such route", not "no live listing".
    let c = coordinator(None).await;
    let client = Client::new(client_config(&format!("{}/hakken", c.address())));
    let watch = client.watch("s").build();
    match watch.start().await {
        Err(ClientError::NoCoordinator {
            source: Some(error),
            ..
        }) => assert!(
            error.to_string().contains("no such route"),
            "says why: {error}"
        ),
        other => panic!("expected NoCoordinator, got {other:?}"),
    }
    assert!(watch.get().is_empty());
    client.close().await;
    c.shutdown().await.unwrap();
}

#[test]
fn a_client_and_a_watch_kept_past_their_runtime_carry_on_in_the_next() {
    // The coordinator runs on a runtime of its own, for the whole test; the
    // client and its watch are kept, like a `static` shared by several
    // `#[tokio::test]`s, past the runtime they started in.
    let (serving, c, client) = served();
    let addr = c.address();
    let watch = client.watch("s").build();
    single_threaded().block_on(async {
        client.start().await.unwrap();
        client.publish(listing("s", "a:1")).await.unwrap();
        watch.start().await.unwrap();
        assert_eq!(hosts_of(&watch.get()), ["a:1"]);
    });
    // That runtime is gone, and the client's tasks with it. In the next, a
    // publication starts its heartbeats again, and the watch follows again.
    single_threaded().block_on(async {
        let before = heartbeats(&addr).await;
        client.publish(listing("s", "b:2")).await.unwrap();
        eventually("heartbeats go on", || async {
            (heartbeats(&addr).await >= before + 6.0).then_some(())
        })
        .await;
        let now = tokio::time::timeout(PATIENCE, async {
            loop {
                let now = hosts_of(&watch.changed().await.unwrap());
                if now.len() == 2 {
                    return now;
                }
            }
        })
        .await
        .expect("the watch follows again");
        assert_eq!(now, ["a:1", "b:2"]);
        client.close().await;
        assert_eq!(client.running_tasks(), 0);
    });
    serving.block_on(c.shutdown()).unwrap();
}

#[tokio::test]
async fn an_address_that_is_not_one_is_refused_before_any_call() {
    for bad in [
        "",
        "a b:1",
        "lb:0",
        "lb:99999",
        "::1",
        "lb:8082?x=1",
        "HTTP://lb:0",
        "http://https://lb",
    ] {
        let client = Client::new(client_config(bad));
        let said = |error: ClientError| match error {
            ClientError::Config(why) => {
                assert!(why.contains(&format!("`{bad}`")), "names it: {why}");
            }
            other => panic!("{bad}: expected Config, got {other:?}"),
        };
        said(client.start().await.unwrap_err());
        said(client.publish(listing("s", "a:1")).await.unwrap_err());
        said(client.watch("s").build().start().await.unwrap_err());
        client.start_background();
        assert_eq!(client.running_tasks(), 0, "{bad}: nothing started");
        client.close().await;
    }
    // A way in behind a load balancer's prefix, or without a port (80), is one.
    for good in ["lb:8082/hakken", "lb", "https://lb"] {
        assert!(client_config(good).check().is_ok(), "{good}");
    }
    // With `skip`, nothing is contacted and nothing checked.
    assert!(ClientConfig::new("").skip(true).check().is_ok());
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_said_to_be_one() {
    // `.invalid` never resolves (RFC 6761). A generous timeout: the lookup's
    // failure is the cause to report, not a timeout.
    let client = Client::new(
        ClientConfig::new("no-such-host.invalid:8082").request_timeout(Duration::from_secs(8)),
    );
    match client.start().await {
        Err(ClientError::NoCoordinator {
            source: Some(error),
            ..
        }) => {
            assert!(error.never_connected(), "{error}");
            assert!(
                error.to_string().contains("cannot resolve the name"),
                "{error}"
            );
        }
        other => panic!("expected NoCoordinator, got {other:?}"),
    }
    client.close().await;
}

#[test]
fn a_watch_waiting_when_its_runtime_ends_carries_on_in_the_next() {
    let (serving, c, client) = served();
    let (waits, reads) = (client.watch("s").build(), client.watch("s").build());
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        client.start().await.unwrap();
        client.publish(listing("s", "a:1")).await.unwrap();
        waits.start().await.unwrap();
        reads.start().await.unwrap();
    });
    single_threaded().block_on(async {
        // A change is awaited here while the watches' tasks run on `first`.
        let pending = tokio::spawn(async move { waits.changed().await });
        tokio::task::yield_now().await;
        assert!(!pending.is_finished());
        first.shutdown_background();
        client.publish(listing("s", "b:2")).await.unwrap();
        let changed = tokio::time::timeout(PATIENCE, pending)
            .await
            .expect("the pending change comes")
            .unwrap()
            .unwrap();
        assert_eq!(hosts_of(&changed), ["a:1", "b:2"]);
        eventually("`get` follows again", || async {
            (hosts_of(&reads.get()) == ["a:1", "b:2"]).then_some(())
        })
        .await;
        client.close().await;
    });
    serving.block_on(c.shutdown()).unwrap();
}

#[tokio::test]
async fn a_watch_of_a_name_no_listing_could_have_is_refused() {
    let c = coordinator(None).await;
    let client = Client::new(client_config(&c.address()));
    for bad in [String::new(), ".".into(), "s".repeat(300), "a\nb".into()] {
        let watch = client.watch(&bad).build();
        assert!(
            matches!(watch.start().await, Err(ClientError::Invalid(_))),
            "{bad:?}"
        );
    }
    client.close().await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_whose_filter_panics_is_not_started_again_to_panic_again() {
    let c = long_lived().await;
    let client = started(&c.address()).await;
    client.publish(listing("s", "a:1")).await.unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let watch = client
        .watch("s")
        .filter_fn(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("a filter that panics");
        })
        .build();
    // Its callers are told, and it is not started again.
    assert!(matches!(
        watch.start().await,
        Err(ClientError::WatchPanicked)
    ));
    let after_panic = calls.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        assert!(watch.get().is_empty());
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), after_panic);
    assert!(matches!(
        watch.changed().await,
        Err(ClientError::WatchPanicked)
    ));
    assert!(matches!(
        watch.start().await,
        Err(ClientError::WatchPanicked)
    ));
    // Another watch of the service is unaffected.
    let other = client.watch("s").build();
    other.start().await.unwrap();
    assert_eq!(hosts_of(&other.get()), ["a:1"]);
    // Closed, it says so.
    watch.close();
    assert!(matches!(watch.changed().await, Err(ClientError::Closed)));
    assert!(matches!(watch.start().await, Err(ClientError::Closed)));
    client.close().await;
    c.shutdown().await.unwrap();
}

#[test]
fn a_watch_whose_runtime_ends_in_a_failing_test_carries_on_in_the_next() {
    let (serving, c, client) = served();
    let watch = client.watch("s").build();
    // Like a `#[tokio::test]` that fails: its runtime, and the watch's task
    // with it, is dropped while the thread unwinds.
    let failing = single_threaded();
    failing.block_on(async {
        client.publish(listing("s", "a:1")).await.unwrap();
        watch.start().await.unwrap();
    });
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _dropped_while_unwinding = failing;
        panic!("a test that fails");
    }));
    assert!(failed.is_err());
    single_threaded().block_on(async {
        client.publish(listing("s", "b:2")).await.unwrap();
        eventually("the watch follows again", || async {
            (hosts_of(&watch.get()) == ["a:1", "b:2"]).then_some(())
        })
        .await;
        client.close().await;
    });
    serving.block_on(c.shutdown()).unwrap();
}

#[tokio::test]
async fn changed_after_close_says_closed_even_with_a_change_unread() {
    let c = long_lived().await;
    let client = started(&c.address()).await;
    let watch = client.watch("s").build();
    watch.start().await.unwrap();
    client.publish(listing("s", "a:1")).await.unwrap();
    eventually("the change is there, unread", || async {
        (hosts_of(&watch.get()) == ["a:1"]).then_some(())
    })
    .await;
    client.close().await;
    assert!(matches!(watch.changed().await, Err(ClientError::Closed)));
    c.shutdown().await.unwrap();
}

/// A runtime on this thread alone, as `#[tokio::test]` makes one.
fn single_threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A coordinator whose listings never expire, on a runtime of its own for the
/// whole test (the test's client moves from runtime to runtime, like a `static`
/// shared by several `#[tokio::test]`s), and a client of it, not started.
fn served() -> (tokio::runtime::Runtime, Coordinator, Client) {
    let serving = tokio::runtime::Runtime::new().unwrap();
    let c = serving.block_on(long_lived());
    let client = Client::new(client_config(&c.address()));
    (serving, c, client)
}
