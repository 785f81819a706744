//! The DNS interface: any program finds a service by asking DNS, answered straight
//! from this coordinator's registry (a publish or a withdrawal shows in the very
//! next answer).
//!
//! [`answer`] is the pure part: a question (name and type) and the registry in,
//! the response code and records out. [`serve`] is the I/O: hickory-server
//! serves UDP on the DNS port (EDNS, truncation of answers too big for UDP with
//! the TC bit; malformed packets are dropped or answered `FORMERR` there), and
//! `dns_tcp.rs` serves TCP with a cap on connections. Both call [`Handler`],
//! which reads the registry under its read lock, never across an `.await`.
//!
//! Names, with the domain `D` (default `hakken`):
//!
//! | name | records |
//! | --- | --- |
//! | `SERVICE.service.D` | `A`/`AAAA` of every listing whose host is an IP literal; `SRV` of every listing |
//! | `_SERVICE._tcp.service.D` | `SRV` (RFC 2782) |
//! | `VALUE.FIELD.SERVICE.service.D`, `_SERVICE._tcp.VALUE.FIELD.service.D` | the same, only listings whose field `FIELD` is `VALUE` |
//! | `A-B-C-D.addr.D`, `X-X--X.addr.D` | the address of an SRV target made for an IP host (`10-0-0-7`, IPv6 with `:` as `-`) |
//! | `D` | `SOA` |
//!
//! A service is reachable when its name is a lowercase DNS label: 1–63 of
//! `a-z 0-9 - _`. Field names and values compare case-insensitively (DNS folds
//! case); a value is the field's string, or its JSON text for a number or a bool.
//! A name is matched case-insensitively and answered as it was asked.
//! `SRV` has priority 1, the listing's numeric `weight` field as its weight
//! (else 1), its port, and as target the host's name or, for an IP host, its
//! `addr` name with the address in the additional section. Answers come in
//! random order, with the configured TTL (default 0). An unknown service (or one
//! without matching listings) is `NXDOMAIN` with the `SOA` in the authority
//! section; a known name without records of the type asked is an empty `NOERROR`;
//! a name outside the domain is `REFUSED` (no recursion: the server cannot be used
//! to amplify).

use super::Shared;
use crate::listing::{Limits, Listing};
use bytes::Bytes;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The domain and TTL answers are made with.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// The domain, fully qualified (`hakken.`).
    pub domain: Name,
    /// `service.D.`
    service: Name,
    /// `addr.D.`
    addr: Name,
    /// TTL of every record.
    pub ttl: u32,
}

impl Zone {
    /// A zone for `domain` (`hakken`, or `hakken.`); `None` if it is not a name.
    pub fn new(domain: &str, ttl: u32) -> Option<Zone> {
        let mut domain = Name::from_ascii(domain.trim_end_matches('.')).ok()?;
        domain.set_fqdn(true);
        if domain.is_root() {
            return None;
        }
        let service = Name::from_ascii("service")
            .ok()?
            .append_domain(&domain)
            .ok()?;
        let addr = Name::from_ascii("addr").ok()?.append_domain(&domain).ok()?;
        Some(Zone {
            domain,
            service,
            addr,
            ttl,
        })
    }

    /// The name a service is found under, if it has one.
    pub fn service_name(&self, service: &str) -> Option<String> {
        is_dns_label(service).then(|| format!("{service}.{}", self.service))
    }

    fn soa(&self) -> Record {
        let soa = SOA::new(
            self.domain.clone(),
            Name::from_ascii("hostmaster")
                .ok()
                .and_then(|n| n.append_domain(&self.domain).ok())
                .unwrap_or_else(|| self.domain.clone()),
            1,
            3600,
            600,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }
}

/// Whether `name` can be a service's DNS label.
pub fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a question gets.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA goes in the authority section (`NXDOMAIN`, empty answers).
    pub soa: Option<Record>,
}

/// What a name under `service.D` asks for.
#[derive(Debug, PartialEq, Eq)]
struct Lookup<'n> {
    service: &'n str,
    /// Only SRV (the RFC 2782 form).
    srv_only: bool,
    /// Only listings whose field (lowercase) has this value (lowercase).
    filter: Option<(&'n str, &'n str)>,
}

/// Parses the labels before `service.D`, leftmost first.
fn lookup<'n>(labels: &[&'n str]) -> Option<Lookup<'n>> {
    let rfc2782 = |service: &'n str, proto: &str| {
        (service.len() > 1 && service.starts_with('_') && proto == "_tcp").then(|| &service[1..])
    };
    match labels {
        [service] => Some(Lookup {
            service,
            srv_only: false,
            filter: None,
        }),
        [service, proto] => rfc2782(service, proto).map(|service| Lookup {
            service,
            srv_only: true,
            filter: None,
        }),
        [value, field, service] => Some(Lookup {
            service,
            srv_only: false,
            filter: Some((field, value)),
        }),
        [service, proto, value, field] => rfc2782(service, proto).map(|service| Lookup {
            service,
            srv_only: true,
            filter: Some((field, value)),
        }),
        _ => None,
    }
}

/// A field's value as a DNS label would carry it.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_ascii_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The labels of `name` relative to `zone` (leftmost first), lowercased; `None`
/// when it is not under it.
fn relative(name: &Name, zone: &Name) -> Option<Vec<String>> {
    if !zone.zone_of(name) {
        return None;
    }
    let keep = usize::from(name.num_labels()) - usize::from(zone.num_labels());
    Some(
        name.iter()
            .take(keep)
            .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
            .collect(),
    )
}

/// The answer to `name`/`kind` (see the module); `bodies` gives the stored
/// listings of a service.
pub(crate) fn answer(
    zone: &Zone,
    bodies: impl FnOnce(&str) -> Vec<Bytes>,
    name: &Name,
    kind: RecordType,
) -> Answer {
    let nodata = || Answer {
        soa: Some(zone.soa()),
        ..Answer::default()
    };
    let nxdomain = || Answer {
        code: ResponseCode::NXDomain,
        soa: Some(zone.soa()),
        ..Answer::default()
    };
    let Some(labels) = relative(name, &zone.domain) else {
        return Answer {
            code: ResponseCode::Refused,
            ..Answer::default()
        };
    };
    if labels.is_empty() {
        return match kind {
            RecordType::SOA | RecordType::ANY => Answer {
                answers: vec![zone.soa()],
                ..Answer::default()
            },
            _ => nodata(),
        };
    }
    if let Some(address) = relative(name, &zone.addr) {
        return match address.as_slice() {
            [label] => match (parse_addr_label(label), kind) {
                (Some(ip), RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                    let record = address_record(name.clone(), ip, zone.ttl);
                    if kind == RecordType::ANY || record.record_type() == kind {
                        Answer {
                            answers: vec![record],
                            ..Answer::default()
                        }
                    } else {
                        nodata()
                    }
                }
                (Some(_), _) => nodata(),
                (None, _) => nxdomain(),
            },
            _ => nxdomain(),
        };
    }
    let Some(labels) = relative(name, &zone.service) else {
        return nxdomain();
    };
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let Some(lookup) = lookup(&labels) else {
        return nxdomain();
    };
    if !is_dns_label(lookup.service) {
        return nxdomain();
    }
    let mut matched = 0usize;
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    let listings = bodies(lookup.service)
        .into_iter()
        .filter_map(|body| Listing::from_json(&body, &Limits::RECEIVED).ok());
    for listing in listings {
        if let Some((field, value)) = lookup.filter {
            let hit = listing
                .fields()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(field))
                .and_then(|(_, v)| field_text(v))
                .is_some_and(|text| text == value);
            if !hit {
                continue;
            }
        }
        matched += 1;
        let Some((host, port)) = split_host(listing.host()) else {
            continue;
        };
        let ip = host_ip(host);
        let wants_srv = matches!(kind, RecordType::SRV | RecordType::ANY);
        let wants_address = !lookup.srv_only
            && matches!(
                (kind, ip),
                (RecordType::A, Some(IpAddr::V4(_)))
                    | (RecordType::AAAA, Some(IpAddr::V6(_)))
                    | (RecordType::ANY, Some(_))
            );
        if wants_address {
            if let Some(ip) = ip {
                answers.push(address_record(name.clone(), ip, zone.ttl));
            }
        }
        if wants_srv {
            let target = match ip {
                Some(ip) => {
                    let target = addr_name(zone, ip);
                    additionals.push(address_record(target.clone(), ip, zone.ttl));
                    Some(target)
                }
                None => Name::from_ascii(host).ok().map(|mut n| {
                    n.set_fqdn(true);
                    n
                }),
            };
            if let Some(target) = target {
                let weight = listing
                    .get("weight")
                    .and_then(Value::as_f64)
                    .map(|w| w.clamp(0.0, f64::from(u16::MAX)) as u16)
                    .unwrap_or(1);
                let srv = SRV::new(1, weight, port, target);
                answers.push(Record::from_rdata(name.clone(), zone.ttl, RData::SRV(srv)));
            }
        }
    }
    if matched == 0 {
        return nxdomain();
    }
    fastrand::shuffle(&mut answers);
    fastrand::shuffle(&mut additionals);
    if answers.is_empty() {
        return nodata();
    }
    Answer {
        answers,
        additionals,
        ..Answer::default()
    }
}

/// `name:port` or `[v6]:port` split into host and port.
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = host.rsplit_once(':')?;
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    Some((name, port.parse().ok()?))
}

fn host_ip(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

fn address_record(name: Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

/// `10-0-0-7.addr.D.` for 10.0.0.7, `2001-db8--1.addr.D.` for 2001:db8::1.
fn addr_name(zone: &Zone, ip: IpAddr) -> Name {
    let label = match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    };
    Name::from_ascii(label)
        .ok()
        .and_then(|n| n.append_domain(&zone.addr).ok())
        .unwrap_or_else(|| zone.addr.clone())
}

fn parse_addr_label(label: &str) -> Option<IpAddr> {
    if label.contains("--") || label.matches('-').count() != 3 {
        let v6: Ipv6Addr = label.replace('-', ":").parse().ok()?;
        return Some(IpAddr::V6(v6));
    }
    let v4: Ipv4Addr = label.replace('-', ".").parse().ok()?;
    Some(IpAddr::V4(v4))
}

/// Answers DNS questions from the coordinator's registry.
#[derive(Clone)]
pub(crate) struct Handler {
    pub shared: Arc<Shared>,
    pub zone: Zone,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let info = request.request_info();
        let outcome = match &info {
            Ok(info) if request.metadata.op_code == OpCode::Query => {
                // As asked, not lowercased: answers carry the question's own
                // spelling (resolvers that randomise case compare it).
                let name = info.query.original().name().clone();
                let kind = info.query.query_type();
                let bodies = |service: &str| {
                    self.shared
                        .read_registry(|registry| registry.bodies(service))
                };
                let answer = answer(&self.zone, bodies, &name, kind);
                self.shared.metrics.dns_query(kind, answer.code);
                Ok(answer)
            }
            Ok(_) => Err(ResponseCode::NotImp),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let sent = match outcome {
            Ok(answer) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = answer.code != ResponseCode::Refused;
                metadata.recursion_available = false;
                metadata.response_code = answer.code;
                let response = builder.build(
                    metadata,
                    answer.answers.iter(),
                    std::iter::empty(),
                    answer.soa.iter(),
                    answer.additionals.iter(),
                );
                handle.send_response(response).await
            }
            Err(code) => {
                self.shared.metrics.dns_query(RecordType::Unknown(0), code);
                let response = builder.error_msg(&request.metadata, code);
                handle.send_response(response).await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "DNS answer not sent");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Answers one DNS packet from `listings` as a coordinator with the default
/// domain would (the name and record logic, not the server's framing): `None`
/// when the packet is not a question. For the fuzz target (`fuzz/`) and tests.
pub fn answer_packet(packet: &[u8], listings: &[Listing]) -> Option<Vec<u8>> {
    use hickory_server::proto::op::{Message, MessageType};
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    let zone = Zone::new("hakken", 0)?;
    let bodies = |service: &str| -> Vec<Bytes> {
        listings
            .iter()
            .filter(|l| l.service() == service)
            .filter_map(|l| serde_json::to_vec(l).ok().map(Bytes::from))
            .collect()
    };
    let outcome = answer(&zone, bodies, query.name(), query.query_type());
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.response_code = outcome.code;
    response.add_query(query);
    response.add_answers(outcome.answers);
    response.add_authorities(outcome.soa);
    response.add_additionals(outcome.additionals);
    response.to_vec().ok()
}

/// Binds UDP and TCP on `port` of `ip` (port 0: one free for both).
pub(crate) fn bind(
    ip: IpAddr,
    port: u16,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr)> {
    let mut last = None;
    for _ in 0..if port == 0 { 16 } else { 1 } {
        let udp = std::net::UdpSocket::bind((ip, port))?;
        let addr = udp.local_addr()?;
        match std::net::TcpListener::bind(addr) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((
                    tokio::net::UdpSocket::from_std(udp)?,
                    tokio::net::TcpListener::from_std(tcp)?,
                    addr,
                ));
            }
            // The UDP port's TCP twin is taken: try another free port.
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for UDP and TCP")))
}

/// Serves DNS on `udp` (hickory-server) and `tcp` (`dns_tcp.rs`, at most
/// `max_tcp` connections) until `shutdown`. A TCP connection idle for `idle` is
/// closed.
pub(crate) async fn serve(
    handler: Handler,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    idle: Duration,
    max_tcp: usize,
    shutdown: CancellationToken,
) {
    let metrics = &handler.shared.metrics;
    let counters = super::dns_tcp::Counters {
        refused: metrics.dns_tcp_refused.clone(),
        evicted: metrics.dns_tcp_evicted.clone(),
    };
    let tcp = super::dns_tcp::serve(
        Arc::new(handler.clone()),
        counters,
        tcp,
        idle,
        max_tcp,
        shutdown.clone(),
    );
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    let udp = async {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Err(error) = server.shutdown_gracefully().await {
                    tracing::debug!(%error, "DNS server shut down with an error");
                }
            }
            result = server.block_until_done() => {
                if let Err(error) = result {
                    tracing::error!(%error, "DNS server stopped");
                }
            }
        }
    };
    tokio::join!(udp, tcp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, MessageType, Query};
    use proptest::prelude::*;

    fn listings() -> Vec<Listing> {
        [
            r#"{"service":"billing","host":"10.0.0.7:8080","zone":"east","weight":5}"#,
            r#"{"service":"billing","host":"[2001:db8::1]:80","zone":"west"}"#,
            r#"{"service":"billing","host":"api.example.com:9000","weight":70000}"#,
        ]
        .iter()
        .map(|json| Listing::from_json(json.as_bytes(), &Limits::default()).unwrap())
        .collect()
    }

    fn ask(name: &str, kind: RecordType) -> Message {
        let mut question = Message::new(7, MessageType::Query, OpCode::Query);
        question.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        let answer = answer_packet(&question.to_vec().unwrap(), &listings()).unwrap();
        Message::from_vec(&answer).unwrap()
    }

    #[test]
    fn answers_from_listings() {
        let srv = ask("billing.service.hakken.", RecordType::SRV);
        assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
        assert_eq!(srv.answers.len(), 3);
        assert_eq!(srv.additionals.len(), 2, "the addresses of the IP hosts");
        let weights: Vec<u16> = srv
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.weight),
                _ => None,
            })
            .collect();
        assert!(weights.contains(&5) && weights.contains(&u16::MAX) && weights.contains(&1));
        let a = ask("east.zone.billing.service.hakken.", RecordType::A);
        assert_eq!(a.answers.len(), 1);
        let none = ask("nobody.service.hakken.", RecordType::A);
        assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(none.authorities.len(), 1, "the SOA");
        let outside = ask("example.org.", RecordType::A);
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        let apex = ask("hakken.", RecordType::SOA);
        assert_eq!(apex.answers.len(), 1);
    }

    proptest! {
        #[test]
        fn any_packet_is_answered_or_ignored_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let _ = answer_packet(&bytes, &listings());
        }

        #[test]
        fn any_name_is_answered_without_a_panic(labels in proptest::collection::vec("[a-z0-9_-]{1,12}", 0..6)) {
            let name = format!("{}hakken.", labels.iter().map(|l| format!("{l}.")).collect::<String>());
            if let Ok(name) = Name::from_ascii(&name) {
                for kind in [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::ANY, RecordType::TXT] {
                    let zone = Zone::new("hakken", 0).unwrap();
                    let bodies = |service: &str| -> Vec<Bytes> {
                        listings().iter().filter(|l| l.service() == service)
                            .map(|l| Bytes::from(serde_json::to_vec(l).unwrap())).collect()
                    };
                    let _ = answer(&zone, bodies, &name, kind);
                }
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            lookup(&["billing"]),
            Some(Lookup {
                service: "billing",
                srv_only: false,
                filter: None
            })
        );
        assert_eq!(
            lookup(&["_billing", "_tcp"]),
            Some(Lookup {
                service: "billing",
                srv_only: true,
                filter: None
            })
        );
        assert_eq!(
            lookup(&["east", "zone", "billing"]),
            Some(Lookup {
                service: "billing",
                srv_only: false,
                filter: Some(("zone", "east"))
            })
        );
        assert_eq!(
            lookup(&["_billing", "_tcp", "east", "zone"]),
            Some(Lookup {
                service: "billing",
                srv_only: true,
                filter: Some(("zone", "east"))
            })
        );
        assert_eq!(lookup(&["_billing", "_udp"]), None);
        assert_eq!(lookup(&["a", "b"]), None);
        assert_eq!(lookup(&[]), None);
    }

    #[test]
    fn labels_and_addresses() {
        assert!(is_dns_label("billing-v2_x"));
        assert!(!is_dns_label("Billing"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert_eq!(
            parse_addr_label("10-0-0-7"),
            Some("10.0.0.7".parse().unwrap())
        );
        assert_eq!(
            parse_addr_label("2001-db8--1"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_addr_label("nope"), None);
        let zone = Zone::new("hakken", 0).unwrap();
        assert_eq!(
            addr_name(&zone, "10.0.0.7".parse().unwrap()).to_string(),
            "10-0-0-7.addr.hakken."
        );
        assert_eq!(split_host("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host("a:80"), Some(("a", 80)));
        assert_eq!(split_host("a"), None);
        assert!(Zone::new(".", 0).is_none());
    }
}
