//! A listener's certificates: read from their files in one pass ([`Contents`]), each key checked
//! against its leaf, and chosen per handshake by SNI ([`SniResolver`]: exact name first, then
//! `*.` wildcard, falling back to the first certificate). [`build`] turns the files into the
//! rustls configuration one listener's handshakes use.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_config::model::{Certificate, Listener, ListenerProtocol, Mtls};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::mtls::{self, ClientCertMode};

/// Why a listener's TLS could not be set up (at start) or reloaded (later); every variant
/// names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {file}: {why}")]
    Read {
        /// The file.
        file: String,
        /// What the operating system said.
        why: String,
    },
    /// A certificate or key file could not be loaded, or they do not match.
    #[error("cannot load certificate {cert} / key {key}: {why}")]
    Load {
        /// The certificate file (`certificates[].cert`).
        cert: String,
        /// The key file (`certificates[].key`).
        key: String,
        /// Why it could not be loaded or does not match.
        why: String,
    },
    /// The mTLS CA bundle holds no usable certificate.
    #[error("cannot load CA bundle {file}: {why}")]
    CaBundle {
        /// `mtls.ca_bundle`.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// A CRL file could not be parsed.
    #[error("cannot load CRL {file}: {why}")]
    Crl {
        /// The `mtls.crls` entry.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// The listener has no certificate.
    #[error("an https or tls listener needs at least one certificate")]
    NoCertificate,
    /// rustls refused the assembled configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// The file the error is about (the certificate file for a certificate/key pair; empty
    /// when no file is at fault), for log fields.
    pub fn file(&self) -> &str {
        match self {
            TlsError::Read { file, .. }
            | TlsError::CaBundle { file, .. }
            | TlsError::Crl { file, .. } => file,
            TlsError::Load { cert, .. } => cert,
            TlsError::NoCertificate | TlsError::Config(_) => "",
        }
    }
}

/// The application protocols a TLS listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// None (TCP listeners relay whatever is inside).
    None,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2, then HTTP/1.1.
    Http2AndHttp1,
}

/// What one listener's TLS is built from: its certificates, its mutual TLS settings and the
/// protocols it offers. Two equal `Sources` read from unchanged files build the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// `certificates`, the first being the default.
    pub certificates: Vec<Certificate>,
    /// `[listeners.mtls]`.
    pub mtls: Mtls,
    /// ALPN list (from the protocol and `http2`, which cannot change on reload).
    pub alpn: Alpn,
}

impl Sources {
    /// The TLS sources of a listener; `None` for one that does not terminate TLS.
    pub fn of(l: &Listener) -> Option<Sources> {
        let alpn = match l.protocol {
            ListenerProtocol::Http | ListenerProtocol::Tcp => return None,
            ListenerProtocol::Tls => Alpn::None,
            ListenerProtocol::Https if l.http2 => Alpn::Http2AndHttp1,
            ListenerProtocol::Https => Alpn::Http1,
        };
        Some(Sources {
            certificates: l.certificates.clone(),
            mtls: l.mtls.clone(),
            alpn,
        })
    }

    /// Every file, in the order [`Contents`] holds them: each certificate then its key, the CA
    /// bundle, the CRLs.
    fn files(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        for c in &self.certificates {
            out.push(c.cert.as_path());
            out.push(c.key.as_path());
        }
        if let Mtls::Verify { ca_bundle, crls } = &self.mtls {
            out.push(ca_bundle.as_path());
            out.extend(crls.iter().map(PathBuf::as_path));
        }
        out
    }
}

/// The bytes of every file of a listener's [`Sources`], read in one pass.
#[derive(Clone)]
pub struct Contents {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("Contents")
            .field(
                "files",
                &self.files.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Contents {
    /// Reads every file of `src`.
    pub fn read(src: &Sources) -> Result<Contents, TlsError> {
        let mut files = Vec::new();
        for p in src.files() {
            let bytes = std::fs::read(p).map_err(|e| TlsError::Read {
                file: p.display().to_string(),
                why: e.to_string(),
            })?;
            files.push((p.to_path_buf(), bytes));
        }
        Ok(Contents { files })
    }

    /// A fingerprint of the contents (SipHash: for noticing changes, not against forgery).
    pub fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.files.hash(&mut h);
        h.finish()
    }

    fn bytes(&self, i: usize) -> &[u8] {
        self.files
            .get(i)
            .map(|(_, b)| b.as_slice())
            .unwrap_or_default()
    }
}

/// A listener's TLS, built: the rustls configuration its handshakes use, how it treats client
/// certificates, and when each of its certificates expires.
#[derive(Debug)]
pub struct Built {
    /// The handshake configuration.
    pub config: Arc<ServerConfig>,
    /// What is asked of clients, and which headers their certificate gives.
    pub client_certs: ClientCertMode,
    /// `(certificate file, notAfter as a Unix time)` of each certificate's leaf.
    pub expiries: Vec<(String, i64)>,
}

/// The crypto provider berth's TLS uses (ring, as the rest of the process).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a listener's TLS from the files `contents` read for `src`.
pub fn build(src: &Sources, contents: &Contents) -> Result<Built, TlsError> {
    let provider = provider();
    let mut keys = Vec::new();
    let mut expiries = Vec::new();
    for (i, c) in src.certificates.iter().enumerate() {
        let (key, not_after) = certified_key(
            c,
            contents.bytes(2 * i),
            contents.bytes(2 * i + 1),
            &provider,
        )?;
        expiries.push((c.cert.display().to_string(), not_after));
        keys.push((c, Arc::new(key)));
    }
    let resolver = SniResolver::new(keys)?;
    let (verifier, client_certs) = mtls::verifier(
        &src.mtls,
        contents
            .files
            .get(2 * src.certificates.len()..)
            .unwrap_or_default(),
        &provider,
    )?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(Arc::new(resolver));
    if client_certs != ClientCertMode::Off {
        // As ALB: no session resumption with mutual TLS, so that every connection's client
        // certificate is checked against the CA bundle and CRLs of the moment.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    config.alpn_protocols = match src.alpn {
        Alpn::None => Vec::new(),
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Built {
        config: Arc::new(config),
        client_certs,
        expiries,
    })
}

/// One certificate chain and its key, checked to match; with the leaf's notAfter.
fn certified_key(
    c: &Certificate,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, i64), TlsError> {
    let err = |why: String| TlsError::Load {
        cert: c.cert.display().to_string(),
        key: c.key.display().to_string(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("the certificate file is not PEM: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| err("no certificate in the certificate file".into()))?;
    let not_after = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| err(format!("the leaf certificate cannot be parsed: {e}")))?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| err(format!("no private key in the key file: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            err("the private key does not match the certificate".into())
        }
        other => err(other.to_string()),
    })?;
    Ok((key, not_after))
}

/// Chooses a certificate by SNI.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// A resolver over checked keys, the first being the default.
    fn new(keys: Vec<(&Certificate, Arc<CertifiedKey>)>) -> Result<SniResolver, TlsError> {
        let mut default = None;
        let mut by_name = Vec::new();
        for (c, key) in keys {
            if default.is_none() {
                default = Some(Arc::clone(&key));
            }
            for n in &c.server_names {
                by_name.push((n.to_ascii_lowercase(), Arc::clone(&key)));
            }
        }
        Ok(SniResolver {
            default: default.ok_or(TlsError::NoCertificate)?,
            by_name,
        })
    }

    /// The certificate for a server name.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == name) {
                return Arc::clone(k);
            }
            if let Some((_, parent)) = name.split_once('.') {
                let wild = format!("*.{parent}");
                if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == wild) {
                    return Arc::clone(k);
                }
            }
        }
        Arc::clone(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}
