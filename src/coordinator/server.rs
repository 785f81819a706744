//! The accept loop: bounded connections, slow senders cut off, graceful shutdown.
//!
//! axum's own `serve` has no cap on connections and no header timeout, so the
//! coordinator drives hyper directly: one task per connection, a semaphore permit
//! per connection (past the cap a connection gets a `503` JSON answer and is
//! closed), hyper's header read timeout for senders that stall inside a request's
//! head, and hyper-util's graceful shutdown, bounded by a grace period. Request
//! bodies get their own deadline in [`super::http`].

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
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
            tokio::spawn(refuse(stream));
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

/// Answers a connection over the cap with a `503` and closes it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"too many connections"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    tracing::debug!("connection refused: too many connections");
}
