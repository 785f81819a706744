//! A coordinator with a data directory (`--data-dir`) keeps its listings across a
//! restart, even a SIGKILL: real processes, their files, and plain HTTP to
//! publish (no client that would publish again after the restart, so whatever a
//! restarted coordinator holds, it read back from its directory).
//!
//! Mostly heartbeats every hour: nothing expires during a test, and the registry
//! is written at start and when listings change, long before the hourly period.

mod common;

use common::node::NodeCoordinator;
use common::process::CoordinatorProcess;
use common::{eventually, holds, sees, strings};
use hakken::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const HOUR_MS: u64 = 3_600_000;

/// A directory of its own under the system's temporary directory, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "hakken-data-dir-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A directory, or (one test) a file.
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A coordinator process keeping its registry in `dir`.
async fn coordinator(dir: &Path) -> CoordinatorProcess {
    let hour = HOUR_MS.to_string();
    process(&[
        "--heartbeat-interval",
        &hour,
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .await
}

/// A coordinator process with these arguments.
async fn process(extra: &[&str]) -> CoordinatorProcess {
    let mut args = vec!["--announce-host", "127.0.0.1"];
    args.extend_from_slice(extra);
    CoordinatorProcess::loopback(&args).await
}

async fn publish(addr: &str, host: &str) {
    let body = format!(r#"{{"service":"svc","host":"{host}","v":1}}"#);
    common::post_created(addr, "/v1/listings", body).await;
}

/// A coordinator keeping its registry in a new directory, once the file there
/// holds `hosts` (published over plain HTTP).
async fn holding(hosts: &[&str]) -> (TempDir, CoordinatorProcess, String) {
    let dir = TempDir::new();
    let coordinator = coordinator(&dir.0).await;
    let addr = coordinator.address();
    for host in hosts {
        publish(&addr, host).await;
    }
    written(&dir.0, hosts).await;
    (dir, coordinator, addr)
}

/// The registry file in `dir`.
fn registry_file(dir: &Path) -> PathBuf {
    dir.join("registry.ndjson")
}

/// The registry file's lines, once its listings' hosts are `hosts`.
async fn written(dir: &Path, hosts: &[&str]) -> Vec<serde_json::Value> {
    let file = registry_file(dir);
    let want = strings(hosts);
    eventually(&format!("the registry file holds {want:?}"), || async {
        let text = std::fs::read_to_string(&file).ok()?;
        // Not yet a registry file (one test starts with a damaged one): wait.
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .ok()?;
        let mut found: Vec<String> = lines
            .iter()
            .filter_map(|l| Some(l["listing"]["host"].as_str()?.to_owned()))
            .collect();
        found.sort();
        (found == want).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn a_coordinator_killed_and_restarted_answers_with_what_it_held() {
    let (dir, mut coordinator, addr) = holding(&["a:1", "b:1"]).await;

    coordinator.kill9().await;
    coordinator.restart().await;
    // From the first answer, with the payloads as published.
    let (status, body) = common::get(&addr, "/v1/listings/svc").await;
    assert_eq!(status, 200, "{body}");
    let mut listings = body.as_array().unwrap().clone();
    listings.sort_by_key(|l| l["host"].as_str().unwrap().to_owned());
    assert_eq!(
        listings,
        [
            serde_json::json!({"service": "svc", "host": "a:1", "v": 1}),
            serde_json::json!({"service": "svc", "host": "b:1", "v": 1}),
        ]
    );
    // And it keeps writing: a listing added now survives the next restart too.
    publish(&addr, "c:1").await;
    written(&dir.0, &["a:1", "b:1", "c:1"]).await;
    coordinator.kill9().await;
    coordinator.restart().await;
    holds(&addr, "svc", &["a:1", "b:1", "c:1"]).await;
}

#[tokio::test]
async fn a_withdrawn_listing_does_not_come_back_with_a_restart() {
    let (dir, mut coordinator, addr) = holding(&["a:1", "b:1"]).await;
    assert_eq!(common::delete(&addr, "/v1/listings/svc/a:1").await, 204);
    // Written soon after the withdrawal, not at the next hourly period.
    written(&dir.0, &["b:1"]).await;
    coordinator.kill9().await;
    coordinator.restart().await;
    // An hour's TTL: a listing come back would stay, and this would time out.
    holds(&addr, "svc", &["b:1"]).await;
}

#[tokio::test]
async fn a_listing_read_back_lives_what_it_had_left_less_the_time_on_disk() {
    let (dir, mut coordinator, addr) = holding(&["a:1"]).await;
    coordinator.kill9().await;

    // As if the file had been written an hour ago: the listing (3 hours to live
    // when written) has 2 left; one with half an hour left then is gone.
    let file = registry_file(&dir.0);
    let mut lines = lines_of(&file);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let rewritten = Instant::now();
    lines[0]["writtenAt"] = (now_ms - HOUR_MS).into();
    lines[0]["count"] = 2.into();
    let left = lines[1]["ttl"].as_u64().unwrap();
    assert!(left > 2 * HOUR_MS, "3 hours to live, less a moment: {left}");
    let gone =
        serde_json::json!({"ttl": HOUR_MS / 2, "listing": {"service": "svc", "host": "gone:1"}});
    lines.insert(2, gone);
    *lines.last_mut().unwrap() = serde_json::json!({"end": 2});
    write_lines(&file, &lines);

    coordinator.restart().await;
    holds(&addr, "svc", &["a:1"]).await;
    // What it has left, as the coordinator's snapshot says: what it had, less an
    // hour (more than the 5/4 H a listing read back lives at least).
    let response = common::http()
        .get(format!("http://{addr}/v1/snapshot"))
        .send()
        .await
        .unwrap();
    let snapshot = response.text().await.unwrap();
    let line: serde_json::Value = serde_json::from_str(snapshot.lines().nth(1).unwrap()).unwrap();
    assert_eq!(line["listing"]["host"], "a:1");
    let now_left = line["ttl"].as_u64().unwrap();
    // Less whatever time went by since the file was rewritten (and a
    // millisecond of rounding).
    let since = rewritten.elapsed().as_millis() as u64 + 1;
    assert!(
        now_left <= left - HOUR_MS && now_left + since >= left - HOUR_MS,
        "{now_left} ms left, {left} when written an hour before, {since} ms since"
    );
}

#[tokio::test]
async fn a_member_restarted_in_a_cluster_copies_its_peer_and_not_its_file() {
    // Heartbeats every 200 ms, listings living 1,000 of them; a coordinator
    // without a peer to copy from is complete 3.2 s after it starts (a request
    // timeout of 3 s: the member's copy from its peer must not time out on a
    // busy machine, or it would read its file).
    let fast = [
        "--heartbeat-interval",
        "200",
        "--missed-heartbeats-allowed",
        "1000",
        "--request-timeout",
        "3000",
    ];
    let peer = process(&fast).await;
    let peer_addr = peer.address();
    let dir = TempDir::new();
    let mut args = fast.to_vec();
    args.extend([
        "--discovery-host",
        &peer_addr,
        "--data-dir",
        dir.0.to_str().unwrap(),
    ]);
    let mut member = process(&args).await;
    let addr = member.address();
    for at in [&addr, &peer_addr] {
        publish(at, "a:1").await;
        publish(at, "b:1").await;
    }
    written(&dir.0, &["a:1", "b:1"]).await;
    eventually("the peer is complete", || async {
        let (_, body) = common::get(&peer_addr, "/ready").await;
        (body["complete"] == true).then_some(())
    })
    .await;

    // Withdrawn while the member is down: its file still has it, its peer not.
    member.kill9().await;
    assert_eq!(
        common::delete(&peer_addr, "/v1/listings/svc/a:1").await,
        204
    );
    member.restart().await;
    holds(&addr, "svc", &["b:1"]).await;
    written(&dir.0, &["b:1"]).await;
    // It copied from its peer, not from its file.
    eventually("the member says where its listings came from", || async {
        let logs = member.logs().join("\n");
        let copied = logs.contains("ready: copied the cluster's listings");
        (copied && !logs.contains("registry file read back")).then_some(())
    })
    .await;
}

/// The registry file's lines, parsed.
fn lines_of(file: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Takes `host`'s listing line out of a registry file's `lines`, and out of
/// its head's count and its end marker.
fn without_listing(lines: &mut Vec<serde_json::Value>, host: &str) {
    lines.retain(|line| line["listing"]["host"] != host);
    let count = lines.len() - 2;
    lines[0]["count"] = count.into();
    *lines.last_mut().unwrap() = serde_json::json!({ "end": count });
}

fn write_lines(file: &Path, lines: &[serde_json::Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(file, text).unwrap();
}

/// A coordinator keeping its registry in `dir`, with heartbeats every 200 ms and
/// listings living 1,000 of them (200 s); after a restart with nobody to copy
/// from, partial for H plus a 10-minute request timeout: longer than a test.
async fn partial_after_restart(dir: &Path) -> CoordinatorProcess {
    process(&[
        "--heartbeat-interval",
        "200",
        "--missed-heartbeats-allowed",
        "1000",
        "--request-timeout",
        "600000",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .await
}

/// A coordinator keeping its registry in `dir`, killed with SIGKILL once its
/// file held `a:1` and `b:1` of `svc`, and a client whose watch of `svc` saw
/// both ([`partial_after_restart`]): only what the restarted coordinator says
/// can make the watch drop a listing it holds.
async fn watched_then_killed(dir: &Path) -> (CoordinatorProcess, Client, hakken::Watch) {
    let mut coordinator = partial_after_restart(dir).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    publish(&addr, "b:1").await;
    written(dir, &["a:1", "b:1"]).await;
    let client = Client::new(
        ClientConfig::new(addr.as_str())
            .heartbeat_interval(Duration::from_millis(200))
            .request_timeout(Duration::from_secs(5)),
    );
    client.start().await.unwrap();
    let watch = client.watch("svc").build();
    watch.start().await.unwrap();
    sees(&watch, &["a:1", "b:1"]).await;
    coordinator.kill9().await;
    (coordinator, client, watch)
}

/// Restarts `coordinator`, and checks that `watch` drops `b:1` while it is
/// still partial.
async fn restarted_and_dropped(
    coordinator: &mut CoordinatorProcess,
    client: Client,
    watch: &hakken::Watch,
) {
    coordinator.restart().await;
    sees(watch, &["a:1"]).await;
    let (_, ready) = common::get(&coordinator.address(), "/ready").await;
    assert_eq!(ready["phase"], "partial", "still partial: {ready}");
    client.close().await;
}

/// Found by the soak (#14): a publisher killed just before every coordinator
/// restarted was kept by our watches until a coordinator was complete again,
/// though each had read back a file saying its publisher had gone silent.
#[tokio::test]
async fn a_watch_drops_what_a_restarted_coordinator_read_back_as_gone() {
    let dir = TempDir::new();
    let (mut coordinator, client, watch) = watched_then_killed(&dir.0).await;
    // The file says b had 1 ms left: its publisher had missed many heartbeats.
    let file = registry_file(&dir.0);
    let mut lines = lines_of(&file);
    for line in &mut lines {
        if line["listing"]["host"] == "b:1" {
            line["ttl"] = 1.into();
        }
    }
    write_lines(&file, &lines);
    restarted_and_dropped(&mut coordinator, client, &watch).await;
}

/// Found by the soak (#14, run 14): a watch that held a listing its coordinator
/// had already let go of (the watch had it from another coordinator, restarted
/// too) kept it until a coordinator was complete again: the file named only
/// what its writer held.
#[tokio::test]
async fn a_watch_drops_what_a_restarted_coordinator_had_let_go_of() {
    let dir = TempDir::new();
    let (mut coordinator, client, watch) = watched_then_killed(&dir.0).await;
    // The file says b left just now: its listing line goes, the head names it.
    let file = registry_file(&dir.0);
    let mut lines = lines_of(&file);
    without_listing(&mut lines, "b:1");
    lines[0]["left"] =
        serde_json::json!([{"service": "svc", "host": "b:1", "msBefore": 0, "how": "withdrawn"}]);
    write_lines(&file, &lines);
    restarted_and_dropped(&mut coordinator, client, &watch).await;
}

/// Found by the soak (#14, run 19): a publisher closed just after every
/// coordinator restarted; its withdrawal reached the one a watch followed, which
/// had not heard of the listing (nor had its file), so its answers never listed
/// it, and the watch, holding it from before, kept it until a coordinator was
/// complete again.
#[tokio::test]
async fn a_watch_drops_what_is_withdrawn_at_a_partial_coordinator_that_never_listed_it() {
    let dir = TempDir::new();
    let (mut coordinator, client, watch) = watched_then_killed(&dir.0).await;
    // The file knows nothing of b.
    let file = registry_file(&dir.0);
    let mut lines = lines_of(&file);
    without_listing(&mut lines, "b:1");
    write_lines(&file, &lines);
    coordinator.restart().await;
    let addr = coordinator.address();
    // c, known only to the restarted coordinator: the watch follows it, and
    // keeps b from before.
    publish(&addr, "c:1").await;
    sees(&watch, &["a:1", "b:1", "c:1"]).await;
    assert!(!names_departed(&addr, "b:1").await);
    // A name no listing could have: nothing changes.
    let long = format!("/v1/listings/svc/{}", "x".repeat(300));
    assert_eq!(common::delete(&addr, &long).await, 404);
    assert!(!names_departed(&addr, &"x".repeat(300)).await);
    // Not held here: not found, but not forgotten.
    assert_eq!(common::delete(&addr, "/v1/listings/svc/b:1").await, 404);
    sees(&watch, &["a:1", "c:1"]).await;
    assert!(names_departed(&addr, "b:1").await);
    // Published again: no longer named.
    publish(&addr, "b:1").await;
    sees(&watch, &["a:1", "b:1", "c:1"]).await;
    assert!(!names_departed(&addr, "b:1").await);
    let (_, ready) = common::get(&addr, "/ready").await;
    assert_eq!(ready["phase"], "partial", "still partial: {ready}");
    client.close().await;
}

/// The hosts the file in `dir` names as having left `svc`, once `done` holds
/// for them and its head.
async fn left_named(
    dir: &Path,
    done: impl Fn(&[String], &serde_json::Value) -> bool,
) -> Vec<String> {
    let file = registry_file(dir);
    eventually("the registry file names what left", || async {
        let text = std::fs::read_to_string(&file).ok()?;
        let head: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
        let empty = Vec::new();
        let mut hosts: Vec<String> = head["left"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|l| l["service"] == "svc" && l["msBefore"].as_u64().is_some())
            .filter_map(|l| Some(l["host"].as_str()?.to_owned()))
            .collect();
        hosts.sort();
        done(&hosts, &head).then_some(hosts)
    })
    .await
}

/// Whether the coordinator's answer for `svc` names `host` in
/// `X-Hakken-Departed`. (Only whether: a listing published once, in a test with
/// heartbeats every 200 ms, may be named too, as silent, by the time a file
/// is written.)
async fn names_departed(addr: &str, host: &str) -> bool {
    let response = common::http()
        .get(format!("http://{addr}/v1/listings/svc"))
        .send()
        .await
        .unwrap();
    let Some(header) = response.headers().get("x-hakken-departed") else {
        return false;
    };
    header
        .to_str()
        .unwrap()
        .split(',')
        .any(|named| named == host)
}

#[tokio::test]
async fn the_file_names_what_left_and_is_not_back() {
    // Withdrawn: named; published again: not.
    let (dir, _coordinator, addr) = holding(&["a:1", "b:1"]).await;
    assert_eq!(common::delete(&addr, "/v1/listings/svc/b:1").await, 204);
    left_named(&dir.0, |hosts, _| hosts == ["b:1"]).await;
    publish(&addr, "b:1").await;
    written(&dir.0, &["a:1", "b:1"]).await;
    left_named(&dir.0, |hosts, _| hosts.is_empty()).await;

    // Expired (living 6 s, named for 18 s more): named.
    let dir = TempDir::new();
    let short = process(&[
        "--heartbeat-interval",
        "2000",
        "--data-dir",
        dir.0.to_str().unwrap(),
    ])
    .await;
    publish(&short.address(), "e:1").await;
    left_named(&dir.0, |hosts, _| hosts == ["e:1"]).await;
}

/// Found by the soak (#14, run 16): after every coordinator restarted at once,
/// ours learned the original's coordinators again only when these announced
/// themselves (once per resync period, through a balancer that may route the
/// announcement anywhere); a publisher started meanwhile missed them.
#[tokio::test]
async fn a_restarted_coordinator_knows_the_coordinators_it_knew() {
    // A peer that never announces itself (no discovery host).
    let peer = process(&[]).await;
    let peer_host = peer.address();
    let dir = TempDir::new();
    // H = 1 s: the file is read for its coordinators when at most 10 s old.
    let mut coordinator = process(&[
        "--heartbeat-interval",
        "1000",
        "--missed-heartbeats-allowed",
        "1000",
        "--data-dir",
        dir.0.to_str().unwrap(),
    ])
    .await;
    let addr = coordinator.address();
    let descriptor = format!(r#"{{"host":"{peer_host}"}}"#);
    let (status, body) = common::post(&addr, "/v1/coordinator", descriptor).await;
    assert!((200..300).contains(&status), "{status} {body}");
    left_named(&dir.0, |_, head| {
        head["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["host"] == peer_host.as_str()))
    })
    .await;
    coordinator.kill9().await;
    coordinator.restart().await;
    eventually("the restarted coordinator lists its peer", || async {
        let (status, list) = common::get(&addr, "/v1/coordinator").await;
        let known = list
            .as_array()?
            .iter()
            .any(|p| p["host"] == peer_host.as_str());
        (status == 200 && known).then_some(())
    })
    .await;
}

/// Found in review (#14): once the file's coordinators were learned, a copy
/// from one of the original's, restarted empty along with ours (it never says
/// it is partial), made ours complete at once after a restart of all.
#[tokio::test]
async fn a_copy_from_the_original_does_not_complete_a_coordinator_that_read_its_file() {
    let node = NodeCoordinator::start(None, HOUR_MS, 10 * HOUR_MS).await;
    let dir = TempDir::new();
    let hour = HOUR_MS.to_string();
    let discovery = node.address();
    let mut coordinator = process(&[
        "--heartbeat-interval",
        &hour,
        "--discovery-host",
        &discovery,
        "--data-dir",
        dir.0.to_str().unwrap(),
    ])
    .await;
    let addr = coordinator.address();
    // Nothing to read back at first: the original's copy is the cluster's.
    eventually("complete from the original's copy", || async {
        let (_, ready) = common::get(&addr, "/ready").await;
        (ready["phase"] == "complete").then_some(())
    })
    .await;
    publish(&addr, "a:1").await;
    written(&dir.0, &["a:1"]).await;
    coordinator.kill9().await;
    coordinator.restart().await;
    holds(&addr, "svc", &["a:1"]).await;
    let (_, ready) = common::get(&addr, "/ready").await;
    assert_eq!(ready["phase"], "partial", "{ready}");
}

#[tokio::test]
async fn a_coordinator_restarted_twice_still_names_what_it_had_let_go_of() {
    let dir = TempDir::new();
    let mut coordinator = partial_after_restart(&dir.0).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    publish(&addr, "b:1").await;
    assert_eq!(common::delete(&addr, "/v1/listings/svc/b:1").await, 204);
    left_named(&dir.0, |hosts, _| hosts == ["b:1"]).await;
    // Withdrawn while partial (nobody to copy from): named from memory.
    assert!(names_departed(&addr, "b:1").await);
    coordinator.kill9().await;
    coordinator.restart().await;
    assert!(names_departed(&addr, "b:1").await);
    // The file this run writes names it too, so a second restart does.
    left_named(&dir.0, |hosts, head| {
        hosts == ["b:1"] && head["readBackAt"].as_u64().is_some()
    })
    .await;
    coordinator.kill9().await;
    coordinator.restart().await;
    assert!(names_departed(&addr, "b:1").await);
    holds(&addr, "svc", &["a:1"]).await;
}

#[tokio::test]
async fn what_expires_while_the_coordinator_is_stopped_is_not_named_gone() {
    // Listings living 5 s; a stop of 6 s after one was written: it expires
    // when the coordinator resumes, more than H/2 past its deadline, while its
    // publisher's heartbeats could be waiting unread.
    let dir = TempDir::new();
    let coordinator = process(&[
        "--heartbeat-interval",
        "500",
        "--missed-heartbeats-allowed",
        "10",
        "--data-dir",
        dir.0.to_str().unwrap(),
    ])
    .await;
    let addr = coordinator.address();
    publish(&addr, "stalled:1").await;
    written(&dir.0, &["stalled:1"]).await;
    let pid = coordinator.pid().unwrap();
    common::process::signal(pid, "STOP").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    common::process::signal(pid, "CONT").await;
    holds(&addr, "svc", &[]).await;
    // A withdrawal after the expiry: the file that names it was written after
    // the expiry too.
    publish(&addr, "w:1").await;
    assert_eq!(common::delete(&addr, "/v1/listings/svc/w:1").await, 204);
    let hosts = left_named(&dir.0, |hosts, _| hosts.contains(&"w:1".to_owned())).await;
    assert_eq!(hosts, ["w:1"], "the stalled expiry is not named");
}

#[tokio::test]
async fn a_coordinator_stopped_before_it_settled_leaves_its_file_alone() {
    let (dir, mut coordinator, addr) = holding(&["a:1"]).await;
    coordinator.kill9().await;
    let file = registry_file(&dir.0);
    let before = std::fs::read(&file).unwrap();

    // A discovery host that takes connections and never answers: the join
    // waits for it, and the coordinator stays syncing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let hour = HOUR_MS.to_string();
    let args = [
        "--announce-host",
        "127.0.0.1",
        "--heartbeat-interval",
        &hour,
        "--data-dir",
        dir.0.to_str().unwrap(),
        "--discovery-host",
        &silent_addr,
        "--request-timeout",
        &hour,
        "--sync-timeout",
        &hour,
    ];
    coordinator.set_args(&args);
    coordinator.restart().await;
    eventually("it is syncing", || async {
        let (status, body) = common::get(&addr, "/ready").await;
        (status == 503 && body["phase"] == "syncing").then_some(())
    })
    .await;
    assert_eq!(coordinator.terminate().await, Some(0));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is untouched"
    );
    holding.abort();
}

#[tokio::test]
async fn a_damaged_file_is_skipped_and_replaced() {
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(registry_file(&dir.0), "not a registry\n").unwrap();
    let coordinator = coordinator(&dir.0).await;
    let addr = coordinator.address();
    publish(&addr, "a:1").await;
    written(&dir.0, &["a:1"]).await;
    // Logged before that write; its line may still be on its way to the test.
    eventually("the damaged file is logged", || async {
        let logs = coordinator.logs().join("\n");
        logs.contains("cannot read the registry file: starting without it")
            .then_some(())
    })
    .await;
}

/// Runs `hakken coordinator` with `args` until it exits (it should, at once).
async fn refused(args: &[&std::ffi::OsStr]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hakken"));
    command
        .args(["coordinator", "--listen", "127.0.0.1", "--port", "0"])
        .args(args)
        .kill_on_drop(true);
    for name in common::process::SETTINGS {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("refused at once, not served")
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_directory_in_use_or_not_a_directory_is_refused_at_start() {
    let dir = TempDir::new();
    let _first = coordinator(&dir.0).await;
    let flag = std::ffi::OsStr::new("--data-dir");
    let stderr = refused(&[flag, dir.0.as_os_str()]).await;
    assert!(stderr.contains("in use by another coordinator"), "{stderr}");

    let not_a_dir = TempDir::new();
    std::fs::write(&not_a_dir.0, "a file").unwrap();
    let stderr = refused(&[flag, not_a_dir.0.as_os_str()]).await;
    assert!(stderr.contains("not a directory"), "{stderr}");
}
