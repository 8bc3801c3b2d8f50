//! `[[target_groups]]`: how targets are chosen, kept healthy and found (static list, file or
//! ECS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Load-balancing algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Weighted round robin.
    RoundRobin,
    /// Fewest requests in flight (weighted).
    LeastOutstandingRequests,
    /// Weighted random.
    WeightedRandom,
    /// Consistent hash on a request property.
    ConsistentHash(HashOn),
}

/// What a consistent hash uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A header (lower case name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client address.
    SourceIp,
}

/// Cookie stickiness.
#[derive(Debug, Clone)]
pub struct Stickiness {
    /// Cookie lifetime (default 1 day, as ALB).
    pub duration: Duration,
    /// Cookie name (default `BERTHSTICKY`).
    pub cookie_name: String,
}

/// Upstream timeouts.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connect (default 5 s).
    pub connect: Duration,
    /// Read (default 60 s).
    pub read: Duration,
    /// Total (default none).
    pub total: Option<Duration>,
    /// Pool idle (default 60 s).
    pub idle: Duration,
}

/// Retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Extra attempts (default 2).
    pub attempts: u32,
    /// Budget as percent of requests (default 20).
    pub budget_percent: u32,
    /// Always-allowed retries per second (default 10).
    pub min_per_second: u32,
}

/// Health check protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProtocol {
    /// HTTP GET.
    Http,
    /// TCP connect.
    Tcp,
}

/// Status codes counted healthy: a list of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher(pub Vec<(u16, u16)>);

impl Matcher {
    /// Whether `status` is healthy.
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Active health check (defaults are ALB's).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Checks on; when off, targets are healthy once registered.
    pub enabled: bool,
    /// Protocol (default HTTP).
    pub protocol: HealthProtocol,
    /// Path (default `/`).
    pub path: String,
    /// Host header.
    pub host: Option<String>,
    /// Port override.
    pub port: Option<u16>,
    /// Healthy statuses (default 200).
    pub matcher: Matcher,
    /// Interval (default 30 s).
    pub interval: Duration,
    /// Timeout (default 5 s).
    pub timeout: Duration,
    /// Successes to healthy (default 5).
    pub healthy_threshold: u32,
    /// Failures to unhealthy (default 2).
    pub unhealthy_threshold: u32,
}

/// Passive outlier ejection.
#[derive(Debug, Clone)]
pub struct Outlier {
    /// On (default true).
    pub enabled: bool,
    /// Consecutive 5xx to eject (default 5).
    pub consecutive_5xx: u32,
    /// Consecutive connect failures to eject (default 3).
    pub consecutive_connect_failures: u32,
    /// Base ejection time (default 30 s).
    pub base_ejection_time: Duration,
    /// Longest ejection (default 300 s).
    pub max_ejection_time: Duration,
    /// Largest ejected share, percent (default 50).
    pub max_ejection_percent: u32,
}

/// A target as configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// Address.
    pub address: SocketAddr,
    /// Weight 1..=1000.
    pub weight: u32,
}

/// Where a target group's targets come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Fixed list.
    Static(Vec<TargetSpec>),
    /// Watched file.
    File(PathBuf),
    /// The tasks of an ECS service or task definition family.
    Ecs(EcsSource),
}

/// Which ECS tasks a target group takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsSelector {
    /// The tasks of a service (task group `service:<name>`).
    Service(String),
    /// The tasks of a task definition family, whatever started them.
    Family(String),
}

/// A container port by number or by port-mapping name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// The container port.
    Number(u16),
    /// The port mapping's name.
    Name(String),
}

/// An ECS target source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSource {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service or family.
    pub selector: EcsSelector,
    /// Container receiving traffic.
    pub container: String,
    /// Its port.
    pub port: PortRef,
    /// Poll interval (default 2 s).
    pub poll_interval: Duration,
}

/// `[[target_groups]]`.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    /// Unique name.
    pub name: String,
    /// Algorithm (default round robin).
    pub algorithm: Algorithm,
    /// Cookie stickiness, if on.
    pub stickiness: Option<Stickiness>,
    /// Deregistration delay (default 300 s, as ALB).
    pub deregistration_delay: Duration,
    /// Slow start (default zero: off).
    pub slow_start: Duration,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: RetryPolicy,
    /// Active health check.
    pub health_check: HealthCheck,
    /// Passive ejection.
    pub outlier: Outlier,
    /// Target source.
    pub source: Source,
    /// Send PROXY protocol v2 to targets (L4).
    pub proxy_protocol_v2: bool,
}
