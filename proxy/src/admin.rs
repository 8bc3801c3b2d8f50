//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (200 once the
//! configuration is loaded and every listener accepts connections), `GET /targets` (JSON) and
//! `GET /sd/prometheus` (Prometheus HTTP service discovery of every discovered ECS task).
//!
//! With `[admin.proxy_protocol]`, a connection MAY start with a PROXY v1/v2 header (an NLB
//! whose target group has `proxy_protocol_v2.enabled` sends one, command LOCAL, on every health
//! check): its first bytes are compared with the two signatures ([`opening`]); a header is read
//! by the listeners' own code ([`crate::conn::proxy_header::accept_header`]: trusted peers only, bounded
//! in time, refusals counted in `berth_proxy_protocol_rejected_total{listener="admin"}`), any
//! other connection is served as plain HTTP (Prometheus, the ECS container health check).

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use berth_common::admin_server::{self, reply, AdminResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Binds the admin address.
pub use berth_common::admin_server::bind;

use crate::runtime::ProxyState;
use crate::target::TargetState;

/// The `listener` label of the admin port's PROXY header refusals.
pub const ADMIN_LISTENER: &str = "admin";

/// The PROXY signatures' first bytes: v1 (`PROXY`) and v2 (`\r\n\r\n\0`, the start of its
/// 12-byte signature; no HTTP request starts with it). The full header is checked by the parser.
const SIGNATURES: [&[u8]; 2] = [b"PROXY", b"\r\n\r\n\0"];

/// How an admin connection starts, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Not a PROXY header: an HTTP request (or garbage hyper will answer).
    Http,
    /// A PROXY v1 or v2 header.
    ProxyHeader,
    /// The bytes so far start a signature: read more.
    Undecided,
}

/// Classifies the first bytes of an admin connection (pure).
pub fn opening(prefix: &[u8]) -> Opening {
    if SIGNATURES.iter().any(|sig| prefix.starts_with(sig)) {
        Opening::ProxyHeader
    } else if SIGNATURES.iter().any(|sig| sig.starts_with(prefix)) {
        Opening::Undecided
    } else {
        Opening::Http
    }
}

/// Reads a connection's first bytes, one at a time, until [`opening`] decides; returns them
/// with the decision. The first byte may take as long as an idle HTTP connection may; the rest
/// of a signature must follow within `timeout`.
pub async fn sniff<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> std::io::Result<(Vec<u8>, Opening)> {
    let mut prefix = Vec::with_capacity(SIGNATURES[0].len());
    let mut deadline = None;
    loop {
        let decided = opening(&prefix);
        if decided != Opening::Undecided {
            return Ok((prefix, decided));
        }
        let mut byte = [0u8; 1];
        let n = match deadline {
            None => reader.read(&mut byte).await?,
            Some(at) => tokio::time::timeout_at(at, reader.read(&mut byte))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("PROXY signature not complete within {timeout:?}"),
                    )
                })??,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
        prefix.push(byte[0]);
    }
}

/// `/targets` body.
#[derive(Debug, Serialize)]
pub struct TargetsView {
    /// The proxy's own Availability Zone (`null` when unknown).
    pub availability_zone: Option<String>,
    /// Every target group.
    pub target_groups: Vec<GroupView>,
}

/// One target group in `/targets`.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// The target group name.
    pub name: String,
    /// Its current targets.
    pub targets: Vec<TargetView>,
}

/// One target in `/targets`.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// `ip:port`.
    pub address: String,
    /// `initial`, `healthy`, `unhealthy` or `draining`.
    pub state: TargetState,
    /// The weight the balancer gives it.
    pub weight: u32,
    /// Its Availability Zone (`null` when unknown).
    pub zone: Option<String>,
}

/// The current targets of every group, in configuration order.
pub fn targets_view(shared: &ProxyState) -> TargetsView {
    let snap = shared.current.load();
    let target_groups = snap
        .config
        .target_groups
        .iter()
        .filter_map(|tg| snap.groups.get(&tg.name))
        .map(|g| GroupView {
            name: g.name.clone(),
            targets: g
                .targets
                .load()
                .list
                .iter()
                .map(|t| TargetView {
                    address: t.label.clone(),
                    state: t.state(),
                    weight: t.weight(),
                    zone: t.zone().map(|z| z.to_string()),
                })
                .collect(),
        })
        .collect();
    TargetsView {
        availability_zone: crate::zone::own().map(|z| z.to_string()),
        target_groups,
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<ProxyState>,
    prom: PrometheusHandle,
) -> AdminResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            shared.refresh_gauges();
            reply(StatusCode::OK, "text/plain; version=0.0.4", prom.render())
        }
        "/healthz" => {
            if shared.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ok\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        "/sd/prometheus" => {
            let snap = shared.current.load();
            let sources: Vec<(String, berth_config::model::EcsSource)> = snap
                .config
                .target_groups
                .iter()
                .filter_map(|tg| match &tg.source {
                    berth_config::model::Source::Ecs(e) => Some((tg.name.clone(), e.clone())),
                    _ => None,
                })
                .collect();
            match serde_json::to_vec(&crate::discovery::ecs::sd_entries(&shared.ecs, &sources)) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        "/targets" => match serde_json::to_vec(&targets_view(&shared)) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /targets, /sd/prometheus\n",
        ),
    }
}

/// Serves the admin endpoints on an already-bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<ProxyState>, prom: PrometheusHandle) {
    admin_server::accept_loop(listener, std::future::pending(), |stream, peer| {
        serve_connection(stream, peer, Arc::clone(&shared), prom.clone())
    })
    .await;
}

/// One admin connection: its optional PROXY header (when `[admin.proxy_protocol]` is set, read
/// from the current configuration), then HTTP/1.1.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ProxyState>,
    prom: PrometheusHandle,
) {
    let settings = shared.current.load().config.admin.proxy_protocol.clone();
    let Some(pp) = settings else {
        return serve_http(stream, shared, prom).await;
    };
    let (mut reader, writer) = stream.into_split();
    let (prefix, start) = match sniff(&mut reader, pp.header_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(peer = %peer, error = %e, "admin connection closed before its first request");
            return;
        }
    };
    // The sniffed bytes are read again, by the PROXY parser or by hyper.
    let mut reader = Cursor::new(prefix).chain(reader);
    if start == Opening::ProxyHeader {
        match crate::conn::proxy_header::accept_header(&pp, ADMIN_LISTENER, &mut reader, Some(peer))
            .await
        {
            Ok(info) => {
                tracing::debug!(peer = %peer, client = ?info.source, "admin connection with a PROXY header")
            }
            // Counted and logged by accept_header.
            Err(_) => return,
        }
    }
    serve_http(tokio::io::join(reader, writer), shared, prom).await;
}

/// Serves HTTP/1.1 admin requests on `io` until the connection ends.
async fn serve_http<IO>(io: IO, shared: Arc<ProxyState>, prom: PrometheusHandle)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    admin_server::serve_http1(io, move |req| {
        handle(req, Arc::clone(&shared), prom.clone())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::proxy_protocol;

    #[test]
    fn opening_tells_proxy_signatures_from_http() {
        assert_eq!(opening(b""), Opening::Undecided);
        assert_eq!(opening(b"G"), Opening::Http);
        assert_eq!(opening(b"P"), Opening::Undecided);
        assert_eq!(opening(b"PO"), Opening::Http); // POST gets its 405
        assert_eq!(opening(b"PROX"), Opening::Undecided);
        assert_eq!(opening(b"PROXY"), Opening::ProxyHeader);
        assert_eq!(opening(b"PROXY TCP4"), Opening::ProxyHeader);
        assert_eq!(opening(b"\r\n"), Opening::Undecided);
        assert_eq!(opening(b"\r\nGET"), Opening::Http); // a leading empty line
        assert_eq!(opening(b"\r\n\r\n\0"), Opening::ProxyHeader);
    }

    fn v2_local() -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn sniffed_bytes_are_read_again_by_the_parser_and_http() {
        let t = Duration::from_secs(1);
        // Plain HTTP: one byte decides, and it is replayed in front of the request.
        let mut input: &[u8] = b"GET /healthz HTTP/1.1\r\n\r\n";
        let (prefix, start) = sniff(&mut input, t).await.unwrap();
        assert_eq!((prefix.as_slice(), start), (&b"G"[..], Opening::Http));
        let mut replay = Vec::new();
        Cursor::new(prefix)
            .chain(input)
            .read_to_end(&mut replay)
            .await
            .unwrap();
        assert_eq!(replay, b"GET /healthz HTTP/1.1\r\n\r\n");

        // v2 LOCAL (an NLB health check), then the request: exactly the header is consumed.
        let mut bytes = v2_local();
        bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        let mut input: &[u8] = &bytes;
        let (prefix, start) = sniff(&mut input, t).await.unwrap();
        assert_eq!(start, Opening::ProxyHeader);
        let mut reader = Cursor::new(prefix).chain(input);
        let info = proxy_protocol::read_header(&mut reader, t).await.unwrap();
        assert_eq!((info.version, info.source), (2, None));
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET /healthz HTTP/1.1\r\n\r\n");

        // v1.
        let mut input: &[u8] =
            b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 9901\r\nGET / HTTP/1.1\r\n\r\n";
        let (prefix, start) = sniff(&mut input, t).await.unwrap();
        assert_eq!(start, Opening::ProxyHeader);
        let mut reader = Cursor::new(prefix).chain(input);
        let info = proxy_protocol::read_header(&mut reader, t).await.unwrap();
        assert_eq!(info.source, Some("127.0.0.9:5555".parse().unwrap()));
    }

    #[tokio::test]
    async fn sniff_ends_on_close_and_on_a_stalled_signature() {
        let mut empty: &[u8] = b"";
        let e = sniff(&mut empty, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"\r\n\r")
            .await
            .unwrap();
        let e = sniff(&mut server, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
