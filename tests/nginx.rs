//! The deployment the seed recommends: coordinators behind a real load balancer
//! (nginx, running `deploy/nginx-hakken.conf`), whose address is both every
//! coordinator's DISCOVERY_HOST and the clients' `host`.
//! Needs nginx (`scripts/test` installs Debian's nginx-light when it is missing).

mod common;

use common::nginx::Nginx;
use common::Address;
use common::{config, coordinators_of, eventually, get};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use hakken::{Client, ClientConfig, Listing};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;

fn behind(balancer: &str) -> CoordinatorConfig {
    let mut cfg = config(100);
    cfg.discovery_host = Some(balancer.to_owned());
    cfg.resync_interval = Some(Duration::from_millis(300));
    cfg
}

#[tokio::test]
async fn three_coordinators_behind_nginx() {
    // Bind first, so nginx's upstreams can name the ports.
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let upstreams: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let nginx = Nginx::start(&upstreams, "127.0.0.1").await;
    let balancer = nginx.address();
    let mut coordinators: Vec<Coordinator> = listeners
        .into_iter()
        .map(|l| Coordinator::start(l, behind(&balancer)).unwrap())
        .collect();

    // All three come to list all three, through the balancer alone.
    let mut hosts: Vec<String> = coordinators.iter().map(|c| c.host().to_owned()).collect();
    hosts.sort();
    for c in &coordinators {
        let addr = c.address();
        eventually(&format!("{addr} lists all three"), || async {
            (coordinators_of(&addr).await == hosts).then_some(())
        })
        .await;
    }

    // A client given only the balancer's address publishes to all three.
    let config = ClientConfig::new(balancer.clone())
        .heartbeat_interval(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(100));
    let client = Client::new(config);
    client.start().await.unwrap();
    let listing = Listing::new("behind-lb", "app:1").unwrap().with("v", 1);
    client.publish(listing.clone()).await.unwrap();
    for c in &coordinators {
        let addr = c.address();
        eventually(&format!("{addr} holds the listing"), || async {
            (get(&addr, "/v1/listings/behind-lb").await.1 == json!([listing])).then_some(())
        })
        .await;
    }
    let watch = client.watch("behind-lb").build();
    watch.start().await.unwrap();
    eventually("the watch sees it", || async {
        (watch.get() == vec![listing.clone()]).then_some(())
    })
    .await;

    // Stop one: the others and the client drop it; the listing stays visible.
    let stopped = coordinators.remove(1);
    let gone = stopped.host().to_owned();
    stopped.shutdown().await.unwrap();
    for c in &coordinators {
        eventually(&format!("{} drops the stopped one", c.host()), || async {
            (!c.known_coordinators().contains(&gone)).then_some(())
        })
        .await;
    }
    eventually("the client drops it", || async {
        (!client.coordinators().contains(&gone)).then_some(())
    })
    .await;
    for _ in 0..6 {
        let (status, body) = get(&balancer, "/v1/listings/behind-lb").await;
        assert_eq!((status, body), (200, json!([listing])), "through nginx");
    }
    assert_eq!(watch.get(), vec![listing.clone()]);
    // And a change still reaches the watch.
    let second = Listing::new("behind-lb", "app:2").unwrap();
    client.publish(second).await.unwrap();
    eventually("the watch sees a new listing", || async {
        (watch.get().len() == 2).then_some(())
    })
    .await;

    client.close().await;
    for c in coordinators {
        c.shutdown().await.unwrap();
    }
    drop(nginx);
}

/// Settings of a coordinator process behind the balancer: heartbeat 100 ms,
/// listings that outlive the test.
fn process_args(discovery: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--announce-host",
        "127.0.0.1",
        "--heartbeat-interval",
        "100",
        "--missed-heartbeats-allowed",
        "1000",
        "--resync-interval",
        "3600000",
        "--request-timeout",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(discovery) = discovery {
        args.extend(["--discovery-host".to_owned(), discovery.to_owned()]);
    }
    args
}

#[tokio::test]
async fn restarts_behind_nginx_are_known_to_every_peer_and_lose_no_listing() {
    use common::process::CoordinatorProcess;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    // Three processes on ports of their own, then nginx in front of them, then each
    // started again with the balancer as its discovery host.
    let args = process_args(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(CoordinatorProcess::loopback(&args).await);
    }
    let upstreams: Vec<String> = processes.iter().map(|p| p.address()).collect();
    let nginx = Nginx::start(&upstreams, "127.0.0.1").await;
    let balancer = nginx.address();
    let behind = process_args(Some(&balancer));
    let behind: Vec<&str> = behind.iter().map(String::as_str).collect();
    for process in &mut processes {
        process.set_args(&behind);
        process.kill9().await;
        process.restart().await;
    }
    let mut hosts = upstreams.clone();
    hosts.sort();
    for addr in &upstreams {
        eventually(&format!("{addr} lists all three"), || async {
            (coordinators_of(addr).await == hosts).then_some(())
        })
        .await;
    }
    // A publisher behind the balancer, and a reader counting incomplete answers.
    let client = Client::new(
        ClientConfig::new(balancer.clone())
            .heartbeat_interval(Duration::from_millis(100))
            .poll_interval(Duration::from_millis(100)),
    );
    client.start().await.unwrap();
    for i in 0..10 {
        let listing = Listing::new("lb", format!("app{i}:1")).unwrap();
        client.publish(listing).await.unwrap();
    }
    for addr in upstreams.iter().chain([&balancer]) {
        eventually(&format!("{addr} answers with all ten"), || async {
            (get(addr, "/v1/listings/lb")
                .await
                .1
                .as_array()
                .map(Vec::len)
                == Some(10))
            .then_some(())
        })
        .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let incomplete = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, incomplete, balancer) = (stop.clone(), incomplete.clone(), balancer.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = get(&balancer, "/v1/listings/lb").await;
                let count = body.as_array().map_or(0, Vec::len);
                if status != 200 || count < 10 {
                    eprintln!("incomplete answer through nginx: {status} {body}");
                    incomplete.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Six restarts of one coordinator, each long enough for the others to drop
    // it. (Restart them in turn instead and nginx, which sets a failed upstream
    // aside for `fail_timeout`, soon has none left: see the README on rolling
    // restarts.)
    for round in 0..6 {
        let process = &mut processes[0];
        let host = process.address();
        process.kill9().await;
        for peer in upstreams.iter().filter(|a| **a != host) {
            eventually(&format!("{peer} drops {host}"), || async {
                (!coordinators_of(peer).await.contains(&host)).then_some(())
            })
            .await;
        }
        process.restart().await;
        let restarted = tokio::time::Instant::now();
        for peer in upstreams.iter().filter(|a| **a != host) {
            eventually(&format!("{peer} lists {host} again"), || async {
                coordinators_of(peer).await.contains(&host).then_some(())
            })
            .await;
        }
        eprintln!(
            "restart {round} behind nginx: known to every peer {:?} after it started",
            restarted.elapsed()
        );
    }
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    assert_eq!(
        incomplete.load(Ordering::SeqCst),
        0,
        "answers through nginx with fewer than 10 listings"
    );
    client.close().await;
    drop(nginx);
}

/// nginx gives up on an upstream that sends nothing for `proxy_read_timeout` (60 s
/// unless set): the deploy file's must outlast the longest a coordinator keeps a
/// held request silent, a blocking query at its longest (with its jitter, up to
/// 1/16) and a stream between two keep-alives.
#[test]
fn the_deploy_files_read_timeout_outlasts_a_held_query_and_a_quiet_stream() {
    let deploy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx-hakken.conf"
    ))
    .unwrap();
    let seconds: Vec<u64> = deploy
        .lines()
        .filter_map(|line| {
            let value = line.trim().strip_prefix("proxy_read_timeout ")?;
            Some(
                value
                    .strip_suffix("s;")?
                    .parse()
                    .expect("proxy_read_timeout Ns;"),
            )
        })
        .collect();
    assert_eq!(seconds.len(), 1, "one proxy_read_timeout, in seconds");
    let timeout = Duration::from_secs(seconds[0]);
    let defaults = CoordinatorConfig::default();
    assert!(
        timeout > defaults.max_wait + defaults.max_wait / 16,
        "{timeout:?} is shorter than a blocking query's longest hold"
    );
    assert!(
        timeout > defaults.stream_keepalive * 2,
        "{timeout:?} is too close to a stream's keep-alive interval"
    );
}
