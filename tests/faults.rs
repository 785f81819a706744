//! Faults (issue #6): coordinators killed with SIGKILL and restarted on the same
//! address, every coordinator of a client gone at once, and coordinators that
//! accept connections but never answer, or answer garbage.
//!
//! Killed coordinators are real processes (the built `hakken` binary, see
//! `common::process`); clients are in-process [`Client`]s with a 200 ms heartbeat.
//! No client is ever restarted: recovery must come by itself. Every wait is on a
//! condition with a deadline (`eventually`), and every call that could hang is
//! bounded by [`BOUND`] so that a hang is a failure, not a stuck test run.

mod common;

use common::Address;

use common::process::{signal, CoordinatorProcess};
use common::{config, eventually, held, holds, hosts_of, knows, sees, start, strings};
use hakken::client::{Client, ClientConfig, ClientError};
use hakken::Listing;
use serde_json::json;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The heartbeat interval of coordinators and clients.
const H: Duration = Duration::from_millis(200);
/// `H` as the binary's flag wants it.
const H_MS: &str = "200";
/// Longest any single call may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(20);

/// Runs `future`, failing the test if it takes longer than [`BOUND`].
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("hang: {what} did not return within {BOUND:?}"),
    }
}

fn listing(service: &str, host: &str) -> Listing {
    Listing::new(service, host).unwrap()
}

/// A client of `host` heartbeating and polling every `H`.
fn client_config(host: &str) -> ClientConfig {
    ClientConfig::new(host)
        .heartbeat_interval(H)
        .poll_interval(H)
        .request_timeout(Duration::from_secs(2))
}

async fn started(host: &str) -> Client {
    let client = Client::new(client_config(host));
    bounded("client start", client.start())
        .await
        .expect("client starts");
    client
}

/// Settings of a coordinator process: announced as 127.0.0.1, heartbeat `H`.
fn process_args(discovery: Option<&str>) -> Vec<String> {
    let mut args = strings(&["--announce-host", "127.0.0.1", "--heartbeat-interval", H_MS]);
    if let Some(discovery) = discovery {
        args.extend(strings(&["--discovery-host", discovery]));
    }
    args
}

async fn coordinator_process(discovery: Option<&str>) -> CoordinatorProcess {
    let args = process_args(discovery);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    CoordinatorProcess::loopback(&args).await
}

// ---------------------------------------------------------------------------
// 1. kill -9 and restart on the same address
// ---------------------------------------------------------------------------

#[tokio::test]
async fn listings_come_back_after_the_only_coordinator_is_killed_and_restarted() {
    let mut p = coordinator_process(None).await;
    let addr = p.address();
    let publishers = [
        started(&addr).await,
        started(&addr).await,
        started(&addr).await,
    ];
    let all = ["p0:1", "p1:1", "p2:1"];
    for (client, host) in publishers.iter().zip(all) {
        bounded("publish", client.publish(listing("killed", host)))
            .await
            .unwrap();
    }
    let watcher = started(&addr).await;
    let watch = watcher.watch("killed").build();
    bounded("watch start", watch.start()).await.unwrap();
    sees(&watch, &all).await;
    holds(&addr, "killed", &all).await;

    p.kill9().await;
    assert_eq!(held(&addr, "killed").await, None, "the coordinator is gone");
    // Every client notices (a failed heartbeat or poll drops the coordinator).
    for client in publishers.iter().chain([&watcher]) {
        knows(client, &[]).await;
    }
    assert_eq!(hosts_of(&watch.get()), all, "the watch keeps its listings");

    p.restart().await;
    let restarted = Instant::now();
    holds(&addr, "killed", &all).await;
    eprintln!(
        "every listing back {:?} after the restart (H = {H:?})",
        restarted.elapsed()
    );
    for client in publishers.iter().chain([&watcher]) {
        knows(client, std::slice::from_ref(&addr)).await;
    }
    sees(&watch, &all).await;
    // The watch follows the coordinator again: a change reaches it.
    bounded(
        "unpublish",
        publishers[0].unpublish(&listing("killed", "p0:1")),
    )
    .await
    .unwrap();
    sees(&watch, &["p1:1", "p2:1"]).await;

    for client in publishers.iter().chain([&watcher]) {
        bounded("close", client.close()).await;
    }
}

#[tokio::test]
async fn listings_come_back_after_each_member_of_a_cluster_is_killed_and_restarted() {
    // a is the discovery host (standalone); b finds it. Client ca enters through a,
    // cb through b; both know both coordinators.
    let mut a = coordinator_process(None).await;
    let mut b = coordinator_process(Some(&a.address())).await;
    let hosts = [a.address(), b.address()];
    let ca = started(&a.address()).await;
    let cb = started(&b.address()).await;
    for client in [&ca, &cb] {
        knows(client, &hosts).await;
    }
    bounded("publish", ca.publish(listing("member", "ca:1")))
        .await
        .unwrap();
    bounded("publish", cb.publish(listing("member", "cb:1")))
        .await
        .unwrap();
    let both = ["ca:1", "cb:1"];
    for host in &hosts {
        holds(host, "member", &both).await;
    }

    // Kill the discovery host a. Restarted, it announces itself to nobody: it comes
    // back through b's resync and the clients' polls and resyncs.
    a.kill9().await;
    for client in [&ca, &cb] {
        knows(client, &[b.address()]).await;
    }
    a.restart().await;
    let restarted = Instant::now();
    holds(&a.address(), "member", &both).await;
    eprintln!(
        "discovery host: every listing back {:?} after the restart",
        restarted.elapsed()
    );
    for client in [&ca, &cb] {
        knows(client, &hosts).await;
    }

    // Kill b, the member. Restarted, it announces itself to a.
    b.kill9().await;
    for client in [&ca, &cb] {
        knows(client, &[a.address()]).await;
    }
    b.restart().await;
    let restarted = Instant::now();
    holds(&b.address(), "member", &both).await;
    eprintln!(
        "member: every listing back {:?} after the restart",
        restarted.elapsed()
    );
    for client in [&ca, &cb] {
        knows(client, &hosts).await;
    }
    // Nothing was lost on the survivor meanwhile.
    holds(&a.address(), "member", &both).await;

    bounded("close", ca.close()).await;
    bounded("close", cb.close()).await;
}

// ---------------------------------------------------------------------------
// 2. every coordinator of a client dies
// ---------------------------------------------------------------------------

/// Two coordinator processes (b finds a), a watcher client entering through a that
/// publishes its own listing and watches `svc`, and a publisher client of `svc`.
struct Outage {
    a: CoordinatorProcess,
    b: CoordinatorProcess,
    watcher: Client,
    watch: hakken::Watch,
    publisher: Client,
}

impl Outage {
    async fn set_up() -> Outage {
        let a = coordinator_process(None).await;
        let b = coordinator_process(Some(&a.address())).await;
        let hosts = [a.address(), b.address()];
        let watcher = started(&a.address()).await;
        let publisher = started(&a.address()).await;
        for client in [&watcher, &publisher] {
            knows(client, &hosts).await;
        }
        bounded("publish", watcher.publish(listing("own", "w:1")))
            .await
            .unwrap();
        bounded("publish", publisher.publish(listing("svc", "x1:1")))
            .await
            .unwrap();
        let watch = watcher.watch("svc").build();
        bounded("watch start", watch.start()).await.unwrap();
        sees(&watch, &["x1:1"]).await;

        // Both coordinators die at once.
        let mut outage = Outage {
            a,
            b,
            watcher,
            watch,
            publisher,
        };
        outage.a.kill9().await;
        outage.b.kill9().await;
        for client in [&outage.watcher, &outage.publisher] {
            knows(client, &[]).await;
        }
        assert_eq!(hosts_of(&outage.watch.get()), ["x1:1"], "listings kept");
        // Published while every coordinator is down: it goes out at a later heartbeat.
        bounded("publish", outage.publisher.publish(listing("svc", "x2:1")))
            .await
            .unwrap();
        // Some heartbeats, polls and watch retries fail meanwhile. (Waiting cannot
        // flake: a regression could only pass unnoticed.)
        tokio::time::sleep(5 * H).await;
        assert_eq!(
            hosts_of(&outage.watch.get()),
            ["x1:1"],
            "the watch keeps its last listings while no coordinator answers"
        );
        outage
    }

    async fn close(self) {
        bounded("close", self.watcher.close()).await;
        bounded("close", self.publisher.close()).await;
    }
}

#[tokio::test]
async fn a_client_whose_coordinators_all_died_resumes_when_its_host_returns() {
    let mut outage = Outage::set_up().await;
    outage.a.restart().await;
    let a = outage.a.address();

    // Watching resumes: the listing published during the outage arrives.
    sees(&outage.watch, &["x1:1", "x2:1"]).await;
    // Publishing resumes: both clients' listings are back on a.
    holds(&a, "own", &["w:1"]).await;
    holds(&a, "svc", &["x1:1", "x2:1"]).await;
    for client in [&outage.watcher, &outage.publisher] {
        knows(client, std::slice::from_ref(&a)).await;
    }
    // And changes keep flowing.
    bounded(
        "unpublish",
        outage.publisher.unpublish(&listing("svc", "x1:1")),
    )
    .await
    .unwrap();
    sees(&outage.watch, &["x2:1"]).await;
    outage.close().await;
}

/// When every coordinator is gone, a client retries only its configured `host`: it
/// forgot every other coordinator it knew, so one of those coming back (while the
/// host stays down) is never found again, short of a client restart.
#[tokio::test]
async fn a_client_whose_coordinators_all_died_resumes_when_another_one_returns() {
    let mut outage = Outage::set_up().await;
    outage.b.restart().await;
    let b = outage.b.address();
    holds(&b, "own", &["w:1"]).await;
    holds(&b, "svc", &["x1:1", "x2:1"]).await;
    sees(&outage.watch, &["x1:1", "x2:1"]).await;
    outage.close().await;
}

// ---------------------------------------------------------------------------
// 3. coordinators that accept connections but never answer, or answer garbage
// ---------------------------------------------------------------------------

/// How a bad coordinator misbehaves, on every connection.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Accepts and holds the connection; never reads, never answers.
    Silent,
    /// Answers every request `200 OK` with the body `hello`.
    Hello,
    /// Answers with random bytes, then closes.
    Noise,
    /// Answers `200 OK` with a JSON content type and a 1000-byte length, sends 10
    /// bytes of it and then nothing, holding the connection.
    StalledBody,
}

/// A raw TCP server misbehaving in one way. Dropping it stops it and closes every
/// connection it holds.
struct BadCoordinator {
    address: String,
    accepted: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for BadCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl BadCoordinator {
    async fn start(how: Misbehaviour) -> BadCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            // Dropped with the server task: every connection closes with it.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                connections.spawn(misbehave(how, socket));
                while connections.try_join_next().is_some() {}
            }
        });
        BadCoordinator {
            address,
            accepted,
            server,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn misbehave(how: Misbehaviour, mut socket: TcpStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    match how {
        Misbehaviour::Silent => std::future::pending().await,
        Misbehaviour::Hello => loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
            if socket.write_all(answer).await.is_err() {
                return;
            }
        },
        Misbehaviour::Noise => {
            let _ = socket.read(&mut buffer).await;
            let noise: Vec<u8> = (0..512).map(|_| fastrand::u8(..)).collect();
            let _ = socket.write_all(&noise).await;
            let _ = socket.shutdown().await;
        }
        Misbehaviour::StalledBody => {
            let _ = socket.read(&mut buffer).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        content-length: 1000\r\n\r\n[{\"host\":";
            let _ = socket.write_all(head.as_bytes()).await;
            std::future::pending().await
        }
    }
}

/// Request timeout of the clients facing a bad coordinator.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn impatient(host: &str) -> Client {
    Client::new(client_config(host).request_timeout(SHORT_TIMEOUT))
}

/// `hakken_heartbeats_received_total` of the coordinator at `addr`.
async fn heartbeats_received(addr: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("hakken_heartbeats_received_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the heartbeat counter is exported")
}

async fn a_bad_coordinator_delays_nothing_beyond_the_timeout(how: Misbehaviour) {
    let bad = BadCoordinator::start(how).await;

    // As the only way in: every call fails after its timeout, none hangs.
    let lost = impatient(&bad.address);
    match bounded("start against a bad host", lost.start()).await {
        Err(ClientError::NoCoordinator { host, .. }) => assert_eq!(host, bad.address),
        other => panic!("{how:?}: expected NoCoordinator, got {other:?}"),
    }
    bounded(
        "publish to a bad host",
        lost.publish(listing("lost", "l:1")),
    )
    .await
    .unwrap();
    let watch = lost.watch("lost").build();
    assert!(
        matches!(
            bounded("watch start against a bad host", watch.start()).await,
            Err(ClientError::NoCoordinator { .. })
        ),
        "{how:?}: the watch fails to start"
    );
    assert!(watch.get().is_empty());
    bounded("close", lost.close()).await;
    assert!(bad.accepted() > 0, "the bad coordinator was asked");

    // Known through a good coordinator. This one polls its peers only every 60 s,
    // so it keeps listing the bad one, and the client keeps meeting it.
    let good = start(config(60_000)).await;
    common::post_created(
        &good.address(),
        "/v1/coordinator",
        json!({"host": bad.address}).to_string(),
    )
    .await;
    let asked_before = bad.accepted();
    let client = impatient(&good.address());
    bounded("start", client.start())
        .await
        .expect("client starts");
    assert!(
        client.coordinators().contains(&bad.address),
        "the client learned of the bad coordinator: {:?}",
        client.coordinators()
    );

    // Publishing reaches the good one.
    bounded("publish", client.publish(listing("own", "o:1")))
        .await
        .unwrap();
    holds(&good.address(), "own", &["o:1"]).await;

    // Watching gets answers, and changes keep arriving.
    let watch = client.watch("svc").build();
    bounded("watch start", watch.start()).await.unwrap();
    assert!(watch.get().is_empty());
    for (host, now) in [("p:1", ["p:1"].as_slice()), ("q:1", &["p:1", "q:1"])] {
        common::post_created(
            &good.address(),
            "/v1/listings",
            json!({"service": "svc", "host": host}).to_string(),
        )
        .await;
        sees(&watch, now).await;
    }
    assert_eq!(watch.coordinator().as_deref(), Some(good.host()));

    // Heartbeats keep reaching the good one while the bad one is in the way.
    let before = heartbeats_received(&good.address()).await;
    eventually(
        "five more heartbeats reach the good coordinator",
        || async { (heartbeats_received(&good.address()).await >= before + 5).then_some(()) },
    )
    .await;
    assert!(
        bad.accepted() > asked_before,
        "{how:?}: the client kept meeting the bad coordinator"
    );
    assert!(client.coordinators().contains(&good.host().to_owned()));

    bounded("close", client.close()).await;
    assert_eq!(client.running_tasks(), 0);
    good.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_that_never_answers_delays_nothing_beyond_the_timeout() {
    a_bad_coordinator_delays_nothing_beyond_the_timeout(Misbehaviour::Silent).await;
}

#[tokio::test]
async fn a_coordinator_that_answers_hello_delays_nothing_beyond_the_timeout() {
    a_bad_coordinator_delays_nothing_beyond_the_timeout(Misbehaviour::Hello).await;
}

#[tokio::test]
async fn a_coordinator_that_answers_noise_delays_nothing_beyond_the_timeout() {
    a_bad_coordinator_delays_nothing_beyond_the_timeout(Misbehaviour::Noise).await;
}

#[tokio::test]
async fn a_coordinator_that_stalls_mid_answer_delays_nothing_beyond_the_timeout() {
    a_bad_coordinator_delays_nothing_beyond_the_timeout(Misbehaviour::StalledBody).await;
}

/// A frozen coordinator (SIGSTOP: the kernel still accepts its connections, nothing
/// answers) while a watch holds a blocking query on it. Its client's polls time
/// out and drop it at once; the watch should move on as well, instead of waiting
/// out its blocking query (`watch_wait`, 60 s by default, plus 1/8).
#[tokio::test]
async fn a_watch_moves_on_from_a_frozen_coordinator() {
    let a = coordinator_process(None).await;
    let b = coordinator_process(Some(&a.address())).await;
    let hosts = [a.address(), b.address()];
    let watcher = impatient(&a.address());
    bounded("start", watcher.start()).await.unwrap();
    let publisher = started(&a.address()).await;
    for client in [&watcher, &publisher] {
        knows(client, &hosts).await;
    }
    let watch = watcher.watch("frozen").build();
    bounded("watch start", watch.start()).await.unwrap();
    bounded("publish", publisher.publish(listing("frozen", "f1:1")))
        .await
        .unwrap();
    sees(&watch, &["f1:1"]).await;
    let followed = watch
        .coordinator()
        .expect("the watch follows a coordinator");
    let (frozen, other) = if followed == a.address() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(frozen.address(), followed);

    signal(frozen.pid().unwrap(), "STOP").await;
    // The watcher's client notices at its next poll.
    knows(&watcher, &[other.address()]).await;
    bounded("publish", publisher.publish(listing("frozen", "f2:1")))
        .await
        .unwrap();
    holds(&other.address(), "frozen", &["f1:1", "f2:1"]).await;
    let stopped = Instant::now();
    sees(&watch, &["f1:1", "f2:1"]).await;
    eprintln!(
        "the watch moved on {:?} after the freeze",
        stopped.elapsed()
    );
    assert_eq!(watch.coordinator(), Some(other.address()));

    signal(frozen.pid().unwrap(), "CONT").await;
    bounded("close", watcher.close()).await;
    bounded("close", publisher.close()).await;
}
