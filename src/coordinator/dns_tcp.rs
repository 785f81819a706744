//! DNS over TCP: the accept loop and the framing (RFC 7766: each message after
//! its length in two bytes), so that the number of connections is capped.
//! hickory-server's own TCP listener takes any number, and each one holds a task,
//! its buffers and a file descriptor until its idle timeout: enough of them would
//! leave the coordinator's HTTP listener with no descriptor to accept with.
//!
//! A connection past the cap is closed as it is accepted, with a warning at most
//! once a minute. A message is handed to the same [`Handler`] that answers UDP,
//! through hickory's request and response types, so both transports give the same
//! answers. What is not a question gets what hickory's server gives it: a message
//! too short for a header is dropped, a header without a readable body is
//! answered `FORMERR`, a response is ignored.

use super::dns::Handler;
use super::server::{Acceptor, Refusals};
use bytes::Buf;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves DNS over TCP on `listener` until `shutdown`, with at most `max`
/// connections open (at least one); a connection that sends nothing for `idle` (or cannot take
/// an answer for that long) is closed. Open connections are closed at shutdown.
pub(crate) async fn serve(
    handler: Arc<Handler>,
    listener: TcpListener,
    idle: Duration,
    max: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)));
    let mut connections = JoinSet::new();
    let mut acceptor = Acceptor::new("DNS over TCP");
    let mut refused = Refusals::new(
        "DNS over TCP",
        "--dns-max-connections",
        max,
        handler.shared.metrics.dns_tcp_refused.clone(),
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = acceptor.accept(&listener) => accepted,
        };
        // Reap the connections that ended, so the set stays as small as the cap.
        while connections.try_join_next().is_some() {}
        let Some((stream, peer)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.refused(peer);
            continue;
        };
        connections.spawn(connection(handler.clone(), stream, peer, idle, slot));
    }
    connections.shutdown().await;
}

/// Answers the messages of one connection, in order, until it closes, idles for
/// `idle`, or sends a length it does not follow with as many bytes.
async fn connection(
    handler: Arc<Handler>,
    mut stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut length = [0u8; 2];
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut length)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        // The buffer grows with what arrives, not with what the length promised.
        let length = u64::from(u16::from_be_bytes(length));
        let mut message = Vec::new();
        let mut body = (&mut stream).take(length);
        let read = tokio::time::timeout(idle, body.read_to_end(&mut message)).await;
        if !matches!(read, Ok(Ok(n)) if n as u64 == length) {
            return;
        }
        // A zero-length message is no question: dropped, like one too short for
        // a header.
        let Some(answer) = answer(&handler, message, peer).await else {
            continue;
        };
        // At most u16::MAX bytes: the encoder is capped there (see `Reply`).
        let Ok(length) = u16::try_from(answer.len()) else {
            return;
        };
        let length = length.to_be_bytes();
        let mut framed = Buf::chain(&length[..], answer.as_slice());
        if !matches!(
            tokio::time::timeout(idle, stream.write_all_buf(&mut framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// The answer to one message, encoded; none for a message that gets none.
async fn answer(handler: &Handler, message: Vec<u8>, peer: SocketAddr) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(&message)).ok()?;
    let reply = Reply::default();
    match Request::from_bytes(message, peer, Protocol::Tcp) {
        Ok(request) if request.metadata.message_type == MessageType::Response => return None,
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, reply.clone())
                .await;
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "DNS over TCP: unreadable question");
            // No question to echo: the body did not read.
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            reply.clone().send_response(response).await.ok()?;
        }
    }
    reply.take()
}

/// Where [`Handler`] puts its answer: the encoded message, for the connection to
/// frame and write.
#[derive(Clone, Default)]
struct Reply(Arc<Mutex<Option<Vec<u8>>>>);

impl Reply {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().ok()?.take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::MAX);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                // What does not fit in one TCP message (or cannot be encoded) is a
                // SERVFAIL, as hickory's server answers it.
                tracing::debug!(%error, "DNS over TCP: answer not encoded");
                bytes.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header.emit(&mut BinEncoder::new(&mut bytes))?;
                ResponseInfo::from(header)
            }
        };
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(bytes);
        }
        Ok(info)
    }
}
