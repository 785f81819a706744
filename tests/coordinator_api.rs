//! The coordinator's HTTP API, end to end over real sockets: the v1 routes as the
//! original answers them, bad input refused without harm, expiry, and our
//! extensions (blocking queries, DELETE, /v1/config).

mod common;

use common::Address;

use common::{
    config, current_index, delete, eventually, get, http, index_of, post, start, PATIENCE,
};
use serde_json::{json, Value};

#[tokio::test]
async fn v1_routes_answer_like_the_original() {
    let c = start(config(60_000)).await;
    let addr = c.address();

    assert_eq!(get(&addr, "/status").await, (200, json!("OK")));
    assert_eq!(
        get(&addr, "/v1/coordinator").await,
        (200, json!([{"host": c.host()}]))
    );
    assert_eq!(get(&addr, "/v1/listings").await, (200, json!([])));
    assert_eq!(get(&addr, "/v1/listings/billing").await.0, 404);

    // Extra fields, nested ones included, come back unchanged and in their order.
    let text = r#"{"zeta":true,"service":"billing","nested":{"b":[1,{"c":null}],"a":"x"},"host":"10.0.0.1:80"}"#;
    assert_eq!(post(&addr, "/v1/listings", text).await.0, 201);
    let raw = http()
        .get(format!("http://{addr}/v1/listings/billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/json");
    assert_eq!(raw.text().await.unwrap(), format!("[{text}]"));
    assert_eq!(get(&addr, "/v1/listings").await, (200, json!(["billing"])));

    // A heartbeat with a changed payload replaces it (the original kept the old one).
    let changed = json!({"service": "billing", "host": "10.0.0.1:80", "version": 2});
    common::post_created(&addr, "/v1/listings?heartbeat=true", changed.to_string()).await;
    assert_eq!(
        get(&addr, "/v1/listings/billing").await,
        (200, json!([changed]))
    );

    // A heartbeat for an unknown listing adds it.
    let other = json!({"service": "billing", "host": "10.0.0.2:80"});
    post(&addr, "/v1/listings?heartbeat=true", other.to_string()).await;
    let (_, listings) = get(&addr, "/v1/listings/billing").await;
    assert_eq!(listings.as_array().unwrap().len(), 2);

    // ?pretty pretty-prints.
    let pretty = http()
        .get(format!("http://{addr}/v1/coordinator?pretty"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pretty.contains("\n  {\n    \"host\""), "{pretty}");

    // A coordinator can be announced.
    assert_eq!(
        post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:1"}"#)
            .await
            .0,
        201
    );
    let (_, list) = get(&addr, "/v1/coordinator").await;
    assert!(list
        .as_array()
        .unwrap()
        .contains(&json!({"host": "127.0.0.1:1"})));
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_4xx_and_changes_nothing() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let kept = json!({"service": "kept", "host": "h:1", "x": [1, 2]});
    assert_eq!(post(&addr, "/v1/listings", kept.to_string()).await.0, 201);

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("truncated", br#"{"service":"s","host""#.to_vec()),
        ("not JSON", b"hello".to_vec()),
        ("array", b"[1,2]".to_vec()),
        ("string", br#""s""#.to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("no service", br#"{"host":"h:2"}"#.to_vec()),
        ("no host", br#"{"service":"s"}"#.to_vec()),
        ("numeric service", br#"{"service":1,"host":"h:2"}"#.to_vec()),
        ("empty service", br#"{"service":"","host":"h:2"}"#.to_vec()),
        ("empty host", br#"{"service":"s","host":""}"#.to_vec()),
        ("object host", br#"{"service":"s","host":{}}"#.to_vec()),
        (
            "invalid UTF-8",
            b"{\"service\":\"\xff\xfe\",\"host\":\"h:2\"}".to_vec(),
        ),
        (
            "depth bomb",
            format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
        ),
        (
            "deep object",
            format!(
                r#"{{"service":"s","host":"h:2","d":{}1{}}}"#,
                "[".repeat(5_000),
                "]".repeat(5_000)
            )
            .into_bytes(),
        ),
    ];
    for path in ["/v1/listings", "/v1/listings?heartbeat=true"] {
        for (what, body) in &bodies {
            let (status, error) = post(&addr, path, body.clone()).await;
            assert_eq!(status, 400, "{what} on {path}: {error}");
            assert!(
                error["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {error}"
            );
        }
    }
    for (what, body) in [
        ("no host", r#"{"name":"x"}"#),
        ("array", "[]"),
        ("bad JSON", "{"),
    ] {
        let (status, error) = post(&addr, "/v1/coordinator", body).await;
        assert_eq!(status, 400, "coordinator {what}: {error}");
        assert!(error["error"].is_string());
    }

    // Too large: 413, with a JSON error.
    let big = format!(
        r#"{{"service":"s","host":"h:2","pad":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let (status, error) = post(&addr, "/v1/listings", big).await;
    assert_eq!(status, 413);
    assert!(error["error"].is_string());

    // Unknown path and wrong method.
    let (status, error) = get(&addr, "/v2/nothing").await;
    assert_eq!((status, error["error"].is_string()), (404, true));
    let response = http()
        .put(format!("http://{addr}/v1/listings"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let (status, _) = post(&addr, "/status", "{}").await;
    assert_eq!(status, 405);
    // A service name with an unescaped `/` reads no route, and is told how to
    // write it.
    let (status, error) = get(&addr, "/v1/listings/a/b").await;
    assert_eq!(status, 404, "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains("%2F"),
        "{error}"
    );

    // Still serving, still holding exactly what it had.
    assert_eq!(get(&addr, "/status").await, (200, json!("OK")));
    assert_eq!(get(&addr, "/v1/listings").await, (200, json!(["kept"])));
    assert_eq!(get(&addr, "/v1/listings/kept").await, (200, json!([kept])));
    assert_eq!(c.listing_count(), 1);
    assert_eq!(c.known_coordinators(), [c.host()]);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn names_round_trip_through_path_encoding() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    for name in [
        "a/b",
        "a..b",
        "%2F",
        "with space",
        "日本語",
        "q?x#y",
        "...",
        "+plus&amp",
    ] {
        let listing = json!({"service": name, "host": format!("{name}:1")});
        assert_eq!(
            post(&addr, "/v1/listings", listing.to_string()).await.0,
            201,
            "{name}"
        );
        let path = format!("/v1/listings/{}", hakken::remote::segment(name));
        assert_eq!(get(&addr, &path).await, (200, json!([listing])), "{name}");
        let path_to_delete = format!("{path}/{}", hakken::remote::segment(&format!("{name}:1")));
        assert_eq!(delete(&addr, &path_to_delete).await, 204, "{name}");
        assert_eq!(get(&addr, &path).await.0, 404, "{name}");
    }
    let (status, error) = post(&addr, "/v1/listings", r#"{"service":"..","host":"h:1"}"#).await;
    assert_eq!(status, 400, "{error}");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_listing_expires_end_to_end() {
    // H = 100 ms and 2 missed heartbeats: a listing lives 200 ms without a heartbeat.
    let mut cfg = config(100);
    cfg.missed_heartbeats_allowed = 2;
    let c = start(cfg).await;
    let addr = c.address();
    post(&addr, "/v1/listings", r#"{"service":"s","host":"gone:1"}"#).await;
    post(&addr, "/v1/listings", r#"{"service":"t","host":"stays:1"}"#).await;
    assert_eq!(get(&addr, "/v1/listings").await.1, json!(["s", "t"]));
    // Keep "t" alive with heartbeats while "s" expires.
    eventually("s expired while t heartbeats", || async {
        post(
            &addr,
            "/v1/listings?heartbeat=true",
            r#"{"service":"t","host":"stays:1"}"#,
        )
        .await;
        (get(&addr, "/v1/listings").await.1 == json!(["t"])).then_some(())
    })
    .await;
    assert_eq!(get(&addr, "/v1/listings/s").await.0, 404);
    assert_eq!(get(&addr, "/v1/listings/t").await.0, 200);
    c.shutdown().await.unwrap();
}

/// GET with the raw response, for the headers.
async fn get_raw(addr: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
}

/// The same GET, running in its own task (a query to hold while the test acts).
fn spawn_get(addr: &str, path: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    tokio::spawn(async move { get_raw(&addr, &path).await })
}

#[tokio::test]
async fn every_answer_tells_the_heartbeat_interval_and_config() {
    let c = start(config(1234)).await;
    let addr = c.address();
    for path in ["/status", "/v1/listings", "/v1/listings/none", "/nope"] {
        let response = get_raw(&addr, path).await;
        assert_eq!(
            response.headers()["x-hakken-heartbeat-interval"],
            "1234",
            "{path}"
        );
        assert_eq!(
            response.headers()["x-hakken-coordinator"],
            c.host(),
            "{path}"
        );
    }
    let (status, body) = get(&addr, "/v1/config").await;
    assert_eq!(status, 200);
    assert_eq!(body["heartbeatInterval"], 1234);
    assert_eq!(body["missedHeartbeatsAllowed"], 3);
    assert_eq!(body["resyncInterval"], 12340);
    assert_eq!(body["host"], c.host());
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_index_changes_exactly_when_the_listings_do() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let a = json!({"service": "s", "host": "a:1"}).to_string();
    post(&addr, "/v1/listings", a.clone()).await;
    let i1 = index_of(&get_raw(&addr, "/v1/listings/s").await);
    post(&addr, "/v1/listings?heartbeat=true", a.clone()).await;
    assert_eq!(
        index_of(&get_raw(&addr, "/v1/listings/s").await),
        i1,
        "no-op heartbeat"
    );
    post(
        &addr,
        "/v1/listings",
        r#"{"service":"s","host":"a:1","v":2}"#,
    )
    .await;
    let i2 = index_of(&get_raw(&addr, "/v1/listings/s").await);
    assert!(i2 > i1, "payload change");
    post(&addr, "/v1/listings", r#"{"service":"other","host":"a:1"}"#).await;
    assert_eq!(
        index_of(&get_raw(&addr, "/v1/listings/s").await),
        i2,
        "other service"
    );
    post(&addr, "/v1/listings", r#"{"service":"s","host":"b:1"}"#).await;
    let i3 = index_of(&get_raw(&addr, "/v1/listings/s").await);
    assert!(i3 > i2, "new listing");
    assert_eq!(delete(&addr, "/v1/listings/s/b%3A1").await, 204);
    let i4 = index_of(&get_raw(&addr, "/v1/listings/s").await);
    assert!(i4 > i3, "delete");
    assert_eq!(
        delete(&addr, "/v1/listings/s/b%3A1").await,
        404,
        "deleting again"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_held_query_returns_on_change() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    // With an index, an empty service answers 200 [] so a watcher can wait for it.
    let empty = get_raw(&addr, "/v1/listings/s?index=0").await;
    assert_eq!(empty.status(), 200);
    let index = index_of(&empty);
    assert_eq!(empty.json::<Value>().await.unwrap(), json!([]));

    let waiter = spawn_get(&addr, &format!("/v1/listings/s?index={index}&wait=5m"));
    eventually("the query is held", || async {
        (c.held_queries() == 1).then_some(())
    })
    .await;
    // A change to another service does not release it: had it, the answer below
    // would be the empty list at the old index.
    post(&addr, "/v1/listings", r#"{"service":"t","host":"a:1"}"#).await;
    post(&addr, "/v1/listings", r#"{"service":"s","host":"a:1"}"#).await;
    let answer = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(index_of(&answer) > index);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!([{"service": "s", "host": "a:1"}])
    );

    // A delete releases waiters too.
    let index = index_of(&get_raw(&addr, "/v1/listings/s").await);
    let waiter = spawn_get(&addr, &format!("/v1/listings/s?index={index}&wait=5m"));
    eventually("the query is held", || async {
        (c.held_queries() == 1).then_some(())
    })
    .await;
    delete(&addr, "/v1/listings/s/a:1").await;
    let answer = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(c.held_queries(), 0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_held_query_returns_after_its_wait_unchanged() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    post(&addr, "/v1/listings", r#"{"service":"s","host":"a:1"}"#).await;
    let index = index_of(&get_raw(&addr, "/v1/listings/s").await);
    let asked = std::time::Instant::now();
    let answer = get_raw(&addr, &format!("/v1/listings/s?index={index}&wait=100ms")).await;
    // Held the whole wait (no sooner: a lower bound, which a slow machine only
    // makes longer), and said so.
    let held_for = asked.elapsed();
    assert!(
        held_for >= std::time::Duration::from_millis(100),
        "{held_for:?}"
    );
    assert_eq!(answer.headers()["x-hakken-wait"], "100");
    assert_eq!(answer.status(), 200);
    assert_eq!(index_of(&answer), index);
    // A stale index is answered at once.
    let answer = get_raw(
        &addr,
        &format!("/v1/listings/s?index={}&wait=5m", index - 1),
    )
    .await;
    assert_eq!(index_of(&answer), index);
    // A wait past the longest is granted the longest (5 min).
    let answer = get_raw(
        &addr,
        &format!("/v1/listings/s?index={}&wait=1h", index - 1),
    )
    .await;
    assert_eq!(answer.headers()["x-hakken-wait"], "300000");
    // A bad wait is a 400.
    assert_eq!(
        get_raw(&addr, "/v1/listings/s?index=1&wait=soon")
            .await
            .status(),
        400
    );
    // A bad index, or a parameter given twice, is a 400 that says what is wrong.
    for (path, says) in [
        (
            "/v1/listings/s?index=x",
            "invalid index `x`: expected a whole number",
        ),
        ("/v1/listings/s?index=-1", "invalid index `-1`"),
        ("/v1/listings?index=1.5", "invalid index `1.5`"),
        ("/v1/coordinator?index=", "invalid index ``"),
        (
            "/v1/listings/s?index=1&index=2",
            "invalid query string: duplicate field `index`",
        ),
        ("/v1/listings/s?wait=soon", "invalid wait `soon`"),
        // A stream's query is checked the same way, on every route.
        ("/v1/listings/s?stream=true&index=x", "invalid index `x`"),
        ("/v1/listings?stream=true&wait=soon", "invalid wait `soon`"),
        ("/v1/coordinator?stream=true&index=x", "invalid index `x`"),
    ] {
        let answer = get_raw(&addr, path).await;
        assert_eq!(answer.status(), 400, "{path}");
        let error: serde_json::Value = answer.json().await.unwrap();
        let error = error["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.starts_with(says), "{path}: {error}");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn services_and_coordinators_block_too() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let services = get_raw(&addr, "/v1/listings").await;
    let index = index_of(&services);
    let waiter = spawn_get(&addr, &format!("/v1/listings?index={index}&wait=5m"));
    let coordinators = get_raw(&addr, "/v1/coordinator").await;
    let cindex = index_of(&coordinators);
    let cwaiter = spawn_get(&addr, &format!("/v1/coordinator?index={cindex}&wait=5m"));
    eventually("both held", || async {
        (c.held_queries() == 2).then_some(())
    })
    .await;
    post(&addr, "/v1/listings", r#"{"service":"new","host":"a:1"}"#).await;
    let answer = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.json::<Value>().await.unwrap(), json!(["new"]));
    // The coordinator list did not change, so its query is still held (had the
    // change of services released it, its answer would carry the old index).
    assert_eq!(c.held_queries(), 1);
    post(&addr, "/v1/coordinator", r#"{"host":"127.0.0.1:9"}"#).await;
    let answer = tokio::time::timeout(PATIENCE, cwaiter)
        .await
        .unwrap()
        .unwrap();
    assert!(index_of(&answer) > cindex);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn held_queries_are_capped() {
    let mut cfg = config(60_000);
    cfg.max_held_queries = 1;
    let c = start(cfg).await;
    let addr = c.address();
    let index = index_of(&get_raw(&addr, "/v1/listings/s?index=0").await);
    let held = spawn_get(&addr, &format!("/v1/listings/s?index={index}&wait=5m"));
    eventually("one query held", || async {
        (c.held_queries() == 1).then_some(())
    })
    .await;
    // Past the cap, a blocking query is answered at once, unchanged.
    let answer = tokio::time::timeout(
        PATIENCE,
        get_raw(&addr, &format!("/v1/listings/s?index={index}&wait=5m")),
    )
    .await
    .expect("answered at once past the cap");
    assert_eq!(index_of(&answer), index);
    assert!(!held.is_finished());
    c.shutdown().await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(answer.status(), 200, "shutdown answers held queries");
}

#[tokio::test]
async fn shutdown_answers_held_queries_at_once() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    let index = current_index(&addr, "/v1/listings/s").await;
    let waiters: Vec<_> = (0..5)
        .map(|_| spawn_get(&addr, &format!("/v1/listings/s?index={index}&wait=5m")))
        .collect();
    eventually("all held", || async {
        (c.held_queries() == 5).then_some(())
    })
    .await;
    tokio::time::timeout(PATIENCE, c.shutdown())
        .await
        .expect("shutdown is bounded")
        .unwrap();
    for waiter in waiters {
        let answer = tokio::time::timeout(PATIENCE, waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
}
