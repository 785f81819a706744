//! DNS over TCP: the accept loop and the framing (RFC 7766: each message after
//! its length in two bytes), so that the number of connections is capped.
//! hickory-server's own TCP listener takes any number, and each one holds a task,
//! its buffers and a file descriptor until its idle timeout: enough of them would
//! leave the coordinator's HTTP listener with no descriptor to accept with.
//!
//! When a new connection finds every place taken, the connection that has waited
//! longest for its client's next message (or its first) is closed and gives up
//! its place ([`Idle`]; RFC 7766 §6.2.3 lets a server under pressure close idle
//! connections): a client that holds many connections open without using them
//! cannot shut others out. Only when every connection is busy (in the middle of
//! a message, or of its answer) is a new one closed as it is accepted, with a
//! warning at most once a minute. (An evicted connection closes when its task
//! next runs: for a moment, a burst of connections can hold a few more sockets
//! than the cap.) A message is handed to the same handler that answers UDP
//! (`dns.rs`'s), through hickory's request and response types, so both transports
//! give the same answers. What is not a question gets what hickory's server gives it: a message
//! too short for a header is dropped, a header without a readable body is
//! answered `FORMERR`, a response is ignored.

use super::sockets::{Acceptor, Refusals};
use bytes::Buf;
use futures_util::FutureExt;
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
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The connections waiting for their client's next message, each holding its
/// place under the cap, by how long they have waited. A connection is put here
/// as it is accepted, and after each answer unless its next message has already
/// begun to arrive; it takes its place back when the message begins to arrive,
/// unless a new connection took it meanwhile: then it is told to close.
#[derive(Default)]
struct Idle {
    /// By the instant each began to wait, then its connection's number.
    waiting: Mutex<BTreeMap<(Instant, u64), Waiting>>,
}

/// A connection waiting for a message.
struct Waiting {
    slot: OwnedSemaphorePermit,
    /// Cancelled when its place is taken.
    evicted: CancellationToken,
}

impl Idle {
    /// Puts connection `key` (waiting since `key.0`) here with its place.
    fn wait(&self, key: (Instant, u64), slot: OwnedSemaphorePermit, evicted: CancellationToken) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(key, Waiting { slot, evicted });
        }
    }

    /// Connection `key`'s place back, or none if it was taken.
    fn resume(&self, key: (Instant, u64)) -> Option<OwnedSemaphorePermit> {
        let waiting = self.waiting.lock().ok()?.remove(&key)?;
        Some(waiting.slot)
    }

    /// The place of the connection that has waited longest, which is told to
    /// close; none if no connection is waiting.
    fn evict(&self) -> Option<OwnedSemaphorePermit> {
        let (_, waiting) = self.waiting.lock().ok()?.pop_first()?;
        waiting.evicted.cancel();
        Some(waiting.slot)
    }
}

/// What DNS over TCP counts: connections refused at the cap, and idle ones
/// closed to make room.
pub(crate) struct Counters {
    pub refused: Counter,
    pub evicted: Counter,
}

/// Serves DNS over TCP on `listener` with `handler` until `shutdown`, with at
/// most `max` connections open (at least one); a connection that sends nothing
/// for `idle` (or cannot take an answer for that long) is closed. Open
/// connections are closed at shutdown.
pub(crate) async fn serve<H: RequestHandler>(
    handler: Arc<H>,
    counters: Counters,
    listener: TcpListener,
    idle: Duration,
    max: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)));
    let idle_connections = Arc::new(Idle::default());
    let mut connections = JoinSet::new();
    let mut acceptor = Acceptor::new("DNS over TCP");
    let mut refused = Refusals::new(
        "DNS over TCP",
        "--dns-max-connections",
        max,
        counters.refused,
    );
    let mut number = 0u64;
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match idle_connections.evict() {
                Some(slot) => {
                    counters.evicted.inc();
                    tracing::debug!(%peer, "DNS over TCP: the longest idle connection closed to make room");
                    slot
                }
                None => {
                    refused.refused(peer);
                    continue;
                }
            },
        };
        // It waits for its first message from now on: a connection accepted but
        // not yet run can make room for the next one too.
        number += 1;
        let (since, evicted) = (Instant::now(), CancellationToken::new());
        idle_connections.wait((since, number), slot, evicted.clone());
        let connection = Connection {
            handler: handler.clone(),
            stream,
            peer,
            idle,
            number,
            idle_connections: idle_connections.clone(),
            evicted,
        };
        connections.spawn(connection.serve(since));
    }
    connections.shutdown().await;
}

/// One accepted connection, answered by `H`.
struct Connection<H> {
    handler: Arc<H>,
    stream: TcpStream,
    peer: SocketAddr,
    /// Longest wait for a message, or for the client to take an answer.
    idle: Duration,
    /// Tells it apart in `idle_connections`.
    number: u64,
    idle_connections: Arc<Idle>,
    /// Cancelled when a new connection takes its place.
    evicted: CancellationToken,
}

impl<H: RequestHandler> Connection<H> {
    /// Answers the messages of the connection, in order, until it closes, idles
    /// for `idle`, sends a length it does not follow with as many bytes, or is
    /// evicted while it waits. It starts waiting, in `idle_connections`, since
    /// `waiting_since`.
    async fn serve(mut self, mut waiting_since: Instant) {
        let _ = self.stream.set_nodelay(true);
        loop {
            let Some(slot) = self.next_message(waiting_since).await else {
                return;
            };
            // The messages that have begun to arrive by the time the one before
            // is answered are not waited for.
            loop {
                if !self.answer_next().await {
                    return;
                }
                let mut byte = [0u8; 1];
                if self.stream.peek(&mut byte).now_or_never().is_none() {
                    break;
                }
            }
            waiting_since = Instant::now();
            let key = (waiting_since, self.number);
            self.idle_connections.wait(key, slot, self.evicted.clone());
        }
    }

    /// Waits (for `idle` at most) until the next message begins to arrive, its
    /// place left in `idle_connections` meanwhile (since `waiting_since`): the
    /// place back, or none if the connection is to close (it closed, idled, or
    /// was evicted). A message whose first bytes arrive just as the connection
    /// is evicted is lost with it (the client sees the connection reset and asks
    /// again, as RFC 7766 expects of it).
    async fn next_message(&mut self, waiting_since: Instant) -> Option<OwnedSemaphorePermit> {
        let mut byte = [0u8; 1];
        let peeked = tokio::select! {
            biased;
            _ = self.evicted.cancelled() => None,
            peeked = tokio::time::timeout(self.idle, self.stream.peek(&mut byte)) => Some(peeked),
        };
        let slot = self.idle_connections.resume((waiting_since, self.number))?;
        matches!(peeked, Some(Ok(Ok(n))) if n > 0).then_some(slot)
    }

    /// Reads the next message and writes its answer, if it gets one: whether
    /// the connection goes on.
    async fn answer_next(&mut self) -> bool {
        let mut length = [0u8; 2];
        if !matches!(
            tokio::time::timeout(self.idle, self.stream.read_exact(&mut length)).await,
            Ok(Ok(_))
        ) {
            return false;
        }
        // The buffer grows with what arrives, not with what the length promised.
        let length = u64::from(u16::from_be_bytes(length));
        let mut message = Vec::new();
        let mut body = (&mut self.stream).take(length);
        let read = tokio::time::timeout(self.idle, body.read_to_end(&mut message)).await;
        if !matches!(read, Ok(Ok(n)) if n as u64 == length) {
            return false;
        }
        // A zero-length message is no question: dropped, like one too short for
        // a header.
        let Some(answer) = answer(&*self.handler, message, self.peer).await else {
            return true;
        };
        // At most u16::MAX bytes: the encoder is capped there (see `Reply`).
        let Ok(length) = u16::try_from(answer.len()) else {
            return false;
        };
        let length = length.to_be_bytes();
        let mut framed = Buf::chain(&length[..], answer.as_slice());
        let write = self.stream.write_all_buf(&mut framed);
        matches!(tokio::time::timeout(self.idle, write).await, Ok(Ok(())))
    }
}

/// The answer to one message, encoded; none for a message that gets none.
async fn answer<H: RequestHandler>(
    handler: &H,
    message: Vec<u8>,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_waiting_longest_gives_up_its_place_and_is_told_to_close() {
        let slots = Arc::new(Semaphore::new(3));
        let idle = Idle::default();
        let now = Instant::now();
        let (early, late) = ((now, 2), (now + Duration::from_secs(1), 1));
        let tokens = [CancellationToken::new(), CancellationToken::new()];
        for (key, token) in [(late, &tokens[1]), (early, &tokens[0])] {
            idle.wait(
                key,
                slots.clone().try_acquire_owned().unwrap(),
                token.clone(),
            );
        }
        // The one that began to wait first, whatever its number.
        let place = idle.evict().expect("one was waiting");
        assert!(tokens[0].is_cancelled() && !tokens[1].is_cancelled());
        assert!(idle.resume(early).is_none(), "its place was taken");
        let _kept = idle.resume(late).expect("the other's was not");
        assert!(idle.evict().is_none(), "none waiting");
        drop(place);
        assert_eq!(slots.available_permits(), 2, "the evicted place, given on");
    }
}

/// Where the handler puts its answer: the encoded message, for the connection to
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
