//! The accept loop: bounded connections, slow senders cut off, graceful shutdown.
//!
//! axum's own `serve` has no cap on connections and no header timeout, so the
//! coordinator drives hyper directly: one task per connection, a semaphore permit
//! per connection, hyper's header read timeout for senders that stall inside a
//! request's head, and hyper-util's graceful shutdown, bounded by a grace period.
//! Past the cap, a connection gets a `503` JSON answer and is closed. Refusing is
//! bounded too: at most [`MAX_REFUSING`] refused connections are answered at once,
//! each for at most a second (the answer, then whatever the client still sends,
//! so that closing does not reset the connection before the client has read the
//! answer); past that, a connection is closed at once. A flood cannot hold more
//! than `max_connections + MAX_REFUSING` sockets. Request bodies get their own
//! deadline in [`super::http`].

use super::http::Admission;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the accept loop needs to know.
pub(crate) struct ServeOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to receive a request's head.
    pub header_timeout: Duration,
    /// Longest time in-flight requests get to finish after shutdown starts.
    pub grace: Duration,
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
    let mut accept_errors = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                accept_errors = 0;
                stream
            }
            Err(error) => {
                // Typically EMFILE: back off instead of spinning, and say so once.
                if accept_errors == 0 {
                    tracing::warn!(%error, "accept failed; backing off");
                }
                accept_errors = accept_errors.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            match refusals.clone().try_acquire_owned() {
                Ok(refusing) => {
                    tokio::spawn(refuse(stream, refusing));
                }
                Err(_) => tracing::debug!("connection closed unanswered: too many connections"),
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(options.grace) => {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
    }
}

/// Most refused connections being answered at once.
pub(crate) const MAX_REFUSING: usize = 64;

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 32\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":\"too many connections\"}";

/// Answers a connection over the cap with a `503` and closes it, within a second.
async fn refuse(mut stream: TcpStream, _refusing: OwnedSemaphorePermit) {
    let answer = async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes: closing with unread
        // input would reset the connection, and the client could lose the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    tracing::debug!("connection refused: too many connections");
}
