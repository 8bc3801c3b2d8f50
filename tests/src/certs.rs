//! Certificates for the TLS reload and mutual TLS tests (rcgen): a CA issuing server and client
//! leaves with a chosen serial, name and validity (expired ones included), CRLs revoking some
//! of them, and rustls client configurations that trust a CA and present a client
//! certificate.

use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// What a leaf is issued with.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    /// Common name (the subject is `CN=<cn>,O=berth tests`).
    pub cn: &'a str,
    /// DNS names (server certificates; empty for clients).
    pub dns: &'a [&'a str],
    /// Serial number bytes (first byte below 0x80, so its hex is these bytes).
    pub serial: &'a [u8],
    /// notBefore, (year, month, day) at 00:00:00Z.
    pub not_before: (i32, u8, u8),
    /// notAfter, (year, month, day) at 00:00:00Z.
    pub not_after: (i32, u8, u8),
    /// A client certificate (clientAuth) rather than a server one (serverAuth).
    pub client: bool,
}

impl LeafSpec<'_> {
    /// A server leaf for `dns`, valid 2025-01-01 to 2040-01-01.
    pub fn server<'a>(cn: &'a str, dns: &'a [&'a str], serial: &'a [u8]) -> LeafSpec<'a> {
        LeafSpec {
            cn,
            dns,
            serial,
            not_before: (2025, 1, 1),
            not_after: (2040, 1, 1),
            client: false,
        }
    }

    /// A client leaf, valid 2025-01-01 to 2040-01-01.
    pub fn client<'a>(cn: &'a str, serial: &'a [u8]) -> LeafSpec<'a> {
        LeafSpec {
            cn,
            dns: &[],
            serial,
            not_before: (2025, 1, 1),
            not_after: (2040, 1, 1),
            client: true,
        }
    }
}

/// An issued leaf and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate PEM (the leaf only).
    pub cert_pem: String,
    /// PKCS#8 key PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// The certificate and key as a rustls client identity.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM");
        (vec![CertificateDer::from(self.der.clone())], key)
    }
}

impl Ca {
    /// A new self-signed CA whose subject is `CN=<cn>,O=berth tests`.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca { cert, key }
    }

    /// The CA certificate, PEM (a `ca_bundle`).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf signed by this CA.
    pub fn issue(&self, spec: &LeafSpec<'_>) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = spec.dns.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = name(spec.cn);
        params.serial_number = Some(SerialNumber::from_slice(spec.serial));
        params.not_before = date_time_ymd(spec.not_before.0, spec.not_before.1, spec.not_before.2);
        params.not_after = date_time_ymd(spec.not_after.0, spec.not_after.1, spec.not_after.2);
        params.extended_key_usages = vec![if spec.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A CRL (PEM) of this CA revoking the certificates with these serials.
    pub fn crl(&self, revoked: &[&[u8]]) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2040, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("sign CRL")
            .pem()
            .expect("CRL PEM")
    }

    /// A client configuration trusting only this CA, presenting `identity` if given, offering
    /// ALPN `http/1.1`.
    pub fn client_config(&self, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert.der().to_vec()))
            .expect("add CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut cfg = match identity {
            Some(id) => {
                let (chain, key) = id.identity();
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client identity")
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// `CN=<cn>,O=berth tests` (RFC 2253 order; O is written first in the certificate).
fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "berth tests");
    dn.push(DnType::CommonName, cn);
    dn
}

/// The `X-Amzn-Mtls-Clientcert-Validity` value a leaf made with `spec` carries.
pub fn validity_header(spec: &LeafSpec<'_>) -> String {
    let (a, b) = (spec.not_before, spec.not_after);
    format!(
        "NotBefore={:04}-{:02}-{:02}T00:00:00Z;NotAfter={:04}-{:02}-{:02}T00:00:00Z",
        a.0, a.1, a.2, b.0, b.1, b.2
    )
}

/// Upper-case hex of serial bytes, as `X-Amzn-Mtls-Clientcert-Serial-Number` writes it.
pub fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// One client TLS connection speaking HTTP/1.1, kept open for several requests.
pub struct TlsConn {
    /// The leaf certificate the server presented, DER.
    pub server_cert: Vec<u8>,
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl TlsConn {
    /// Connects to `addr` with SNI `sni` and finishes the handshake. (With TLS 1.3 a server
    /// refusing the client's certificate says so only at the first request.)
    pub async fn open(
        cfg: Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
        sni: &str,
    ) -> anyhow::Result<TlsConn> {
        let tls = crate::tls::connect(cfg, addr, sni).await?;
        let server_cert = crate::tls::server_leaf(&tls)
            .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(TlsConn { server_cert, send })
    }

    /// `GET path` with `Host: web.test` and `headers`, body read in full.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<crate::Resp> {
        use http_body_util::BodyExt;
        let mut req = http::Request::get(path).header("host", "web.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .send
            .send_request(req.body(http_body_util::Empty::new())?)
            .await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(crate::Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).to_string(),
        })
    }
}

/// Opens a connection and sends one `GET path`: a new handshake per call.
pub async fn get_once(
    cfg: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(Vec<u8>, crate::Resp)> {
    let mut c = TlsConn::open(cfg, addr, "web.test").await?;
    let r = c.get(path, headers).await?;
    Ok((c.server_cert, r))
}

/// Decodes `%XX` escapes (the URL-encoded PEM headers).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
