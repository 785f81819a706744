//! Coordinator gossip with real coordinators on loopback: discovery, self-announce,
//! polling, removal and blacklisting of a dead coordinator, and lifting the
//! blacklist when it comes back.

mod common;

use common::Address;

use common::{config, coordinators_of, eventually, get, post, start};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

fn with_discovery(mut cfg: CoordinatorConfig, discovery: &str) -> CoordinatorConfig {
    cfg.discovery_host = Some(discovery.to_owned());
    cfg
}

fn sorted(mut hosts: Vec<String>) -> Vec<String> {
    hosts.sort();
    hosts
}

/// Binds `addr` again once the old listener has let go of it.
async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    eventually("the old port is free again", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await
}

#[tokio::test]
async fn three_coordinators_find_each_other_and_drop_a_dead_one() {
    let a = start(config(200)).await;
    let b = start(with_discovery(config(200), &a.address())).await;
    let c = start(with_discovery(config(200), &a.address())).await;
    let all = sorted(vec![a.host().into(), b.host().into(), c.host().into()]);
    for coordinator in [&a, &b, &c] {
        let addr = coordinator.address();
        let expected = all.clone();
        eventually(&format!("{addr} lists all three"), || {
            let (addr, expected) = (addr.clone(), expected.clone());
            async move { (coordinators_of(&addr).await == expected).then_some(()) }
        })
        .await;
    }

    // Kill c: the others drop it at their next poll.
    let c_host = c.host().to_owned();
    c.shutdown().await.unwrap();
    let rest = sorted(vec![a.host().into(), b.host().into()]);
    for coordinator in [&a, &b] {
        let addr = coordinator.address();
        eventually(&format!("{addr} drops the dead one"), || {
            let (addr, rest) = (addr.clone(), rest.clone());
            async move { (coordinators_of(&addr).await == rest).then_some(()) }
        })
        .await;
    }
    assert!(!a.known_coordinators().contains(&c_host));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_announces_itself_to_its_discovery_host() {
    // Long heartbeat: only the resync at start can make the discovery host learn of b.
    let a = start(config(60_000)).await;
    let b = start(with_discovery(config(60_000), &a.address())).await;
    eventually("a learns of b from b's announcement", || async {
        a.known_coordinators()
            .contains(&b.host().to_owned())
            .then_some(())
    })
    .await;
    eventually("b adds a from the discovery answer", || async {
        b.known_coordinators()
            .contains(&a.host().to_owned())
            .then_some(())
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_learned_coordinator_is_polled_and_its_peers_learned() {
    // b knows c; a is told of b only: a learns of c through b's list.
    let b = start(config(100)).await;
    let c = start(with_discovery(config(100), &b.address())).await;
    eventually("b knows c", || async {
        b.known_coordinators()
            .contains(&c.host().to_owned())
            .then_some(())
    })
    .await;
    let a = start(config(100)).await;
    common::post_created(
        &a.address(),
        "/v1/coordinator",
        json!({"host": b.host()}).to_string(),
    )
    .await;
    eventually("a learns of c through b", || async {
        a.known_coordinators()
            .contains(&c.host().to_owned())
            .then_some(())
    })
    .await;
    for coordinator in [a, b, c] {
        coordinator.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_dead_coordinator_is_blacklisted_until_it_announces_itself_again() {
    let a = start(config(100)).await;
    let b = start(with_discovery(config(100), &a.address())).await;
    let b_addr = b.local_addr();
    let b_host = b.host().to_owned();
    eventually("a knows b", || async {
        a.known_coordinators().contains(&b_host).then_some(())
    })
    .await;

    // A third coordinator that keeps listing b (stale), polled by a.
    let stale = start(config(60_000)).await;
    post(
        &stale.address(),
        "/v1/coordinator",
        json!({"host": b_host}).to_string(),
    )
    .await;
    post(
        &a.address(),
        "/v1/coordinator",
        json!({"host": stale.host()}).to_string(),
    )
    .await;

    b.shutdown().await.unwrap();
    eventually("a drops b", || async {
        (!a.known_coordinators().contains(&b_host)).then_some(())
    })
    .await;
    // Several of a's polls of `stale` (which still lists b) do not bring b back.
    let polls = 5;
    for _ in 0..polls {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !a.known_coordinators().contains(&b_host),
            "blacklisted b came back through gossip"
        );
    }
    assert!(a.known_coordinators().contains(&stale.host().to_owned()));

    // b comes back on the same address and announces itself: the blacklist is lifted.
    let listener = rebind(b_addr).await;
    let b = Coordinator::start(listener, with_discovery(config(100), &a.address())).unwrap();
    eventually("a knows b again", || async {
        a.known_coordinators().contains(&b_host).then_some(())
    })
    .await;
    for coordinator in [a, b, stale] {
        coordinator.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_or_self_discovery_host_is_harmless() {
    // Discovery host that refuses connections.
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = refused.local_addr().unwrap().to_string();
    drop(refused);
    // A long heartbeat (listings cannot expire during the test), resyncs often.
    let mut cfg = with_discovery(config(60_000), &dead);
    cfg.resync_interval = Some(Duration::from_millis(50));
    let lonely = start(cfg).await;
    // Discovery host that is the coordinator itself.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap().to_string();
    let mut cfg = with_discovery(config(60_000), &own);
    cfg.resync_interval = Some(Duration::from_millis(50));
    let narcissus = Coordinator::start(listener, cfg).unwrap();

    for c in [&lonely, &narcissus] {
        let addr = c.address();
        // Many resync periods pass; both keep serving, alone.
        for _ in 0..5 {
            post(
                &addr,
                "/v1/listings?heartbeat=true",
                r#"{"service":"s","host":"h:1"}"#,
            )
            .await;
            assert_eq!(get(&addr, "/v1/listings/s").await.0, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.known_coordinators(), [c.host()]);
    }
    lonely.shutdown().await.unwrap();
    narcissus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_routed_to_itself_asks_again_soon() {
    let b = start(config(60_000)).await;
    // a's listener is bound first so the balancer's script can name it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_addr = listener.local_addr().unwrap().to_string();
    // The balancer sends a to itself three times, then to b.
    let script = vec![a_addr.clone(), a_addr.clone(), a_addr.clone(), b.address()];
    let (balancer, balancer_task) = common::scripted_balancer(script).await;
    // A resync period far longer than the test's patience: only the quick retry
    // after self-routing can bring a and b together in time.
    let mut cfg = with_discovery(config(60_000), &balancer);
    cfg.resync_interval = Some(Duration::from_secs(3_600));
    let a = Coordinator::start(listener, cfg).unwrap();
    eventually("a reaches b through the balancer", || async {
        a.known_coordinators()
            .contains(&b.host().to_owned())
            .then_some(())
    })
    .await;
    eventually("b learns of a", || async {
        b.known_coordinators()
            .contains(&a.host().to_owned())
            .then_some(())
    })
    .await;
    balancer_task.abort();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_starting_coordinator_keeps_asking_its_balancer_and_finds_each_member() {
    // Soak runs 4 and 5: after every coordinator restarted at once, the original's
    // coordinators were found only when they announced themselves, once per resync
    // period. Here c announces nothing and nobody knows it; only asking the
    // balancer again finds it.
    let b = start(config(60_000)).await;
    let c = start(config(60_000)).await;
    // The balancer sends a's question and its announcement to b, then everything
    // to c.
    let script = vec![b.address(), b.address(), c.address()];
    let (balancer, balancer_task) = common::scripted_balancer(script).await;
    // A resync period far longer than the test's patience.
    let mut cfg = with_discovery(config(100), &balancer);
    cfg.resync_interval = Some(Duration::from_secs(3_600));
    let a = start(cfg).await;
    eventually("a finds c through the balancer", || async {
        a.known_coordinators()
            .contains(&c.host().to_owned())
            .then_some(())
    })
    .await;
    assert!(a.known_coordinators().contains(&b.host().to_owned()));
    balancer_task.abort();
    for coordinator in [a, b, c] {
        coordinator.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn ten_coordinators_converge_and_drop_a_stopped_one() {
    let first = start(config(100)).await;
    let mut all = vec![first];
    for _ in 1..10 {
        let discovery = all[0].address();
        all.push(start(with_discovery(config(100), &discovery)).await);
    }
    let hosts = sorted(all.iter().map(|c| c.host().to_owned()).collect());
    for c in &all {
        eventually(&format!("{} knows all ten", c.host()), || async {
            (sorted(c.known_coordinators()) == hosts).then_some(())
        })
        .await;
    }
    let stopped = all.pop().unwrap();
    let gone = stopped.host().to_owned();
    stopped.shutdown().await.unwrap();
    for c in &all {
        eventually(&format!("{} drops the stopped one", c.host()), || async {
            (!c.known_coordinators().contains(&gone)).then_some(())
        })
        .await;
        assert_eq!(c.known_coordinators().len(), 9);
    }
    for c in all {
        c.shutdown().await.unwrap();
    }
}
