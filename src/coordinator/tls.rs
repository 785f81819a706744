//! The coordinator's side of TLS: the server configuration built from its files,
//! reloaded when they change or on SIGHUP, and the client certificate a
//! connection presented.
//!
//! [`Certificates`] holds the current `rustls::ServerConfig` behind a lock taken
//! only to clone an `Arc`; every new connection's handshake uses the one current
//! when it was accepted, and open connections keep theirs, so a reload drops
//! nothing. A reload that fails (a half-written file, a key that does not match)
//! is logged and the previous configuration stays. The files are checked every
//! [`CHECK_EVERY`] (their modification time and size), and at once on SIGHUP.
//!
//! With a client CA (mutual TLS), a client certificate is verified in the
//! handshake when one is presented, and one from another CA fails the handshake;
//! a connection without one is let through the handshake so that `/status` and
//! `/ready` stay open to load balancers, and admission refuses every other route
//! to it (`http/admission.rs`). The subject of a verified certificate travels with
//! each request as a [`ClientIdentity`], and writes are logged with it.

use crate::tls::{certificates, private_key, provider, roots, stamps, Stamps, TlsError};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The files a coordinator serves TLS from (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// With it, mutual TLS: every route but `/status` and `/ready` requires a
    /// client certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls configuration the files make now.
    pub fn config(&self) -> Result<ServerConfig, TlsError> {
        let chain = certificates(&self.cert, "certificate")?;
        let key = private_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca, "client CA file")?),
                    provider(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "client CA file",
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid {
                what: "certificate and key",
                path: self.cert.clone(),
                message: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// What the files look like now: a change of any means a reload.
    fn stamps(&self) -> Stamps {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        stamps(&paths)
    }
}

/// The current server configuration, and what its files looked like.
pub(crate) struct Certificates {
    files: ServerTls,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Stamps>,
    /// Reloads that took effect since start.
    reloads: std::sync::atomic::AtomicU64,
}

impl Certificates {
    /// Reads the files; fails with the first problem found.
    pub fn load(files: ServerTls) -> Result<Self, TlsError> {
        let stamps = files.stamps();
        let config = files.config()?;
        Ok(Certificates {
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
            reloads: Default::default(),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads if any file changed since the last load (or `force`). Returns
    /// whether a new configuration took effect.
    pub fn reload(&self, force: bool) -> bool {
        let stamps = self.files.stamps();
        {
            let mut known = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
            if !force && *known == stamps {
                return false;
            }
            *known = stamps;
        }
        match self.files.config() {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                self.reloads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                true
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; the previous certificate stays in use");
                false
            }
        }
    }
}

/// Checks the files every [`CHECK_EVERY`] and on SIGHUP until `shutdown`.
pub(crate) async fn reload_loop(certificates: Arc<Certificates>, shutdown: CancellationToken) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        if forced {
            tracing::info!("SIGHUP: reloading the TLS certificate");
        }
        certificates.reload(forced);
    }
}

/// The client certificate a connection presented and the CA verified: its
/// subject, as a distinguished name (`CN=billing,O=acme`). Absent on plain and
/// on TLS connections without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity(pub Arc<str>);

/// The subject of the first certificate of a verified chain, if it parses.
pub(crate) fn identity(
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Option<ClientIdentity> {
    let leaf = chain?.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(ClientIdentity(certificate.subject().to_string().into()))
}
