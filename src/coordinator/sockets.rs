//! What the coordinator's listeners share (HTTP and its streams in `server.rs`,
//! `direct.rs` and `http/broadcast.rs`, DNS over TCP in `dns_tcp.rs`): accepting without spinning
//! when the process is out of descriptors, refusals past a cap counted and
//! warned of without flooding the log, writes cut off when their reader stalls,
//! and a linger before closing, so that a client does not lose the end of an
//! answer to a reset.

use super::warnings::WarnEvery;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;

/// `stream`, whose writes fail (and so close the connection) when one waits for
/// the reader longer than `limit`: a reader that takes nothing that long (a
/// stream's reader fallen far behind, a client stuck) holds no socket forever.
/// (Streams served on the socket itself check their writes in `http/broadcast.rs`.)
pub(super) fn stalls_cut<S>(stream: S, limit: Duration) -> Pin<Box<TimeoutStream<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limit));
    Box::pin(stream)
}

/// Accepts connections on a listener. After a failed accept it backs off instead
/// of spinning (EMFILE: no descriptor left; ENFILE, ENOBUFS, ENOMEM, and any
/// error it does not know), and warns once for a run of such failures; except
/// when the one connection failed (aborted or reset before it was taken) or the
/// network did (down, unreachable), which is no reason to wait: the next one is
/// taken at once.
pub(super) struct Acceptor {
    /// What listens, for the warning.
    what: &'static str,
    /// Failed accepts in a row.
    failures: u32,
}

/// How long a listener waits after an accept failed for want of a resource.
const ACCEPT_BACK_OFF: Duration = Duration::from_millis(50);

impl Acceptor {
    pub(super) fn new(what: &'static str) -> Self {
        Acceptor { what, failures: 0 }
    }

    /// The next connection, or none after a failed accept (and its back-off when
    /// it needs one).
    pub(super) async fn accept(
        &mut self,
        listener: &TcpListener,
    ) -> Option<(TcpStream, std::net::SocketAddr)> {
        match listener.accept().await {
            Ok(accepted) => {
                self.failures = 0;
                Some(accepted)
            }
            Err(error) if !for_want_of_a_resource(&error) => {
                tracing::debug!(%error, listener = self.what, "accept failed");
                None
            }
            Err(error) => {
                if self.failures == 0 {
                    tracing::warn!(%error, listener = self.what, "accept failed; backing off");
                }
                self.failures = self.failures.saturating_add(1);
                tokio::time::sleep(ACCEPT_BACK_OFF).await;
                None
            }
        }
    }
}

/// Whether a failed accept may be the process or the system out of something
/// (descriptors, buffers, memory), which accepting again at once cannot cure:
/// any error but one connection's own failure or the network's, which
/// `accept(2)` says to retry at once.
fn for_want_of_a_resource(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{
        ConnectionAborted, ConnectionRefused, ConnectionReset, HostUnreachable, Interrupted,
        NetworkDown, NetworkUnreachable, WouldBlock,
    };
    !matches!(
        error.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
    )
}

/// Connections refused past a cap: each is counted in a metric, and they are
/// warned of at most once a minute, with how many there were since the last
/// warning, so that a flood of connections does not flood the log too.
pub(super) struct Refusals {
    /// What listens, for the warning.
    what: &'static str,
    /// The setting that sets the cap, for the warning.
    setting: &'static str,
    /// The cap.
    max: usize,
    counter: prometheus_client::metrics::counter::Counter,
    warnings: WarnEvery,
}

impl Refusals {
    pub(super) fn new(
        what: &'static str,
        setting: &'static str,
        max: usize,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Refusals {
            what,
            setting,
            max,
            counter,
            warnings: WarnEvery::default(),
        }
    }

    /// Counts a connection from `peer` refused past the cap.
    pub(super) fn refused(&mut self, peer: std::net::SocketAddr) {
        self.counter.inc();
        if let Some(refused) = self.warnings.happened(Instant::now()) {
            tracing::warn!(
                %peer,
                refused,
                max = self.max,
                listener = self.what,
                setting = self.setting,
                "connections refused: too many open"
            );
        }
    }
}

/// Longest time an answered connection is read from before it is closed.
pub(super) const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read from it meanwhile.
const LINGER_BYTES: usize = 64 * 1024;

/// After the last answer is written and the write side shut: reads what the
/// client still sends until it closes ([`LINGER`] and [`LINGER_BYTES`] at most).
/// Closing with unread input would reset the connection, and the client could
/// lose the end of the answer.
pub(super) async fn linger<S>(io: &mut S)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    // Linux's error numbers.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_an_accept_that_failed_for_want_of_a_resource_backs_off() {
        use std::io::{Error, ErrorKind};
        // EMFILE and ENFILE (no descriptor left), ENOBUFS, ENOMEM.
        for errno in [24, 23, 105, 12] {
            let error = Error::from_raw_os_error(errno);
            assert!(for_want_of_a_resource(&error), "{error}");
        }
        // ECONNABORTED: a connection reset before it was accepted.
        assert!(!for_want_of_a_resource(&Error::from_raw_os_error(103)));
        assert!(!for_want_of_a_resource(&Error::from(
            ErrorKind::ConnectionReset
        )));
        // ENETDOWN.
        assert!(!for_want_of_a_resource(&Error::from_raw_os_error(100)));
    }
}
