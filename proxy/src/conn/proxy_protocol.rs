//! PROXY protocol v1 and v2, in (from trusted load balancers such as an NLB) and out (v2 to
//! targets). The wire format is the `ppp` crate's; this module reads exactly the header's bytes
//! off the connection (never a byte of payload), bounds it in time and size, and extracts the
//! addresses and TLVs, including AWS's VPC endpoint ID (type 0xEA, subtype 0x01).

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

/// AWS's TLV type for PrivateLink information.
pub const PP2_TYPE_AWS: u8 = 0xEA;
/// Its subtype carrying the VPC endpoint ID.
pub const PP2_SUBTYPE_AWS_VPCE_ID: u8 = 0x01;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 headers are at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
/// Largest v2 address+TLV block accepted.
const V2_MAX_LEN: usize = 4096;

/// What a PROXY header said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyInfo {
    /// 1 or 2.
    pub version: u8,
    /// The original client, when the header carries addresses (PROXY command, TCP).
    pub source: Option<SocketAddr>,
    /// The original destination.
    pub destination: Option<SocketAddr>,
    /// TLVs as (type, value), in order (v2 only).
    pub tlvs: Vec<(u8, Vec<u8>)>,
    /// The VPC endpoint ID from AWS's TLV.
    pub vpce_id: Option<String>,
}

/// Why a PROXY header was refused; `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The whole header did not arrive in time.
    #[error("PROXY header not complete within {0:?}")]
    Timeout(Duration),
    /// The connection closed inside the header.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// Not a PROXY header, or an invalid one.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// A header from a peer not in `trusted_cidrs`.
    #[error("PROXY header from untrusted peer {0}")]
    Untrusted(String),
    /// A VPC endpoint not in the allow-list.
    #[error("VPC endpoint {0:?} not allowed")]
    VpceNotAllowed(Option<String>),
}

impl ProxyHeaderError {
    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyHeaderError::Timeout(_) => "timeout",
            ProxyHeaderError::Truncated => "truncated",
            ProxyHeaderError::Malformed(_) => "malformed",
            ProxyHeaderError::Untrusted(_) => "untrusted",
            ProxyHeaderError::VpceNotAllowed(_) => "vpce_not_allowed",
        }
    }
}

/// Reads one PROXY header (v1 or v2) from `stream` within `timeout`, consuming exactly its
/// bytes.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyInfo, ProxyHeaderError> {
    match tokio::time::timeout(timeout, read_raw(stream)).await {
        Ok(Ok(bytes)) => parse(&bytes),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyHeaderError::Timeout(timeout)),
    }
}

async fn read_exact<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    s.read_exact(buf).await.map(|_| ()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProxyHeaderError::Truncated
        } else {
            ProxyHeaderError::Malformed(e.to_string())
        }
    })
}

/// The raw bytes of one header.
async fn read_raw<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, ProxyHeaderError> {
    let mut buf = vec![0u8; 5];
    read_exact(s, &mut buf).await?;
    if &buf[..] == b"PROXY" {
        // v1: up to CRLF.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed(
                    "v1 header longer than 107 bytes".into(),
                ));
            }
            let mut b = [0u8; 1];
            read_exact(s, &mut b).await?;
            buf.push(b[0]);
        }
        return Ok(buf);
    }
    if buf[..] != V2_SIGNATURE[..5] {
        return Err(ProxyHeaderError::Malformed("no PROXY signature".into()));
    }
    buf.resize(16, 0);
    read_exact(s, &mut buf[5..]).await?;
    if buf[..12] != V2_SIGNATURE[..] {
        return Err(ProxyHeaderError::Malformed("no PROXY signature".into()));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_LEN {
        return Err(ProxyHeaderError::Malformed(format!(
            "v2 header of {len} bytes is too long"
        )));
    }
    buf.resize(16 + len, 0);
    read_exact(s, &mut buf[16..]).await?;
    Ok(buf)
}

/// Parses a complete header (pure; used by the reader and by property tests).
pub fn parse(bytes: &[u8]) -> Result<ProxyInfo, ProxyHeaderError> {
    match ppp::HeaderResult::parse(bytes) {
        ppp::HeaderResult::V1(Ok(h)) => {
            let (source, destination) = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                ppp::v1::Addresses::Tcp6(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                ppp::v1::Addresses::Unknown => (None, None),
            };
            Ok(ProxyInfo {
                version: 1,
                source,
                destination,
                ..ProxyInfo::default()
            })
        }
        ppp::HeaderResult::V2(Ok(h)) => {
            let (source, destination) = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                _ => (None, None),
            };
            let mut tlvs = Vec::new();
            let mut vpce_id = None;
            for tlv in h.tlvs() {
                let tlv = tlv.map_err(|e| ProxyHeaderError::Malformed(format!("TLV: {e}")))?;
                if tlv.kind == PP2_TYPE_AWS && tlv.value.first() == Some(&PP2_SUBTYPE_AWS_VPCE_ID) {
                    vpce_id = Some(String::from_utf8_lossy(&tlv.value[1..]).into_owned());
                }
                tlvs.push((tlv.kind, tlv.value.to_vec()));
            }
            Ok(ProxyInfo {
                version: 2,
                source,
                destination,
                tlvs,
                vpce_id,
            })
        }
        ppp::HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Malformed(format!("v1: {e}"))),
        ppp::HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Malformed(format!("v2: {e}"))),
    }
}

/// Encodes a v2 PROXY header (command PROXY, TCP) with `tlvs`.
pub fn encode_v2(
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[(u8, Vec<u8>)],
) -> std::io::Result<Vec<u8>> {
    // Mixed families cannot be expressed; map the destination to the source's family.
    let destination = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V6(d)) => match d.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, d.port())),
            None => SocketAddr::from(([0, 0, 0, 0], d.port())),
        },
        (SocketAddr::V6(_), SocketAddr::V4(d)) => {
            SocketAddr::from((d.ip().to_ipv6_mapped(), d.port()))
        }
        _ => destination,
    };
    let mut b = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    );
    for (kind, value) in tlvs {
        b = b.write_tlv(*kind, value)?;
    }
    b.build()
}

/// An AWS VPC endpoint TLV value (subtype + ID).
pub fn vpce_tlv(id: &str) -> (u8, Vec<u8>) {
    let mut v = vec![PP2_SUBTYPE_AWS_VPCE_ID];
    v.extend_from_slice(id.as_bytes());
    (PP2_TYPE_AWS, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn reads_v1_without_consuming_payload() {
        let mut input: &[u8] = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        let info = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(info.version, 1);
        assert_eq!(info.source, Some(a("127.0.0.9:5555")));
        assert_eq!(input, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn v2_round_trip_with_vpce_tlv() {
        let hdr = encode_v2(
            a("127.0.0.9:5555"),
            a("127.0.0.1:443"),
            &[vpce_tlv("vpce-0abc123"), (0x04, vec![])],
        )
        .unwrap();
        let mut input = hdr.clone();
        input.extend_from_slice(b"payload");
        let mut r: &[u8] = &input;
        let info = read_header(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(info.version, 2);
        assert_eq!(info.source, Some(a("127.0.0.9:5555")));
        assert_eq!(info.destination, Some(a("127.0.0.1:443")));
        assert_eq!(info.vpce_id.as_deref(), Some("vpce-0abc123"));
        assert_eq!(info.tlvs.len(), 2);
        assert_eq!(r, b"payload");
    }

    #[tokio::test]
    async fn v2_ipv6_and_local_command() {
        let hdr = encode_v2(a("[::1]:5555"), a("[::1]:80"), &[]).unwrap();
        let info = parse(&hdr).unwrap();
        assert_eq!(info.source, Some(a("[::1]:5555")));
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let info = parse(&local).unwrap();
        assert_eq!(info.source, None);
    }

    /// Why `bytes` (all there is to read) are refused as a PROXY header.
    async fn refusal(mut bytes: &[u8]) -> &'static str {
        read_header(&mut bytes, Duration::from_secs(1))
            .await
            .unwrap_err()
            .reason()
    }

    #[tokio::test]
    async fn garbage_truncation_and_timeout_are_refused() {
        assert_eq!(refusal(b"GET / HTTP/1.1\r\n\r\n").await, "malformed");
        let hdr = encode_v2(a("127.0.0.9:5555"), a("127.0.0.1:443"), &[]).unwrap();
        assert_eq!(refusal(&hdr[..20]).await, "truncated");
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let e = read_header(&mut server, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "timeout");
        assert_eq!(
            refusal(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34\r\n").await,
            "malformed"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn truncated_valid_headers_never_parse_wrongly(cut in 0usize..60, port in 1u16..65535, vpce in "[a-z0-9]{1,17}") {
            let id = format!("vpce-{vpce}");
            let hdr = encode_v2(SocketAddr::from(([127, 0, 0, 9], port)), a("127.0.0.1:80"), &[vpce_tlv(&id)]).unwrap();
            let full = parse(&hdr).unwrap();
            prop_assert_eq!(full.source, Some(SocketAddr::from(([127, 0, 0, 9], port))));
            prop_assert_eq!(full.vpce_id, Some(id));
            if cut < hdr.len() {
                prop_assert!(parse(&hdr[..cut]).is_err());
            }
        }

        #[test]
        fn mutated_headers_never_panic(pos in 0usize..40, byte in any::<u8>()) {
            let mut hdr = encode_v2(a("127.0.0.9:5555"), a("127.0.0.1:80"), &[vpce_tlv("vpce-1")]).unwrap();
            let i = pos % hdr.len();
            hdr[i] = byte;
            let _ = parse(&hdr);
        }
    }
}
