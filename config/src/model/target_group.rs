//! `[[target_groups]]`: how targets are chosen, kept healthy and found (static list, file or
//! ECS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a target group picks a target for each request (or connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Each target in turn, as often as its weight says (default).
    RoundRobin,
    /// Fewest requests in flight (weighted).
    LeastOutstandingRequests,
    /// A random target, drawn with probability proportional to its weight.
    WeightedRandom,
    /// Consistent hash on a request property.
    ConsistentHash(HashOn),
}

/// What a consistent hash uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A header (lower case name).
    Header(String),
    /// A cookie, by name.
    Cookie(String),
    /// The client address.
    SourceIp,
}

/// Cookie stickiness (`stickiness`): a client is sent back to the target named in the
/// proxy's cookie while that target is healthy.
#[derive(Debug, Clone)]
pub struct Stickiness {
    /// Cookie lifetime (default 1 day, as ALB).
    pub duration: Duration,
    /// berth's own cookie: `cookie_name` for `lb_cookie` (default `BERTHSTICKY`),
    /// `BERTHAPP` for `app_cookie`.
    pub cookie_name: String,
    /// `app_cookie` only: the application's cookie; berth sets its own cookie only on a
    /// response that sets this one (ALB's application-based stickiness).
    pub app_cookie: Option<String>,
}

/// berth's own cookie name in `app_cookie` mode (ALB's is `AWSALBAPP-n`).
pub const APP_STICKY_COOKIE: &str = "BERTHAPP";

/// Timeouts towards a group's targets (`timeouts`).
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// TCP connect (default 5 s).
    pub connect: Duration,
    /// Waiting for the response header and between body reads (default 60 s).
    pub read: Duration,
    /// Whole request, end to end (default none).
    pub total: Option<Duration>,
    /// How long an idle keep-alive connection stays in the pool (default 60 s).
    pub idle: Duration,
}

/// When a failed request is sent again to another target (`retry`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Extra attempts per request (default 2).
    pub attempts: u32,
    /// Retries allowed as a share of requests, in percent (default 20).
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the budget (default 10).
    pub min_per_second: u32,
}

/// How an active health check probes a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProtocol {
    /// An HTTP GET of the check path; healthy when the status is in the matcher. HTTP/2 (h2c)
    /// for `http2` and `grpc` groups, HTTP/1.1 otherwise.
    Http,
    /// The same GET over TLS, with the group's `tls` settings (or the safe defaults).
    Https,
    /// A TCP connect; healthy when it succeeds.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2 (TLS when the group is `https`); healthy
    /// when the answer is `SERVING`, or when the call's gRPC status is in the matcher.
    Grpc,
}

/// Which HTTP version a target group speaks to its targets (`protocol_version`, ALB's
/// ProtocolVersion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtocolVersion {
    /// HTTP/1.1 (default).
    #[default]
    Http1,
    /// HTTP/2: h2c with prior knowledge to plain targets, h2 by ALPN to HTTPS targets.
    Http2,
    /// gRPC: HTTP/2 as `Http2`, with gRPC health checks by default.
    Grpc,
}

impl ProtocolVersion {
    /// Whether targets are spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        !matches!(self, ProtocolVersion::Http1)
    }
}

/// A CA bundle that target certificates are verified against (`tls.ca_bundle`), read when the
/// configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaBundle {
    /// The file, resolved against the configuration's folder.
    pub path: PathBuf,
    /// Its PEM text as read at load (a reload reads it again).
    pub pem: Vec<u8>,
}

/// TLS towards the targets of an `https` target group (`[target_groups.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TargetGroupTls {
    /// SNI sent and the name the certificate must hold (default: none sent; the target's IP
    /// must be an IP SAN of its certificate).
    pub server_name: Option<String>,
    /// Roots trusted for target certificates (default: the system's roots).
    pub ca_bundle: Option<CaBundle>,
    /// Whether the target's certificate is verified (default true; ALB does not verify, which
    /// `false` reproduces).
    pub verify: bool,
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

/// Active health check (`health_check`; defaults are ALB's).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Checks on; when off, targets are healthy once registered.
    pub enabled: bool,
    /// HTTP, HTTPS, TCP or gRPC (default: the group's own protocol: `Https` for https groups,
    /// `Grpc` for grpc groups, `Http` otherwise).
    pub protocol: HealthProtocol,
    /// The service named in gRPC checks (default empty: the server as a whole).
    pub grpc_service: String,
    /// Path of HTTP checks (default `/`).
    pub path: String,
    /// Host header of HTTP checks (default the target address).
    pub host: Option<String>,
    /// Port to check instead of the target's own.
    pub port: Option<u16>,
    /// Healthy statuses (default 200), or gRPC codes for gRPC checks (default 12, as ALB).
    pub matcher: Matcher,
    /// Time between checks, 1..=300 s (default 30 s).
    pub interval: Duration,
    /// Time a check may take, below the interval (default 5 s).
    pub timeout: Duration,
    /// Consecutive successes that make a target healthy (default 5).
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy (default 2).
    pub unhealthy_threshold: u32,
}

/// Passive outlier ejection (`outlier`): a target failing real requests is taken out of
/// rotation for a while.
#[derive(Debug, Clone)]
pub struct Outlier {
    /// Whether ejection is on (default true).
    pub enabled: bool,
    /// Consecutive 5xx to eject (default 5).
    pub consecutive_5xx: u32,
    /// Consecutive connect failures to eject (default 3).
    pub consecutive_connect_failures: u32,
    /// First ejection time, multiplied by the target's ejection count (default 30 s).
    pub base_ejection_time: Duration,
    /// Longest ejection (default 300 s).
    pub max_ejection_time: Duration,
    /// Largest share of the group ejected at once, percent (default 50).
    pub max_ejection_percent: u32,
}

/// A target as configured (static list, targets file) or discovered (ECS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// IP address and port that requests are sent to.
    pub address: SocketAddr,
    /// Relative share of the group's traffic, 1..=1000 (default 1).
    pub weight: u32,
    /// Its Availability Zone (`zone` in static and file targets; the task's zone for ECS);
    /// `None`: unknown, never counted as the proxy's own zone.
    pub zone: Option<String>,
}

/// Where a target group's targets come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The targets listed in the configuration.
    Static(Vec<TargetSpec>),
    /// The targets listed in this TOML or JSON file, read again when it changes.
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
    /// The container port number.
    Number(u16),
    /// The port mapping's name.
    Name(String),
}

/// An ECS target source (`kind = "ecs"`): running tasks become targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSource {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Which tasks: those of a service or of a task definition family.
    pub selector: EcsSelector,
    /// Name of the container that receives traffic in each task.
    pub container: String,
    /// That container's port, by number or port-mapping name.
    pub port: PortRef,
    /// How often ECS is asked for the tasks (default 750 ms).
    pub poll_interval: Duration,
}

/// `[[target_groups]]`: a set of targets that forward actions send traffic to.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    /// Name that forward actions and the scaler refer to; unique among target groups.
    pub name: String,
    /// How a target is picked (default round robin).
    pub algorithm: Algorithm,
    /// Cookie stickiness, if on.
    pub stickiness: Option<Stickiness>,
    /// Time a draining target keeps its in-flight requests (default 300 s, as ALB).
    pub deregistration_delay: Duration,
    /// Time over which a new target's share ramps up (default zero: off).
    pub slow_start: Duration,
    /// Timeouts towards the targets.
    pub timeouts: Timeouts,
    /// When failed requests are sent again.
    pub retry: RetryPolicy,
    /// How targets are probed.
    pub health_check: HealthCheck,
    /// How targets failing real requests are ejected.
    pub outlier: Outlier,
    /// Where the targets come from.
    pub source: Source,
    /// Send a PROXY protocol v2 header to targets (tcp/tls listeners only).
    pub proxy_protocol_v2: bool,
    /// TLS to the targets: `Some` when `protocol = "https"`.
    pub tls: Option<TargetGroupTls>,
    /// The HTTP version spoken to targets (default HTTP/1.1).
    pub protocol_version: ProtocolVersion,
    /// Zone-aware routing (default off).
    pub zone_aware: ZoneAware,
}

/// Zone-aware routing of a target group (`zone_aware`, after Envoy's zone aware routing): a
/// request stays in the proxy's own Availability Zone while that zone's healthy targets can
/// carry the zone's share of the load, and spills to other zones in proportion to their
/// spare capacity otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneAware {
    /// Whether it is on (default false; on when the table is present unless `enabled = false`).
    pub enabled: bool,
    /// Fewest healthy targets for zone-aware routing; below it requests are balanced over
    /// every zone (default 6, as Envoy's `min_cluster_size`).
    pub min_targets: u32,
    /// The proxy fleet's spread over zones as (zone, relative weight), sorted by zone; empty
    /// (default): berth replicas are assumed spread evenly over the zones the group's targets
    /// are in.
    pub proxy_zones: Vec<(String, u32)>,
}
