//! Upstream connections: the request body berth sends ([`UpBody`]), dialling a target (TCP,
//! then TLS with SNI, verification and ALPN for `https` groups: [`dial`]), speaking HTTP/1.1 or
//! HTTP/2 to it ([`Sender`]), and each target's [`Pool`] of connections.
//!
//! A target group's `protocol_version` decides the HTTP version: `http1` groups use one
//! HTTP/1.1 connection per request in flight, pooled when idle; `http2` and `grpc` groups share
//! one multiplexed HTTP/2 connection per target (h2c with prior knowledge, or h2 chosen by
//! ALPN), opening another when it closes or carries
//! [`sender::MAX_STREAMS_PER_CONNECTION`] streams.

pub mod body;
pub mod dial;
pub mod pool;
pub mod sender;
pub mod tls;

use std::net::SocketAddr;

pub use body::UpBody;
pub use dial::{dial, UpstreamIo};
pub use pool::Pool;
pub use sender::{SendFailure, Sender};
pub use tls::{TargetTls, TlsSetupError};

/// Why a connection to a target could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection (and TLS handshake) within the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The connect failed (refused, unreachable, reset).
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The TLS handshake failed: an untrusted or wrong certificate, an alert, or a target
    /// that does not speak TLS.
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, String),
    /// The target does not speak the group's HTTP version (ALPN refused or not `h2`).
    #[error("target {0} does not speak the group's protocol: {1}")]
    Protocol(SocketAddr, String),
    /// The group's TLS settings could not be built.
    #[error("TLS to {0} cannot be set up: {1}")]
    Setup(SocketAddr, TlsSetupError),
    /// The HTTP handshake failed.
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

impl ConnectError {
    /// The reason counted in `berth_proxy_responses_total` when this ends a request:
    /// `upstream_connect`, `upstream_tls` or `upstream_protocol`.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Timeout(_) | ConnectError::Io(..) => "upstream_connect",
            ConnectError::Tls(..) | ConnectError::Setup(..) => "upstream_tls",
            ConnectError::Protocol(..) | ConnectError::Handshake(..) => "upstream_protocol",
        }
    }

    /// berth's answer when this ends a request: HTTP status, the counted reason and a short
    /// text (504 for a timeout, 502 otherwise).
    pub fn answer(&self) -> (u16, &'static str, &'static str) {
        match self {
            ConnectError::Timeout(_) => (504, self.reason(), "upstream connect timed out\n"),
            ConnectError::Io(..) => (502, self.reason(), "upstream connect failed\n"),
            ConnectError::Tls(..) | ConnectError::Setup(..) => {
                (502, self.reason(), "upstream TLS handshake failed\n")
            }
            ConnectError::Protocol(..) | ConnectError::Handshake(..) => (
                502,
                self.reason(),
                "upstream does not speak the target group's protocol\n",
            ),
        }
    }
}
