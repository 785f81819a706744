//! Streams served on the socket itself, without hyper's buffers.
//!
//! hyper keeps an 8 KB read buffer and an 8 KB write buffer for every connection,
//! and a connection that holds a stream (a few hundred bytes per change, for
//! hours) pays for them all along: most of what an open stream costs. So a plain
//! connection whose first request asks for a stream (a `GET` without a body that
//! the routes would answer with one: see `http/stream.rs`'s `wanted`) is served
//! here instead.
//! Its head is parsed from the first bytes the client sent (with httparse, as
//! hyper does), the request goes through the same router as any other (admission,
//! limits, auth, metrics, the stream's own state in `http/stream.rs`), and the
//! answer is written on the socket, in HTTP/1.1 chunks. A stream is then written
//! by its topic's broadcaster and its own task (`http/broadcast.rs`), not through its
//! body: it ends at shutdown, when the client goes or sends anything more (nothing
//! is expected), or when a write waits longer than the stall timeout. Other
//! answers (a refusal, an error) are written whole, each frame of the body as one
//! chunk. The connection closes when the answer ends (it says `connection: close`).
//! A connection that sends nothing within the header timeout is closed, as hyper
//! closes it, and one that has sent nothing does not hold up a shutdown.
//!
//! Everything else goes to hyper: a first request that is not a stream, a head
//! not complete in the first bytes, anything unusual (a body, HTTP/1.0, an
//! upgrade, a header httparse or `http` refuse), and every TLS connection.

use super::http::{chunk, serve_stream, wanted, Admission, Takeover};
use super::sockets::{linger, stalls_cut};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use std::task::{ready, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The longest head taken here; longer ones go to hyper (which has its limits).
const MAX_HEAD: usize = 4096;
/// Most headers in a head taken here.
const MAX_HEADERS: usize = 32;

/// What a connection's first bytes hold.
pub(crate) enum First {
    /// A request for a stream: the length of its head, and the request.
    Stream(usize, Box<Request<Body>>),
    /// Anything else, for hyper.
    Other,
    /// Nothing: the client closed, or sent nothing within the header timeout.
    Closed,
}

/// Looks at the first bytes `stream` received (without taking them), within
/// `within`.
///
/// The bytes are looked at on the stack, inside one poll, so that no connection
/// keeps a buffer for them (10,000 connections each peeking into 4 KB of heap
/// left the allocator holding 8 KB more per connection).
pub(crate) async fn first_request(
    stream: &TcpStream,
    within: Duration,
    shutdown: &CancellationToken,
) -> First {
    let look = std::future::poll_fn(|cx| {
        let mut bytes = [0u8; MAX_HEAD];
        let mut buf = ReadBuf::new(&mut bytes);
        match ready!(stream.poll_peek(cx, &mut buf)) {
            Ok(0) | Err(_) => Poll::Ready(First::Closed),
            Ok(n) => Poll::Ready(match stream_request(&buf.filled()[..n]) {
                Some((len, request)) => First::Stream(len, Box::new(request)),
                None => First::Other,
            }),
        }
    });
    tokio::select! {
        // A connection that has sent nothing does not hold up a shutdown.
        _ = shutdown.cancelled() => First::Closed,
        // Nothing within the header timeout: closed, as hyper would.
        first = tokio::time::timeout(within, look) => first.unwrap_or(First::Closed),
    }
}

/// Reads and drops `n` bytes from `io` (on the stack, as above).
async fn discard<S>(io: &mut S, mut n: usize) -> std::io::Result<()>
where
    S: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| {
        while n > 0 {
            let mut bytes = [0u8; MAX_HEAD];
            let mut buf = ReadBuf::new(&mut bytes[..n.min(MAX_HEAD)]);
            ready!(std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            n -= buf.filled().len();
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// The request in `bytes` and its head's length, if it is a complete `GET` for
/// a stream without a body, over HTTP/1.1.
fn stream_request(bytes: &[u8]) -> Option<(usize, Request<Body>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if parsed.method? != "GET" || parsed.version? != 1 {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(Version::HTTP_11);
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        let body_or_upgrade = name == axum::http::header::TRANSFER_ENCODING
            || name == axum::http::header::UPGRADE
            || name == axum::http::header::EXPECT
            || (name == axum::http::header::CONTENT_LENGTH && value != "0");
        if body_or_upgrade {
            return None;
        }
        request = request.header(name, value);
    }
    // Decided as the route decides it.
    let param = stream_param(request.uri_ref()?);
    if !wanted(request.headers_ref()?, param.as_deref()) {
        return None;
    }
    Some((len, request.body(Body::empty()).ok()?))
}

/// The query's `stream` parameter, decoded as the router decodes it.
fn stream_param(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "stream")
        .map(|(_, value)| value.into_owned())
}

/// Serves the stream request whose head (`head` bytes, not yet taken) is first
/// on `socket`, then closes the connection. A write that waits longer than
/// `stall` for the reader ends it.
pub(crate) async fn serve(
    mut socket: TcpStream,
    stall: Duration,
    head: usize,
    request: Box<Request<Body>>,
    app: Admission,
) {
    // Take the head the request was parsed from.
    if discard(&mut socket, head).await.is_err() {
        return;
    }
    let Ok(response) = app.oneshot(*request).await;
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(512);
    write_head(&mut out, &parts);
    // A stream: written by its topic's broadcaster and its own task. (The answer's
    // parts and body are not kept while it lasts.)
    if let Some(open) = parts.extensions.get::<Takeover>().and_then(Takeover::take) {
        drop((parts, body));
        return serve_stream(socket, out, open, stall).await;
    }
    // Anything else (a refusal, an error): written whole.
    let mut io = stalls_cut(socket, stall);
    if io.write_all(&out).await.is_err() {
        return;
    }
    drop(out);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if !data.is_empty() && io.write_all(&chunk(&data)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "answer body failed");
                return;
            }
        }
    }
    if io.write_all(b"0\r\n\r\n").await.is_ok() && io.shutdown().await.is_ok() {
        linger(&mut io).await;
    }
}

/// Writes the status line and headers of an answer sent in chunks, on a
/// connection that closes after it.
fn write_head(out: &mut Vec<u8>, parts: &axum::http::response::Parts) {
    use std::io::Write;
    let status = parts.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        let framing = name == axum::http::header::CONTENT_LENGTH
            || name == axum::http::header::TRANSFER_ENCODING
            || name == axum::http::header::CONNECTION;
        if framing {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let _ = write!(
        out,
        "date: {date}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Option<(usize, Request<Body>)> {
        stream_request(head.as_bytes())
    }

    #[test]
    fn only_complete_stream_gets_without_a_body_are_taken() {
        let head = "GET /v1/listings/s HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";
        let (len, request) = parsed(head).expect("a stream request");
        assert_eq!(len, head.len());
        assert_eq!(request.uri().path(), "/v1/listings/s");
        assert_eq!(request.headers()["host"], "x");
        let with_more = format!("{head}GET /next HTTP/1.1\r\n");
        assert_eq!(parsed(&with_more).map(|(len, _)| len), Some(head.len()));
        assert!(parsed("GET /v1/listings/s?stream=true HTTP/1.1\r\nhost: x\r\n\r\n").is_some());
        assert!(parsed("GET /v1/listings/s?stream HTTP/1.1\r\nhost: x\r\n\r\n").is_some());
        assert!(parsed(&head.replace("host: x", "content-length: 0")).is_some());

        for other in [
            // Not a stream.
            "GET /v1/listings/s HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /v1/listings/s?stream=false HTTP/1.1\r\nhost: x\r\n\r\n",
            // Decoded as the router decodes it.
            "GET /v1/listings/s?stream=fals%65&index=3 HTTP/1.1\r\nhost: x\r\n\r\n",
            // Not complete yet.
            "GET /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\n",
            // Not a GET, not HTTP/1.1, a body, an upgrade.
            "POST /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\n\r\n",
            "GET /v1/listings/s HTTP/1.0\r\naccept: text/event-stream\r\n\r\n",
            "GET /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\ncontent-length: 3\r\n\r\n",
            "GET /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
            "GET /v1/listings/s HTTP/1.1\r\naccept: text/event-stream\r\nupgrade: websocket\r\n\r\n",
            // Not HTTP.
            "\x16\x03\x01\x02\x00",
        ] {
            assert!(parsed(other).is_none(), "{other:?}");
        }
    }
}
