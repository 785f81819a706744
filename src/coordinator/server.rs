//! The accept loop: bounded connections, slow senders cut off, graceful shutdown.
//!
//! axum's own `serve` has no cap on connections and no header timeout, so the
//! coordinator drives hyper directly: one task per connection, a semaphore permit
//! per connection, hyper's header read timeout for senders that stall inside a
//! request's head, and hyper-util's graceful shutdown, bounded by a grace period.
//! Past the cap, a connection gets a `503` JSON answer and is closed; refusals are
//! counted in a metric and warned of at most once a minute (`sockets.rs`, with
//! what the other listeners share). Refusing is bounded too: at most
//! [`MAX_REFUSING`] refused connections are answered at once, each for at most a
//! second (the answer, then whatever the client still sends, so that closing
//! does not reset the connection before the client has read the answer); past
//! that, a connection is closed at once. A flood cannot hold more
//! than `max_connections + MAX_REFUSING` sockets. Request bodies get their own
//! deadline in [`super::http`]. A write that waits longer than `stall_timeout`
//! for its reader closes the connection (a stream's reader that stopped reading).
//!
//! A plain connection whose first request asks for a stream is served on the
//! socket itself (`direct.rs`), without hyper's per-connection buffers.
//!
//! With TLS (`tls.rs`), the handshake runs in the connection's task, bounded by
//! the header timeout, with the configuration current when it was accepted. A
//! connection whose first byte is not a TLS handshake is someone speaking plain
//! HTTP to the TLS port: it gets a `400` that says to use `https://`, not a
//! handshake error it cannot read. The client certificate's subject, if any,
//! travels with each of the connection's requests.

use super::direct::{self, First};
use super::http::Admission;
use super::sockets::{linger, stalls_cut, Acceptor, Refusals, LINGER};
use super::tls::{identity, Certificates, ClientIdentity};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the accept loop needs to know.
pub(crate) struct ServeOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to receive a request's head.
    pub header_timeout: Duration,
    /// Longest time one write may wait for the reader to take anything.
    pub stall_timeout: Duration,
    /// Longest time in-flight requests get to finish after shutdown starts.
    pub grace: Duration,
    /// Serve TLS with these certificates; plain HTTP without.
    pub tls: Option<Arc<Certificates>>,
    /// Counts the connections refused past `max_connections`.
    pub refused: prometheus_client::metrics::counter::Counter,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Admission,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true);
    let mut acceptor = Acceptor::new("HTTP");
    let mut refused = Refusals::new(
        "HTTP",
        "--max-connections",
        options.max_connections,
        options.refused.clone(),
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = acceptor.accept(&listener) => accepted,
        };
        let Some((stream, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.refused(peer);
            match refusals.clone().try_acquire_owned() {
                Ok(refusing) => {
                    tokio::spawn(refuse(stream, refusing, options.tls.is_some()));
                }
                Err(_) => tracing::debug!("connection closed unanswered: too many connections"),
            }
            continue;
        };
        let connection = Connection {
            builder: builder.clone(),
            watcher: graceful.watcher(),
            shutdown: shutdown.clone(),
            header_timeout: options.header_timeout,
            stall_timeout: options.stall_timeout,
            _permit: permit,
        };
        // Two tasks of their own sizes: a plain connection's task does not carry
        // room for a TLS handshake.
        match options.tls.clone() {
            None => tokio::spawn(connection.plain(stream, app.clone())),
            Some(certificates) => tokio::spawn(connection.tls(
                stream,
                app.clone(),
                certificates,
                options.header_timeout,
            )),
        };
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(options.grace) => {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
    }
}

/// One accepted connection, before it is served.
struct Connection {
    builder: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    /// Cancelled when the coordinator shuts down.
    shutdown: CancellationToken,
    header_timeout: Duration,
    stall_timeout: Duration,
    /// Its place under the cap on connections, freed when it ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves plain HTTP until the connection ends: a first request for a stream
    /// on the socket itself (`direct.rs`), anything else with hyper.
    /// (The connection's graceful watcher, held throughout, makes a shutdown wait
    /// for either.)
    async fn plain(mut self, stream: TcpStream, app: Admission) {
        let accepted = Instant::now();
        match direct::first_request(&stream, self.header_timeout, &self.shutdown).await {
            First::Closed => {}
            First::Stream(head, request) => {
                direct::serve(stream, self.stall_timeout, head, request, app).await;
            }
            First::Other => {
                // The head's time counts from the accept, not from the look.
                let left = self.header_timeout.saturating_sub(accepted.elapsed());
                self.builder
                    .header_read_timeout(left.max(Duration::from_millis(1)));
                let service = TowerToHyperService::new(app);
                self.serve(stream, service).await;
            }
        }
    }

    /// Runs the TLS handshake (within `handshake_timeout`), then serves HTTP over
    /// it until the connection ends.
    async fn tls(
        self,
        stream: TcpStream,
        app: Admission,
        certificates: Arc<Certificates>,
        handshake_timeout: Duration,
    ) {
        let Some((stream, identity)) = handshake(stream, &certificates, handshake_timeout).await
        else {
            return;
        };
        let service = TowerToHyperService::new(Identified { app, identity });
        self.serve(stream, service).await;
    }

    /// Serves HTTP/1.1 on `stream` with `service` until the connection ends.
    async fn serve<S, H, B>(self, stream: S, service: H)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
        H: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
        H::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TokioIo::new(stalls_cut(stream, self.stall_timeout));
        let served = self
            .watcher
            .watch(self.builder.serve_connection(stream, service));
        if let Err(error) = served.await {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}

/// Most refused connections being answered at once.
pub(crate) const MAX_REFUSING: usize = 64;

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 32\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":\"too many connections\"}";

/// A TLS alert record: fatal (2), internal_error (80). What a TLS port answers
/// past the cap: a plain-HTTP `503` would read as "this port does not speak TLS".
const TLS_REFUSAL: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// Answers a connection over the cap with a `503` (a TLS alert on a TLS port) and
/// closes it, within a second.
async fn refuse(mut stream: TcpStream, _refusing: OwnedSemaphorePermit, tls: bool) {
    let answer = async {
        stream
            .write_all(if tls { TLS_REFUSAL } else { REFUSAL })
            .await?;
        stream.shutdown().await?;
        linger(&mut stream).await;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The answer to plain HTTP on the TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 69\r\nconnection: close\r\n\r\nthis coordinator speaks TLS: use https:// to talk to it on this port\n";

/// Runs the TLS handshake within `within`: the stream and the client
/// certificate's subject, or `None` when the connection is done (plain HTTP was
/// answered, the handshake failed or took too long).
async fn handshake(
    stream: TcpStream,
    certificates: &Certificates,
    within: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<TcpStream>,
    Option<ClientIdentity>,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(certificates.current());
    let exchange = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE {
            answer_plain_http(stream).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(stream) => {
                let identity = identity(stream.get_ref().1.peer_certificates());
                Some((stream, identity))
            }
            Err(error) => {
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
        }
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// Says to a plain-HTTP client that this port speaks TLS, then closes.
async fn answer_plain_http(mut stream: TcpStream) {
    let _ = stream.write_all(PLAIN_ON_TLS).await;
    let _ = stream.shutdown().await;
    linger(&mut stream).await;
}

/// The router, with the connection's client certificate put on every request.
#[derive(Clone)]
struct Identified {
    app: Admission,
    identity: Option<ClientIdentity>,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for Identified {
    type Response = <Admission as tower::Service<hyper::Request<hyper::body::Incoming>>>::Response;
    type Error = <Admission as tower::Service<hyper::Request<hyper::body::Incoming>>>::Error;
    type Future = <Admission as tower::Service<hyper::Request<hyper::body::Incoming>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<hyper::Request<hyper::body::Incoming>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(identity) = &self.identity {
            request.extensions_mut().insert(identity.clone());
        }
        self.app.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_to_plain_http_on_the_tls_port_is_well_formed() {
        let text = std::str::from_utf8(PLAIN_ON_TLS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.starts_with(crate::protocol::PLAIN_ON_TLS));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
