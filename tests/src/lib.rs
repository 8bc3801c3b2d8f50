//! The berth end-to-end test harness.
//!
//! - [`backend::Backend`]: an in-process HTTP/1.1 target on a loopback address that can be made
//!   unhealthy, made to hang, or killed.
//! - [`berth::Berth`]: a `berth-proxy` process running a config written to a temporary folder.
//! - [`config`]: builders for the TOML of a test's config ([`config::Listener`],
//!   [`config::Group`]) and the configs most tests share.
//! - [`client`]: an HTTP client for arbitrary requests (any Host, headers, source address), a
//!   raw-TCP helper for malformed requests and a TLS client.
//! - [`log`]: events from berth's JSON log.
//! - [`load::Load`]: a load generator counting failed requests.
//! - [`moto::Moto`]: the moto AWS emulator for ECS discovery tests; [`api_service`]: moto with
//!   the ECS service the scaler tests scale, and proxies in front of it.
//! - [`scaler::Scaler`]: a `berth-scaler` process.
//! - [`certs`]: CAs, server and client leaves (expired ones too) and CRLs for the TLS reload
//!   and mutual TLS tests.
//! - [`grpc`]: a gRPC echo target (tonic's service layer on hyper's h2c server) and a client
//!   over h2c or TLS.
//! - [`h2_backend::H2Backend`]: an HTTP/1.1 or HTTP/2 target, plain or TLS, that streams,
//!   sends trailers, resets streams and goes away on request.
//! - [`tcp`]: a TCP echo target and PROXY v2 helpers for the L4 tests.
//! - [`net`]: loopback address allocation; [`wait`]: polling a condition with a deadline.
//! - [`websocket`]: a WebSocket echo target and clients (tokio-tungstenite).
//! - [`sticky`]: stickiness cookies as a client sees them, and forged or tampered ones.
//! - [`zones`]: targets tagged with Availability Zones and a fake ECS task metadata endpoint.
//!
//! Everything listens and connects on 127.0.0.0/8 only.

#![warn(missing_docs)]

pub mod access_log;
pub mod api_service;
pub mod backend;
pub mod berth;
pub mod certs;
pub mod client;
pub mod config;
pub mod grpc;
pub mod h2_backend;
pub mod load;
pub mod log;
pub mod metrics;
pub mod moto;
pub mod net;
pub mod scaler;
pub mod sticky;
pub mod tcp;
pub mod tls;
pub mod wait;
pub mod websocket;
pub mod zones;

pub use backend::Backend;
pub use berth::Berth;
pub use client::{Http, Resp};
pub use config::{
    ecs_api_config, ecs_proxy_config, static_group, targets_toml, web_to_static_group,
    FAST_HEALTH_CHECK,
};
pub use load::{Load, LoadStats};
pub use wait::{wait_for, wait_until};

/// Runs `fut`, panicking if it takes longer than `limit`: every end-to-end test is bounded.
pub async fn bounded<F: std::future::Future>(limit: std::time::Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its time limit of {limit:?}"),
    }
}

/// The path of program `name`: the first match in `$PATH`, then in the usual system folders
/// (`/usr/sbin` and the like, often missing from a user's `$PATH`).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ];
    std::env::split_paths(&path)
        .chain(system.iter().map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
