//! TLS for HTTPS listeners: loads every certificate of a listener and picks one by SNI
//! (exact name first, then `*.` wildcard), falling back to the first certificate.

use std::sync::Arc;

use berth_config::model::Certificate;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// Why a listener's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be loaded.
    #[error("cannot load certificate {cert} / key {key}: {why}")]
    Load {
        /// The certificate file (`certificates[].cert`).
        cert: String,
        /// The key file (`certificates[].key`).
        key: String,
        /// Why it could not be loaded or does not match.
        why: String,
    },
    /// The listener has no certificate.
    #[error("an https listener needs at least one certificate")]
    NoCertificate,
}

/// Chooses a certificate by SNI.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// Loads every certificate of a listener.
    pub fn load(certs: &[Certificate]) -> Result<SniResolver, TlsError> {
        pingora::tls::install_default_crypto_provider();
        let mut default = None;
        let mut by_name = Vec::new();
        for c in certs {
            let key = Arc::new(load_one(c)?);
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

fn load_one(c: &Certificate) -> Result<CertifiedKey, TlsError> {
    let cert = c.cert.display().to_string();
    let key = c.key.display().to_string();
    let err = |why: String| TlsError::Load {
        cert: cert.clone(),
        key: key.clone(),
        why,
    };
    let (chain, private) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("no certificate or key found in the files".into()))?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| err("no TLS crypto provider installed".into()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| err(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// A TLS acceptor choosing certificates by SNI, for `tls` (TCP) listeners (no ALPN) and `https`
/// listeners (ALPN `http/1.1`, and `h2` first when the listener speaks HTTP/2).
pub fn acceptor(certs: &[Certificate], alpn: Alpn) -> Result<pingora::tls::TlsAcceptor, TlsError> {
    let resolver = SniResolver::load(certs)?;
    let mut config = pingora::tls::ServerConfig::builder_with_protocol_versions(&[
        &pingora::tls::version::TLS12,
        &pingora::tls::version::TLS13,
    ])
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = match alpn {
        Alpn::None => Vec::new(),
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(pingora::tls::TlsAcceptor::from(Arc::new(config)))
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
