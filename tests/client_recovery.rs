//! The client when coordinators join, restart or fail (issue #12): it learns a new
//! coordinator at once and publishes to it, republishes to one that comes back
//! after a failure without waiting for its heartbeat, keeps a coordinator that
//! refuses rather than fails, and its watches never shrink because their
//! coordinator restarted empty.
//!
//! Heartbeats and polls are a minute apart here, far beyond the test's patience:
//! whatever arrives in time arrived because of what is tested.

mod common;

use common::Address;

use common::{config, delete, eventually, get, hosts_of, metric, post, sees, start, PATIENCE};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use hakken::{Client, ClientConfig, Listing};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;

/// Heartbeats, polls and resyncs once a minute.
fn slow_client(host: &str) -> ClientConfig {
    ClientConfig::new(host)
        .heartbeat_interval(Duration::from_secs(60))
        .poll_interval(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(2))
}

async fn started(config: ClientConfig) -> Client {
    let client = Client::new(config);
    tokio::time::timeout(PATIENCE, client.start())
        .await
        .expect("start is bounded")
        .expect("client starts");
    client
}

/// Restarts a coordinator on the same address, empty.
async fn restart(c: Coordinator, config: CoordinatorConfig) -> Coordinator {
    let bound = c.local_addr();
    c.shutdown().await.unwrap();
    let listener = eventually("the port is free again", || async {
        TcpListener::bind(bound).await.ok()
    })
    .await;
    Coordinator::start(listener, config).unwrap()
}

#[tokio::test]
async fn a_new_coordinator_is_learned_at_once_and_gets_every_listing() {
    let a = start(config(60_000)).await;
    let client = started(slow_client(&a.address())).await;
    client
        .publish(Listing::new("pay", "p:1").unwrap())
        .await
        .unwrap();
    // b joins through a; the client hears of it through its held query on a's
    // coordinator list, not at its next poll a minute later.
    let b = start({
        let mut cfg = config(60_000);
        cfg.discovery_host = Some(a.address());
        cfg
    })
    .await;
    eventually("the client knows b", || async {
        client
            .coordinators()
            .contains(&b.host().to_owned())
            .then_some(())
    })
    .await;
    // And sent b its listing itself (b may also have copied it from a).
    eventually("b received the listing from the client", || async {
        (metric(&b.address(), "hakken_heartbeats_received_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        get(&b.address(), "/v1/listings/pay").await.1,
        json!([{"service": "pay", "host": "p:1"}])
    );
    client.close().await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_back_after_a_failure_gets_every_listing_at_once() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let client = started(slow_client(&addr)).await;
    for host in ["p:1", "p:2"] {
        client
            .publish(Listing::new("pay", host).unwrap())
            .await
            .unwrap();
    }
    // Killed and back on the same address, empty, between two heartbeats.
    let c = restart(c, config(60_000)).await;
    eventually("the restarted coordinator holds both listings", || async {
        let (status, body) = get(&addr, "/v1/listings/pay").await;
        (status == 200 && body.as_array().is_some_and(|a| a.len() == 2)).then_some(())
    })
    .await;
    client.close().await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_keeps_what_a_restarted_coordinator_has_not_heard_of_yet() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    // Three listings from publishers that are not this client.
    for host in ["a:1", "b:1", "c:1"] {
        post(
            &addr,
            "/v1/listings",
            json!({"service": "s", "host": host}).to_string(),
        )
        .await;
    }
    let client = started(slow_client(&addr)).await;
    let watch = client.watch("s").build();
    watch.start().await.unwrap();
    sees(&watch, &["a:1", "b:1", "c:1"]).await;

    // The coordinator restarts alone: nobody to copy from, nothing held yet.
    let c = restart(c, config(60_000)).await;
    assert_eq!(get(&addr, "/v1/listings/s").await.0, 404);
    // a's publisher reaches it first; the watch follows it again...
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"s","host":"a:1","v":2}"#,
    )
    .await;
    eventually("the watch has a's new payload", || async {
        watch
            .get()
            .iter()
            .any(|l| l.host() == "a:1" && l.get("v") == Some(&json!(2)))
            .then_some(())
    })
    .await;
    // ...and never dropped b and c, which the coordinator has not heard of yet.
    assert_eq!(hosts_of(&watch.get()), ["a:1", "b:1", "c:1"]);
    // A listing the coordinator did list is its to remove.
    assert_eq!(delete(&addr, "/v1/listings/s/a:1").await, 204);
    sees(&watch, &["b:1", "c:1"]).await;
    client.close().await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_coordinator_that_comes_back_before_the_cluster_noticed_is_known_again() {
    // a and b know each other; they poll each other once a minute, so neither
    // drops the other and no coordinator list changes during the test.
    let a = start(config(60_000)).await;
    let b = start({
        let mut cfg = config(60_000);
        cfg.discovery_host = Some(a.address());
        cfg
    })
    .await;
    let client_config = ClientConfig::new(a.address())
        .heartbeat_interval(Duration::from_millis(50))
        .poll_interval(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(2))
        .failures_before_drop(1);
    let client = started(client_config).await;
    eventually("the client knows both", || async {
        (client.coordinators().len() == 2).then_some(())
    })
    .await;
    client
        .publish(Listing::new("pay", "p:1").unwrap())
        .await
        .unwrap();
    // b goes away: its next heartbeat round fails and the client drops it.
    let b_host = b.host().to_owned();
    let bound = b.local_addr();
    b.shutdown().await.unwrap();
    eventually("the client dropped b", || async {
        (!client.coordinators().contains(&b_host)).then_some(())
    })
    .await;
    // b is back on its address, alone and empty. a still lists it: nothing the
    // client follows changes, its polls are a minute apart, and b copies nothing.
    let listener = eventually("b's port is free again", || async {
        TcpListener::bind(bound).await.ok()
    })
    .await;
    let b = Coordinator::start(listener, config(60_000)).unwrap();
    eventually("the client knows b again", || async {
        client.coordinators().contains(&b_host).then_some(())
    })
    .await;
    eventually("b holds the listing again", || async {
        let (status, body) = get(&b.address(), "/v1/listings/pay").await;
        (status == 200 && body == json!([{"service": "pay", "host": "p:1"}])).then_some(())
    })
    .await;
    client.close().await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_that_refuses_is_kept_one_that_is_gone_is_dropped() {
    // Every write needs a token this client does not have: each heartbeat is a
    // 401, which is an answer, not a failure.
    let mut cfg = config(60_000);
    cfg.token = Some("secret".into());
    let guarded = start(cfg).await;
    let open = start(config(60_000)).await;
    let announced = common::http()
        .post(format!("http://{}/v1/coordinator", guarded.address()))
        .bearer_auth("secret")
        .json(&json!({"host": open.host()}))
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), 201);
    // Polls a minute apart: only heartbeat rounds (refused by one, answered by the
    // other) count here.
    let client_config = ClientConfig::new(guarded.address())
        .heartbeat_interval(Duration::from_millis(50))
        .poll_interval(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(2))
        .failures_before_drop(2);
    let client = started(client_config).await;
    eventually("the client knows both", || async {
        (client.coordinators().len() == 2).then_some(())
    })
    .await;
    client
        .publish(Listing::new("pay", "p:1").unwrap())
        .await
        .unwrap();
    // Many heartbeat rounds later (each refused by the guarded one)...
    eventually("ten rounds of heartbeats reached the open one", || async {
        (metric(&open.address(), "hakken_heartbeats_received_total").await >= 10.0).then_some(())
    })
    .await;
    assert!(
        client.coordinators().contains(&guarded.host().to_owned()),
        "a 401 is no reason to forget a coordinator"
    );
    // One that is gone is dropped after its rounds fail.
    let gone = open.host().to_owned();
    open.shutdown().await.unwrap();
    eventually("the stopped one is dropped", || async {
        (!client.coordinators().contains(&gone)).then_some(())
    })
    .await;
    client.close().await;
    guarded.shutdown().await.unwrap();
}

/// Two coordinator processes on loopback (H = 200 ms, listings that never expire
/// in a test), the second discovering the first; and their addresses, sorted.
async fn two_coordinator_processes() -> (
    common::process::CoordinatorProcess,
    common::process::CoordinatorProcess,
    Vec<String>,
) {
    use common::process::CoordinatorProcess;
    let start = |discovery: Option<String>| async move {
        let mut args = vec![
            "--announce-host".to_owned(),
            "127.0.0.1".to_owned(),
            "--heartbeat-interval".to_owned(),
            "200".to_owned(),
            "--missed-heartbeats-allowed".to_owned(),
            "1000".to_owned(),
        ];
        if let Some(d) = discovery {
            args.extend(["--discovery-host".to_owned(), d]);
        }
        CoordinatorProcess::loopback(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    let a = start(None).await;
    let b = start(Some(a.address())).await;
    let mut both = vec![a.address(), b.address()];
    both.sort();
    (a, b, both)
}

/// Starts `watch`, SIGSTOPs the coordinator of `a` and `b` it follows, and waits
/// until it follows the other. Returns the stopped one's address and pid (to
/// resume it).
async fn watch_leaves_a_stopped_coordinator(
    watch: &hakken::Watch,
    a: &common::process::CoordinatorProcess,
    b: &common::process::CoordinatorProcess,
    both: &[String],
) -> (String, u32) {
    tokio::time::timeout(PATIENCE, watch.start())
        .await
        .expect("the watch starts")
        .unwrap();
    let followed = eventually("the watch follows one of them", || async {
        watch.coordinator().filter(|c| both.contains(c))
    })
    .await;
    let stopped = if followed == a.address() { a } else { b };
    let pid = stopped.pid().expect("it runs");
    common::process::signal(pid, "STOP").await;
    let moved = eventually("the watch moves to the other coordinator", || async {
        watch
            .coordinator()
            .filter(|c| *c != followed && both.contains(c))
    })
    .await;
    assert_ne!(moved, followed);
    (followed, pid)
}

/// Found by the 30-minute soak: a watch held on a coordinator that a partition
/// cut off kept its last view (a listing whose publisher had died) until the
/// client dropped that coordinator, three failed heartbeat rounds later. It now
/// moves to another coordinator at the first failed round.
#[tokio::test]
async fn a_watch_leaves_a_coordinator_at_the_first_failed_heartbeat_round() {
    let (a, b, both) = two_coordinator_processes().await;
    let mut config = ClientConfig::new(a.address())
        .heartbeat_interval(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(500));
    // Dropped only after many rounds: what moves the watch is the first strike.
    config.failures_before_drop = 50;
    let client = started(config).await;
    common::knows(&client, &both).await;
    client
        .publish(Listing::new("svc", "s:1").unwrap())
        .await
        .unwrap();
    let watch = client.watch("svc").build();
    let (stopped, pid) = watch_leaves_a_stopped_coordinator(&watch, &a, &b, &both).await;
    assert!(
        client.coordinators().contains(&stopped),
        "moved at a strike, long before the client drops the stopped one"
    );
    common::process::signal(pid, "CONT").await;
    client.close().await;
}

/// Found by the 30-minute soak (run 4): a client that only watches makes no
/// heartbeat rounds, so nothing found the coordinator its watch followed broken
/// when a partition cut it off; the watch held its last view (with a listing
/// whose publisher had died) until the partition healed. It now probes the
/// coordinators its watches follow every heartbeat interval. (Its stream stays
/// open and silent: without a probe, the stream's own silence limit, three
/// keep-alives or 45 s, is beyond PATIENCE.)
#[tokio::test]
async fn a_watch_of_a_client_that_publishes_nothing_leaves_a_stopped_coordinator() {
    let (a, b, both) = two_coordinator_processes().await;
    // Polls for coordinators only every minute (the default), publishes nothing.
    let config = ClientConfig::new(a.address())
        .heartbeat_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(500));
    let client = started(config).await;
    common::knows(&client, &both).await;
    let watch = client.watch("svc").build();
    let (_, pid) = watch_leaves_a_stopped_coordinator(&watch, &a, &b, &both).await;
    common::process::signal(pid, "CONT").await;
    client.close().await;
}

/// A coordinator that lists itself and `other`, and answers nothing else until
/// released (then 503): one that hangs, a stalled disk say.
struct Hung {
    host: String,
    release: tokio_util::sync::CancellationToken,
}

impl Hung {
    async fn start(other: &str) -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let release = tokio_util::sync::CancellationToken::new();
        let list = json!([{ "host": host }, { "host": other }]);
        let wait = release.clone();
        let app = axum::Router::new()
            .route(
                "/v1/coordinator",
                axum::routing::get(move || async move { axum::Json(list) }),
            )
            .fallback(move || {
                let wait = wait.clone();
                async move {
                    wait.cancelled().await;
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hung { host, release }
    }
}

/// A coordinator, one that hangs beside it, and a client started at the hung one
/// (polls a minute apart), `tune`d, once it knows both.
async fn beside_a_hung_one(
    tune: impl FnOnce(ClientConfig) -> ClientConfig,
) -> (Coordinator, Hung, Client) {
    let open = start(config(60_000)).await;
    let hung = Hung::start(open.host()).await;
    let client = started(tune(
        ClientConfig::new(&hung.host).poll_interval(Duration::from_secs(60)),
    ))
    .await;
    eventually("the client knows both", || async {
        (client.coordinators().len() == 2).then_some(())
    })
    .await;
    (open, hung, client)
}

/// Closes `client`, which must say its listings could not be withdrawn from
/// `host` alone.
async fn closing_names(client: &Client, host: &str) {
    let failed = client.close_reporting().await;
    let named: Vec<&str> = failed.iter().map(|e| e.host()).collect();
    assert_eq!(named, [host], "{failed:?}");
}

#[tokio::test]
async fn a_coordinator_that_hangs_holds_up_no_write_to_the_others() {
    // Heartbeats every 100 ms; the hung one holds each call for a minute.
    let (open, hung, client) = beside_a_hung_one(|config| {
        config
            .heartbeat_interval(Duration::from_millis(100))
            .request_timeout(Duration::from_secs(60))
    })
    .await;
    let publish = |host: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.publish(Listing::new("pay", host).unwrap()).await })
    };
    // The publication waits for the hung one; the open one has it meanwhile.
    let first = publish("p:1");
    eventually("the open one holds the listing", || async {
        (common::held(&open.address(), "pay").await? == ["p:1"]).then_some(())
    })
    .await;
    // Heartbeat rounds go on, to the open one: the hung one holds up only its own.
    let before = metric(&open.address(), "hakken_heartbeats_received_total").await;
    eventually("heartbeats keep reaching the open one", || async {
        (metric(&open.address(), "hakken_heartbeats_received_total").await >= before + 5.0)
            .then_some(())
    })
    .await;
    // So does a second publication, and a withdrawal.
    let second = publish("p:2");
    eventually("the open one holds the second listing", || async {
        (common::held(&open.address(), "pay").await? == ["p:1", "p:2"]).then_some(())
    })
    .await;
    let unpublishing = unpublish_p1(&client);
    eventually("the open one no longer holds the first listing", || async {
        (common::held(&open.address(), "pay").await? == ["p:2"]).then_some(())
    })
    .await;
    assert!(
        !first.is_finished(),
        "the first publication still waits for the hung one"
    );
    // Released, the hung one answers 503 to every call waiting on it.
    hung.release.cancel();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    unpublishing.await.unwrap().unwrap();
    client.close().await;
    assert_eq!(common::held(&open.address(), "pay").await, Some(Vec::new()));
    open.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_that_hangs_is_dropped_after_its_heartbeat_rounds_fail() {
    // Each call to the hung one times out after half a heartbeat interval; retry
    // rounds (which ask it `/status`, and hang too) run between heartbeats.
    let (open, hung, client) = beside_a_hung_one(|config| {
        config
            .heartbeat_interval(Duration::from_secs(1))
            .request_timeout(Duration::from_millis(500))
            .failures_before_drop(3)
    })
    .await;
    client
        .publish(Listing::new("pay", "p:1").unwrap())
        .await
        .unwrap();
    eventually("the hung one is dropped", || async {
        (!client.coordinators().contains(&hung.host)).then_some(())
    })
    .await;
    assert_eq!(client.coordinators(), [open.host()]);
    assert_eq!(
        common::held(&open.address(), "pay").await,
        Some(vec!["p:1".to_owned()])
    );
    // Closing asks the dropped one too (it may serve others), and names it.
    closing_names(&client, &hung.host).await;
    assert_eq!(common::held(&open.address(), "pay").await, Some(Vec::new()));
    hung.release.cancel();
    open.shutdown().await.unwrap();
}

#[tokio::test]
async fn withdrawals_held_up_by_a_hung_coordinator_are_left_to_close() {
    // `close`'s round is bounded by 1.5 timeouts, and names every coordinator
    // when it runs out: the timeout leaves the open one 2 s to answer.
    let (open, hung, client) = beside_a_hung_one(|config| {
        config
            .heartbeat_interval(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(4))
    })
    .await;
    let all = ["p:1", "p:2", "p:3", "p:4"];
    // Each write to the hung one waits its turn, then the timeout: the
    // publications, then the withdrawals queue up behind each other there.
    let writes: Vec<_> = all
        .iter()
        .map(|host| {
            let client = client.clone();
            let listing = Listing::new("pay", *host).unwrap();
            tokio::spawn(async move { client.publish(listing).await })
        })
        .collect();
    eventually("the open one holds every listing", || async {
        (common::held(&open.address(), "pay").await? == all).then_some(())
    })
    .await;
    let withdrawals: Vec<_> = all
        .iter()
        .map(|host| {
            let client = client.clone();
            let listing = Listing::new("pay", *host).unwrap();
            tokio::spawn(async move { client.unpublish(&listing).await })
        })
        .collect();
    eventually("the open one holds none", || async {
        (common::held(&open.address(), "pay").await?.is_empty()).then_some(())
    })
    .await;
    // Given up on. Those still waiting for the hung one when `close` begins are
    // not sent one after another: `close` withdraws them in its own round, and
    // says the hung one failed.
    for task in writes.iter().chain(&withdrawals) {
        task.abort();
    }
    closing_names(&client, &hung.host).await;
    hung.release.cancel();
    open.shutdown().await.unwrap();
}

/// A coordinator that lists itself and answers `/status`, but fails every write
/// with a `500`: a full disk, say. Returns its host and when each write arrived.
async fn failing_writes() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let list = json!([{ "host": host }]);
    let seen = writes.clone();
    let app = axum::Router::new()
        .route(
            "/v1/coordinator",
            axum::routing::get(move || async move { axum::Json(list) }),
        )
        .route(
            "/status",
            axum::routing::get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/v1/listings",
            axum::routing::post(move || async move {
                seen.lock().unwrap().push(std::time::Instant::now());
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (host, writes)
}

#[tokio::test]
async fn a_coordinator_that_fails_every_write_is_retried_on_a_backoff() {
    // Heartbeats a minute apart: every write after the publication is a retry.
    let (host, writes) = failing_writes().await;
    let client = started(slow_client(&host)).await;
    client
        .publish(Listing::new("pay", "p:1").unwrap())
        .await
        .unwrap();
    // The publication, then six retries. Each retry waits at least half its
    // backoff (100 ms doubling: 50, 100, 200, 400, 800 ms) after the first, which
    // comes 100 ms after the publication failed: 1.65 s at the least. A slow
    // machine only makes it longer. Retried every 100 ms instead, they took 0.6 s.
    let arrivals = eventually("seven writes arrived", || async {
        let writes = writes.lock().unwrap().clone();
        (writes.len() >= 7).then_some(writes)
    })
    .await;
    let spread = arrivals[6] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(1_650),
        "seven writes within {spread:?}: retried without backing off"
    );
    client.close().await;
}

/// A coordinator that lists itself and records the writes it takes, in order:
/// `POST <version>` (the listing's `version` field) and `DELETE`. It takes the
/// first write of method `held` only once `release` is cancelled, even if its
/// caller stopped waiting meanwhile (a request already sent may land).
struct HoldsFirst {
    host: String,
    release: tokio_util::sync::CancellationToken,
    taken: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Writes of method `held` that arrived.
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HoldsFirst {
    async fn start(held: &'static str) -> HoldsFirst {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let release = tokio_util::sync::CancellationToken::new();
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let list = json!([{ "host": host }]);
        let (wait, record, count) = (release.clone(), taken.clone(), arrived.clone());
        // Takes `write` (made by `method`), held if it is the first held one.
        let take = move |method: &'static str, write: String| {
            let (wait, record) = (wait.clone(), record.clone());
            let first =
                method == held && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                // Taken in a task of its own: not undone by a caller that
                // hangs up.
                let take = tokio::spawn(async move {
                    if first {
                        wait.cancelled().await;
                    }
                    record.lock().unwrap().push(write);
                });
                let _ = take.await;
            }
        };
        let deleting = take.clone();
        let app = axum::Router::new()
            .route(
                "/v1/coordinator",
                axum::routing::get(move || async move { axum::Json(list) }),
            )
            .route(
                "/v1/listings",
                axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let taken = take("POST", format!("POST {}", body["version"]));
                    async move {
                        taken.await;
                        axum::http::StatusCode::OK
                    }
                }),
            )
            .route(
                "/v1/listings/{service}/{host}",
                axum::routing::delete(move || {
                    let taken = deleting("DELETE", "DELETE".to_owned());
                    async move {
                        taken.await;
                        axum::http::StatusCode::OK
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        HoldsFirst {
            host,
            release,
            taken,
            arrived,
        }
    }

    /// Waits until the held write arrived.
    async fn holds_one(&self) {
        eventually("the held write arrived", || async {
            (self.arrived.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
        })
        .await;
    }

    /// Gives `next` (a later write) a second to be taken (as it would be, were
    /// the held one's call aborted), then releases the held one and waits for
    /// `next` to end: the writes taken, in order.
    async fn release_after(
        &self,
        next: tokio::task::JoinHandle<Result<(), hakken::ClientError>>,
    ) -> Vec<String> {
        let before = self.taken.lock().unwrap().len();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = eventually("the coordinator took another write", || async {
                (self.taken.lock().unwrap().len() > before).then_some(())
            }) => {}
        }
        self.release.cancel();
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("the later write ends")
            .unwrap()
            .unwrap();
        self.taken.lock().unwrap().clone()
    }
}

/// A client of `fake` whose calls do not time out while the fake holds one.
async fn patient_client(fake: &HoldsFirst) -> Client {
    started(slow_client(&fake.host).request_timeout(Duration::from_secs(60))).await
}

fn publish_version(
    client: &Client,
    version: u32,
) -> tokio::task::JoinHandle<Result<(), hakken::ClientError>> {
    let client = client.clone();
    let listing = Listing::new("pay", "p:1").unwrap().with("version", version);
    tokio::spawn(async move { client.publish(listing).await })
}

/// Withdraws `pay` at `p:1`, in a task of its own.
fn unpublish_p1(client: &Client) -> tokio::task::JoinHandle<Result<(), hakken::ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.unpublish(&Listing::new("pay", "p:1").unwrap()).await })
}

#[tokio::test]
async fn a_publication_given_up_on_is_not_overtaken_by_the_next() {
    let fake = HoldsFirst::start("POST").await;
    let client = patient_client(&fake).await;
    // The first publication reaches the coordinator, which holds it; its caller
    // gives up on it. The second must wait for it to end.
    let first = publish_version(&client, 1);
    fake.holds_one().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let taken = fake.release_after(publish_version(&client, 2)).await;
    assert_eq!(taken, ["POST 1", "POST 2"], "taken in the order published");
    client.close().await;
}

#[tokio::test]
async fn a_withdrawal_given_up_on_does_not_undo_the_next_publication() {
    let fake = HoldsFirst::start("DELETE").await;
    let client = patient_client(&fake).await;
    publish_version(&client, 1).await.unwrap().unwrap();
    let unpublishing = unpublish_p1(&client);
    fake.holds_one().await;
    unpublishing.abort();
    assert!(unpublishing.await.unwrap_err().is_cancelled());
    // Published again: the withdrawal lands first, so the listing stays.
    let taken = fake.release_after(publish_version(&client, 2)).await;
    assert_eq!(taken, ["POST 1", "DELETE", "POST 2"]);
    client.close().await;
}

#[tokio::test]
async fn a_withdrawal_given_up_on_is_made_when_the_client_is_dropped_unclosed() {
    let fake = HoldsFirst::start("POST").await;
    let client = patient_client(&fake).await;
    // The publication is held; the withdrawal waits behind it. Both callers
    // give up, and the client is dropped without `close`.
    let publishing = publish_version(&client, 1);
    fake.holds_one().await;
    let unpublishing = unpublish_p1(&client);
    // On this single-threaded runtime, the withdrawal is under way after this.
    tokio::task::yield_now().await;
    publishing.abort();
    unpublishing.abort();
    drop(client);
    fake.release.cancel();
    eventually("the withdrawal is made", || async {
        (*fake.taken.lock().unwrap() == ["POST 1", "DELETE"]).then_some(())
    })
    .await;
}
