//! The client commands through the built binary, against real coordinators:
//! `publish`, `watch`, `services`, `listings`, `coordinators` — output and exit codes.

mod common;

use common::Address;

use common::process::terminate;
use common::{config, delete, eventually, get, post, start};
use futures_util::FutureExt;
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hakken");

/// The binary pointed at `coordinator`, with nothing inherited that would change it.
fn hakken(coordinator: &str) -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "HAKKEN_COORDINATOR",
        "HAKKEN_TOKEN",
        "HAKKEN_TIMEOUT",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
        .env("HAKKEN_COORDINATOR", coordinator)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(coordinator: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = hakken(coordinator).args(args).output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn publish_keeps_a_listing_alive_and_withdraws_it_on_sigterm() {
    // Heartbeats every 100 ms; listings that cannot expire during the test.
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 1_000_000;
    let c = start(cfg).await;
    let addr = c.address();
    let mut publisher = hakken(&addr)
        .args([
            "publish",
            "billing",
            "10.0.0.1:80",
            "port=8080",
            "tls=true",
            "name=blue",
        ])
        .args([r#"meta:={"zone":"a","tags":[1,2]}"#])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let expected = json!([{
        "service": "billing", "host": "10.0.0.1:80", "port": 8080, "tls": true,
        "name": "blue", "meta": {"zone": "a", "tags": [1, 2]}
    }]);
    eventually("the listing is published", || async {
        (get(&addr, "/v1/listings/billing").await.1 == expected).then_some(())
    })
    .await;
    // The command heartbeats at the coordinator's interval (100 ms): five of
    // them arrive (one heartbeat every 20 s, the default, would not in time).
    eventually("the command heartbeats", || async {
        (common::metric(&addr, "hakken_heartbeats_received_total").await >= 6.0).then_some(())
    })
    .await;
    assert_eq!(get(&addr, "/v1/listings/billing").await.1, expected);
    assert_eq!(terminate(&mut publisher).await, Some(0));
    // Withdrawn (a DELETE), not left to expire.
    assert_eq!(
        common::metric(&addr, "hakken_listings_deleted_total").await,
        1.0
    );
    assert_eq!(get(&addr, "/v1/listings/billing").await.0, 404);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn publish_withdraws_on_sighup_too() {
    // Its terminal went away: as on SIGTERM, the listing is withdrawn.
    let c = start(config(60_000)).await;
    let addr = c.address();
    let mut publisher = hakken(&addr)
        .args(["publish", "billing", "10.0.0.1:80"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    billing_listed(&addr).await;
    common::process::signal(publisher.id().expect("running"), "HUP").await;
    let status = tokio::time::timeout(common::PATIENCE, publisher.wait())
        .await
        .expect("exits after SIGHUP")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(get(&addr, "/v1/listings/billing").await.0, 404);
    c.shutdown().await.unwrap();
}

/// Whether process `pid` ignores SIGHUP, and whether it catches it (Linux:
/// `SigIgn` and `SigCgt` in its status; bit 0 is SIGHUP).
#[cfg(target_os = "linux")]
fn hangup_disposition(pid: u32) -> (bool, bool) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = |name: &str| {
        let hex = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .expect("a signal mask line");
        u64::from_str_radix(hex.trim(), 16).unwrap() & 1 == 1
    };
    (mask("SigIgn:"), mask("SigCgt:"))
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn publish_under_nohup_leaves_sighup_ignored() {
    // SIGHUP ignored by whoever started it (`nohup`, `trap '' HUP`): it stays
    // ignored once the publisher runs (its handlers are installed before it
    // publishes), and SIGTERM still withdraws.
    let c = start(config(60_000)).await;
    let addr = c.address();
    let mut nohup = hakken(&addr);
    nohup.args(["publish", "billing", "10.0.0.1:80"]);
    let mut sighup = hakken(&addr);
    sighup.args(["publish", "billing", "10.0.0.1:80"]);
    for (mut command, ignore) in [(nohup, true), (sighup, false)] {
        // SAFETY: signal() is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(move || {
                let disposition = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
                libc::signal(libc::SIGHUP, disposition);
                Ok(())
            });
        }
        let mut publisher = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        billing_listed(&addr).await;
        let (ignored, caught) = hangup_disposition(publisher.id().expect("running"));
        assert_eq!((ignored, caught), (ignore, !ignore));
        assert_eq!(terminate(&mut publisher).await, Some(0));
        assert_eq!(get(&addr, "/v1/listings/billing").await.0, 404);
    }
    c.shutdown().await.unwrap();
}

/// Waits until `addr` lists a listing of `billing`.
async fn billing_listed(addr: &str) {
    eventually("the listing is published", || async {
        (get(addr, "/v1/listings/billing").await.0 == 200).then_some(())
    })
    .await;
}

/// The next line `hakken watch` prints, as JSON.
async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(common::PATIENCE, lines.next_line())
        .await
        .expect("a line within the patience")
        .unwrap()
        .expect("watch keeps running");
    serde_json::from_str(&line).expect("each line is JSON")
}

#[tokio::test]
async fn watch_prints_a_line_per_change() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"db","host":"a:1","role":"primary"}"#,
    )
    .await;
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"db","host":"b:1","role":"replica"}"#,
    )
    .await;
    let mut watcher = hakken(&addr)
        .args(["watch", "db", "--filter", "role=replica"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(
        next(&mut lines).await,
        json!([{"service": "db", "host": "b:1", "role": "replica"}])
    );
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"db","host":"c:1","role":"replica"}"#,
    )
    .await;
    let second = next(&mut lines).await;
    assert_eq!(second.as_array().unwrap().len(), 2, "{second}");
    // A change the filter hides prints nothing; the next visible one does.
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"db","host":"d:1","role":"primary"}"#,
    )
    .await;
    delete(&addr, "/v1/listings/db/b:1").await;
    assert_eq!(
        next(&mut lines).await,
        json!([{"service": "db", "host": "c:1", "role": "replica"}])
    );
    assert_eq!(terminate(&mut watcher).await, Some(0));
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_shot_reads_as_tables_and_json() {
    let a = start(config(60_000)).await;
    let addr = a.address();
    post(&addr, "/v1/coordinator", r#"{"host":"other.example:8082"}"#).await;
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"web","host":"w1:80","zone":"a"}"#,
    )
    .await;
    post(&addr, "/v1/listings", r#"{"service":"web","host":"w2:80"}"#).await;
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"cache","host":"c1:6379"}"#,
    )
    .await;

    let (code, out, _) = output(&addr, &["services"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "SERVICE  LISTINGS\ncache    1\nweb      2\n");
    let (_, out, _) = output(&addr, &["services", "--json"]).await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        json!([{"service": "cache", "listings": 1}, {"service": "web", "listings": 2}])
    );

    let (code, out, err) = output(&addr, &["listings", "web"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "HOST   FIELDS\nw1:80  {\"zone\":\"a\"}\nw2:80\n");
    // Started alone less than a heartbeat interval ago: the table may be missing
    // listings, and stderr says so.
    assert!(err.contains("is still warming up"), "{err}");
    let (_, out, _) = output(&addr, &["listings", "web", "--json"]).await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json[0],
        json!({"service": "web", "host": "w1:80", "zone": "a"})
    );
    let (code, out, err) = output(&addr, &["listings", "nothing"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "HOST  FIELDS\n"));
    assert!(err.contains("`nothing` has no live listings"), "{err}");

    let (code, out, _) = output(&addr, &["coordinators"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("HOST\n{}\nother.example:8082\n", a.host()));
    let (_, out, _) = output(&addr, &["coordinators", "--json"]).await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        json!([{"host": a.host()}, {"host": "other.example:8082"}])
    );

    // The flag beats the environment.
    let (code, out, _) = output("127.0.0.1:1", &["services", "--coordinator", &addr]).await;
    assert_eq!(code, Some(0), "{out}");
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_complete_coordinator_is_read_without_a_warning() {
    // Complete soon after its first heartbeat interval (100 ms); listings that
    // cannot expire.
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 1_000_000;
    let c = start(cfg).await;
    let addr = c.address();
    eventually("the coordinator complete", || async {
        let answer = common::http()
            .get(format!("http://{addr}/v1/listings"))
            .send()
            .await
            .ok()?;
        (answer.headers().get("x-hakken-complete")? == "true").then_some(())
    })
    .await;
    let (code, out, err) = output(&addr, &["services"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "SERVICE  LISTINGS\n"));
    assert_eq!(
        err,
        format!("hakken: no service has live listings on {addr}\n")
    );
    post(&addr, "/v1/listings", r#"{"service":"web","host":"w1:80"}"#).await;
    for args in [
        &["services"][..],
        &["listings", "web"],
        &["listings", "web", "--json"],
    ] {
        let (code, out, err) = output(&addr, args).await;
        assert_eq!(code, Some(0), "{args:?}");
        assert!(
            out.contains("w1:80") || out.contains("web"),
            "{args:?}: {out}"
        );
        assert_eq!(err, "", "{args:?}");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_coordinator_answering_is_a_one_line_error() {
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = refused.local_addr().unwrap().to_string();
    drop(refused);
    for args in [
        vec!["services"],
        vec!["listings", "x"],
        vec!["coordinators"],
        vec!["watch", "x"],
        vec!["publish", "x", "h:1"],
    ] {
        let (code, out, err) = output(&dead, &args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&dead), "{args:?} names the coordinator: {err}");
    }
    // Bad arguments are usage errors (more in cli_errors.rs).
    let (code, _, err) = output(&dead, &["publish", "x", "h:1", "novalue"]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = output(&dead, &["publish", "x", "h:1", "service=y"]).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test]
async fn publish_keeps_values_as_typed_and_takes_json_after_colon_equals() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let mut publisher = hakken(&addr)
        .args(["publish", "billing", "10.0.0.1:80"])
        .args([
            "version=7.10",
            "zip=007",
            "big=1e3",
            "quoted=\"x\"",
            "spaced={\"a\": 1}",
        ])
        .args(["port=8080", "tls=true", "meta={\"a\":[1]}"])
        .args([
            "exact:=7.10",
            "tags:=[\"a\",\"b\"]",
            "s:=\"x\"",
            "obj:={\"a\": 1}",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let expected = json!([{
        "service": "billing", "host": "10.0.0.1:80",
        // Plain values that JSON would write differently stay as typed.
        "version": "7.10", "zip": "007", "big": "1e3", "quoted": "\"x\"",
        "spaced": "{\"a\": 1}",
        // Plain scalars JSON writes back exactly are JSON; objects and arrays
        // take `:=`.
        "port": 8080, "tls": true, "meta": "{\"a\":[1]}",
        // `:=` is explicit JSON.
        "exact": 7.1, "tags": ["a", "b"], "s": "x", "obj": {"a": 1},
    }]);
    billing_listed(&addr).await;
    assert_eq!(get(&addr, "/v1/listings/billing").await.1, expected);
    // A filter reads values the same way: `version=7.10` is the string.
    let mut watcher = hakken(&addr)
        .args([
            "watch",
            "billing",
            "--filter",
            "version=7.10",
            "--filter",
            "exact:=7.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut lines).await, expected);
    assert_eq!(terminate(&mut watcher).await, Some(0));
    assert_eq!(terminate(&mut publisher).await, Some(0));
    c.shutdown().await.unwrap();
}

/// Runs `hakken publish SERVICE HOST` against `addr` until the listing is at
/// every one of `at`, then stops it with SIGTERM: its exit code and stderr.
async fn publish_then_stop(
    addr: &str,
    at: &[String],
    before_stop: impl std::future::Future<Output = ()>,
) -> (Option<i32>, String) {
    let mut publisher = hakken(addr)
        .args(["publish", "billing", "10.0.0.1:80"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for coordinator in at {
        eventually(&format!("the listing is at {coordinator}"), || async {
            (get(coordinator, "/v1/listings/billing").await.0 == 200).then_some(())
        })
        .await;
    }
    before_stop.await;
    let code = terminate(&mut publisher).await;
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    publisher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (code, stderr)
}

#[tokio::test]
async fn publish_says_which_coordinators_it_could_not_withdraw_from() {
    // Two coordinators; the publisher learns both from the first.
    let a = start(config(60_000)).await;
    let b = start(config(60_000)).await;
    let (a_addr, b_addr) = (a.address(), b.address());
    post(
        &a_addr,
        "/v1/coordinator",
        json!({"host": b_addr}).to_string(),
    )
    .await;
    let both = [a_addr.clone(), b_addr.clone()];

    // Both reached: withdrawn from both, exit 0.
    let (code, stderr) = publish_then_stop(&a_addr, &both, async {}).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.lines().any(|l| l == "withdrawn billing@10.0.0.1:80"),
        "{stderr}"
    );
    for addr in &both {
        assert_eq!(get(addr, "/v1/listings/billing").await.0, 404);
    }

    // One gone by then: named, and exit 1.
    let (code, stderr) = publish_then_stop(&a_addr, &both, b.shutdown().map(Result::unwrap)).await;
    assert_eq!(code, Some(1), "{stderr}");
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("hakken:"))
        .collect();
    assert_eq!(failures.len(), 1, "{stderr}");
    assert!(failures[0].contains("not withdrawn"), "{stderr}");
    assert!(failures[0].contains(&b_addr), "names {b_addr}: {stderr}");
    assert!(!failures[0].contains(&a_addr), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("withdrawn")),
        "{stderr}"
    );
    // Withdrawn where it could be.
    assert_eq!(get(&a_addr, "/v1/listings/billing").await.0, 404);

    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_warns_once_of_an_outage() {
    let c = start(config(200)).await;
    let addr = c.address();
    post(&addr, "/v1/listings", r#"{"service":"db","host":"a:1"}"#).await;
    let mut watcher = hakken(&addr)
        .args(["watch", "db", "--heartbeat-interval", "200"])
        .env("RUST_LOG", "warn,hakken::client=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    next(&mut lines).await;
    c.shutdown().await.unwrap();
    // Its followers fail again and again (at debug); each warns once.
    let mut log = BufReader::new(watcher.stderr.take().unwrap()).lines();
    let (mut failures, mut warnings) = (0, Vec::new());
    let read = async {
        while failures < 12 {
            let line = log.next_line().await.unwrap().expect("the watch runs");
            if line.contains("coordinator failed") || line.contains("no coordinator answers") {
                failures += 1;
                if line.contains("WARN") {
                    warnings.push(line);
                }
            }
        }
    };
    tokio::time::timeout(common::PATIENCE, read)
        .await
        .expect("the watch kept trying");
    // One at most for each way the watch says it (the coordinator failed; none
    // answers): the client's follower of the coordinator list says it at debug.
    assert!(!warnings.is_empty() && warnings.len() <= 2, "{warnings:#?}");
    assert_eq!(terminate(&mut watcher).await, Some(0));
}

#[tokio::test]
async fn a_watch_says_which_coordinator_it_follows_and_when_it_answers_again() {
    let c = start(config(200)).await;
    let addr = c.address();
    post(&addr, "/v1/listings", r#"{"service":"db","host":"a:1"}"#).await;
    let mut watcher = hakken(&addr)
        .args(["watch", "db", "--heartbeat-interval", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(
        next(&mut lines).await,
        json!([{"service": "db", "host": "a:1"}])
    );
    let mut log = BufReader::new(watcher.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let following = line_with(&mut log, "following coordinator", &mut seen).await;
    assert!(following.contains(&addr), "{following}");
    c.shutdown().await.unwrap();
    // The watch's own warning: only then is the coordinator back, so that the
    // watch saw it gone.
    let watch = r#"keeping what we have until one answers what="watch db""#;
    let outage = line_with(&mut log, watch, &mut seen).await;
    assert!(outage.contains("WARN"), "{outage}");
    // Back on the same address (once free: the watch's own attempts to connect
    // may hold it for a moment): the watch says so.
    let back = eventually("the address is free again", || async {
        hakken::coordinator::Coordinator::bind(&addr, config(200))
            .await
            .ok()
    })
    .await;
    let again = line_with(&mut log, r#"answered again what="watch db""#, &mut seen).await;
    assert!(again.contains(&addr), "{again}");
    // Until it answered again, each said once, by the watch: not again for the
    // same coordinator, and nothing by the client's own follower of the
    // coordinator list (after, a strike recorded late may cut the watch again).
    let until = seen.len();
    assert_eq!(terminate(&mut watcher).await, Some(0));
    while let Ok(Some(line)) = log.next_line().await {
        seen.push(line);
    }
    let count = |what: &str| seen[..until].iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("following coordinator"), 1, "{seen:#?}");
    assert_eq!(count("keeping what we have"), 1, "{seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("coordinator list")),
        "{seen:#?}"
    );
    back.shutdown().await.unwrap();
}

/// The next line of `log` that holds `want`, within the patience; every line
/// read goes to `seen`.
async fn line_with(
    log: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    want: &str,
    seen: &mut Vec<String>,
) -> String {
    let read = async {
        loop {
            let line = log.next_line().await.unwrap().expect("the command runs");
            seen.push(line.clone());
            if line.contains(want) {
                return line;
            }
        }
    };
    tokio::time::timeout(common::PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("stderr never said {want:?}: {seen:#?}"))
}
