//! The berth end-to-end test harness.
//!
//! - [`backend::Backend`]: an in-process HTTP/1.1 target on a loopback address that can be made
//!   unhealthy, made to hang, or killed.
//! - [`berth::Berth`]: a `berth-proxy` process running a config written to a temporary folder.
//! - [`client`]: an HTTP client for arbitrary requests (any Host, headers, source address), a
//!   raw-TCP helper for malformed requests and a TLS client.
//! - [`load::Load`]: a load generator counting failed requests.
//! - [`moto::Moto`]: the moto AWS emulator for ECS discovery tests.
//! - [`scaler::Scaler`]: a `berth-scaler` process.
//! - [`net`]: loopback address allocation; [`wait`]: polling a condition with a deadline.
//!
//! Everything listens and connects on 127.0.0.0/8 only.

#![warn(missing_docs)]

pub mod backend;
pub mod berth;
pub mod client;
pub mod load;
pub mod metrics;
pub mod moto;
pub mod net;
pub mod scaler;
pub mod tls;
pub mod wait;

pub use backend::Backend;
pub use berth::Berth;
pub use client::{Http, Resp};
pub use load::{Load, LoadStats};
pub use wait::{wait_for, wait_until};

/// Health-check settings that make targets healthy within about a second; paste into a
/// `[target_groups.health_check]` table.
pub const FAST_HEALTH_CHECK: &str = r#"interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
path = "/health"
matcher = "200-399"
"#;

/// Runs `fut`, panicking if it takes longer than `limit`: every end-to-end test is bounded.
pub async fn bounded<F: std::future::Future>(limit: std::time::Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its time limit of {limit:?}"),
    }
}

/// `[{ address = "ip:port" }, ...]` for a static source or a targets file.
pub fn targets_toml(backends: &[&Backend]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// The ECS side of a proxy config: a listener `web` on `listen` forwarding to target group
/// `group`, fed by ECS cluster `cluster` (`selector`: `service = "..."` or `family = "..."`,
/// container `app`, port mapping `http`), with fast health checks, `deregistration_delay`, and
/// `tail` lines after the source table (e.g. `poll_interval`, more tables).
pub fn ecs_proxy_config(
    listen: std::net::SocketAddr,
    group: &str,
    cluster: &str,
    selector: &str,
    deregistration_delay: &str,
    tail: &str,
) -> String {
    format!(
        r#"
[[listeners]]
name = "web"
bind = "{listen}"
[listeners.default_action]
forward = [{{ target_group = "{group}" }}]

[[target_groups]]
name = "{group}"
deregistration_delay = "{deregistration_delay}"
[target_groups.health_check]
{FAST_HEALTH_CHECK}
[target_groups.source]
kind = "ecs"
cluster = "{cluster}"
{selector}
container = "app"
port = "http"
{tail}
"#
    )
}

/// [`ecs_proxy_config`] for target group `api` of the ECS service `prod/api`, polled every
/// 500 ms, with a 1 s deregistration delay.
pub fn ecs_api_config(listen: std::net::SocketAddr) -> String {
    ecs_proxy_config(
        listen,
        "api",
        "prod",
        r#"service = "api""#,
        "1s",
        r#"poll_interval = "500ms""#,
    )
}

/// A `[[target_groups]]` table with a static source of `backends`, fast health checks and
/// `extra` lines (e.g. `algorithm = "..."`) added to the group table.
pub fn static_group(name: &str, backends: &[&Backend], extra: &str) -> String {
    format!(
        "[[target_groups]]\nname = \"{name}\"\nderegistration_delay = \"1s\"\n{extra}\n\
         [target_groups.health_check]\n{FAST_HEALTH_CHECK}\n\
         [target_groups.source]\nkind = \"static\"\ntargets = {}\n\n",
        targets_toml(backends)
    )
}
