//! The DNS interface (issue #17), asked with `dig` (Debian `dnsutils`, installed by
//! `scripts/test`) and with hand-made messages (hickory-proto) where `dig` cannot
//! show what is checked:
//!
//! - `A`, `AAAA` and `SRV` for `SERVICE.service.hakken`, `SRV` for
//!   `_SERVICE._tcp.service.hakken`, a field filter in the name, the synthesised
//!   `addr` names of IP hosts with their addresses in the additional section;
//! - `NXDOMAIN` with the `SOA`, `REFUSED` outside the domain, `FORMERR` for a
//!   malformed question, and random bytes that never hurt the coordinator;
//! - a name asked in mixed case answered with the same spelling;
//! - truncation over UDP (with and without EDNS) and the whole answer over TCP;
//! - a publish showing in the next answer, and a withdrawal leaving it;
//! - the metrics count queries by type and code;
//! - over TCP: the cap on connections (one that closes or idles out frees its
//!   place), what is not a question, and a shutdown closing every connection.

mod common;

use common::{eventually, PATIENCE};
use hakken::coordinator::{Coordinator, CoordinatorConfig};
use hakken::listing::Limits;
use hakken::remote::Remote;
use hakken::Listing;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::Command;

async fn dns_coordinator() -> (Coordinator, SocketAddr) {
    dns_coordinator_with(common::config(60_000)).await
}

/// A coordinator serving DNS on a free port, configured by `config` otherwise.
async fn dns_coordinator_with(config: CoordinatorConfig) -> (Coordinator, SocketAddr) {
    let coordinator = common::start(CoordinatorConfig {
        dns_port: Some(0),
        ..config
    })
    .await;
    let addr = coordinator.dns_addr().expect("DNS is served");
    (coordinator, addr)
}

async fn publish(coordinator: &Coordinator, listing: serde_json::Value) {
    let listing = Listing::from_value(listing, &Limits::default()).expect("a valid listing");
    Remote::new(Duration::from_secs(5))
        .publish(coordinator.host(), &listing, false)
        .await
        .expect("published");
}

/// `dig @ADDR -p PORT ARGS +short` (or other display options given in `args`).
async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let port = addr.port().to_string();
    let ip = format!("@{}", addr.ip());
    let out = tokio::time::timeout(
        PATIENCE,
        Command::new("dig")
            .args([ip.as_str(), "-p", &port, "+tries=3", "+time=2"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("dig returns")
    .expect("dig runs (Debian dnsutils; scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sorted lines of `dig +short`.
async fn short(addr: SocketAddr, name: &str, kind: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(addr, &[name, kind, "+short"])
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The status dig reports (`NOERROR`, `NXDOMAIN`, ...).
async fn status(addr: SocketAddr, name: &str, kind: &str) -> (String, String) {
    let out = dig(addr, &[name, kind]).await;
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("none")
        .to_owned();
    (status, out)
}

#[tokio::test]
async fn records_for_every_name_form() {
    let (coordinator, addr) = dns_coordinator().await;
    publish(&coordinator, serde_json::json!({"service": "billing", "host": "10.0.0.7:8080", "zone": "east", "weight": 5})).await;
    publish(
        &coordinator,
        serde_json::json!({"service": "billing", "host": "[2001:db8::1]:8081", "zone": "west"}),
    )
    .await;
    publish(
        &coordinator,
        serde_json::json!({"service": "billing", "host": "api.example.com:9000", "zone": "East"}),
    )
    .await;

    assert_eq!(
        short(addr, "billing.service.hakken", "A").await,
        ["10.0.0.7"]
    );
    assert_eq!(
        short(addr, "billing.service.hakken", "AAAA").await,
        ["2001:db8::1"]
    );
    let srv = [
        "1 1 8081 2001-db8--1.addr.hakken.",
        "1 1 9000 api.example.com.",
        "1 5 8080 10-0-0-7.addr.hakken.",
    ];
    assert_eq!(short(addr, "billing.service.hakken", "SRV").await, srv);
    assert_eq!(
        short(addr, "_billing._tcp.service.hakken", "SRV").await,
        srv
    );
    // The synthesised targets resolve, and come in the additional section.
    assert_eq!(short(addr, "10-0-0-7.addr.hakken", "A").await, ["10.0.0.7"]);
    assert_eq!(
        short(addr, "2001-db8--1.addr.hakken", "AAAA").await,
        ["2001:db8::1"]
    );
    let full = dig(
        addr,
        &["billing.service.hakken", "SRV", "+noall", "+additional"],
    )
    .await;
    assert!(
        full.contains("10-0-0-7.addr.hakken.") && full.contains("10.0.0.7"),
        "{full}"
    );
    // A field filter: values compare case-insensitively.
    assert_eq!(
        short(addr, "east.zone.billing.service.hakken", "SRV").await,
        [
            "1 1 9000 api.example.com.",
            "1 5 8080 10-0-0-7.addr.hakken."
        ]
    );
    assert_eq!(
        short(addr, "_billing._tcp.west.zone.service.hakken", "SRV").await,
        ["1 1 8081 2001-db8--1.addr.hakken."]
    );

    // Codes: unknown service, no match for a filter, outside the domain, no data.
    let (code, out) = status(addr, "nothing.service.hakken", "A").await;
    assert_eq!(code, "NXDOMAIN", "{out}");
    assert!(
        out.contains("SOA") && out.contains("AUTHORITY SECTION"),
        "{out}"
    );
    let (code, _) = status(addr, "north.zone.billing.service.hakken", "SRV").await;
    assert_eq!(code, "NXDOMAIN");
    let (code, out) = status(addr, "example.com", "A").await;
    assert_eq!(code, "REFUSED", "{out}");
    let (code, out) = status(addr, "_billing._tcp.service.hakken", "A").await;
    assert_eq!(code, "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");

    // The dashboard shows each service's DNS name.
    let (_, state) = common::get(coordinator.host(), "/ui/api/state").await;
    let billing = state["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "billing"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(billing["dns"], "billing.service.hakken.", "{state}");

    // Counted by type and code.
    let metrics = common::scrape(coordinator.host()).await;
    for line in [
        r#"hakken_dns_queries_total{type="SRV",code="NOERROR"}"#,
        r#"hakken_dns_queries_total{type="A",code="NXDOMAIN"}"#,
        r#"hakken_dns_queries_total{type="A",code="REFUSED"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_publish_shows_in_the_next_answer_and_a_withdrawal_leaves_it() {
    let (coordinator, addr) = dns_coordinator().await;
    let (code, _) = status(addr, "pay.service.hakken", "A").await;
    assert_eq!(code, "NXDOMAIN");
    publish(
        &coordinator,
        serde_json::json!({"service": "pay", "host": "10.1.1.1:80"}),
    )
    .await;
    assert_eq!(short(addr, "pay.service.hakken", "A").await, ["10.1.1.1"]);
    publish(
        &coordinator,
        serde_json::json!({"service": "pay", "host": "10.1.1.2:80"}),
    )
    .await;
    assert_eq!(
        short(addr, "pay.service.hakken", "A").await,
        ["10.1.1.1", "10.1.1.2"]
    );
    let gone = Listing::new("pay", "10.1.1.1:80").unwrap();
    assert!(Remote::new(Duration::from_secs(5))
        .unpublish(coordinator.host(), &gone)
        .await
        .unwrap());
    assert_eq!(short(addr, "pay.service.hakken", "A").await, ["10.1.1.2"]);
}

/// Sends `message` over UDP and reads the answer.
async fn ask_udp(addr: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(addr).await.unwrap();
    let mut buffer = vec![0u8; 65_535];
    for _ in 0..5 {
        socket.send(bytes).await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer)).await
        {
            return Some(Message::from_vec(&buffer[..n]).expect("a DNS message"));
        }
    }
    None
}

fn question(name: &str, kind: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

#[tokio::test]
async fn a_big_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let (coordinator, addr) = dns_coordinator().await;
    for i in 0..200 {
        publish(
            &coordinator,
            serde_json::json!({"service": "big", "host": format!("10.2.{}.{}:80", i / 250, i % 250)}),
        )
        .await;
    }
    // No EDNS: 512 bytes at most, the TC bit set.
    let plain = ask_udp(addr, &question("big.service.hakken.", RecordType::A, None))
        .await
        .expect("an answer");
    assert!(plain.metadata.truncation, "TC set without EDNS");
    assert!(plain.to_vec().unwrap().len() <= 512);
    // EDNS 1232: more fits, still truncated.
    let edns = ask_udp(
        addr,
        &question("big.service.hakken.", RecordType::A, Some(1232)),
    )
    .await
    .expect("an answer");
    assert!(edns.metadata.truncation);
    assert!(edns.answers.len() > plain.answers.len());
    assert!(edns.to_vec().unwrap().len() <= 1232);
    // Over TCP, whole (dig retries over TCP by itself when TC is set, too).
    let tcp = short(addr, "big.service.hakken", "A").await;
    assert_eq!(tcp.len(), 200);
    let tcp = dig(addr, &["big.service.hakken", "A", "+tcp", "+short"]).await;
    assert_eq!(tcp.lines().count(), 200);
}

#[tokio::test]
async fn answers_keep_the_spelling_of_the_question() {
    // Resolvers that randomise the case of a question (DNS 0x20) check that the
    // answer spells it the same way: a name is matched case-insensitively and
    // answered as asked.
    let (coordinator, addr) = dns_coordinator().await;
    publish_pay(&coordinator).await;
    for (asked, kind) in [
        ("PaY.SeRvIcE.HaKkEn.", RecordType::A),
        ("_pAy._TCP.service.HAKKEN.", RecordType::SRV),
    ] {
        let answer = ask_udp(addr, &question(asked, kind, None))
            .await
            .expect("an answer");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.queries[0].name().to_string(), asked);
        assert!(!answer.answers.is_empty(), "{answer:?}");
        for record in &answer.answers {
            assert_eq!(record.name.to_string(), asked, "{record:?}");
        }
    }
}

#[tokio::test]
async fn answers_come_in_random_order() {
    let (coordinator, addr) = dns_coordinator().await;
    for i in 0..8 {
        publish(
            &coordinator,
            serde_json::json!({"service": "spread", "host": format!("10.3.0.{i}:80")}),
        )
        .await;
    }
    let first = dig(addr, &["spread.service.hakken", "A", "+short"]).await;
    eventually("another order", || async {
        (dig(addr, &["spread.service.hakken", "A", "+short"]).await != first).then_some(())
    })
    .await;
}

#[tokio::test]
async fn malformed_packets_are_refused_or_dropped_and_never_hurt_the_coordinator() {
    let (coordinator, addr) = dns_coordinator().await;
    let valid = publish_pay(&coordinator).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(addr).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(17);
    for round in 0..2_000 {
        let packet: Vec<u8> = match round % 3 {
            // Noise of any length.
            0 => (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect(),
            // A valid question with some bytes flipped.
            1 => {
                let mut p = valid.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..p.len());
                    p[at] = rng.u8(..);
                }
                p
            }
            // A valid question cut short.
            _ => valid[..rng.usize(..valid.len())].to_vec(),
        };
        socket.send(&packet).await.unwrap();
    }
    // A header with one question and no question section: FORMERR.
    let mut broken = valid[..12].to_vec();
    broken[5] = 1;
    let answer = ask_udp(addr, &broken).await.expect("FORMERR is answered");
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    // Still answering, over DNS and HTTP.
    let answer = ask_udp(addr, &valid)
        .await
        .expect("an answer after the noise");
    assert_eq!(answer.answers.len(), 1);
    let (status, _) = common::get(coordinator.host(), "/status").await;
    assert_eq!(status, 200);
}

/// Writes `message` on a DNS-over-TCP connection and reads one answer.
async fn ask_tcp(stream: &mut TcpStream, message: &[u8]) -> Option<Message> {
    stream.write_all(&framed(message)).await.ok()?;
    read_tcp(stream).await
}

/// One answer from a DNS-over-TCP connection: none if it closed, or if nothing
/// came within [`PATIENCE`].
async fn read_tcp(stream: &mut TcpStream) -> Option<Message> {
    let mut length = [0u8; 2];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut length))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(length))];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(Message::from_vec(&body).expect("a DNS message"))
}

/// The answer to `message` on a new connection, once one is answered (while the
/// cap is reached, each is closed unanswered).
async fn answered_on_a_new_connection(addr: SocketAddr, message: &[u8]) -> Message {
    eventually("a new TCP connection answered", || async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        ask_tcp(&mut stream, message).await
    })
    .await
}

/// Whether the other end closed `stream` (end of file, or a reset) within
/// [`PATIENCE`].
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A coordinator serving DNS with at most `max` TCP connections, which never
/// idle out (any closing is the cap's), and one listing for `pay`; and a
/// question for it.
async fn capped_dns_coordinator(max: usize) -> (Coordinator, SocketAddr, Vec<u8>) {
    let (coordinator, addr) = dns_coordinator_with(CoordinatorConfig {
        dns_max_connections: max,
        header_timeout: Duration::from_secs(3600),
        ..common::config(60_000)
    })
    .await;
    let valid = publish_pay(&coordinator).await;
    (coordinator, addr, valid)
}

/// Publishes one listing of `pay` (an IP host, so it has an A record): the
/// question for it.
async fn publish_pay(coordinator: &Coordinator) -> Vec<u8> {
    publish(
        coordinator,
        serde_json::json!({"service": "pay", "host": "10.4.0.1:80"}),
    )
    .await;
    question("pay.service.hakken.", RecordType::A, None)
}

/// `hakken_dns_tcp_connections_{what}_total`: `evicted` or `refused`.
async fn tcp_connections(coordinator: &Coordinator, what: &str) -> f64 {
    let series = format!("hakken_dns_tcp_connections_{what}_total");
    common::metric(coordinator.host(), &series).await
}

/// `message` framed for TCP: its length in two bytes, then itself.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut framed = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

#[tokio::test]
async fn past_the_tcp_cap_the_connection_idle_longest_makes_room() {
    let (coordinator, addr, valid) = capped_dns_coordinator(2).await;
    // Two connections, each answered and now idle: they hold both places.
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        let answer = ask_tcp(stream, &valid).await.expect("answered");
        assert_eq!(answer.answers.len(), 1);
    }
    // A third is answered: one of the idle two gave up its place. (Which one is
    // the longest idle is `dns_tcp.rs`'s unit test: here, the second could be
    // idle first if the first's task stalled right after its answer.)
    let answer = answered_on_a_new_connection(addr, &valid).await;
    assert_eq!(answer.answers.len(), 1);
    // One of the two is closed: the first of them to end.
    let (mut byte_1, mut byte_2) = ([0u8; 1], [0u8; 1]);
    let first_closed = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            read = first.read(&mut byte_1) => {
                assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
                true
            }
            read = second.read(&mut byte_2) => {
                assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
                false
            }
        }
    })
    .await
    .expect("an idle connection closed");
    let mut kept = if first_closed { second } else { first };
    assert!(
        ask_tcp(&mut kept, &valid).await.is_some(),
        "the other still answers"
    );
    assert_eq!(tcp_connections(&coordinator, "evicted").await, 1.0);
}

#[tokio::test]
async fn a_burst_of_silent_connections_past_the_tcp_cap_shuts_no_one_out() {
    let (coordinator, addr, valid) = capped_dns_coordinator(2).await;
    // Twenty connections that never send, made at once (blocking connects: the
    // coordinator, on this runtime, takes them all in one go): each new one
    // takes the place of one before it, even one accepted but not yet served.
    let silent: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // The next is answered at once.
    let mut asking = TcpStream::connect(addr).await.unwrap();
    let answer = ask_tcp(&mut asking, &valid).await.expect("answered");
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(tcp_connections(&coordinator, "evicted").await, 19.0);
    assert_eq!(tcp_connections(&coordinator, "refused").await, 0.0);
    drop(silent);
}

#[tokio::test]
async fn past_the_tcp_cap_with_no_connection_idle_a_new_one_is_closed() {
    let (coordinator, addr, valid) = capped_dns_coordinator(1).await;
    // One connection holds the only place, in the middle of its second message:
    // both are sent before the first answer is read, so when that answer comes
    // the second message has already begun to arrive.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let second = framed(&valid);
    let (begun, rest) = second.split_at(second.len() / 2);
    let mut sent = framed(&valid);
    sent.extend_from_slice(begun);
    busy.write_all(&sent).await.unwrap();
    assert!(read_tcp(&mut busy).await.is_some(), "the first answered");
    // A new connection is closed as it is accepted, unanswered.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert!(ask_tcp(&mut refused, &valid).await.is_none());
    assert_eq!(tcp_connections(&coordinator, "refused").await, 1.0);
    // UDP is not capped, and the busy connection goes on.
    assert!(ask_udp(addr, &valid).await.is_some());
    busy.write_all(rest).await.unwrap();
    assert!(read_tcp(&mut busy).await.is_some(), "the second answered");
    // Idle now, it makes room for the next.
    let answer = answered_on_a_new_connection(addr, &valid).await;
    assert_eq!(answer.answers.len(), 1);
    assert!(closed(&mut busy).await, "the idle one closed");
    assert_eq!(tcp_connections(&coordinator, "evicted").await, 1.0);
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_and_frees_its_place() {
    let (_coordinator, addr) = dns_coordinator_with(CoordinatorConfig {
        dns_max_connections: 1,
        header_timeout: Duration::from_millis(300),
        ..common::config(60_000)
    })
    .await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut idle).await, "an idle connection is closed");
    // Its place is free again: a new connection is answered (NXDOMAIN: no
    // listing).
    let asked = question("pay.service.hakken.", RecordType::A, None);
    let answer = answered_on_a_new_connection(addr, &asked).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn over_tcp_what_is_not_a_question_is_dropped_or_refused_and_the_connection_goes_on() {
    let (coordinator, addr) = dns_coordinator().await;
    let valid = publish_pay(&coordinator).await;
    let id = Message::from_vec(&valid).unwrap().metadata.id;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Empty, too short for a header, then an answer (QR set, an id of its
    // own): none gets an answer, so the next one read is the valid question's.
    let mut response = valid.clone();
    response[2] |= 0x80;
    response[0] = !response[0];
    for ignored in [&[][..], &valid[..5], &response[..]] {
        stream.write_all(&framed(ignored)).await.unwrap();
    }
    let answer = ask_tcp(&mut stream, &valid).await.expect("answered");
    assert_eq!(answer.metadata.id, id);
    assert_eq!(answer.answers.len(), 1);
    // The header alone, which counts a question it does not carry: FORMERR.
    let broken = valid[..12].to_vec();
    let answer = ask_tcp(&mut stream, &broken)
        .await
        .expect("FORMERR is answered");
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    // Still answering on the same connection.
    let answer = ask_tcp(&mut stream, &valid).await.expect("answered");
    assert_eq!(answer.answers.len(), 1);
}

#[tokio::test]
async fn a_shutdown_closes_open_tcp_connections() {
    // The connection never idles out here: its closing is the shutdown's.
    let (coordinator, addr) = dns_coordinator_with(CoordinatorConfig {
        header_timeout: Duration::from_secs(3600),
        ..common::config(60_000)
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let asked = question("pay.service.hakken.", RecordType::A, None);
    assert!(ask_tcp(&mut stream, &asked).await.is_some());
    coordinator.shutdown().await.expect("a clean shutdown");
    assert!(
        closed(&mut stream).await,
        "the connection is closed at shutdown"
    );
}
