//! Prometheus metrics of one coordinator, served at `GET /metrics`.
//!
//! One `prometheus_client` registry per coordinator (so in-process coordinators and
//! tests stay isolated). Counters are bumped where things happen; the gauges that
//! mirror state (listings, services, coordinators, held queries) are set from that
//! state at scrape time, so they can never drift from it.
//!
//! Labels are bounded: a route is one of [`ROUTES`] or `unmatched`, a method one
//! of [`METHODS`] (`other` for anything a client invents). Every request bumps a
//! counter and observes a histogram: their handles are looked up once per label
//! set and kept, so a request pays an atomic add, not a hash and a lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// The routes we serve, as labels; a request that matched none is `unmatched`.
/// The order is relied on by [`route_index`].
pub(crate) const ROUTES: [&str; 14] = [
    "/status",
    crate::protocol::READY_PATH,
    crate::protocol::SNAPSHOT_PATH,
    "/metrics",
    "/v1/config",
    "/v1/coordinator",
    "/v1/listings",
    "/v1/listings/{service}",
    "/v1/listings/{service}/{host}",
    "/",
    "/ui",
    "/ui/api/state",
    "/ui/api/history",
    "unmatched",
];

/// The methods, as labels.
pub(crate) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
];

/// The statuses whose counter handles are kept; others are looked up each time.
const STATUSES: [u16; 12] = [200, 201, 204, 400, 401, 404, 405, 408, 413, 500, 502, 503];

/// The label index of the route a request's path goes to (`unmatched` for none),
/// read off the path the way the router matches it: a segment is any non-empty
/// text.
pub(crate) fn route_index(path: &str) -> usize {
    let unmatched = ROUTES.len() - 1;
    if let Some(at) = ROUTES[..unmatched].iter().position(|r| *r == path) {
        return at;
    }
    let Some(rest) = path.strip_prefix("/v1/listings/") else {
        return unmatched;
    };
    let mut segments = rest.split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some(service), None, None) if !service.is_empty() => 7,
        (Some(service), Some(host), None) if !service.is_empty() && !host.is_empty() => 8,
        _ => unmatched,
    }
}

/// The label index of a method: any other token a client invents is `other`, so
/// clients cannot make the metrics grow without bound.
pub(crate) fn method_index(method: &axum::http::Method) -> usize {
    use axum::http::Method;
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }
}

/// Labels of a served request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// Labels of request latency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: &'static str,
}

/// Labels of a DNS query: its type and the answer's code, each from a fixed set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DnsLabels {
    pub r#type: &'static str,
    pub code: &'static str,
}

/// Every metric a coordinator exports.
pub(crate) struct Metrics {
    registry: Registry,
    pub listings: Gauge,
    pub services: Gauge,
    pub coordinators: Gauge,
    pub held_queries: Gauge,
    pub streams: Gauge,
    pub heartbeats: Counter,
    pub added: Counter,
    pub replaced: Counter,
    pub expired: Counter,
    pub deleted: Counter,
    pub imported: Counter,
    pub gossip_polls: Counter,
    pub gossip_poll_failures: Counter,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    dns_queries: Family<DnsLabels, Counter>,
    /// DNS-over-TCP connections closed as accepted, past the cap, none waiting.
    pub dns_tcp_refused: Counter,
    /// DNS-over-TCP connections closed while idle, to make room for a new one.
    pub dns_tcp_evicted: Counter,
    /// HTTP connections refused past the cap.
    pub http_refused: Counter,
    /// Handles into `requests`, by method, route and status (see [`STATUSES`]).
    request_handles: Vec<OnceLock<Counter>>,
    /// Handles into `latency`, by route.
    latency_handles: Vec<OnceLock<Histogram>>,
}

impl Metrics {
    /// Counts one DNS question of `kind` answered with `code`.
    pub fn dns_query(
        &self,
        kind: hickory_server::proto::rr::RecordType,
        code: hickory_server::proto::op::ResponseCode,
    ) {
        use hickory_server::proto::op::ResponseCode as C;
        use hickory_server::proto::rr::RecordType as T;
        let r#type = match kind {
            T::A => "A",
            T::AAAA => "AAAA",
            T::SRV => "SRV",
            T::SOA => "SOA",
            T::ANY => "ANY",
            T::Unknown(0) => "none",
            _ => "other",
        };
        let code = match code {
            C::NoError => "NOERROR",
            C::NXDomain => "NXDOMAIN",
            C::Refused => "REFUSED",
            C::FormErr => "FORMERR",
            C::NotImp => "NOTIMP",
            C::ServFail => "SERVFAIL",
            _ => "other",
        };
        self.dns_queries
            .get_or_create(&DnsLabels { r#type, code })
            .inc();
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hakken");
        let metrics = Metrics {
            listings: Gauge::default(),
            services: Gauge::default(),
            coordinators: Gauge::default(),
            held_queries: Gauge::default(),
            streams: Gauge::default(),
            heartbeats: Counter::default(),
            added: Counter::default(),
            replaced: Counter::default(),
            expired: Counter::default(),
            deleted: Counter::default(),
            imported: Counter::default(),
            gossip_polls: Counter::default(),
            gossip_poll_failures: Counter::default(),
            requests: Family::default(),
            dns_queries: Family::default(),
            dns_tcp_refused: Counter::default(),
            dns_tcp_evicted: Counter::default(),
            http_refused: Counter::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5,
                ])
            }),
            request_handles: (0..METHODS.len() * ROUTES.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            latency_handles: (0..ROUTES.len()).map(|_| OnceLock::new()).collect(),
            registry: Registry::default(),
        };
        let Metrics {
            listings,
            services,
            coordinators,
            held_queries,
            streams,
            heartbeats,
            added,
            replaced,
            expired,
            deleted,
            imported,
            gossip_polls,
            gossip_poll_failures,
            requests,
            latency,
            dns_queries,
            dns_tcp_refused,
            dns_tcp_evicted,
            http_refused,
            ..
        } = &metrics;
        registry.register(
            "dns_queries",
            "DNS questions answered, by type and answer code",
            dns_queries.clone(),
        );
        registry.register(
            "dns_tcp_connections_refused",
            "DNS-over-TCP connections closed as accepted: too many open, all busy with a question (--dns-max-connections)",
            dns_tcp_refused.clone(),
        );
        registry.register(
            "dns_tcp_connections_evicted",
            "DNS-over-TCP connections closed while idle, to make room for a new one past --dns-max-connections",
            dns_tcp_evicted.clone(),
        );
        registry.register("listings", "Live listings held", listings.clone());
        registry.register(
            "services",
            "Services with at least one live listing",
            services.clone(),
        );
        registry.register(
            "coordinators",
            "Known coordinators, this one included",
            coordinators.clone(),
        );
        registry.register(
            "held_queries",
            "Blocking queries being held",
            held_queries.clone(),
        );
        registry.register(
            "streams",
            "Streams (Server-Sent Events) open",
            streams.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Listing POSTs accepted (publishes and heartbeats)",
            heartbeats.clone(),
        );
        registry.register("listings_added", "Listings added", added.clone());
        registry.register(
            "listings_replaced",
            "Listings whose payload a heartbeat replaced",
            replaced.clone(),
        );
        registry.register(
            "listings_expired",
            "Listings expired after missing heartbeats",
            expired.clone(),
        );
        registry.register(
            "listings_deleted",
            "Listings withdrawn with DELETE",
            deleted.clone(),
        );
        registry.register(
            "listings_imported",
            "Listings taken in at start: copied from a peer (join sync) or read back from the data directory",
            imported.clone(),
        );
        registry.register(
            "gossip_polls",
            "Polls of other coordinators",
            gossip_polls.clone(),
        );
        registry.register(
            "gossip_poll_failures",
            "Polls of other coordinators that failed",
            gossip_poll_failures.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections refused: too many open (--max-connections)",
            http_refused.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route (blocking queries apart)",
            latency.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts a served request (label indexes from [`method_index`], [`route_index`]).
    pub fn count_request(&self, method: usize, route: usize, status: u16) {
        let labels = || RequestLabels {
            method: METHODS[method],
            route: ROUTES[route],
            status,
        };
        match STATUSES.iter().position(|s| *s == status) {
            Some(at) => {
                let slot = (method * ROUTES.len() + route) * STATUSES.len() + at;
                self.request_handles[slot]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
    }

    /// Records how long a request to `route` took.
    pub fn observe_latency(&self, route: usize, seconds: f64) {
        self.latency_handles[route]
            .get_or_init(|| {
                let labels = RouteLabels {
                    route: ROUTES[route],
                };
                self.latency.get_or_create(&labels).clone()
            })
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_off_paths_as_the_router_matches_them() {
        let label = |path| ROUTES[route_index(path)];
        assert_eq!(label("/status"), "/status");
        assert_eq!(label("/ready"), "/ready");
        assert_eq!(label("/v1/listings"), "/v1/listings");
        assert_eq!(label("/v1/listings/billing"), "/v1/listings/{service}");
        assert_eq!(
            label("/v1/listings/billing/h%3A1"),
            "/v1/listings/{service}/{host}"
        );
        assert_eq!(label("/v1/listings/"), "unmatched");
        assert_eq!(label("/v1/listings/a/b/c"), "unmatched");
        assert_eq!(label("/v1/listings//b"), "unmatched");
        assert_eq!(label("/nope"), "unmatched");
        assert_eq!(label("/ui/api/state"), "/ui/api/state");
        assert_eq!(label("/ui/api/history"), "/ui/api/history");
    }
}
