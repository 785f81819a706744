//! Certificates made at test time (rcgen): a CA per test, and leaves it signs
//! for servers and clients, written as PEM files in a directory of the test's own.

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When a leaf is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday to next year.
    Current,
    /// Ended yesterday.
    Expired,
}

/// A test CA and the directory its files go to.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM): what `--ca` and `--tls-client-ca` take.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A fresh directory under the target's temporary directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "pki-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = fresh_dir(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, certificate.pem()).unwrap();
        Pki {
            dir,
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), good for servers and
    /// clients, with `common_name` as its subject; written as `FILE.pem` and
    /// `FILE.key` (replacing what was there).
    pub fn leaf(&self, file: &str, common_name: &str, names: &[&str], validity: Validity) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        match validity {
            Validity::Current => {
                params.not_before = now - Duration::days(1);
                params.not_after = now + Duration::days(365);
            }
            Validity::Expired => {
                params.not_before = now - Duration::days(30);
                params.not_after = now - Duration::days(1);
            }
        }
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        // The key first and the certificate last, each written whole and renamed
        // into place, so that a reloading coordinator never reads half a file
        // (and reads a matching pair once the certificate is there).
        write_atomically(&pair.key, key.serialize_pem().as_bytes());
        write_atomically(&pair.cert, certificate.pem().as_bytes());
        pair
    }

    /// A server certificate for the loopback address.
    pub fn server(&self, file: &str) -> Pair {
        self.leaf(file, file, &["127.0.0.1", "localhost"], Validity::Current)
    }
}

/// A CA certificate for the loopback address used as a server's own (the usual
/// mistake with a quick self-signed setup): `FILE.pem`, which is also what a
/// client would be given as `--ca`, and `FILE.key`.
pub fn ca_as_server(file: &str) -> Pair {
    let dir = fresh_dir(file);
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, file);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let pair = Pair {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
    };
    write_atomically(&pair.key, key.serialize_pem().as_bytes());
    write_atomically(&pair.cert, certificate.pem().as_bytes());
    pair
}

fn write_atomically(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}
