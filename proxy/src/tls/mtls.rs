//! Mutual TLS on https listeners, in ALB's two modes:
//!
//! - `verify`: a client certificate is required, must chain to the CA bundle, be within its
//!   validity and not be revoked by the CRLs (checked for the leaf; a leaf whose issuer no CRL
//!   covers is accepted). Targets receive the leaf's facts in `X-Amzn-Mtls-Clientcert-Serial-Number`
//!   (upper-case hex), `-Issuer` and `-Subject` (RFC 2253), `-Validity`
//!   (`NotBefore=…Z;NotAfter=…Z`) and `-Leaf` (URL-encoded PEM).
//! - `passthrough`: a certificate is asked for but neither required nor verified (the
//!   handshake signature still is: the client holds the key); the chain it sent reaches targets
//!   URL-encoded in `X-Amzn-Mtls-Clientcert`.
//!
//! The facts are computed once per connection, at handshake ([`ClientCertHeaders`]); every
//! header of those names a client sends is removed on every listener ([`apply`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use berth_config::model::Mtls;
use http::{HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::x509::X509Name;

use super::certs::TlsError;

/// `X-Amzn-Mtls-Clientcert-Serial-Number`: the leaf's serial, upper-case hex (verify).
pub const SERIAL: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-serial-number");
/// `X-Amzn-Mtls-Clientcert-Issuer`: the leaf's issuer DN, RFC 2253 (verify).
pub const ISSUER: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-issuer");
/// `X-Amzn-Mtls-Clientcert-Subject`: the leaf's subject DN, RFC 2253 (verify).
pub const SUBJECT: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-subject");
/// `X-Amzn-Mtls-Clientcert-Validity`: `NotBefore=<ISO 8601>;NotAfter=<ISO 8601>` (verify).
pub const VALIDITY: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-validity");
/// `X-Amzn-Mtls-Clientcert-Leaf`: the leaf, URL-encoded PEM (verify).
pub const LEAF: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-leaf");
/// `X-Amzn-Mtls-Clientcert`: the chain the client sent, URL-encoded PEM (passthrough).
pub const CHAIN: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert");

/// Every header berth sets from a client certificate; a client's own are removed.
const ALL: [HeaderName; 6] = [SERIAL, ISSUER, SUBJECT, VALIDITY, LEAF, CHAIN];

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// None asked for.
    Off,
    /// Asked for, optional, not verified; the chain is handed on.
    Passthrough,
    /// Required and verified; the leaf's facts are handed on.
    Verify,
}

/// The client certificate verifier of a listener's `mtls` settings, from the CA bundle and CRL
/// files (`files`, in that order) read with its certificates.
pub(super) fn verifier(
    mtls: &Mtls,
    files: &[(PathBuf, Vec<u8>)],
    provider: &Arc<CryptoProvider>,
) -> Result<(Option<Arc<dyn ClientCertVerifier>>, ClientCertMode), TlsError> {
    match mtls {
        Mtls::Off => Ok((None, ClientCertMode::Off)),
        Mtls::Passthrough => Ok((
            Some(Arc::new(Passthrough {
                algorithms: provider.signature_verification_algorithms,
            })),
            ClientCertMode::Passthrough,
        )),
        Mtls::Verify { ca_bundle, .. } => {
            let ca_file = ca_bundle.display().to_string();
            let ca_err = |why: String| TlsError::CaBundle {
                file: ca_file.clone(),
                why,
            };
            let (ca, crl_files) = files
                .split_first()
                .ok_or_else(|| ca_err("not read".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca.1) {
                let c = c.map_err(|e| ca_err(format!("not PEM: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| ca_err(format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificate in the file".into()));
            }
            let mut crls = Vec::new();
            for (path, bytes) in crl_files {
                crls.extend(read_crls(path, bytes)?);
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .with_crls(crls)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status()
                    .build()
                    .map_err(|e| ca_err(e.to_string()))?;
            Ok((Some(verifier), ClientCertMode::Verify))
        }
    }
}

/// The CRLs of one file: PEM (one or more) or DER, each checked to parse.
fn read_crls(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |why: String| TlsError::Crl {
        file: path.display().to_string(),
        why,
    };
    let crls = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not PEM: {e}")))?
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    if crls.is_empty() {
        return Err(err("no CRL in the file".into()));
    }
    for c in &crls {
        x509_parser::parse_x509_crl(c.as_ref()).map_err(|e| err(format!("not a CRL: {e}")))?;
    }
    Ok(crls)
}

/// Passthrough: asks for a certificate, accepts any (or none), checks only that the client
/// signed the handshake with the certificate's key.
#[derive(Debug)]
struct Passthrough {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for Passthrough {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a client's handshake was refused for its certificate, as a
/// `berth_rejected_connections_total` reason; `None` when the failure is not about one.
pub fn refusal_reason(e: &io::Error) -> Option<&'static str> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::NoCertificatesPresented => "client_cert_missing",
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "client_cert_expired",
            CertificateError::Revoked => "client_cert_revoked",
            CertificateError::UnknownIssuer => "client_cert_untrusted",
            _ => "client_cert_invalid",
        },
        _ => return None,
    })
}

/// The headers one connection's client certificate gives its requests, computed at handshake.
#[derive(Debug, Default)]
pub struct ClientCertHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ClientCertHeaders {
    /// The headers for the chain a client presented (leaf first) under `mode`; `None` when
    /// there is nothing to hand on.
    pub fn from_chain(
        mode: ClientCertMode,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Option<ClientCertHeaders> {
        let chain = chain.filter(|c| !c.is_empty())?;
        let mut headers = Vec::new();
        match mode {
            ClientCertMode::Off => return None,
            ClientCertMode::Passthrough => {
                let pem: String = chain.iter().map(|c| pem(c.as_ref())).collect();
                push(&mut headers, CHAIN, url_encode(&pem));
            }
            ClientCertMode::Verify => {
                let leaf = chain.first()?;
                let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
                push(&mut headers, SERIAL, serial_hex(cert.raw_serial()));
                push(&mut headers, ISSUER, rfc2253(cert.issuer()));
                push(&mut headers, SUBJECT, rfc2253(cert.subject()));
                let v = cert.validity();
                push(
                    &mut headers,
                    VALIDITY,
                    format!(
                        "NotBefore={};NotAfter={}",
                        iso8601(v.not_before.timestamp()),
                        iso8601(v.not_after.timestamp())
                    ),
                );
                push(&mut headers, LEAF, url_encode(&pem(leaf.as_ref())));
            }
        }
        Some(ClientCertHeaders { headers })
    }

    /// The headers, in the order they are set.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

fn push(out: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        out.push((name, v));
    }
}

/// Removes every client-certificate header a client sent, then sets the connection's own.
pub fn apply(h: &mut HeaderMap, facts: Option<&ClientCertHeaders>) {
    for name in &ALL {
        if h.contains_key(name) {
            h.remove(name);
        }
    }
    if let Some(f) = facts {
        for (name, value) in &f.headers {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// A DER serial number as upper-case hex, without the sign byte DER adds before a high bit.
fn serial_hex(raw: &[u8]) -> String {
    let raw = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        r => r,
    };
    raw.iter().map(|b| format!("{b:02X}")).collect()
}

/// A distinguished name as RFC 2253 writes it: the last RDN first, `,` between RDNs, `+`
/// between the attributes of one, values escaped.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.6" => "C",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.9" => "STREET",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        _ => oid.as_str(),
                    }
                    .to_string();
                    let value = match atv.as_str() {
                        Ok(s) => escape_dn_value(s),
                        Err(_) => {
                            let hex: String =
                                atv.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 section 2.4 escaping; control characters as `\XX`.
fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (times outside chrono's range print as the epoch).
fn iso8601(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A certificate as PEM (64-column base64 lines).
fn pem(der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// What ALB's headers percent-encode: everything but letters, digits, `-._~` and `+=/`.
const ALB_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'=')
    .remove(b'/');

/// Percent-encoding as ALB's headers: letters, digits, `-._~` and `+=/` stay as they are.
fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ALB_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(iso8601(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn base64_and_url_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(
            url_encode("-----BEGIN A-----\nab+/="),
            "-----BEGIN%20A-----%0Aab+/="
        );
    }

    #[test]
    fn serial_and_dn_escaping() {
        assert_eq!(serial_hex(&[0x00, 0x9a, 0x01]), "9A01");
        assert_eq!(serial_hex(&[0x1a, 0x2b]), "1A2B");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
    }

    #[test]
    fn client_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(SUBJECT, HeaderValue::from_static("CN=forged"));
        h.append(CHAIN, HeaderValue::from_static("x"));
        h.append(CHAIN, HeaderValue::from_static("y"));
        apply(&mut h, None);
        assert!(h.is_empty(), "{h:?}");
        let facts = ClientCertHeaders {
            headers: vec![(SUBJECT, HeaderValue::from_static("CN=real"))],
        };
        h.insert(SUBJECT, HeaderValue::from_static("CN=forged"));
        apply(&mut h, Some(&facts));
        assert_eq!(h.get_all(SUBJECT).iter().count(), 1);
        assert_eq!(h[SUBJECT], "CN=real");
    }
}
