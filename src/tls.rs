//! TLS for every connection hakken makes or takes: rustls with the ring crypto
//! provider, handed to every configuration explicitly (nothing is installed
//! process-wide, so an application embedding the client keeps its own choice).
//!
//! This module holds what both ends share: reading PEM files with one clear
//! error each, the client side's configuration ([`ClientTls`]: the system's roots
//! plus `--ca`, and a client certificate), and turning a failed handshake into one
//! line that says what is wrong ([`explain`]). The coordinator's side (serving,
//! reloading, client certificates) is in `coordinator/tls.rs`.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The crypto provider of every TLS configuration hakken builds.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs the ring provider as the process's default for rustls, unless one is
/// installed already; returns whether this call installed it. hakken never needs
/// it, but it builds reqwest with rustls and no provider of its own, so a program
/// that builds its own reqwest clients next to hakken's (with no TLS feature of
/// its own) calls this first, or reqwest panics at `Client::new()`.
pub fn install_default_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}

/// Why a TLS setting could not be used. Each names the file and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the {what} {}: {message}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The file holds nothing usable.
    #[error("the {what} {} holds no PEM {expected}", path.display())]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM section that was looked for.
        expected: &'static str,
    },
    /// The contents were refused.
    #[error("the {what} {} cannot be used: {message}", path.display())]
    Invalid {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        message: String,
    },
    /// Settings that only work together were given alone.
    #[error("{0}")]
    Incomplete(&'static str),
    /// rustls refused the configuration itself.
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Every certificate in a PEM file (a chain, leaf first, or a bundle of roots).
pub fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PRIVATE KEY",
        },
        e => TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        },
    })
}

/// The roots in a PEM file, as a store.
pub fn roots(path: &Path, what: &'static str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    add_roots(&mut store, path, what)?;
    Ok(store)
}

fn add_roots(store: &mut RootCertStore, path: &Path, what: &'static str) -> Result<(), TlsError> {
    for certificate in certificates(path, what)? {
        store.add(certificate).map_err(|e| TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// The system's trusted roots, read once per process (none when the system has
/// none: then only `--ca` is trusted).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = store.add_parsable_certificates(found.certs);
        store
    })
}

/// The client side's TLS settings: roots trusted beyond the system's, and a
/// client certificate to present (for coordinators that require one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub ca: Option<PathBuf>,
    /// A PEM file with the client certificate (and its chain).
    pub cert: Option<PathBuf>,
    /// A PEM file with the client certificate's private key.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether anything is set.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The rustls configuration these settings make: the files are read now.
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = system_roots().clone();
        if let Some(ca) = &self.ca {
            add_roots(&mut roots, ca, "CA file")?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let resolver = ReloadingClientCert::load(cert.clone(), key.clone())?;
                builder.with_client_cert_resolver(Arc::new(resolver))
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Incomplete(
                    "a client certificate needs both its file and its key's (--cert and --key)",
                ))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// What a set of files looked like (modification time and size of each): a
/// change means a reload.
pub(crate) type Stamps = Vec<Option<(std::time::SystemTime, u64)>>;

/// The [`Stamps`] of `paths` now.
pub(crate) fn stamps(paths: &[&Path]) -> Stamps {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// How often a client certificate's files are checked for changes.
const CLIENT_CERT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A client certificate read from its files, and read again when they change
/// (checked at most every [`CLIENT_CERT_CHECK`], at a handshake): a renewed
/// certificate is presented from the next new connection on, without a restart.
/// A change that cannot be used (a half-written file, a key that does not match)
/// is logged, and the previous certificate stays.
#[derive(Debug)]
struct ReloadingClientCert {
    cert: PathBuf,
    key: PathBuf,
    state: std::sync::Mutex<ClientCertState>,
}

#[derive(Debug)]
struct ClientCertState {
    stamps: Stamps,
    checked: std::time::Instant,
    current: Arc<rustls::sign::CertifiedKey>,
}

impl ReloadingClientCert {
    fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let current = Arc::new(Self::read(&cert, &key)?);
        Ok(ReloadingClientCert {
            state: std::sync::Mutex::new(ClientCertState {
                stamps: stamps(&[&cert, &key]),
                checked: std::time::Instant::now(),
                current,
            }),
            cert,
            key,
        })
    }

    fn read(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let chain = certificates(cert, "client certificate")?;
        let key_der = private_key(key)?;
        rustls::sign::CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
            TlsError::Invalid {
                what: "client certificate and key",
                path: cert.to_owned(),
                message: e.to_string(),
            }
        })
    }
}

impl rustls::client::ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= CLIENT_CERT_CHECK {
            state.checked = std::time::Instant::now();
            let now = stamps(&[&self.cert, &self.key]);
            if now != state.stamps {
                state.stamps = now;
                match Self::read(&self.cert, &self.key) {
                    Ok(key) => {
                        state.current = Arc::new(key);
                        tracing::info!(cert = %self.cert.display(), "client certificate reloaded");
                    }
                    Err(error) => tracing::error!(
                        %error,
                        "client certificate reload failed; the previous one stays in use"
                    ),
                }
            }
        }
        Some(state.current.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What a failed TLS exchange means, in words a user can act on, if `error` (or
/// one of its causes) is a TLS error; `None` otherwise.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // An I/O error's `source` skips the error it wraps: look inside it.
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "its certificate is not signed by a CA we trust (add its CA with --ca / HAKKEN_CA)"
                .into()
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "its certificate has expired".into(),
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "its certificate is not valid yet (check the clocks)".into(),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "its certificate is not valid for this name (connect by a name the certificate lists)"
            .into(),
        E::InvalidCertificate(CertificateError::Other(other))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "its certificate is a CA certificate, not a server certificate (a self-signed CA \
             served as the coordinator's own: have that CA sign a certificate for the \
             coordinator, and give the CA with --ca / HAKKEN_CA)"
                .into()
        }
        // The verifier's own name for what it refused (`BadSignature`, ...).
        E::InvalidCertificate(CertificateError::Other(other)) => {
            format!("its certificate was refused ({other})")
        }
        E::InvalidCertificate(other) => format!("its certificate was refused ({other})"),
        E::InvalidMessage(_) => {
            "its answer is not TLS: it does not speak TLS on this port (write the address without https://?)".into()
        }
        E::AlertReceived(rustls::AlertDescription::InternalError) => {
            "it refused the connection (TLS alert internal_error: over its connection limit, or failing)".into()
        }
        E::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "it requires a client certificate (set --cert and --key / HAKKEN_CERT and HAKKEN_KEY)"
                .into()
        }
        E::AlertReceived(
            rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown,
        ) => "it refused our client certificate (not signed by the CA it trusts)".into(),
        E::AlertReceived(rustls::AlertDescription::CertificateExpired) => {
            "it refused our client certificate: expired".into()
        }
        other => format!("TLS failed: {other}"),
    }
}
