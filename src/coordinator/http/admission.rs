//! The one service in front of the router, through which every request goes: it
//! admits the request (the token, the body within its deadline and size), hands
//! it to the router, then stamps the common headers on the answer, counts and
//! times it, and logs it at debug level.
//!
//! It wraps the router as a whole rather than each route (as `Router::layer`
//! would), so a request pays for it once, with no per-route service to clone.
//! The route a request is counted under is read off its path ([`route_index`]).

use super::answer::ApiError;
use crate::coordinator::metrics::{method_index, route_index};
use crate::coordinator::readiness::Phase;
use crate::coordinator::{ClientIdentity, Shared};
use crate::protocol::{
    COMPLETE_HEADER, COORDINATOR_HEADER, HEARTBEAT_HEADER, INSTANCE_HEADER, READY_PATH,
};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tower::Service;

/// The router with admission in front (see the module).
#[derive(Clone)]
pub(crate) struct Admission {
    router: Router,
    shared: Arc<Shared>,
    headers: CommonHeaders,
}

impl Admission {
    /// Puts admission in front of `router`.
    pub fn new(router: Router, shared: Arc<Shared>) -> Self {
        Admission {
            headers: common_headers(&shared),
            router,
            shared,
        }
    }

    /// Admits, routes, then stamps, counts, times and logs (see the module).
    async fn handle(mut self, request: Request) -> Response {
        let started = std::time::Instant::now();
        let shared = &self.shared;
        let method = method_index(request.method());
        let route = route_index(request.uri().path());
        let blocking = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("index=")));
        let logged = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (request.method().clone(), request.uri().clone()));
        // A write by a client certificate is logged with its subject, once
        // answered (with the status: refused writes are told apart).
        let audit = match request.extensions().get::<ClientIdentity>() {
            Some(identity) if !matches!(*request.method(), Method::GET | Method::HEAD) => Some((
                identity.0.clone(),
                request.method().clone(),
                request.uri().path().to_owned(),
            )),
            _ => None,
        };
        let mut response = match admit(shared, request).await {
            Ok(request) => match self.router.call(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            },
            Err(refusal) => refusal.into_response(),
        };
        if let Some((subject, method, path)) = audit {
            tracing::info!(
                target: "hakken::audit",
                subject = &*subject,
                %method,
                path,
                status = response.status().as_u16(),
                "write by client certificate"
            );
        }
        let headers = response.headers_mut();
        // Room for ours and hyper's, in one allocation.
        headers.reserve(self.headers.len() + 3);
        for (name, value) in self.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        // Whether this coordinator holds all its cluster holds (see `readiness.rs`);
        // while it syncs it does not know yet, and no listing read is answered.
        match shared.phase() {
            Phase::Complete => headers.insert(COMPLETE_HEADER, HeaderValue::from_static("true")),
            Phase::Partial => headers.insert(COMPLETE_HEADER, HeaderValue::from_static("false")),
            Phase::Syncing => None,
        };
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        let metrics = &shared.metrics;
        metrics.count_request(method, route, status);
        // Blocking queries are counted but kept out of the latency histogram,
        // which they would swamp.
        if !blocking {
            metrics.observe_latency(route, elapsed.as_secs_f64());
        }
        if let Some((method, uri)) = logged {
            tracing::debug!(%method, %uri, status, micros = elapsed.as_micros() as u64, "request");
        }
        response
    }
}

impl<B> Service<axum::http::Request<B>> for Admission
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request.map(Body::new)).await) })
    }
}

/// The body of a request, as admission received it: whole, within its deadline
/// and the size limit (so taking it cannot wait, and needs no limit of its own).
pub(super) struct Received(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Received {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .map(Received)
            .map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))
    }
}

/// The request as the handler gets it, or the answer that refuses it. A refusal
/// before the body is read, of a request that may have one, ends the connection
/// (hyper closes it: the unread body cannot be told from a next request).
async fn admit(shared: &Shared, request: Request) -> Result<Request, ApiError> {
    let unread_body = axum::body::HttpBody::size_hint(request.body()).upper() != Some(0);
    let refused = |error: ApiError| if unread_body { error.closing() } else { error };
    certified(shared, &request).map_err(refused)?;
    authorize(shared, &request).map_err(refused)?;
    read_body(shared, request).await
}

/// With mutual TLS (a client CA configured): every route but `/status` and
/// `/ready` needs a client certificate, which the handshake verified against the
/// CA (its subject is logged with each write, see [`Admission::handle`]).
fn certified(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    let presented = request.extensions().get::<ClientIdentity>();
    let required = shared
        .config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some());
    let path = request.uri().path();
    if required && presented.is_none() && path != "/status" && path != READY_PATH {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a client certificate is required (mutual TLS): present one signed by this coordinator's client CA",
        ));
    }
    Ok(())
}

/// With a token configured: writes (and reads, when protected) need
/// `Authorization: Bearer <token>`, compared in constant time. `/status` stays open.
/// For reads, HTTP Basic with the token as the password (any user name) is taken
/// too: that is what a browser sends, after it asked, for the dashboard and
/// `/metrics` when reads are protected. Never for writes: a browser replays Basic
/// credentials on requests other sites make it send (CSRF).
fn authorize(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    let Some(token) = shared.config.token.as_deref() else {
        return Ok(());
    };
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path();
    if path == "/status" || path == READY_PATH || (is_read && !shared.config.protect_reads) {
        return Ok(());
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| presented_token(v, is_read))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return Ok(());
    }
    Err(ApiError::unauthorized(is_read))
}

/// The token an `Authorization` value carries: a bearer token, or (when `basic`,
/// for reads only) the password of HTTP Basic credentials. Schemes are
/// case-insensitive (RFC 7235); tokens are not.
fn presented_token(value: &str, basic: bool) -> Option<String> {
    use base64::Engine as _;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if basic && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let credentials = String::from_utf8(decoded).ok()?;
        let (_user, password) = credentials.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

/// Receives a request's whole body within the body deadline and the size limit,
/// so a slow or endless sender gets a `408` or `413` instead of holding a handler.
async fn read_body(shared: &Shared, request: Request) -> Result<Request, ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    // A body that says it is too large (its `content-length`) is refused before
    // any of it is waited for.
    if axum::body::HttpBody::size_hint(&body).lower() > shared.config.max_body_bytes as u64 {
        return Err(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").closing(),
        );
    }
    let mut collect = std::pin::pin!(Limited::new(body, shared.config.max_body_bytes).collect());
    // A small body usually came with the head: take it without arming a timer.
    let at_once = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match at_once {
        Poll::Ready(collected) => Ok(collected),
        Poll::Pending => tokio::time::timeout(shared.config.body_timeout, collect).await,
    };
    let refusal = match collected {
        Ok(Ok(collected)) => {
            return Ok(Request::from_parts(parts, Body::from(collected.to_bytes())));
        }
        Err(_elapsed) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        ),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Ok(Err(error)) => ApiError::bad_request(format!("could not read the body: {error}")),
    };
    // The rest of the body is never read: the connection ends with this answer.
    Err(refusal.closing())
}

/// The headers every answer carries, built once.
type CommonHeaders = Arc<[(HeaderName, HeaderValue)]>;

fn common_headers(shared: &Shared) -> CommonHeaders {
    let heartbeat = shared.config.heartbeat_interval.as_millis().to_string();
    [
        (HEARTBEAT_HEADER, HeaderValue::from_str(&heartbeat).ok()),
        (
            COORDINATOR_HEADER,
            HeaderValue::from_str(shared.me.host()).ok(),
        ),
        (INSTANCE_HEADER, Some(HeaderValue::from(shared.instance))),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((HeaderName::from_static(name), value?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::presented_token;

    #[test]
    fn takes_a_bearer_token_or_a_basic_password() {
        assert_eq!(
            presented_token("Bearer s3cret", true).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            presented_token("bearer  s3cret ", true).as_deref(),
            Some("s3cret")
        );
        // "anyone:s3cret"
        assert_eq!(
            presented_token("Basic YW55b25lOnMzY3JldA==", true).as_deref(),
            Some("s3cret")
        );
        // ":a:b": an empty user, and a password with a colon.
        assert_eq!(
            presented_token("basic OmE6Yg==", true).as_deref(),
            Some("a:b")
        );
        assert_eq!(presented_token("Basic !!!", true), None, "not base64");
        assert_eq!(
            presented_token("Basic bm9jb2xvbg==", true),
            None,
            "no colon"
        );
        assert_eq!(presented_token("Digest x", true), None);
        assert_eq!(presented_token("Bearer", true), None);
    }
}
