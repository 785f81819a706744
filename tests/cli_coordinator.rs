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
    // What --protect-reads leaves open (see `authorize` in admission.rs), read
    // with the help's line breaks undone.
    let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("--protect-reads") && words.contains("/status and /ready (kept open"),
        "help does not say what --protect-reads leaves open:\n{help}"
    );
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
            // Empty is none, as the original reads it (a bare `foo` is refused).
            ("DISCOVERY_HOST", ""),
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
async fn sighup_does_not_stop_it() {
    // Without TLS there is nothing to reload: SIGHUP (whose default ends a
    // process) is logged and ignored; SIGTERM still stops it cleanly.
    let (mut child, port) =
        run_coordinator(&[("PORT", "0"), ("LISTEN_ADDRESS", "127.0.0.1")], &[]).await;
    let addr = format!("127.0.0.1:{port}");
    common::process::signal(child.id().expect("running"), "HUP").await;
    assert_eq!(get(&addr, "/status").await, (200, json!("OK")));
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

#[tokio::test]
async fn text_logs_carry_no_colour_codes_off_a_terminal() {
    // Stderr is a pipe here: no escape codes, whatever NO_COLOR says.
    for no_color in [None, Some(""), Some("1")] {
        let mut command = hakken();
        command
            .args(["coordinator", "--listen", "127.0.0.1", "--port", "0"])
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a log line within 30 s")
                .unwrap()
                .expect("the coordinator logs its start");
            let started = line.contains("coordinator started");
            seen.push(line);
            if started {
                break;
            }
        }
        assert!(
            seen.iter().all(|line| !line.contains('\x1b')),
            "escape codes in {seen:?}"
        );
        assert!(seen.iter().any(|line| line.contains("INFO")), "{seen:?}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        assert_eq!(common::process::terminate(&mut child).await, Some(0));
    }
}

#[tokio::test]
async fn help_shows_environment_values_only_when_set() {
    let help = |envs: &'static [(&'static str, &'static str)], args: &'static [&'static str]| async move {
        let out = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(envs.iter().copied())
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let unset = help(&[], &["coordinator", "--help"]).await;
    assert!(unset.contains("[env: PORT]"), "{unset}");
    assert!(unset.contains("[env: DISCOVERY_HOST]"), "{unset}");
    assert!(!unset.contains("=]"), "an empty NAME= in:\n{unset}");
    let set = help(&[("PORT", "9000")], &["coordinator", "--help"]).await;
    assert!(set.contains("[env: PORT=9000]"), "{set}");
    assert!(set.contains("[env: DISCOVERY_HOST]"), "{set}");
    // A token is never shown.
    let token = help(&[("HAKKEN_TOKEN", "s3cret")], &["coordinator", "--help"]).await;
    assert!(!token.contains("s3cret"), "{token}");
    for command in ["publish", "watch", "services", "listings", "coordinators"] {
        let args: &'static [&'static str] = match command {
            "publish" => &["publish", "--help"],
            "watch" => &["watch", "--help"],
            "services" => &["services", "--help"],
            "listings" => &["listings", "--help"],
            _ => &["coordinators", "--help"],
        };
        let text = help(&[], args).await;
        assert!(text.contains("[env: HAKKEN_COORDINATOR]"), "{text}");
        assert!(!text.contains("=]"), "an empty NAME= in:\n{text}");
    }
}

#[tokio::test]
async fn a_port_in_use_is_said_once() {
    let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let out = hakken()
        .args(["coordinator", "--listen", "127.0.0.1", "--port", &port])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    drop(held);
}

/// The first lines `hakken coordinator` logs on a terminal (a pseudo-terminal
/// from `script`), up to `coordinator started`.
async fn logs_on_a_terminal(no_color: Option<&str>) -> String {
    let inner = format!("'{BIN}' coordinator --listen 127.0.0.1 --port 0");
    let mut command = Command::new("script");
    for var in common::process::SETTINGS {
        command.env_remove(var);
    }
    command
        .args(["-qec", &inner, "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let mut child = command.spawn().expect("script(1) runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("coordinator started") {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line within 30 s")
            .unwrap()
            .unwrap_or_else(|| panic!("the coordinator logs its start: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn on_a_terminal_logs_are_coloured_unless_no_color_is_set() {
    let coloured = logs_on_a_terminal(None).await;
    assert!(coloured.contains('\x1b'), "{coloured:?}");
    let empty = logs_on_a_terminal(Some("")).await;
    assert!(
        empty.contains('\x1b'),
        "an empty NO_COLOR counts as unset: {empty:?}"
    );
    let plain = logs_on_a_terminal(Some("1")).await;
    assert!(!plain.contains('\x1b'), "{plain:?}");
}
