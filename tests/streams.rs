//! Streams (issue #18, the coordinator's side): `Accept: text/event-stream` or
//! `?stream=true` on the three list routes answer Server-Sent Events.
//!
//! - the format: the whole list first, then one event per change, `id:` the index;
//!   every stream of a service gets each change once and in order;
//! - `Last-Event-ID` (or `?index=`) resumes without resending an unchanged list;
//! - a reader that does not read holds nobody up, and when it reads again gets
//!   the newest list, skipping what it missed; one that takes nothing for the
//!   stall timeout is disconnected (on either path below);
//! - a quiet stream gets keep-alive comments;
//! - the cap answers `503`; shutdown ends every stream cleanly (its last chunk),
//!   without waiting for a reader that is behind;
//! - a stream asked for first on its connection is served on the socket itself
//!   (chunked, `connection: close`), and ends as soon as its reader goes, even
//!   when nothing is written to it; a stream asked for after another request on
//!   the same connection is served as before;
//! - through nginx with `deploy/nginx-hakken.conf`, each event arrives as it comes.

mod common;

use common::{config, http, start, Address, PATIENCE};
use hakken::coordinator::CoordinatorConfig;
use hakken::remote::Remote;
use hakken::Listing;
use serde_json::Value;
use std::time::Duration;

/// One event of a stream: its id and data (`None` for a comment).
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: u64,
    data: Value,
}

/// Reads a stream's events as they come.
struct Reader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Reader {
    async fn open(addr: &str, path: &str, last_event_id: Option<u64>) -> Reader {
        let mut request = http()
            .get(format!("http://{addr}{path}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Reader {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event (comments skipped), or `None` when the stream ended
    /// cleanly (its last chunk came): a stream cut off fails the test.
    async fn next(&mut self) -> Option<Event> {
        self.next_or_cut()
            .await
            .unwrap_or_else(|e| panic!("the stream was cut, not ended: {e}"))
    }

    /// The next event, `None` when the stream ended cleanly, or how it was cut.
    async fn next_or_cut(&mut self) -> Result<Option<Event>, reqwest::Error> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let mut id = None;
                let mut data = None;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).ok();
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Ok(Some(Event { id, data }));
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event within the patience")?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

async fn publish(addr: &str, service: &str, host: &str, fields: &[(&str, Value)]) {
    let mut value = serde_json::json!({"service": service, "host": host});
    for (key, field) in fields {
        value[*key] = field.clone();
    }
    let listing = Listing::from_value(value, &hakken::Limits::default()).unwrap();
    Remote::new(Duration::from_secs(5))
        .publish(addr, &listing, false)
        .await
        .unwrap();
}

/// How many changes [`large_changes`] makes: with a 60 KB field each, 18 MB, more
/// than the socket buffers of a reader that does not read grow to (a few MB), so
/// that a stream that queued every change could not pass for one that skipped.
const LARGE_CHANGES: usize = 300;

/// Changes `pay`'s listing `a:1` [`LARGE_CHANGES`] times (`n` = 0, 1, …, with a
/// 60 KB field: every change is a new, large list), each read by `reading`
/// before the next: enough to fill the socket of a stream that is not read.
async fn large_changes(addr: &str, reading: &mut Reader) {
    let padding = Value::String("x".repeat(60_000));
    for i in 0..LARGE_CHANGES {
        publish(
            addr,
            "pay",
            "a:1",
            &[("n", i.into()), ("pad", padding.clone())],
        )
        .await;
        let event = reading.next().await.unwrap();
        assert_eq!(event.data[0]["n"], i, "the reading stream keeps up");
    }
}

/// The `X-Hakken-Index` of a plain `GET path`.
async fn index_of(addr: &str, path: &str) -> u64 {
    let response = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    response.headers()["x-hakken-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A stream of `pay` whose one listing is `a:1`, its first event read.
async fn reading_pay(addr: &str) -> Reader {
    let mut reading = Reader::open(addr, "/v1/listings/pay", None).await;
    assert_eq!(hosts(&reading.next().await.unwrap()), ["a:1"]);
    reading
}

/// Checks that `reading` still gets `pay`'s changes.
async fn still_reading(addr: &str, reading: &mut Reader) {
    publish(addr, "pay", "a:1", &[("n", 0.into())]).await;
    assert_eq!(
        reading.next().await.unwrap().data[0]["n"],
        0,
        "the reader kept its stream"
    );
}

/// Changes `pay`'s listing `a:1` (`n` = 1, 2, …, with a 60 KB field) until one of
/// the two streams open is cut: a stalled reader's socket fills and its write
/// waits out the stall timeout, while `reading` keeps up all along. Returns how
/// many changes it took.
async fn changes_until_one_is_cut(addr: &str, reading: &mut Reader) -> u64 {
    let padding = Value::String("x".repeat(60_000));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut i = 0u64;
    while common::metric(addr, "hakken_streams").await > 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled stream was never cut"
        );
        i += 1;
        publish(
            addr,
            "pay",
            "a:1",
            &[("n", i.into()), ("pad", padding.clone())],
        )
        .await;
        assert_eq!(reading.next().await.unwrap().data[0]["n"], i);
    }
    i
}

fn hosts(event: &Event) -> Vec<String> {
    let mut hosts: Vec<String> = event
        .data
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["host"].as_str().map(str::to_owned))
        .collect();
    hosts.sort();
    hosts
}

#[tokio::test]
async fn the_whole_list_first_then_one_event_per_change() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut listings = Reader::open(&addr, "/v1/listings/pay", None).await;
    let mut services = Reader::open(&addr, "/v1/listings?stream=true", None).await;
    let mut coordinators = Reader::open(&addr, "/v1/coordinator", None).await;

    let first = listings.next().await.unwrap();
    assert_eq!(hosts(&first), ["a:1"]);
    assert_eq!(
        first.id,
        index_of(&addr, "/v1/listings/pay").await,
        "id: the index"
    );
    assert_eq!(
        services.next().await.unwrap().data,
        serde_json::json!(["pay"])
    );
    let me = coordinators.next().await.unwrap();
    assert_eq!(me.data[0]["host"], c.host());

    publish(&addr, "pay", "b:1", &[]).await;
    let second = listings.next().await.unwrap();
    assert_eq!(hosts(&second), ["a:1", "b:1"]);
    assert!(second.id > first.id, "the index moves on");
    assert_eq!(second.id, index_of(&addr, "/v1/listings/pay").await);
    // A new service changes the names; a new listing of a known one does not.
    publish(&addr, "ship", "s:1", &[]).await;
    assert_eq!(
        services.next().await.unwrap().data,
        serde_json::json!(["pay", "ship"])
    );
    // A service without listings streams an empty list until it has one.
    let mut empty = Reader::open(&addr, "/v1/listings/later", None).await;
    assert_eq!(empty.next().await.unwrap().data, serde_json::json!([]));
    publish(&addr, "later", "l:1", &[]).await;
    assert_eq!(hosts(&empty.next().await.unwrap()), ["l:1"]);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn last_event_id_resumes_without_resending_an_unchanged_list() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let first = Reader::open(&addr, "/v1/listings/pay", None)
        .await
        .next()
        .await
        .unwrap();
    let mut resumed = Reader::open(&addr, "/v1/listings/pay", Some(first.id)).await;
    publish(&addr, "pay", "b:1", &[]).await;
    let next = resumed.next().await.unwrap();
    assert_eq!(
        hosts(&next),
        ["a:1", "b:1"],
        "the change, not the list it had"
    );
    // An old id gets the current list at once.
    let mut behind = Reader::open(&addr, "/v1/listings/pay", Some(first.id - 1)).await;
    assert_eq!(behind.next().await.unwrap(), next);
    // `?index=N` resumes as well (a browser's EventSource can say it only in its
    // URL); `Last-Event-ID` wins over it.
    let path = format!("/v1/listings/pay?index={}", next.id);
    let mut by_index = Reader::open(&addr, &path, None).await;
    let path = format!("/v1/listings/pay?index={}", first.id);
    let mut by_both = Reader::open(&addr, &path, Some(next.id)).await;
    let mut old_index = Reader::open(&addr, &path, None).await;
    assert_eq!(old_index.next().await.unwrap(), next);
    publish(&addr, "pay", "c:1", &[]).await;
    for reader in [&mut by_index, &mut by_both] {
        assert_eq!(hosts(&reader.next().await.unwrap()), ["a:1", "b:1", "c:1"]);
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_stream_of_a_service_gets_each_change_once_and_in_order() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[("n", 0.into())]).await;
    // Every stream of the topic is written by its one broadcaster: the first
    // open ones, and one that opens after some changes.
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut reader = Reader::open(&addr, "/v1/listings/pay", None).await;
        assert_eq!(reader.next().await.unwrap().data[0]["n"], 0);
        readers.push(reader);
    }
    let mut last = 0;
    for n in 1..=10 {
        publish(&addr, "pay", "a:1", &[("n", n.into())]).await;
        let mut ids = Vec::new();
        for reader in &mut readers {
            let event = reader.next().await.unwrap();
            assert_eq!(event.data[0]["n"], n, "each change, once, in order");
            ids.push(event.id);
        }
        assert!(ids.iter().all(|id| *id == ids[0] && *id > last));
        last = ids[0];
        if n == 5 {
            let mut late = Reader::open(&addr, "/v1/listings/pay", None).await;
            assert_eq!(late.next().await.unwrap().id, last);
            readers.push(late);
        }
    }
    // Nothing more came of the last change: the next event is the next change.
    publish(&addr, "pay", "b:1", &[]).await;
    for reader in &mut readers {
        assert_eq!(hosts(&reader.next().await.unwrap()), ["a:1", "b:1"]);
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reader_that_does_not_read_holds_nobody_up_and_skips_to_the_newest_list() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    // Opened, then not read while the list changes many times, each list large.
    let mut stalled = Reader::open(&addr, "/v1/listings/pay", None).await;
    let mut reading = reading_pay(&addr).await;
    large_changes(&addr, &mut reading).await;
    // Now the stalled reader reads: it ends on the newest list, and got fewer
    // events than there were changes (what it missed was skipped, not queued).
    let mut seen = 0;
    loop {
        let event = stalled.next().await.unwrap();
        seen += 1;
        if event.data[0]["n"] == LARGE_CHANGES - 1 {
            break;
        }
    }
    assert!(
        seen < LARGE_CHANGES,
        "{seen} events for {LARGE_CHANGES} changes"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reader_that_takes_nothing_for_the_stall_timeout_is_disconnected() {
    let c = start(CoordinatorConfig {
        stall_timeout: Duration::from_secs(1),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut stalled = Reader::open(&addr, "/v1/listings/pay", None).await;
    let mut reading = reading_pay(&addr).await;
    let i = changes_until_one_is_cut(&addr, &mut reading).await;
    // The one cut is the stalled one: it ends once its buffered events are read.
    let mut buffered = 0;
    while let Ok(Some(_)) = stalled.next_or_cut().await {
        buffered += 1;
        assert!(buffered <= i, "more events than changes");
    }
    still_reading(&addr, &mut reading).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn streams_are_capped_and_end_at_shutdown() {
    let c = start(CoordinatorConfig {
        max_streams: 1,
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    let mut open = Reader::open(&addr, "/v1/listings", None).await;
    assert_eq!(open.next().await.unwrap().data, serde_json::json!([]));
    let refused = http()
        .get(format!("http://{addr}/v1/listings/x?stream=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(common::metric(&addr, "hakken_streams").await, 1.0);
    tokio::time::timeout(PATIENCE, c.shutdown())
        .await
        .expect("shutdown is not held up by a stream")
        .unwrap();
    assert_eq!(open.next().await, None, "the stream ended");
}

#[tokio::test]
async fn events_pass_through_nginx_as_they_come() {
    let c = start(config(60_000)).await;
    let nginx = common::nginx::Nginx::start(&[c.address()], "127.0.0.1").await;
    let mut stream = Reader::open(&nginx.address(), "/v1/listings/pay", None).await;
    assert_eq!(stream.next().await.unwrap().data, serde_json::json!([]));
    // One small change: were nginx buffering, it would sit there until the
    // buffer filled or the stream ended, and `next` would time out.
    publish(&c.address(), "pay", "a:1", &[]).await;
    assert_eq!(hosts(&stream.next().await.unwrap()), ["a:1"]);
    c.shutdown().await.unwrap();
}

/// A stream request's head, for the raw-socket tests below.
const STREAM_HEAD: &[u8] =
    b"GET /v1/listings/pay HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";

/// A connection to `addr` that has asked for a stream of `pay` (raw socket).
async fn stream_socket(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(STREAM_HEAD).await.unwrap();
    socket
}

/// Reads from `socket` until `bytes` holds `want`, within [`PATIENCE`].
async fn read_until(socket: &mut tokio::net::TcpStream, bytes: &mut Vec<u8>, want: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Only what came since the last look is searched (with `want`'s length before
    // it): a stream may bring megabytes.
    let mut from = 0;
    while !contains(&bytes[from..], want.as_bytes()) {
        from = bytes.len().saturating_sub(want.len());
        let mut chunk = [0u8; 65_536];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{want:?} never came: {}", String::from_utf8_lossy(bytes)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {}",
            String::from_utf8_lossy(bytes)
        );
        bytes.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_stream_first_on_its_connection_is_served_directly_and_ends_when_its_reader_goes() {
    let c = start(CoordinatorConfig {
        // No keep-alive within the test: only the reader's going can end it.
        stream_keepalive: Duration::from_secs(3_600),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut socket = stream_socket(&addr).await;
    let mut bytes = Vec::new();
    read_until(&mut socket, &mut bytes, "\n\n\r\n").await;
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for header in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
        "x-hakken-coordinator: ",
        "date: ",
    ] {
        assert!(head.contains(header), "{header:?} missing: {head}");
    }
    // One chunk: its size in hex, then the event.
    let (size, event) = body.split_once("\r\n").unwrap();
    let event = event.strip_suffix("\r\n").unwrap();
    assert_eq!(usize::from_str_radix(size, 16).unwrap(), event.len());
    assert!(
        event.starts_with("id: ") && event.contains(r#""host":"a:1""#),
        "{event}"
    );
    // A change: the next chunk.
    bytes.clear();
    publish(&addr, "pay", "b:1", &[]).await;
    read_until(&mut socket, &mut bytes, r#""host":"b:1""#).await;
    assert_eq!(common::metric(&addr, "hakken_streams").await, 1.0);
    // The reader goes; nothing changes, nothing is written: the stream ends anyway.
    drop(socket);
    common::eventually("the stream ends with its reader", || async {
        (common::metric(&addr, "hakken_streams").await == 0.0).then_some(())
    })
    .await;
    c.shutdown().await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A connection to `addr` that asked for `pay`'s listings once and then for
/// their stream, which hyper serves (on a connection kept alive); `bytes` holds
/// what came of the stream up to its first event.
async fn stream_after_a_request(addr: &str, bytes: &mut Vec<u8>) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /v1/listings/pay HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The whole answer: its head, and the JSON array (the body ends with it).
    read_until(&mut socket, bytes, "]").await;
    assert!(!String::from_utf8_lossy(bytes).contains("connection: close"));
    bytes.clear();
    socket.write_all(STREAM_HEAD).await.unwrap();
    // The head, and the first event's chunk to its end.
    read_until(&mut socket, bytes, "\n\n\r\n").await;
    assert!(
        !String::from_utf8_lossy(bytes).contains("connection: close"),
        "served by hyper, on a connection kept alive"
    );
    socket
}

/// Reads `socket` to its end, within [`PATIENCE`]: what came before the end.
async fn read_to_end(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut rest))
        .await
        .expect("the connection ends")
        .expect("the connection ends cleanly, not reset");
    String::from_utf8_lossy(&rest).into_owned()
}

#[tokio::test]
async fn a_stream_after_another_request_on_its_connection_is_served_as_before() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut bytes = Vec::new();
    let mut socket = stream_after_a_request(&addr, &mut bytes).await;
    assert!(String::from_utf8_lossy(&bytes).contains(r#""host":"a:1""#));
    publish(&addr, "pay", "b:1", &[]).await;
    read_until(&mut socket, &mut bytes, r#""host":"b:1""#).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_after_another_request_that_is_not_read_skips_to_the_newest_list() {
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut stalled = stream_after_a_request(&addr, &mut Vec::new()).await;
    let mut reading = reading_pay(&addr).await;
    large_changes(&addr, &mut reading).await;
    // It ends on the newest list, having got fewer lists than there were changes.
    let mut bytes = Vec::new();
    let newest = format!(r#""n":{}"#, LARGE_CHANGES - 1);
    read_until(&mut stalled, &mut bytes, &newest).await;
    let seen = bytes.windows(4).filter(|w| w == b"\"n\":").count();
    assert!(
        seen < LARGE_CHANGES,
        "{seen} events for {LARGE_CHANGES} changes"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_after_another_request_that_takes_nothing_for_the_stall_timeout_is_cut() {
    let c = start(CoordinatorConfig {
        stall_timeout: Duration::from_secs(1),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut stalled = stream_after_a_request(&addr, &mut Vec::new()).await;
    let mut reading = reading_pay(&addr).await;
    changes_until_one_is_cut(&addr, &mut reading).await;
    // Its connection ends once what was sent is read.
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0u8; 65_536];
    tokio::time::timeout(PATIENCE, async {
        while matches!(stalled.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
    .expect("the stalled connection ends");
    still_reading(&addr, &mut reading).await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_quiet_stream_gets_keep_alives_on_either_path() {
    let c = start(CoordinatorConfig {
        stream_keepalive: Duration::from_millis(100),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    // Served on the socket itself (first on its connection): its head names the
    // interval, and with nothing to send, a keep-alive comes, then another.
    let mut direct = stream_socket(&addr).await;
    let mut bytes = Vec::new();
    read_until(&mut direct, &mut bytes, r#""host":"a:1""#).await;
    assert!(
        String::from_utf8_lossy(&bytes).contains("x-hakken-keepalive: 100\r\n"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    for _ in 0..2 {
        bytes.clear();
        read_until(&mut direct, &mut bytes, ": keep-alive\n\n").await;
    }
    // Served by hyper (after another request on its connection): the same.
    let mut bytes = Vec::new();
    let mut kept = stream_after_a_request(&addr, &mut bytes).await;
    assert!(String::from_utf8_lossy(&bytes).contains("x-hakken-keepalive: 100\r\n"));
    for _ in 0..2 {
        bytes.clear();
        read_until(&mut kept, &mut bytes, ": keep-alive\n\n").await;
    }
    // And a change still goes out between them.
    publish(&addr, "pay", "b:1", &[]).await;
    for socket in [&mut direct, &mut kept] {
        bytes.clear();
        read_until(socket, &mut bytes, r#""host":"b:1""#).await;
    }
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_ends_cleanly_at_shutdown_on_either_path() {
    let c = start(CoordinatorConfig {
        // Nothing but the end is written after the first event.
        stream_keepalive: Duration::from_secs(3_600),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let mut direct = stream_socket(&addr).await;
    let mut bytes = Vec::new();
    read_until(&mut direct, &mut bytes, "\n\n\r\n").await;
    let mut kept = stream_after_a_request(&addr, &mut Vec::new()).await;
    tokio::time::timeout(PATIENCE, c.shutdown())
        .await
        .expect("shutdown is not held up by a stream")
        .unwrap();
    // The last chunk, then the connection closes: a clean end, not a cut.
    assert_eq!(read_to_end(&mut direct).await, "0\r\n\r\n", "direct");
    assert_eq!(read_to_end(&mut kept).await, "0\r\n\r\n", "hyper");
}

#[tokio::test]
async fn a_stream_reader_that_sends_more_is_cut_and_one_that_half_closes_gets_the_first_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    // Half-closed after the request: it still reads, and gets the first event.
    let mut quiet = stream_socket(&addr).await;
    quiet.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    read_until(&mut quiet, &mut bytes, r#""host":"a:1""#).await;
    // More bytes after a stream's head: nothing is expected, the stream ends and
    // the connection closes (without it, a client could make the coordinator
    // read whatever it sends, for as long as it likes).
    let mut chatty = stream_socket(&addr).await;
    let mut bytes = Vec::new();
    read_until(&mut chatty, &mut bytes, r#""host":"a:1""#).await;
    chatty.write_all(&[b'x'; 4096]).await.unwrap();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut sink = [0u8; 4096];
        while matches!(chatty.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    closed.await.expect("the coordinator closes the connection");
    common::eventually("both streams ended", || async {
        (common::metric(&addr, "hakken_streams").await == 0.0).then_some(())
    })
    .await;
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_reader_may_send_an_empty_line_after_its_request() {
    use tokio::io::AsyncWriteExt;
    let c = start(config(60_000)).await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    // Some clients end a request with one more CRLF; HTTP asks servers to bear it.
    let mut socket = stream_socket(&addr).await;
    let mut bytes = Vec::new();
    read_until(&mut socket, &mut bytes, r#""host":"a:1""#).await;
    socket.write_all(b"\r\n").await.unwrap();
    publish(&addr, "pay", "b:1", &[]).await;
    read_until(&mut socket, &mut bytes, r#""host":"b:1""#).await;
    assert_eq!(common::metric(&addr, "hakken_streams").await, 1.0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_does_not_wait_for_a_stream_reader_that_is_behind() {
    let c = start(CoordinatorConfig {
        // Either would hold the shutdown past the test's patience, were it to
        // wait for the reader.
        stall_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(600),
        ..config(60_000)
    })
    .await;
    let addr = c.address();
    publish(&addr, "pay", "a:1", &[]).await;
    let stalled = Reader::open(&addr, "/v1/listings/pay", None).await;
    let mut reading = reading_pay(&addr).await;
    large_changes(&addr, &mut reading).await;
    tokio::time::timeout(PATIENCE, c.shutdown())
        .await
        .expect("shutdown is not held up by a reader behind")
        .unwrap();
    assert_eq!(reading.next().await, None, "the reading stream ended");
    drop(stalled);
}

#[tokio::test]
async fn a_connection_that_has_sent_nothing_does_not_hold_up_a_shutdown() {
    let c = start(CoordinatorConfig {
        // Either would hold the shutdown past the test's patience.
        header_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(600),
        ..config(60_000)
    })
    .await;
    let _idle = tokio::net::TcpStream::connect(c.address()).await.unwrap();
    // Accepted: the coordinator answers on another connection after it.
    common::get(&c.address(), "/ready").await;
    tokio::time::timeout(PATIENCE, c.shutdown())
        .await
        .expect("shutdown is not held up by an idle connection")
        .unwrap();
}
