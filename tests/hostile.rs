//! Hostile clients: limits, stalled senders, floods of names, and the write token.
//! After each, the coordinator answers others normally and holds what it held.

mod common;

use common::Address;

use common::{config, current_index, eventually, get, http, post, start, PATIENCE};
use hakken::coordinator::RegistryLimits;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn seed(addr: &str) -> serde_json::Value {
    let kept = json!({"service": "kept", "host": "h:1", "x": {"y": [1]}});
    assert_eq!(post(addr, "/v1/listings", kept.to_string()).await.0, 201);
    kept
}

async fn still_fine(addr: &str, kept: &serde_json::Value) {
    assert_eq!(get(addr, "/status").await, (200, json!("OK")));
    assert_eq!(get(addr, "/v1/listings/kept").await, (200, json!([kept])));
}

#[tokio::test]
async fn listing_and_service_limits_refuse_new_keys_but_keep_refreshing() {
    let mut cfg = config(60_000);
    cfg.registry_limits = RegistryLimits {
        max_listings: 3,
        max_services: 2,
    };
    let c = start(cfg).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    assert_eq!(
        post(&addr, "/v1/listings", r#"{"service":"other","host":"h:2"}"#)
            .await
            .0,
        201
    );
    assert_eq!(
        post(&addr, "/v1/listings", r#"{"service":"other","host":"h:1"}"#)
            .await
            .0,
        201
    );
    // A third service: refused.
    let (status, error) = post(&addr, "/v1/listings", r#"{"service":"third","host":"h:1"}"#).await;
    assert_eq!(status, 503, "{error}");
    assert!(error["error"].as_str().unwrap().contains("limit"));
    // A fourth listing: refused.
    let (status, _) = post(&addr, "/v1/listings", r#"{"service":"kept","host":"h:3"}"#).await;
    assert_eq!(status, 503);
    // Refreshing (and replacing) what it holds still works.
    common::post_created(&addr, "/v1/listings?heartbeat=true", kept.to_string()).await;
    let changed = json!({"service": "other", "host": "h:1", "v": 2});
    assert_eq!(
        post(&addr, "/v1/listings?heartbeat=true", changed.to_string())
            .await
            .0,
        201
    );
    let (_, others) = get(&addr, "/v1/listings/other").await;
    assert_eq!(others[0], changed);
    assert_eq!(c.listing_count(), 3);
    still_fine(&addr, &kept).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn shape_limits() {
    let mut cfg = config(60_000);
    cfg.listing_limits.max_fields = 4;
    cfg.max_coordinators = 2;
    let c = start(cfg).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    let long = "x".repeat(257);
    for body in [
        json!({"service": long, "host": "h:1"}),
        json!({"service": "s", "host": long}),
        json!({"service": "s", "host": "h:1", "a": 1, "b": 2, "c": 3}),
    ] {
        let (status, error) = post(&addr, "/v1/listings", body.to_string()).await;
        assert_eq!(status, 400, "{error}");
    }
    assert_eq!(
        post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:9"}"#)
            .await
            .0,
        201
    );
    let (status, error) = post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:10"}"#).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(c.known_coordinators().len(), 2);
    still_fine(&addr, &kept).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn very_many_distinct_services() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    let client = http();
    let mut posts = tokio::task::JoinSet::new();
    for batch in 0..8 {
        let (client, addr) = (client.clone(), addr.clone());
        posts.spawn(async move {
            for i in 0..500 {
                let body = json!({"service": format!("svc-{batch}-{i}"), "host": "h:1"});
                let response = client
                    .post(format!("http://{addr}/v1/listings"))
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        });
    }
    while let Some(done) = posts.join_next().await {
        done.unwrap();
    }
    let (_, services) = get(&addr, "/v1/listings").await;
    assert_eq!(services.as_array().unwrap().len(), 4_001);
    still_fine(&addr, &kept).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_thousand_stalled_connections_do_not_stop_others() {
    let mut cfg = config(60_000);
    cfg.header_timeout = Duration::from_millis(500);
    cfg.body_timeout = Duration::from_millis(500);
    let c = start(cfg).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    let mut stalled = Vec::new();
    for i in 0..1_000 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let half: &[u8] = if i % 2 == 0 {
            // Half a head.
            b"POST /v1/listings HTTP/1.1\r\nHost: x\r\nContent-Le"
        } else {
            // A whole head, half a body.
            b"POST /v1/listings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"serv"
        };
        stream.write_all(half).await.unwrap();
        stalled.push(stream);
    }
    // Others are served meanwhile.
    still_fine(&addr, &kept).await;
    assert_eq!(
        post(&addr, "/v1/listings", r#"{"service":"new","host":"h:1"}"#)
            .await
            .0,
        201
    );
    // Every stalled connection is answered (408 for a half body) or closed.
    let mut timed_out = 0;
    for mut stream in stalled {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "a stalled connection was never closed");
        if answer.starts_with(b"HTTP/1.1 408") {
            let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 500, "every half body gets a 408");
    still_fine(&addr, &kept).await;
    assert_eq!(c.listing_count(), 2);
    c.shutdown().await.unwrap();
}

/// Sends a POST (with `headers`, each ending in CRLF) that promises a megabyte
/// and sends one byte, then waits: the answer, lowercased, read until the
/// coordinator closes the connection (or resets it, once the answer came).
async fn answer_to_a_promised_body(addr: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/listings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         {headers}content-length: 1048576\r\n\r\n{{"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("answered before the body came, and closed")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

#[tokio::test]
async fn a_refusal_before_the_body_arrives_says_the_connection_closes() {
    let mut cfg = config(60_000);
    cfg.body_timeout = Duration::from_secs(3600);
    cfg.token = Some("s3cret".into());
    let c = start(cfg).await;
    let addr = c.address();
    for (headers, status) in [
        ("", "401"),
        ("authorization: Bearer wrong\r\n", "401"),
        ("authorization: Bearer s3cret\r\n", "413"),
    ] {
        let answer = answer_to_a_promised_body(&addr, headers).await;
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    }
    assert_eq!(c.listing_count(), 0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_that_says_it_is_too_large_is_refused_before_it_arrives() {
    let mut cfg = config(60_000);
    cfg.body_timeout = Duration::from_secs(3600);
    let c = start(cfg).await;
    let addr = c.address();
    // It promises a megabyte and sends one byte, then waits: the answer cannot
    // wait for the rest (the read timeout, far longer than the test's patience,
    // would make it a 408).
    let answer = answer_to_a_promised_body(&addr, "").await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    // The rest of the body is never read, so the connection cannot go on, and
    // the answer says so.
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert_eq!(c.listing_count(), 0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503() {
    let mut cfg = config(60_000);
    cfg.max_connections = 4;
    let c = start(cfg).await;
    let addr = c.address();
    // Four idle keep-alive connections hold every permit.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Every connection made now is refused (connections are accepted in order).
    let connected = std::sync::atomic::AtomicUsize::new(0);
    let answer = eventually("a connection past the cap is refused", || async {
        let mut stream = TcpStream::connect(&addr).await.ok()?;
        connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.starts_with("HTTP/1.1 503").then_some(text)
    })
    .await;
    assert!(
        answer.contains(r#"{"error":"too many connections"}"#),
        "{answer}"
    );
    drop(held);
    eventually("served again once connections close", || async {
        let response = http()
            .get(format!("http://{addr}/status"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    // Each refusal is counted: those above, and any refused while the held
    // connections were closing (waiting to be served again).
    let refused = common::metric(&addr, "hakken_http_connections_refused_total").await;
    let connected = connected.into_inner() as f64;
    assert!(
        (connected..=connected + 4.0).contains(&refused),
        "{refused} counted, {connected} refused"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_token_protects_writes_and_optionally_reads() {
    let mut cfg = config(60_000);
    cfg.token = Some("s3cret".into());
    let c = start(cfg).await;
    let addr = c.address();
    let body = r#"{"service":"s","host":"h:1"}"#;
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = http().request(method, format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.body(body)
    };
    use reqwest::Method;
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let response = send(Method::POST, "/v1/listings", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let challenges: Vec<_> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .collect();
        // Writes are not offered Basic: a browser would replay it cross-site.
        assert_eq!(challenges, ["Bearer realm=\"hakken\""]);
        let response = send(Method::POST, "/v1/coordinator", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let response = send(Method::DELETE, "/v1/listings/s/h:1", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(c.listing_count(), 0);
    let response = send(Method::POST, "/v1/listings", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The token as a Basic password does not make a write (CSRF through a
    // browser that was asked for it by the dashboard).
    let csrf = http()
        .post(format!("http://{addr}/v1/listings"))
        .header("content-type", "text/plain")
        .basic_auth("any", Some("s3cret"))
        .body(r#"{"service":"evil","host":"evil:80"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 401);
    assert!(get(&addr, "/v1/listings/evil").await.0 == 404);
    // Reads stay open.
    assert_eq!(get(&addr, "/v1/listings/s").await.0, 200);
    c.shutdown().await.unwrap();

    let mut cfg = config(60_000);
    cfg.token = Some("s3cret".into());
    cfg.protect_reads = true;
    let c = start(cfg).await;
    let addr = c.address();
    assert_eq!(get(&addr, "/v1/listings").await.0, 401);
    assert_eq!(get(&addr, "/v1/coordinator").await.0, 401);
    assert_eq!(
        get(&addr, "/status").await.0,
        200,
        "health checks stay open"
    );
    let response = http()
        .get(format!("http://{addr}/v1/listings"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The dashboard and /metrics, from a browser: asked for credentials (Basic
    // first, which browsers prompt for), then let in with the token as password.
    for path in ["/ui", "/ui/api/state", "/metrics"] {
        let refused = http()
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let challenges: Vec<&str> = refused
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges[0].starts_with("Basic realm=\"hakken\""),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer")),
            "{challenges:?}"
        );
        let wrong = http()
            .get(format!("http://{addr}{path}"))
            .basic_auth("admin", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
        let browser = http()
            .get(format!("http://{addr}{path}"))
            .basic_auth("anyone", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(browser.status(), 200, "{path} with the token as password");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn gossip_carries_the_token() {
    let mut cfg = config(100);
    cfg.token = Some("t".into());
    cfg.protect_reads = true;
    let a = start(cfg.clone()).await;
    cfg.discovery_host = Some(a.address());
    let b = start(cfg).await;
    eventually("a and b know each other", || async {
        (a.known_coordinators().len() == 2 && b.known_coordinators().len() == 2).then_some(())
    })
    .await;
    // And they stay known: polls, which need the token, keep succeeding.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.known_coordinators().len(), 2);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn our_client_carries_the_token() {
    use hakken::{Client, ClientConfig, Listing};
    let mut cfg = config(60_000);
    cfg.token = Some("t0ken".into());
    cfg.protect_reads = true;
    let c = start(cfg).await;
    let addr = c.address();
    let client = Client::new(ClientConfig::new(addr.clone()).token(Some("t0ken".into())));
    client.start().await.unwrap();
    let listing = Listing::new("guarded", "h:1").unwrap();
    client.publish(listing.clone()).await.unwrap();
    let watch = client.watch("guarded").build();
    watch.start().await.unwrap();
    eventually("the watch, reading with the token, sees it", || async {
        (watch.get() == vec![listing.clone()]).then_some(())
    })
    .await;
    client.close().await;
    assert_eq!(c.listing_count(), 0, "close withdrew it, with the token");

    // Without the token nothing is written.
    let intruder = Client::new(ClientConfig::new(addr.clone()));
    assert!(intruder.start().await.is_err(), "reads are protected too");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn nesting_is_bounded_so_answers_stay_readable() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    // 40 levels: within serde_json's own limit, beyond ours (32).
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let listing = format!(r#"{{"service":"kept","host":"deep:1","x":{deep}}}"#);
    let (status, error) = post(&addr, "/v1/listings", listing).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("nested deeper"));
    let peer = format!(r#"{{"host":"deep:1","x":{deep}}}"#);
    assert_eq!(post(&addr, "/v1/coordinator", peer).await.0, 400);
    // 31 levels inside a listing is fine, and reads back through our client.
    let ok = format!("{}1{}", "[".repeat(30), "]".repeat(30));
    let listing = format!(r#"{{"service":"kept","host":"ok:1","x":{ok}}}"#);
    assert_eq!(post(&addr, "/v1/listings", listing).await.0, 201);
    let remote = hakken::remote::Remote::new(Duration::from_secs(5));
    let answer = remote.listings(&addr, "kept", None).await.unwrap();
    assert_eq!(answer.value.len(), 2);
    let (status, _) = get(&addr, "/v1/listings/kept?pretty").await;
    assert_eq!(status, 200);
    assert_eq!(c.known_coordinators().len(), 1);
    c.shutdown().await.unwrap();
    let _ = kept;
}

#[tokio::test]
async fn a_held_query_for_an_impossible_name_is_answered_at_once() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let name = "n".repeat(60_000);
    // The index every absent service has: a query with it would be held.
    let index = current_index(&addr, "/v1/listings/absent").await;
    let response = tokio::time::timeout(
        PATIENCE,
        http()
            .get(format!(
                "http://{addr}/v1/listings/{name}?index={index}&wait=5m"
            ))
            .send(),
    )
    .await
    .expect("not held")
    .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(c.held_queries(), 0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let mut cfg = config(60_000);
    cfg.token = Some("tok".into());
    let c = start(cfg).await;
    let addr = c.address();
    for header in ["Bearer tok", "bearer tok", "BEARER tok"] {
        let response = http()
            .post(format!("http://{addr}/v1/listings"))
            .header("authorization", header)
            .body(r#"{"service":"s","host":"h:1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{header}");
    }
    for header in ["Bearer TOK", "Basic tok", "tok", "Bearer"] {
        let response = http()
            .post(format!("http://{addr}/v1/listings"))
            .header("authorization", header)
            .body(r#"{"service":"s","host":"h:1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        http()
            .request(method, format!("http://{addr}/v1/listings"))
            .send()
            .await
            .unwrap();
    }
    let text = common::scrape(&addr).await;
    let series = text
        .lines()
        .filter(|l| l.starts_with("hakken_http_requests_total{"))
        .count();
    assert!(series <= 3, "{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_error_body_cut_inside_a_character_is_no_panic() {
    // A server answering 500 with a multi-byte character across byte 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = format!("{}é{}", "a".repeat(199), "b".repeat(50));
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let remote = hakken::remote::Remote::new(Duration::from_secs(5));
    let error = remote.coordinators(&addr, None).await.unwrap_err();
    assert!(
        matches!(
            error,
            hakken::remote::RemoteError::Status { status: 500, .. }
        ),
        "{error}"
    );
    let client = hakken::Client::new(hakken::ClientConfig::new(addr.clone()));
    assert!(client.start().await.is_err());
    server.abort();
}

#[tokio::test]
async fn a_flood_past_the_connection_cap_holds_a_bounded_number_of_sockets() {
    use common::process::CoordinatorProcess;
    let p =
        CoordinatorProcess::loopback(&["--announce-host", "127.0.0.1", "--max-connections", "4"])
            .await;
    let addr = p.address();
    let pid = p.pid().expect("running");
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let baseline = open_fds();
    // 300 connections that never send anything and never close: 4 take the
    // permits, the rest are refused.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = TcpStream::connect(&addr).await {
            flood.push(stream);
        }
    }
    assert!(flood.len() > 200, "the flood connected");
    // The peak of the coordinator's open descriptors over half a second, while
    // every one of them is held. (Waiting cannot flake: a regression could only
    // pass unnoticed.)
    let mut peak = 0;
    for _ in 0..50 {
        peak = peak.max(open_fds());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cap, the refusals being answered (64), and a little slack.
    let bound = baseline + 4 + 64 + 8;
    assert!(peak <= bound, "{peak} descriptors open, bound {bound}");
    drop(flood);
}

/// A server that counts the requests it gets, and answers `GET /v1/coordinator`
/// with `list` (itself first).
async fn counting_peer(
    list: impl Fn(&str) -> serde_json::Value + Send + Sync + 'static,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let app = {
        let (seen, addr, list) = (seen.clone(), addr.clone(), std::sync::Arc::new(list));
        axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (seen, addr, list) = (seen.clone(), addr.clone(), list.clone());
            async move {
                seen.lock().unwrap().push(uri.to_string());
                axum::Json(list(&addr))
            }
        })
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen, task)
}

#[tokio::test]
async fn peer_hosts_are_name_and_port_only() {
    let c = start(config(50)).await;
    let addr = c.address();
    let kept = seed(&addr).await;
    // Announced straight: refused, and nothing changes.
    for host in [
        "127.0.0.1:1/steal?x=1",
        "127.0.0.1:1#frag",
        "user@127.0.0.1:1",
        "http://127.0.0.1:1",
        "127.0.0.1",
        "127.0.0.1:0",
    ] {
        let (status, body) =
            post(&addr, "/v1/coordinator", json!({"host": host}).to_string()).await;
        assert_eq!(status, 400, "{host}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("name:port"),
            "{body}"
        );
    }
    assert_eq!(c.known_coordinators(), [c.host()]);
    // Learned by gossip: a peer lists a host with a path that would make the
    // coordinator call an arbitrary URL on a second server. It is skipped.
    let (victim, victim_seen, victim_task) = counting_peer(|me| json!([{"host": me}])).await;
    let bad = format!("{victim}/steal?secret=1#");
    let (peer, peer_seen, peer_task) = {
        let bad = bad.clone();
        counting_peer(move |me| json!([{"host": me}, {"host": bad}, {"host": "x@127.0.0.1:2"}]))
            .await
    };
    post(&addr, "/v1/coordinator", json!({"host": peer}).to_string()).await;
    eventually("the peer is polled three times", || async {
        let polls = peer_seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("/v1/coordinator"))
            .count();
        (polls >= 3).then_some(())
    })
    .await;
    assert_eq!(
        c.known_coordinators().len(),
        2,
        "{:?}",
        c.known_coordinators()
    );
    assert!(
        victim_seen.lock().unwrap().is_empty(),
        "{:?}",
        victim_seen.lock().unwrap()
    );
    still_fine(&addr, &kept).await;
    c.shutdown().await.unwrap();
    victim_task.abort();
    peer_task.abort();
}
