//! `hakken coordinator` through the built binary: settings from the environment
//! and flags, one-line errors with exit code 2, help, JSON logs, clean SIGTERM.

mod common;

use common::{eventually, get};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use common::process::BIN;

/// The binary with none of the coordinator's variables inherited from the test's
/// own environment.
fn hakken() -> Command {
    let mut command = Command::new(BIN);
    for var in common::process::SETTINGS {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

#[tokio::test]
async fn bad_settings_are_one_line_errors_with_exit_code_2() {
    let cases: [(&str, &str, &str); 5] = [
        ("PORT", "abc", "PORT"),
        (
            "DISCOVERY_HEARTBEAT_INTERVAL",
            "-5",
            "DISCOVERY_HEARTBEAT_INTERVAL",
        ),
        (
            "DISCOVERY_HEARTBEAT_INTERVAL",
            "0",
            "DISCOVERY_HEARTBEAT_INTERVAL",
        ),
        (
            "MISSED_HEARTBEATS_ALLOWED",
            "0",
            "MISSED_HEARTBEATS_ALLOWED",
        ),
        ("LOG_HEARTBEATS", "maybe", "LOG_HEARTBEATS"),
    ];
    for (var, value, named) in cases {
        let out = hakken()
            .arg("coordinator")
            .env(var, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{var}={value}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains(value),
            "{var}={value}: {stderr}"
        );
    }
    // The same through a flag.
    let out = hakken()
        .args(["coordinator", "--port", "99999"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}

#[tokio::test]
async fn help_shows_every_setting_with_its_default() {
    let out = hakken()
        .args(["coordinator", "--help"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "PORT",
        "[default: 8082]",
        "ANNOUNCE_HOST",
        "[default: localhost]",
        "DISCOVERY_HOST",
        "DISCOVERY_HEARTBEAT_INTERVAL",
        "[default: 60000]",
        "MISSED_HEARTBEATS_ALLOWED",
        "[default: 3]",
        "RESYNC_POLL_INTERVAL",
        "H × 10",
        "LOG_HEARTBEATS",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(expected), "help lacks {expected}:\n{help}");
    }
}

/// Starts the binary with JSON logs and returns it with the port it listens on.
async fn run_coordinator(envs: &[(&str, &str)], args: &[&str]) -> (tokio::process::Child, u16) {
    let mut command = hakken();
    command
        .arg("coordinator")
        .args(args)
        .env("LOG_FORMAT", "json")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line within 30 s")
            .unwrap()
            .expect("the coordinator logs its start");
        let event: Value = serde_json::from_str(&line).expect("JSON log lines");
        if event["fields"]["message"] == "coordinator started" {
            let address = event["fields"]["address"].as_str().unwrap().to_owned();
            break address.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    // Keep draining the logs so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

#[tokio::test]
async fn environment_settings_apply_and_flags_win_and_sigterm_stops_it_cleanly() {
    let (mut child, port) = run_coordinator(
        &[
            ("PORT", "0"),
            ("LISTEN_ADDRESS", "127.0.0.1"),
            ("ANNOUNCE_HOST", "from-env"),
            ("DISCOVERY_HEARTBEAT_INTERVAL", "1000"),
            ("MISSED_HEARTBEATS_ALLOWED", "7"),
        ],
        &["--announce-host", "from-flag"],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(get(&addr, "/status").await, (200, json!("OK")));
    let (_, list) = get(&addr, "/v1/coordinator").await;
    assert_eq!(list, json!([{"host": format!("from-flag:{port}")}]));
    let (_, config) = get(&addr, "/v1/config").await;
    assert_eq!(config["heartbeatInterval"], 1000);
    assert_eq!(config["missedHeartbeatsAllowed"], 7);
    assert_eq!(config["resyncInterval"], 10_000);

    assert_eq!(common::process::terminate(&mut child).await, Some(0));
}

#[tokio::test]
async fn ctrl_c_stops_it_cleanly_too() {
    let (mut child, port) =
        run_coordinator(&[("LISTEN_ADDRESS", "127.0.0.1")], &["--port", "0"]).await;
    let addr = format!("127.0.0.1:{port}");
    eventually("it serves", || async {
        (get(&addr, "/status").await.0 == 200).then_some(())
    })
    .await;
    // With no settings it announces localhost and runs alone.
    assert_eq!(
        get(&addr, "/v1/coordinator").await.1,
        json!([{"host": format!("localhost:{port}")}])
    );
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
