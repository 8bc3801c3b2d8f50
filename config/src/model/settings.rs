//! Process-wide settings of the proxy: `[proxy]`, `[log]` and `[admin]`.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::ProxyProtocolIn;

/// `[proxy]`: settings of the proxy process as a whole.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Worker threads per listener (default 1).
    pub threads: usize,
    /// SIGTERM drain time (default 30 s).
    pub grace_period: Duration,
    /// Idle keep-alive connections kept per target (default 128).
    pub upstream_keepalive_pool: usize,
    /// Peers whose `X-Forwarded-*` headers are trusted and extended (default none).
    pub trusted_proxies: Vec<IpNet>,
    /// Request id header name, lower case (default `x-request-id`).
    pub request_id_header: String,
    /// Poll interval of config and target files (default 1 s).
    pub watch_interval: Duration,
    /// Poll interval of listener certificate, key, CA bundle and CRL files (default 5 s).
    pub certificate_poll_interval: Duration,
    /// The key that signs stickiness cookies (`stickiness_key` or `stickiness_key_file`);
    /// `None`: the proxy makes a random one per process.
    pub stickiness_key: Option<StickinessKey>,
    /// This proxy's Availability Zone (`availability_zone`); `None`: asked of the ECS task
    /// metadata endpoint at start.
    pub availability_zone: Option<String>,
    /// Add `X-Amzn-Trace-Id` to requests sent to targets, or extend the client's with `Self=`
    /// (default true, as ALB).
    pub trace_id: bool,
}

/// A 32-byte HMAC-SHA256 key for stickiness cookies. Its `Debug` output hides the bytes, so
/// the key never reaches a log through the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct StickinessKey(pub [u8; 32]);

impl std::fmt::Debug for StickinessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickinessKey(<redacted>)")
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: how both binaries log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Text (default) or one JSON object per line.
    pub format: LogFormat,
    /// `tracing` filter directive such as `info` or `berth_proxy=debug,info` (default `info`).
    pub level: String,
}

/// `[admin]`: the proxy's admin listener, serving `/metrics`, `/healthz` and `/targets`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Bind address (default `127.0.0.1:9901`).
    pub bind: SocketAddr,
    /// Optional PROXY header acceptance (`[admin.proxy_protocol]`): a connection from a trusted
    /// peer may start with a PROXY v1/v2 header, any other connection is plain HTTP; a header
    /// from an untrusted peer is refused. `allowed_vpc_endpoints` is always empty here.
    pub proxy_protocol: Option<ProxyProtocolIn>,
}
