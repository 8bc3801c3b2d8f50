//! The validated configuration model. Built only by [`crate::validate`]; every value in it has
//! been checked, so the proxy never re-validates. Defaults follow AWS ALB's where ALB has one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process settings.
    pub proxy: ProxySettings,
    /// Logging.
    pub log: LogSettings,
    /// Admin listener.
    pub admin: AdminSettings,
    /// Scaler settings.
    pub scaler: ScalerSettings,
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Target groups, in file order; names are unique.
    pub target_groups: Vec<TargetGroup>,
}

impl Config {
    /// The target group with this name.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|t| t.name == name)
    }

    /// One line describing the configuration, printed by `--check`.
    pub fn summary(&self) -> String {
        let rules: usize = self.listeners.iter().map(|l| l.rules.len()).sum();
        format!(
            "config ok: {} listener(s), {} rule(s), {} target group(s), admin on {}",
            self.listeners.len(),
            rules,
            self.target_groups.len(),
            self.admin.bind
        )
    }
}

/// `[proxy]`.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Worker threads per listener (default 1).
    pub threads: usize,
    /// SIGTERM drain time (default 30 s).
    pub grace_period: Duration,
    /// Idle keep-alive connections kept per target (default 128).
    pub upstream_keepalive_pool: usize,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Request id header name, lower case (default `x-request-id`).
    pub request_id_header: String,
    /// Poll interval of config and target files (default 1 s).
    pub watch_interval: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Format.
    pub format: LogFormat,
    /// `tracing` filter directive.
    pub level: String,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Bind address (default `127.0.0.1:9901`).
    pub bind: SocketAddr,
    /// Optional PROXY header acceptance (`[admin.proxy_protocol]`): a connection from a trusted
    /// peer may start with a PROXY v1/v2 header, any other connection is plain HTTP; a header
    /// from an untrusted peer is refused. `allowed_vpc_endpoints` is always empty here.
    pub proxy_protocol: Option<ProxyProtocolIn>,
}

/// `[scaler]`.
#[derive(Debug, Clone)]
pub struct ScalerSettings {
    /// Proxy metrics URL.
    pub metrics_url: String,
    /// Tick interval (default 5 s).
    pub interval: Duration,
    /// Never call ECS (default true).
    pub dry_run: bool,
    /// Scaler admin bind address (default `127.0.0.1:9902`).
    pub admin_bind: SocketAddr,
    /// CloudWatch namespace (default `berth`).
    pub namespace: String,
    /// This replica's name, the `Replica` dimension (default the host name).
    pub replica: String,
    /// CloudWatch storage resolution: 1 or 60 seconds (default 60).
    pub storage_resolution: u32,
    /// Where decisions take their figures from (default local).
    pub aggregate: Aggregate,
    /// Publish figures with PutMetricData (default false).
    pub publish: bool,
    /// Datapoints buffered while CloudWatch fails (default 10000); the oldest are dropped.
    pub publish_buffer: usize,
    /// Window summed by GetMetricData with `aggregate = "cloudwatch"` (default 60 s).
    pub aggregate_window: Duration,
    /// Services scaled, in file order.
    pub services: Vec<ScaledService>,
}

impl ScalerSettings {
    /// Whether the scaler needs AWS credentials: to publish, to aggregate, or to call ECS for
    /// a service without `dry_run_count`.
    pub fn needs_aws(&self) -> bool {
        self.publish
            || self.aggregate == Aggregate::CloudWatch
            || self.services.iter().any(|s| s.dry_run_count.is_none())
    }
}

/// Where the scaler's decisions take their figures from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// This replica's scrape only (one proxy replica).
    Local,
    /// The sum across replicas, read back from CloudWatch.
    CloudWatch,
}

/// `[[scaler.services]]`: an ECS service and its policies.
#[derive(Debug, Clone)]
pub struct ScaledService {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name.
    pub service: String,
    /// Target group whose figures drive the policies (exists in the config).
    pub target_group: String,
    /// Lowest desired count.
    pub min_capacity: u32,
    /// Highest desired count (≥ `min_capacity`).
    pub max_capacity: u32,
    /// Dry run only: the assumed desired count (no ECS calls at all).
    pub dry_run_count: Option<u32>,
    /// Scale-in decisions ignored.
    pub suspend_scale_in: bool,
    /// Scale-out decisions ignored.
    pub suspend_scale_out: bool,
    /// Scheduled actions ignored.
    pub suspend_scheduled: bool,
    /// Target tracking policies.
    pub target_tracking: Vec<TargetTracking>,
    /// Step scaling policies.
    pub step: Vec<StepPolicy>,
    /// Scheduled actions.
    pub scheduled: Vec<ScheduledAction>,
}

/// Per what time unit a request figure is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
}

impl Per {
    /// Seconds in the unit.
    pub fn seconds(self) -> f64 {
        match self {
            Per::Second => 1.0,
            Per::Minute => 60.0,
        }
    }
}

/// A figure a policy watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingMetric {
    /// Requests to the target group, per second or minute.
    RequestRate(Per),
    /// Requests per healthy target, per second or minute (ALBRequestCountPerTarget).
    RequestsPerTarget(Per),
    /// A target response time percentile in seconds (e.g. 99.0).
    Latency(f64),
    /// 5xx answers (from targets and the proxy) per second.
    ErrorRate,
    /// Open client connections per healthy target.
    ActiveConnectionsPerTarget,
    /// Healthy targets.
    HealthyTargets,
}

/// A target tracking policy.
#[derive(Debug, Clone)]
pub struct TargetTracking {
    /// Name.
    pub name: String,
    /// Watched figure (requests per target, latency or active connections per target).
    pub metric: ScalingMetric,
    /// Target value (> 0).
    pub target: f64,
    /// Tolerance as a fraction (default 0.1).
    pub tolerance: f64,
    /// Scale-out stabilization window (default 0).
    pub scale_out_stabilization: Duration,
    /// Scale-in stabilization window (default 300 s).
    pub scale_in_stabilization: Duration,
    /// After this policy's scale-out, only a scale-out beyond the count it set proceeds
    /// (default 60 s; AAS's ScaleOutCooldown defaults to 300 s).
    pub scale_out_cooldown: Duration,
    /// After this policy's scale-in, no scale-in (default 300 s, as AAS's ScaleInCooldown).
    pub scale_in_cooldown: Duration,
    /// Never scale in.
    pub disable_scale_in: bool,
}

/// How a step policy compares the metric with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>=`.
    GreaterOrEqual,
    /// `>`.
    Greater,
    /// `<=`.
    LessOrEqual,
    /// `<`.
    Less,
}

impl Comparison {
    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Greater => value > threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Less => value < threshold,
        }
    }
}

/// Application Auto Scaling adjustment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustmentType {
    /// Add the adjustment to the current count.
    ChangeInCapacity,
    /// Add this percentage of the current count.
    PercentChangeInCapacity,
    /// Set the count to the adjustment.
    ExactCapacity,
}

/// One step: applies when `lower <= metric - threshold < upper`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Lower bound (`f64::NEG_INFINITY` when open).
    pub lower: f64,
    /// Upper bound (`f64::INFINITY` when open).
    pub upper: f64,
    /// Adjustment.
    pub adjustment: i64,
}

/// A step scaling policy.
#[derive(Debug, Clone)]
pub struct StepPolicy {
    /// Name.
    pub name: String,
    /// Watched figure.
    pub metric: ScalingMetric,
    /// Comparison with the threshold.
    pub comparison: Comparison,
    /// Threshold.
    pub threshold: f64,
    /// Length of one evaluation period (default 60 s, a CloudWatch alarm period).
    pub period: Duration,
    /// Periods evaluated.
    pub evaluation_periods: u32,
    /// Breaching periods needed among them.
    pub datapoints_to_alarm: u32,
    /// Adjustment type.
    pub adjustment_type: AdjustmentType,
    /// Smallest change with `PercentChangeInCapacity`.
    pub min_adjustment_magnitude: u32,
    /// Cooldown after an adjustment (default 300 s).
    pub cooldown: Duration,
    /// Steps sorted by lower bound, not overlapping.
    pub steps: Vec<Step>,
}

/// When a scheduled action runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression evaluated in the action's time zone.
    Cron(Box<croner::Cron>),
    /// Once, at this local date and time in the action's time zone.
    At(chrono::NaiveDateTime),
    /// Every period, counted from the scaler's start.
    Rate(Duration),
}

/// A scheduled action: sets min and/or max capacity from each occurrence on.
#[derive(Debug, Clone)]
pub struct ScheduledAction {
    /// Name.
    pub name: String,
    /// The schedule as written.
    pub expression: String,
    /// The parsed schedule.
    pub schedule: Schedule,
    /// Time zone of `cron` and `at`.
    pub timezone: chrono_tz::Tz,
    /// New minimum capacity.
    pub min_capacity: Option<u32>,
    /// New maximum capacity.
    pub max_capacity: Option<u32>,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 (and h2c when `http2`).
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2.
    Https,
    /// TCP, bytes forwarded as they are (TLS passes through).
    Tcp,
    /// TLS terminated, then TCP to targets.
    Tls,
}

impl ListenerProtocol {
    /// Whether this is an L4 (tcp/tls) listener.
    pub fn is_l4(self) -> bool {
        matches!(self, ListenerProtocol::Tcp | ListenerProtocol::Tls)
    }

    /// Whether the listener terminates TLS.
    pub fn terminates_tls(self) -> bool {
        matches!(self, ListenerProtocol::Https | ListenerProtocol::Tls)
    }
}

/// PROXY protocol acceptance on a listener.
#[derive(Debug, Clone)]
pub struct ProxyProtocolIn {
    /// Peers allowed to send a header.
    pub trusted_cidrs: Vec<IpNet>,
    /// Time allowed for the header (default 3 s).
    pub header_timeout: Duration,
    /// Accepted VPC endpoint IDs; empty accepts any.
    pub allowed_vpc_endpoints: Vec<String>,
}

/// A TLS certificate of a listener.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// PEM chain path.
    pub cert: PathBuf,
    /// PEM key path.
    pub key: PathBuf,
    /// SNI names, lower case; empty for the default certificate.
    pub server_names: Vec<String>,
}

/// `[[listeners]]`.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Bind address.
    pub bind: SocketAddr,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Certificates (https only; the first is the default).
    pub certificates: Vec<Certificate>,
    /// HTTP/2 from clients.
    pub http2: bool,
    /// Request header read timeout (default 60 s).
    pub header_timeout: Duration,
    /// Client keep-alive idle timeout (default 60 s, as ALB).
    pub idle_timeout: Duration,
    /// Largest request header in bytes (default 65536); larger gets 431.
    pub max_header_bytes: usize,
    /// PROXY protocol acceptance, if on.
    pub proxy_protocol: Option<ProxyProtocolIn>,
    /// tcp/tls: connect timeout to targets (default 10 s).
    pub connect_timeout: Duration,
    /// Connections open at once (default 10000).
    pub max_connections: usize,
    /// Rules sorted by ascending priority.
    pub rules: Vec<Rule>,
    /// Action when no rule matches.
    pub default_action: Action,
}

/// A listener rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Priority, unique within the listener; lower is tried first.
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<Condition>,
    /// Action on match.
    pub action: Action,
}

/// A compiled wildcard pattern (`*` any run of characters, `?` one character).
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// The pattern as written (host patterns lower-cased).
    pub pattern: String,
    /// Compiled matcher; `None` for a pattern without wildcards, which matches by equality
    /// (compiling a matcher for each of thousands of plain host names made reloads slow).
    pub matcher: Option<globset::GlobMatcher>,
    /// Whether equality ignores ASCII case (only used without a matcher).
    pub case_insensitive: bool,
}

impl Wildcard {
    /// Whether `text` matches the pattern.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.matcher {
            Some(m) => m.is_match(text),
            None if self.case_insensitive => text.eq_ignore_ascii_case(&self.pattern),
            None => text == self.pattern,
        }
    }
}

/// A rule condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Host header (port stripped, lower-cased) matches any pattern.
    Host(Vec<Wildcard>),
    /// Path equals any.
    PathExact(Vec<String>),
    /// Path starts with any.
    PathPrefix(Vec<String>),
    /// Path matches any glob.
    PathGlob(Vec<Wildcard>),
    /// Header `name` (lower case) has a value matching any pattern.
    Header {
        /// Header name, lower case.
        name: String,
        /// Value patterns.
        values: Vec<Wildcard>,
    },
    /// Query parameter `name` has a value matching any pattern.
    Query {
        /// Parameter name.
        name: String,
        /// Value patterns.
        values: Vec<Wildcard>,
    },
    /// Method is any of these (upper case).
    Method(Vec<String>),
    /// Client address is in any CIDR.
    SourceCidr(Vec<IpNet>),
    /// The PROXY header's VPC endpoint ID is any of these.
    VpcEndpoint(Vec<String>),
}

/// A rule or default action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to weighted target groups (weights sum > 0).
    Forward(Vec<WeightedGroup>),
    /// Fixed response.
    FixedResponse(FixedResponse),
    /// Redirect.
    Redirect(Redirect),
}

/// A target group in a forward action.
#[derive(Debug, Clone)]
pub struct WeightedGroup {
    /// Target group name (exists in the config).
    pub target_group: String,
    /// Weight 0..=999.
    pub weight: u32,
}

/// A fixed response.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    /// Status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body (≤ 1024 bytes).
    pub body: String,
}

/// A redirect; `None` parts keep the request's.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// `http` or `https`.
    pub protocol: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Path.
    pub path: Option<String>,
    /// Query.
    pub query: Option<String>,
}

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
