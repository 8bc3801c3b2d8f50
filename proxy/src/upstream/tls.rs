//! TLS towards the targets of `https` target groups: one rustls [`ClientConfig`] per distinct
//! `[target_groups.tls]` setting and HTTP version, built once and shared.
//!
//! Certificates are verified against the system roots (rustls-native-certs, read once) or the
//! group's `ca_bundle`, for the configured `server_name` or, by default, the target's IP
//! address (an IP SAN). `verify = false` accepts any certificate (ALB's behaviour) but still
//! checks the handshake's signatures. ALPN offers `h2` only to `http2`/`grpc` groups and
//! `http/1.1` only to `http1` groups, so a target that cannot speak the group's version fails
//! the handshake instead of answering in the other one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use berth_config::model::{HealthProtocol, ProtocolVersion, TargetGroup, TargetGroupTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a target group's TLS settings could not be turned into a client configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA bundle holds a block that is not a valid certificate.
    #[error("CA bundle {path}: {why}")]
    CaBundle {
        /// The `ca_bundle` file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The configured server name is not a DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// rustls refused the settings (no usable protocol version).
    #[error("TLS client setup: {0}")]
    Rustls(String),
}

/// TLS settings of one target group, ready for [`super::dial`].
#[derive(Debug)]
pub struct TargetTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    h2: bool,
}

impl TargetTls {
    /// Builds the client configuration for `tls`, offering `h2` by ALPN when `version` is
    /// HTTP/2 (gRPC included) and `http/1.1` otherwise.
    pub fn new(tls: &TargetGroupTls, version: ProtocolVersion) -> Result<TargetTls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        let mut config = if tls.verify {
            let roots = match &tls.ca_bundle {
                Some(ca) => bundle_roots(&ca.pem, &ca.path.display().to_string())?,
                None => system_roots().clone(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        };
        let h2 = version.is_http2();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let server_name = match &tls.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| TlsSetupError::ServerName(n.clone()))?,
            ),
        };
        Ok(TargetTls {
            config: Arc::new(config),
            server_name,
            h2,
        })
    }

    /// The rustls client configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// The name sent by SNI and verified for a target at `addr`: the configured server name,
    /// or the target's IP address (no SNI is sent for an address; its certificate must hold
    /// it as an IP SAN).
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// Whether ALPN offers only `h2` (the group speaks HTTP/2 to its targets).
    pub fn wants_h2(&self) -> bool {
        self.h2
    }
}

/// The TLS settings for requests to `group`'s targets: `None` for plain `http` groups. Built
/// once per distinct setting and cached (a reload that changes nothing reuses it).
pub fn for_group(group: &TargetGroup) -> Result<Option<Arc<TargetTls>>, TlsSetupError> {
    match &group.tls {
        None => Ok(None),
        Some(tls) => cached(tls, group.protocol_version).map(Some),
    }
}

/// The TLS settings for active checks of `group`: its own for `https` and `grpc` checks of an
/// https group, the safe defaults (system roots, the target's IP verified) for `https` checks
/// of an http group, none otherwise. gRPC checks offer `h2`; HTTP checks follow the group.
pub fn for_health_check(group: &TargetGroup) -> Result<Option<Arc<TargetTls>>, TlsSetupError> {
    let version = match group.health_check.protocol {
        HealthProtocol::Tcp => return Ok(None),
        HealthProtocol::Http => return Ok(None),
        HealthProtocol::Grpc if group.tls.is_none() => return Ok(None),
        HealthProtocol::Grpc => ProtocolVersion::Grpc,
        HealthProtocol::Https => group.protocol_version,
    };
    let defaults = TargetGroupTls {
        verify: true,
        ..TargetGroupTls::default()
    };
    cached(group.tls.as_ref().unwrap_or(&defaults), version).map(Some)
}

/// Builds (or finds) every TLS setting of `group` now, so that a configuration load reports
/// problems and warns about `verify = false` before the first request.
pub fn prepare(group: &TargetGroup) {
    if group.tls.as_ref().is_some_and(|t| !t.verify) {
        tracing::warn!(
            target_group = %group.name,
            "TLS to targets with verify = false: target certificates are not checked (as ALB)"
        );
    }
    for built in [for_group(group), for_health_check(group)] {
        if let Err(e) = built {
            tracing::error!(target_group = %group.name, error = %e, "TLS to targets cannot be set up; connections will fail");
        }
    }
}

type CacheKey = (TargetGroupTls, bool);

fn cached(tls: &TargetGroupTls, version: ProtocolVersion) -> Result<Arc<TargetTls>, TlsSetupError> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<TargetTls>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (tls.clone(), version.is_http2());
    if let Some(t) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(Arc::clone(t));
    }
    let built = Arc::new(TargetTls::new(tls, version)?);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, Arc::clone(&built));
    Ok(built)
}

/// The certificates of a PEM bundle as trust anchors.
fn bundle_roots(pem: &[u8], path: &str) -> Result<RootCertStore, TlsSetupError> {
    let bad = |why: String| TlsSetupError::CaBundle {
        path: path.to_owned(),
        why,
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| bad(e.to_string()))?;
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate".into()));
    }
    Ok(roots)
}

/// The system's trust anchors, read once; unreadable ones are logged and skipped.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                ignored,
                "no system root certificates: https targets need tls.ca_bundle or verify = false"
            );
        }
        roots
    })
}

/// Accepts any certificate (`verify = false`); the handshake's signatures are still checked
/// so that the session is at least bound to the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
