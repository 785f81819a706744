//! The commands' errors through the built binary: bad arguments (the
//! coordinator's settings too) are clap's whole message or one line, exit code
//! 2, and contact nobody; a coordinator that
//! refuses, a host that does not resolve, or a server that is not a coordinator is
//! one line naming the cause, exit code 1.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use common::process::BIN;
use common::{config, get, start, Address};
use serde_json::json;
use std::process::Stdio;
use tokio::process::Command;

/// The binary pointed at `coordinator`, with nothing inherited that would change it.
fn hakken(coordinator: &str) -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "HAKKEN_COORDINATOR",
        "HAKKEN_TOKEN",
        "HAKKEN_TIMEOUT",
        "RUST_LOG",
        "NO_COLOR",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    command
        .env("HAKKEN_COORDINATOR", coordinator)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the command to its end: its exit code, stdout and stderr. Every case here
/// ends by itself, at once; one that keeps running (a publish that was refused
/// but carries on) fails after the patience, killed.
async fn output(coordinator: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let run = hakken(coordinator).args(args).output();
    let out = tokio::time::timeout(common::PATIENCE, run)
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit"))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An address nothing listens on: commands that fail before contacting anyone
/// are pointed at it.
async fn nobody() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[tokio::test]
async fn missing_arguments_get_clap_s_whole_message() {
    let dead = nobody().await;
    for (args, missing, usage) in [
        (
            vec!["publish", "billing"],
            "<HOST>",
            "Usage: hakken publish",
        ),
        (vec!["watch"], "<SERVICE>", "Usage: hakken watch"),
        (vec!["listings"], "<SERVICE>", "Usage: hakken listings"),
    ] {
        let (code, out, err) = output(&dead, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(
            err.contains("required arguments were not provided"),
            "{args:?}: {err}"
        );
        assert!(err.contains(missing), "{args:?} names {missing}: {err}");
        assert!(err.contains(usage), "{args:?} shows the usage: {err}");
        assert!(err.contains("--help"), "{args:?} gives the tip: {err}");
        assert!(!err.contains('\x1b'), "no colour off a terminal: {err:?}");
    }
}

#[tokio::test]
async fn a_bad_choice_lists_the_accepted_values() {
    // On the one line a bad value gets.
    let out = Command::new(BIN)
        .args(["coordinator", "--log-format", "xml"])
        .env_remove("LOG_FORMAT")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for expected in [
        "'xml'",
        "--log-format",
        "LOG_FORMAT",
        "[possible values: text, json]",
    ] {
        assert!(err.contains(expected), "lacks {expected}: {err}");
    }
}

/// What `hakken ARGS` writes on a terminal (a pseudo-terminal from `script`,
/// stdout and stderr together), with `NO_COLOR` as given.
async fn on_a_terminal(args: &str, no_color: Option<&str>) -> String {
    let mut command = Command::new("script");
    command
        .args(["-qec", &format!("'{BIN}' {args}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let run = command.output();
    let out = tokio::time::timeout(common::PATIENCE, run)
        .await
        .unwrap_or_else(|_| panic!("{args} did not exit"))
        .expect("script(1) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn argument_errors_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let coloured = on_a_terminal("publish billing", None).await;
    assert!(coloured.contains("<HOST>"), "{coloured:?}");
    assert!(coloured.contains('\x1b'), "{coloured:?}");
    let plain = on_a_terminal("publish billing", Some("1")).await;
    assert!(plain.contains("<HOST>"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[tokio::test]
async fn an_unknown_flag_gets_clap_s_suggestion() {
    let dead = nobody().await;
    let (code, _, err) = output(&dead, &["services", "--jsn"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'--jsn'"), "{err}");
    assert!(err.contains("similar argument exists: '--json'"), "{err}");
    assert!(err.contains("Usage:"), "{err}");
}

#[tokio::test]
async fn invalid_listing_arguments_exit_2_and_publish_nothing() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    for (args, named) in [
        (vec!["publish", "x", "h:1", "service=other"], "service"),
        (vec!["publish", "x", "h:1", "host=other:1"], "host"),
        (vec!["publish", "..", "h:1"], ".."),
        (vec!["publish", ".", "h:1"], "."),
        (vec!["publish", "", "h:1"], "empty"),
        (vec!["publish", "x", ""], "empty"),
        (vec!["publish", "x", "h:1", "novalue"], "novalue"),
        (vec!["publish", "x", "h:1", "tags:=[1,"], "`tags`"),
        (vec!["publish", "x", "h:1", "a=1", "a=2"], "`a`"),
        (vec!["listings", ".."], ".."),
        (vec!["listings", ""], "empty"),
        (vec!["watch", ".."], ".."),
    ] {
        let (code, out, err) = output(&addr, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?} says {named}: {err}");
    }
    // Too many fields for a listing: refused before anything is sent.
    let mut args = vec!["publish".to_owned(), "x".into(), "h:1".into()];
    args.extend((0..100).map(|i| format!("f{i}={i}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = output(&addr, &args).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("too many fields"), "{err}");

    // Nothing reached the coordinator.
    assert_eq!(get(&addr, "/v1/listings").await, (200, json!([])));
    assert_eq!(
        common::metric(&addr, "hakken_listings_deleted_total").await,
        0.0
    );
    c.shutdown().await.unwrap();
}

/// A web server that answers every request with `answer`.
async fn web_server(answer: fn() -> Response) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(move || async move { answer() });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// The kind of page a web server answers for a path it does not have.
const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n\
    <body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>\n\
    <hr><address>Apache/2.4.62 (Debian) Server at example.org Port 80</address>\n\
    <!-- a page longer than a kilobyte: the whole of it must not land in the message.\n\
    Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\n\
    incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud\n\
    exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute\n\
    irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla\n\
    pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia\n\
    deserunt mollit anim id est laborum. Lorem ipsum dolor sit amet, consectetur\n\
    adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.\n\
    Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip\n\
    ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit\n\
    esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non\n\
    proident, sunt in culpa qui officia deserunt mollit anim id est laborum. -->\n\
    </body></html>\n";

#[tokio::test]
async fn a_server_that_is_not_a_coordinator_is_a_one_line_error() {
    let html = || (StatusCode::NOT_FOUND, Html(PAGE)).into_response();
    // The same page without a content type.
    let untyped = || {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from(PAGE))
            .unwrap()
    };
    // A single-page app: the same page, 200, for every path.
    let app = || Html(PAGE).into_response();
    assert!(PAGE.len() > 1024);
    for (answer, says) in [
        (html as fn() -> Response, "(HTTP 404, text/html)"),
        (untyped, "(HTTP 404)"),
        (app, "(HTTP 200, text/html)"),
    ] {
        let (addr, server) = web_server(answer).await;
        let expected = format!("hakken: {addr} is not a hakken coordinator {says}\n");
        for args in [
            vec!["services"],
            vec!["listings", "x"],
            vec!["coordinators"],
            vec!["watch", "x"],
            vec!["publish", "x", "h:1"],
        ] {
            let (code, out, err) = output(&addr, &args).await;
            assert_eq!(code, Some(1), "{args:?}: {err}");
            assert_eq!(out, "", "{args:?}");
            assert_eq!(err, expected, "{args:?}");
        }
        server.abort();
    }
}

#[tokio::test]
async fn a_refused_token_says_so_and_how_to_set_one() {
    let mut cfg = config(60_000);
    cfg.token = Some("s3cret".into());
    let writes = start(cfg.clone()).await;
    cfg.protect_reads = true;
    let reads = start(cfg).await;
    let (w, r) = (writes.address(), reads.address());

    for (addr, args, says) in [
        (&w, vec!["publish", "x", "h:1"], "requires a token"),
        (
            &w,
            vec!["publish", "x", "h:1", "--token", "wrong"],
            "refused the token",
        ),
        (&r, vec!["services"], "requires a token"),
        (&r, vec!["coordinators"], "requires a token"),
        (
            &r,
            vec!["listings", "x", "--token", "wrong"],
            "refused the token",
        ),
        (&r, vec!["watch", "x"], "requires a token"),
        (&r, vec!["publish", "x", "h:1"], "requires a token"),
    ] {
        let (code, out, err) = output(addr, &args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        for expected in [says, "HTTP 401", addr.as_str(), "--token", "HAKKEN_TOKEN"] {
            assert!(err.contains(expected), "{args:?} lacks {expected}: {err}");
        }
    }
    assert_eq!(get(&w, "/v1/listings").await, (200, json!([])));
    // The right token, from the environment, works.
    let out = hakken(&r)
        .arg("services")
        .env("HAKKEN_TOKEN", "s3cret")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    writes.shutdown().await.unwrap();
    reads.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_publish_no_coordinator_takes_is_an_error() {
    // A coordinator announcing a name nothing answers on from here (it listens on
    // 127.0.0.1 only), and one at its limit of listings (it answers 503).
    let mut cfg = config(60_000);
    cfg.announce_host = "127.0.0.2".into();
    let astray = start(cfg).await;
    let mut cfg = config(60_000);
    cfg.registry_limits.max_listings = 1;
    let full = start(cfg).await;
    common::post_created(
        &full.address(),
        "/v1/listings",
        r#"{"service":"first","host":"h:1"}"#,
    )
    .await;
    let announced = format!("127.0.0.2:{}", astray.local_addr().port());
    for (addr, says) in [
        (
            astray.address(),
            vec!["no coordinator took x@h:1", &announced, "--announce-host"],
        ),
        (
            full.address(),
            vec!["no coordinator took x@h:1", "HTTP 503", "listing limit"],
        ),
    ] {
        let (code, out, err) = output(&addr, &["publish", "x", "h:1"]).await;
        assert_eq!(code, Some(1), "{addr}: {err}");
        assert_eq!(out, "", "{addr}");
        // The error is the last line (the client may have warned of the
        // unreachable coordinator before it).
        let last = err.trim().lines().last().unwrap_or_default();
        for expected in says {
            assert!(last.contains(expected), "{addr} lacks {expected}: {err}");
        }
    }
    assert_eq!(full.listing_count(), 1);
    astray.shutdown().await.unwrap();
    full.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signal_stops_publish_while_a_coordinator_keeps_it_waiting() {
    // The coordinator knows a peer that takes connections and never answers: the
    // first publication waits on it (for up to the minute-long --timeout), and a
    // SIGTERM meanwhile ends the command at once.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let (asked, mut publish_seen) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = silent.accept().await {
            let asked = asked.clone();
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut head = [0u8; 64];
                if let Ok(n) = socket.read(&mut head).await {
                    if head[..n].starts_with(b"POST /v1/listings") {
                        let _ = asked.send(()).await;
                    }
                }
                // Held open, unanswered.
                std::future::pending::<()>().await;
                drop(socket);
            }));
        }
    });
    let mut cfg = config(60_000);
    cfg.registry_limits.max_listings = 0;
    let full = start(cfg).await;
    common::post_created(
        &full.address(),
        "/v1/coordinator",
        json!({ "host": silent_addr }).to_string(),
    )
    .await;
    let publisher = hakken(&full.address())
        .args(["publish", "x", "h:1", "--timeout", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::timeout(common::PATIENCE, publish_seen.recv())
        .await
        .expect("the silent peer is asked to take the listing");
    common::process::signal(publisher.id().expect("running"), "TERM").await;
    let out = tokio::time::timeout(common::PATIENCE, publisher.wait_with_output())
        .await
        .expect("the signal ends it, without waiting for the silent peer")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped before a coordinator took x@h:1"),
        "{err}"
    );
    full.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_host_is_said_to_be_unresolvable() {
    // `.invalid` never resolves (RFC 6761). A generous timeout: the lookup's
    // failure is the cause to report, not a timeout. The name is looked up twice
    // (to connect, then to explain), each within the timeout: both fit in the
    // patience the command gets.
    for args in [
        vec!["services"],
        vec!["watch", "x"],
        vec!["publish", "x", "h:1"],
    ] {
        let mut all = args.clone();
        all.extend(["--timeout", "8000"]);
        let (code, _, err) = output("no-such-host.invalid:8082", &all).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("cannot resolve host `no-such-host.invalid`"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn empty_coordinator_and_zero_random_are_argument_errors() {
    let dead = nobody().await;
    for (args, named) in [
        (vec!["services", "--coordinator", ""], "--coordinator"),
        (vec!["watch", "x", "--coordinator", ""], "--coordinator"),
        (vec!["services", "--coordinator", " "], "--coordinator"),
        (vec!["watch", "x", "--random", "0"], "--random"),
        (vec!["watch", "x", "--random", "none"], "--random"),
        (vec!["services", "--timeout", "0"], "--timeout"),
        (
            vec!["publish", "x", "h:1", "--heartbeat-interval", "0"],
            "--heartbeat-interval",
        ),
    ] {
        let (code, out, err) = output(&dead, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_coordinator_s_bad_setting_is_named_and_exits_2() {
    let here = ["coordinator", "--listen", "127.0.0.1", "--port", "0"];
    for (extra, named) in [
        (&["--announce-host", "myhost:9999"][..], "--announce-host"),
        (&["--dns-port", "0", "--dns-domain", "a..b"], "--dns-domain"),
        (&["--dns-domain", "a..b"], "--dns-domain"),
        (&["--protect-reads"], "--protect-reads"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--discovery-host", "lb:0"], "--discovery-host"),
        (&["--discovery-host", "lb:http"], "--discovery-host"),
        (&["--discovery-host", "lb?x=1"], "--discovery-host"),
    ] {
        let args: Vec<&str> = here.iter().chain(extra).copied().collect();
        let (code, _, err) = output(&nobody().await, &args).await;
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(named), "{extra:?}: {err}");
        assert!(!err.contains("cannot listen"), "{extra:?}: {err}");
    }
    // A flag of `publish` that the coordinator has too is not said to be the
    // coordinator's variable.
    let (code, _, err) = output(
        &nobody().await,
        &["publish", "s", "h:1", "--heartbeat-interval", "0"],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("DISCOVERY_HEARTBEAT_INTERVAL"), "{err}");
}

#[tokio::test]
async fn a_busy_dns_port_is_blamed_on_the_dns_port() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let args = [
        "coordinator",
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--dns-port",
        &port,
    ];
    let (code, _, err) = output(&nobody().await, &args).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot serve DNS on port {port}")) && err.contains("--dns-port"),
        "{err}"
    );
    assert!(!err.contains("--port or PORT"), "{err}");
    drop(busy);
}
