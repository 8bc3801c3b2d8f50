//! Pieces of berth configuration TOML for the end-to-end tests.
//!
//! A test config is text: a few top-level tables, one [`Listener`] per `[[listeners]]` and one
//! [`Group`] per `[[target_groups]]`, concatenated with `+` or `format!`. The builders only
//! place lines in the order TOML needs (a table's own keys before its sub-tables); they check
//! nothing, so a test can still write a config berth refuses.
//!
//! ```no_run
//! # use berth_tests::config::{Group, Listener};
//! # let web: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let toml = Listener::web(web, "g").to_string()
//!     + &Group::new("g").key(r#"algorithm = "round_robin""#).fast_health_check()
//!         .targets("[{ address = \"127.0.0.2:80\" }]").to_string();
//! ```

use std::fmt;
use std::net::SocketAddr;

use crate::Backend;

/// Health-check settings that make targets healthy within about a second (checks every 1 s,
/// healthy after 2 successes, unhealthy after 2 failures, `GET /health` answering 200-399): the
/// body of a `[target_groups.health_check]` table.
pub const FAST_HEALTH_CHECK: &str = r#"interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
path = "/health"
matcher = "200-399"
"#;

/// A `[[listeners]]` table: its own keys, then its sub-tables (rules, certificates, ...), then
/// its default action.
#[derive(Debug, Clone)]
pub struct Listener {
    keys: Vec<String>,
    tables: String,
    default_action: Option<String>,
}

impl Listener {
    /// A listener `name` bound to `bind`, with no rules and no default action yet.
    pub fn new(name: &str, bind: SocketAddr) -> Listener {
        Listener {
            keys: vec![format!("name = \"{name}\""), format!("bind = \"{bind}\"")],
            tables: String::new(),
            default_action: None,
        }
    }

    /// The listener most tests use: `web` on `bind`, sending every request to target group
    /// `group`.
    pub fn web(bind: SocketAddr, group: &str) -> Listener {
        Listener::new("web", bind).forward_to(group)
    }

    /// Adds `line` (e.g. `max_connections = 20`, several lines allowed) to the listener table.
    pub fn key(mut self, line: &str) -> Listener {
        self.keys.push(line.to_string());
        self
    }

    /// Adds a `[[listeners.rules]]` table: `conditions` is the inside of the conditions array
    /// (e.g. `{ path_prefix = ["/a"] }`), `action` an inline table.
    pub fn rule(mut self, priority: u32, conditions: &str, action: &str) -> Listener {
        self.tables.push_str(&rule(priority, conditions, action));
        self
    }

    /// Adds sub-tables written out by the caller (`[[listeners.rules]]`,
    /// `[[listeners.certificates]]`, `[listeners.proxy_protocol]`, ...) after the listener's
    /// keys and the rules added so far.
    pub fn tables(mut self, toml: &str) -> Listener {
        self.tables.push_str(toml);
        self
    }

    /// The default action forwards to target group `group`.
    pub fn forward_to(self, group: &str) -> Listener {
        self.default_action(&format!("forward = [{{ target_group = \"{group}\" }}]"))
    }

    /// The body of the `[listeners.default_action]` table, e.g.
    /// `fixed_response = { status = 404 }`.
    pub fn default_action(mut self, body: &str) -> Listener {
        self.default_action = Some(body.to_string());
        self
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_header_and_keys(f, "[[listeners]]", &self.keys)?;
        write!(f, "{}", self.tables)?;
        if let Some(action) = &self.default_action {
            writeln!(f, "[listeners.default_action]\n{action}")?;
        }
        writeln!(f)
    }
}

/// Writes a blank line, a table `header` and one line each for `keys`.
fn write_header_and_keys(f: &mut fmt::Formatter<'_>, header: &str, keys: &[String]) -> fmt::Result {
    writeln!(f, "\n{header}")?;
    for k in keys {
        writeln!(f, "{k}")?;
    }
    Ok(())
}

/// One `[[listeners.rules]]` table (see [`Listener::rule`]).
pub fn rule(priority: u32, conditions: &str, action: &str) -> String {
    format!(
        "\n[[listeners.rules]]\npriority = {priority}\nconditions = [{conditions}]\n\
         action = {action}\n"
    )
}

/// An inline `forward` action to one target group, for [`Listener::rule`].
pub fn forward(group: &str) -> String {
    format!("{{ forward = [{{ target_group = \"{group}\" }}] }}")
}

/// A `[[target_groups]]` table: its own keys, its sub-tables (health check first), then its
/// source.
#[derive(Debug, Clone)]
pub struct Group {
    keys: Vec<String>,
    tables: Vec<(String, String)>,
    source: Option<String>,
}

impl Group {
    /// A target group `name` with nothing else set (berth's defaults, no source yet).
    pub fn new(name: &str) -> Group {
        Group {
            keys: vec![format!("name = \"{name}\"")],
            tables: Vec::new(),
            source: None,
        }
    }

    /// Adds `line` (e.g. `algorithm = "round_robin"`, several lines allowed, or an inline
    /// `health_check = { ... }`) to the group table.
    pub fn key(mut self, line: &str) -> Group {
        self.keys.push(line.to_string());
        self
    }

    /// `deregistration_delay = "<delay>"`.
    pub fn deregistration_delay(self, delay: &str) -> Group {
        self.key(&format!("deregistration_delay = \"{delay}\""))
    }

    /// A `[target_groups.<name>]` sub-table with `body` (e.g. `health_check`, `outlier`).
    pub fn table(mut self, name: &str, body: &str) -> Group {
        self.tables.push((name.to_string(), body.to_string()));
        self
    }

    /// The [`FAST_HEALTH_CHECK`] health-check table.
    pub fn fast_health_check(self) -> Group {
        self.table("health_check", FAST_HEALTH_CHECK)
    }

    /// A static source of the targets in `targets` (a TOML array, e.g. from [`targets_toml`]).
    pub fn targets(self, targets: &str) -> Group {
        self.source(&format!("kind = \"static\"\ntargets = {targets}"))
    }

    /// A static source of `backends`.
    pub fn backends(self, backends: &[&Backend]) -> Group {
        self.targets(&targets_toml(backends))
    }

    /// The body of the `[target_groups.source]` table (e.g. `kind = "file"` and its path).
    pub fn source(mut self, body: &str) -> Group {
        self.source = Some(body.to_string());
        self
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_header_and_keys(f, "[[target_groups]]", &self.keys)?;
        for (name, body) in &self.tables {
            writeln!(f, "[target_groups.{name}]\n{body}")?;
        }
        if let Some(source) = &self.source {
            writeln!(f, "[target_groups.source]\n{source}")?;
        }
        writeln!(f)
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

/// `[{ address = "ip:port", weight = w }, ...]`: a static source with per-target weights.
pub fn weighted_targets_toml(backends: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// The group most tests use: `name` with a static source of `backends`, fast health checks, a
/// 1 s deregistration delay and `extra` lines (e.g. `algorithm = "..."`) in the group table.
pub fn static_group(name: &str, backends: &[&Backend], extra: &str) -> String {
    Group::new(name)
        .deregistration_delay("1s")
        .key(extra)
        .fast_health_check()
        .backends(backends)
        .to_string()
}

/// A listener `web` on `web` forwarding everything to group `g` of `backends` ([`static_group`]
/// with `extra`): the whole config of most single-group tests.
pub fn web_to_static_group(web: SocketAddr, backends: &[&Backend], extra: &str) -> String {
    Listener::web(web, "g").to_string() + &static_group("g", backends, extra)
}

/// The ECS side of a proxy config: a listener `web` on `listen` forwarding to target group
/// `group`, fed by ECS cluster `cluster` (`selector`: `service = "..."` or `family = "..."`,
/// container `app`, port mapping `http`), with fast health checks, `deregistration_delay`, and
/// `tail` lines after the source table (e.g. `poll_interval`, more tables).
pub fn ecs_proxy_config(
    listen: SocketAddr,
    group: &str,
    cluster: &str,
    selector: &str,
    deregistration_delay: &str,
    tail: &str,
) -> String {
    let source = format!(
        "kind = \"ecs\"\ncluster = \"{cluster}\"\n{selector}\ncontainer = \"app\"\n\
         port = \"http\"\n{tail}"
    );
    Listener::web(listen, group).to_string()
        + &Group::new(group)
            .deregistration_delay(deregistration_delay)
            .fast_health_check()
            .source(&source)
            .to_string()
}

/// [`ecs_proxy_config`] for target group `api` of the ECS service `prod/api`, polled every
/// 500 ms, with a 1 s deregistration delay.
pub fn ecs_api_config(listen: SocketAddr) -> String {
    ecs_proxy_config(
        listen,
        "api",
        "prod",
        r#"service = "api""#,
        "1s",
        r#"poll_interval = "500ms""#,
    )
}

/// `[proxy]` with a 3 s grace period and `[log]` as JSON lines (so a test can read berth's
/// events with [`crate::log::events`]), followed by `listener`: the head of a fault-suite config.
pub fn json_logged(listener: &Listener) -> String {
    format!("\n[proxy]\ngrace_period = \"3s\"\n\n[log]\nformat = \"json\"\n{listener}")
}

/// Health checks that connect over TCP every second (healthy after 2 successes, unhealthy after
/// 2 failures): the body of a `[target_groups.health_check]` table for an L4 group.
pub const FAST_TCP_HEALTH_CHECK: &str = r#"protocol = "tcp"
interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// An L4 config: TCP listener `tcp` on `listen` (30 s idle timeout, `listener_extra` lines in
/// its table) forwarding to group `echo` of `targets` (1 s deregistration delay, fast TCP health
/// checks, `group_extra` lines in its table).
pub fn tcp_config(
    listen: SocketAddr,
    listener_extra: &str,
    group_extra: &str,
    targets: &[SocketAddr],
) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address = \"{t}\" }}"))
        .collect();
    let listener = Listener::new("tcp", listen)
        .key("protocol = \"tcp\"\nidle_timeout = \"30s\"")
        .key(listener_extra)
        .forward_to("echo");
    let group = Group::new("echo")
        .deregistration_delay("1s")
        .key(group_extra)
        .table("health_check", FAST_TCP_HEALTH_CHECK)
        .targets(&format!("[{}]", targets.join(", ")));
    format!("{listener}{group}")
}

/// The scaler side of a config for the ECS service `prod/api` behind target group `api` (see
/// [`ecs_api_config`] for the proxy side): a `[scaler]` table and one `[[scaler.services]]`
/// with a target-tracking policy `rps` on requests per target per second.
#[derive(Debug, Clone)]
pub struct ScalerToml<'a> {
    /// The proxy's admin address; the scaler reads its `/metrics` every second.
    pub proxy_admin: SocketAddr,
    /// The CloudWatch namespace the scaler publishes to.
    pub namespace: &'a str,
    /// This scaler's replica name (a dimension of what it publishes).
    pub replica: &'a str,
    /// More lines for the `[scaler]` table (e.g. `dry_run = false`).
    pub settings: &'a str,
    /// The most tasks the scaler may ask for (it asks for at least 1).
    pub max_capacity: u32,
    /// The requests per target per second the policy holds.
    pub target: f64,
    /// More lines for the policy table (e.g. `scale_in_stabilization = "300s"`).
    pub policy_extra: &'a str,
}

impl fmt::Display for ScalerToml<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ScalerToml {
            proxy_admin,
            namespace,
            replica,
            settings,
            max_capacity,
            target,
            policy_extra,
        } = self;
        write!(
            f,
            r#"
[scaler]
metrics_url = "http://{proxy_admin}/metrics"
interval = "1s"
admin_bind = "@ADMIN@"
namespace = "{namespace}"
replica = "{replica}"
storage_resolution = 1
{settings}

[[scaler.services]]
cluster = "prod"
service = "api"
target_group = "api"
min_capacity = 1
max_capacity = {max_capacity}

[[scaler.services.target_tracking]]
name = "rps"
metric = "requests_per_target"
per = "second"
target = {target}
{policy_extra}
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every builder writes TOML that berth's own config loader accepts, tables in place.
    #[test]
    fn built_configs_load() {
        let web: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
        let targets = r#"[{ address = "127.0.0.2:80" }]"#;
        let group = Group::new("g")
            .deregistration_delay("1s")
            .key(r#"algorithm = "round_robin""#)
            .fast_health_check()
            .table("outlier", "consecutive_connect_failures = 2")
            .targets(targets)
            .to_string();
        let listener = Listener::web(web, "g")
            .key("max_header_bytes = 4096")
            .rule(1, r#"{ path_prefix = ["/a"] }"#, &forward("g"))
            .tables("[[listeners.rules]]\npriority = 2\nconditions = [{ method = [\"PUT\"] }]\naction = { fixed_response = { status = 202 } }\n");
        let scaler = ScalerToml {
            proxy_admin: web,
            namespace: "ns",
            replica: "r1",
            settings: "dry_run = true",
            max_capacity: 3,
            target: 5.0,
            policy_extra: "",
        }
        .to_string()
        .replace("@ADMIN@", "127.0.0.1:0");
        let tcp = "127.0.0.2:80".parse().expect("an address");
        let configs = [
            json_logged(&listener) + &group,
            tcp_config(web, "max_connections = 10", "", &[tcp]),
            ecs_api_config(web) + &scaler,
        ];
        for text in configs {
            if let Err(e) = berth_config::parse(&text, std::path::Path::new(".")) {
                panic!("{e}\n{text}");
            }
        }
    }
}
