//! The ceiling: a minimal server on the same HTTP stack as the hakken coordinator
//! (tokio + hyper 1 + axum 0.8, HTTP/1.1 keep-alive), answering the routes the
//! benchmark uses with fixed responses and no state. It shows how fast the stack
//! alone can go on this machine, so that our coordinator's numbers can be read as
//! a fraction of the limit.
//!
//! ```text
//! ceiling --port P [--body SERVICE=FILE]...
//! ```
//!
//! - `GET /v1/listings/SERVICE`: the bytes of FILE (the benchmark writes there what
//!   our coordinator answered for the same service, so the size is the same);
//!   `404 {"error":...}` for any other service.
//! - `POST /v1/listings[?heartbeat=true]`: reads the body, answers `201` empty.
//! - `GET /status`: `"OK"`. `GET /v1/coordinator`: one fixed descriptor.
//!
//! Every answer carries the same extra headers as ours (`X-Hakken-Heartbeat-Interval`,
//! `X-Hakken-Coordinator`, and `X-Hakken-Index` on listings), so the bytes on the wire
//! match. Prints `READY <port>` on stdout once listening.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

struct Fixed {
    bodies: HashMap<String, Bytes>,
    me: HeaderValue,
}

fn answer(fixed: &Fixed, status: StatusCode, body: Bytes, index: bool) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-hakken-heartbeat-interval",
        HeaderValue::from_static("60000"),
    );
    headers.insert("x-hakken-coordinator", fixed.me.clone());
    if index {
        headers.insert("x-hakken-index", HeaderValue::from_static("12345"));
    }
    response
}

async fn listings(State(fixed): State<Arc<Fixed>>, Path(service): Path<String>) -> Response {
    match fixed.bodies.get(&service) {
        Some(body) => answer(&fixed, StatusCode::OK, body.clone(), true),
        None => answer(
            &fixed,
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"error":"no live listing"}"#),
            true,
        ),
    }
}

async fn publish(State(fixed): State<Arc<Fixed>>, _body: Bytes) -> Response {
    answer(&fixed, StatusCode::CREATED, Bytes::new(), false)
}

async fn status(State(fixed): State<Arc<Fixed>>) -> Response {
    answer(&fixed, StatusCode::OK, Bytes::from_static(b"\"OK\""), false)
}

async fn coordinators(State(fixed): State<Arc<Fixed>>) -> Response {
    let body = format!(
        r#"[{{"host":"{}"}}]"#,
        fixed.me.to_str().unwrap_or("localhost")
    );
    answer(&fixed, StatusCode::OK, Bytes::from(body), true)
}

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut bodies = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().unwrap_or_default().parse()?,
            "--body" => {
                let spec = args.next().unwrap_or_default();
                let (service, file) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--body wants SERVICE=FILE"))?;
                bodies.insert(service.to_owned(), Bytes::from(std::fs::read(file)?));
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let fixed = Arc::new(Fixed {
            bodies,
            me: HeaderValue::from_str(&format!("localhost:{port}"))?,
        });
        let app = Router::new()
            .route("/status", get(status))
            .route("/v1/coordinator", get(coordinators))
            .route("/v1/listings", post(publish))
            .route("/v1/listings/{service}", get(listings))
            .with_state(fixed);
        println!("READY {port}");
        std::io::stdout().flush()?;
        // The same connection handling as ours (src/coordinator/server.rs): one task
        // per connection, hyper's HTTP/1 builder with a header read timeout and
        // keep-alive, TCP_NODELAY, the router as a tower service.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .keep_alive(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    })
}
