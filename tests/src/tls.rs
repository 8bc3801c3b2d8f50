//! TLS for tests: a throwaway CA issuing server certificates (rcgen), and a client that
//! connects with a chosen SNI and ALPN list, trusting only that CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::Resp;

/// Opens TCP to `addr` and completes a TLS handshake with SNI `sni` (the ALPN offered is the
/// config's).
pub async fn connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(sni.to_string()).context("server name")?;
    TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .context("TLS handshake")
}

/// The leaf certificate (DER) the server presented in a finished handshake.
pub fn server_leaf(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and its key, PEM.
pub struct ServerCert {
    /// Certificate PEM (leaf only).
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
    /// The certificate, DER (to compare with what a server presented).
    pub der: Vec<u8>,
}

impl ServerCert {
    /// Writes `<name>.crt` and `<name>.key` into `dir`, returning their file names.
    pub fn write(&self, dir: &Path, name: &str) -> (String, String) {
        let (c, k) = (format!("{name}.crt"), format!("{name}.key"));
        std::fs::write(dir.join(&c), &self.cert_pem).expect("write cert");
        std::fs::write(dir.join(&k), &self.key_pem).expect("write key");
        (c, k)
    }
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// A server certificate for `names` (DNS names), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let key = rcgen::KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign server cert");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client TLS config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert.der().to_vec()))
            .expect("add CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl TestCa {
    /// This CA's certificate, PEM (for a `ca_bundle` that trusts it).
    pub fn ca_cert_pem(&self) -> String {
        self.cert.pem()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// What a TLS request saw.
#[derive(Debug)]
pub struct TlsResp {
    /// The leaf certificate the server presented, DER.
    pub server_cert: Vec<u8>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// HTTP version of the response.
    pub version: http::Version,
    /// The response.
    pub resp: Resp,
}

/// Connects to `addr` with SNI `sni`, then sends `GET path` with `Host: sni` over HTTP/2 if ALPN
/// chose `h2`, else HTTP/1.1.
pub async fn tls_get(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    path: &str,
) -> Result<TlsResp> {
    let tls = connect(cfg, addr, sni).await?;
    let server_cert = server_leaf(&tls).ok_or_else(|| anyhow!("no server certificate"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = TokioIo::new(tls);
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://{sni}{path}")).body(Empty::<Bytes>::new())?;
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", sni)
            .body(Empty::<Bytes>::new())?;
        send.send_request(req).await?
    };
    let version = resp.version();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(TlsResp {
        server_cert,
        alpn,
        version,
        resp: Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).to_string(),
        },
    })
}
