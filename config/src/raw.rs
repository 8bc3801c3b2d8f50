//! The TOML schema as written by users: serde structs with unknown keys rejected.
//!
//! Nothing here is validated beyond its TOML type; [`crate::validate`] turns these into the
//! checked [`crate::model`]. Durations are strings such as `"30s"`, `"1m30s"` or `"250ms"`.

use serde::Deserialize;

/// The whole configuration file (`berth.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Process-wide proxy settings.
    pub proxy: Option<RawProxy>,
    /// Logging.
    pub log: Option<RawLog>,
    /// `[access_log]`: the access log of every listener (each may override it).
    pub access_log: Option<RawAccessLog>,
    /// The admin listener (`/metrics`, `/healthz`, `/targets`).
    pub admin: Option<RawAdmin>,
    /// The scaler's settings; read by `berth-scaler`, ignored by the proxy.
    pub scaler: Option<RawScaler>,
    /// Client-facing listeners.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Target groups that listeners forward to.
    #[serde(default)]
    pub target_groups: Vec<RawTargetGroup>,
}

/// `[proxy]`: settings of the proxy process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Worker threads per listener service (default 1).
    pub threads: Option<i64>,
    /// How long SIGTERM keeps serving in-flight requests before exit (default `"30s"`).
    pub grace_period: Option<String>,
    /// Idle keep-alive connections kept per upstream pool (default 128).
    pub upstream_keepalive_pool: Option<i64>,
    /// CIDRs whose `X-Forwarded-*` headers are trusted and extended (default none).
    pub trusted_proxies: Option<Vec<String>>,
    /// Name of the request id header added to every request (default `x-request-id`).
    pub request_id_header: Option<String>,
    /// Poll interval for config-file and target-file changes (default `"1s"`).
    pub watch_interval: Option<String>,
    /// Poll interval for listener certificate, key, CA bundle and CRL files (default `"5s"`).
    pub certificate_poll_interval: Option<String>,
    /// Base64 of exactly 32 bytes: the HMAC-SHA256 key that signs stickiness cookies; replicas
    /// that share it honour each other's cookies (default: a random key per process).
    pub stickiness_key: Option<String>,
    /// A file holding `stickiness_key` (base64, surrounding whitespace ignored), such as a
    /// Secrets Manager mount; read at every load and reload. Not with `stickiness_key`.
    pub stickiness_key_file: Option<String>,
    /// This proxy's Availability Zone, e.g. `"us-east-1a"` (default: asked of the ECS task
    /// metadata endpoint v4 at start; unknown outside ECS).
    pub availability_zone: Option<String>,
    /// Add or extend `X-Amzn-Trace-Id` on requests to targets (default `true`).
    pub trace_id: Option<bool>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"text"` (default) or `"json"`.
    pub format: Option<String>,
    /// A `tracing` filter such as `"info"` or `"berth_proxy=debug,info"` (default `"info"`).
    pub level: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bind address (default `127.0.0.1:9901`).
    pub bind: Option<String>,
    /// `[admin.proxy_protocol]`: connections from `trusted_cidrs` MAY start with a PROXY v1/v2
    /// header (LOCAL included), as an NLB's health checks do when its target group has
    /// `proxy_protocol_v2.enabled`; connections without one are served as before.
    /// `allowed_vpc_endpoints` is not accepted here.
    pub proxy_protocol: Option<RawProxyProtocol>,
}

/// `[scaler]`: parsed by `berth-scaler`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaler {
    /// URL of the proxy's metrics (default `http://127.0.0.1:9901/metrics`).
    pub metrics_url: Option<String>,
    /// Scrape and decision interval (default `"5s"`).
    pub interval: Option<String>,
    /// Compute and log decisions without calling ECS (default `true`).
    pub dry_run: Option<bool>,
    /// Admin bind address of the scaler (default `127.0.0.1:9902`).
    pub admin_bind: Option<String>,
    /// CloudWatch namespace the figures are published to (default `"berth"`).
    pub namespace: Option<String>,
    /// This proxy replica's name, the `Replica` dimension (default the host name).
    pub replica: Option<String>,
    /// CloudWatch storage resolution in seconds: 1 (high resolution) or 60 (default).
    pub storage_resolution: Option<i64>,
    /// `"local"` (default: decide from this replica's figures) or `"cloudwatch"` (decide from
    /// the sum across replicas read back with GetMetricData; needs `publish = true`).
    pub aggregate: Option<String>,
    /// Publish figures to CloudWatch with PutMetricData (default `false`).
    pub publish: Option<bool>,
    /// Datapoints kept while CloudWatch is unreachable; the oldest are dropped (default 10000).
    pub publish_buffer: Option<i64>,
    /// With `aggregate = "cloudwatch"`: the window summed by GetMetricData (default `"60s"`).
    pub aggregate_window: Option<String>,
    /// The ECS services scaled.
    #[serde(default)]
    pub services: Vec<RawScaledService>,
}

/// `[[scaler.services]]`: one ECS service and its scaling policies (as an Application Auto
/// Scaling scalable target).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaledService {
    /// ECS cluster name or ARN.
    pub cluster: Option<String>,
    /// ECS service name.
    pub service: Option<String>,
    /// The `[[target_groups]]` whose figures drive the policies.
    pub target_group: Option<String>,
    /// Lowest desired count (required).
    pub min_capacity: Option<i64>,
    /// Highest desired count (required).
    pub max_capacity: Option<i64>,
    /// Only with `dry_run = true`: the desired count to assume instead of asking ECS, so the
    /// scaler runs without AWS credentials; it then follows its own decisions.
    pub dry_run_count: Option<i64>,
    /// Ignore scale-in decisions (default `false`).
    pub suspend_scale_in: Option<bool>,
    /// Ignore scale-out decisions (default `false`).
    pub suspend_scale_out: Option<bool>,
    /// Ignore scheduled actions (default `false`).
    pub suspend_scheduled: Option<bool>,
    /// Target tracking policies.
    #[serde(default)]
    pub target_tracking: Vec<RawTargetTracking>,
    /// Step scaling policies.
    #[serde(default)]
    pub step: Vec<RawStepPolicy>,
    /// Scheduled actions.
    #[serde(default)]
    pub scheduled: Vec<RawScheduledAction>,
}

/// `[[scaler.services.target_tracking]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetTracking {
    /// Policy name used in logs and metrics (default `target_tracking[i]`).
    pub name: Option<String>,
    /// `"requests_per_target"`, `"latency"` or `"active_connections_per_target"`.
    pub metric: Option<String>,
    /// The value to hold the metric at (> 0).
    pub target: Option<f64>,
    /// For `requests_per_target`: `"minute"` (default, as ALBRequestCountPerTarget) or `"second"`.
    pub per: Option<String>,
    /// For `latency`: the percentile, 1..=99.99 (default 99).
    pub percentile: Option<f64>,
    /// No change while the metric is within this percentage of the target (default 10).
    pub tolerance_percent: Option<f64>,
    /// Scale-out stabilization window (default `"0s"`).
    pub scale_out_stabilization: Option<String>,
    /// Scale-in stabilization window (default `"300s"`, as ECS's scale-in cooldown).
    pub scale_in_stabilization: Option<String>,
    /// After this policy's scale-out, only a scale-out to a larger count than the one it set
    /// proceeds (default `"60s"`; AAS's ScaleOutCooldown, whose default is 300 s).
    pub scale_out_cooldown: Option<String>,
    /// After this policy's scale-in, no scale-in (default `"300s"`, AAS's ScaleInCooldown).
    pub scale_in_cooldown: Option<String>,
    /// Never scale in from this policy (default `false`).
    pub disable_scale_in: Option<bool>,
}

/// `[[scaler.services.step]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStepPolicy {
    /// Policy name used in logs and metrics (default `step[i]`).
    pub name: Option<String>,
    /// `"request_rate"`, `"requests_per_target"`, `"latency"`, `"error_rate"`,
    /// `"active_connections_per_target"` or `"healthy_targets"`.
    pub metric: Option<String>,
    /// For request metrics: `"minute"` or `"second"` (default).
    pub per: Option<String>,
    /// For `latency`: the percentile (default 99).
    pub percentile: Option<f64>,
    /// `">="`, `">"`, `"<="` or `"<"`: how the metric is compared to `threshold`.
    pub comparison: Option<String>,
    /// The alarm threshold.
    pub threshold: Option<f64>,
    /// Length of one evaluation period, as a CloudWatch alarm's period (default `"60s"`).
    pub period: Option<String>,
    /// Periods evaluated (default 1).
    pub evaluation_periods: Option<i64>,
    /// Breaching periods among them that raise the alarm (default `evaluation_periods`).
    pub datapoints_to_alarm: Option<i64>,
    /// `"ChangeInCapacity"` (default), `"PercentChangeInCapacity"` or `"ExactCapacity"`.
    pub adjustment_type: Option<String>,
    /// With `PercentChangeInCapacity`: the smallest change applied (default 1).
    pub min_adjustment_magnitude: Option<i64>,
    /// Time after an adjustment before the policy adjusts again (default `"300s"`).
    pub cooldown: Option<String>,
    /// Step adjustments, bounds relative to the threshold.
    #[serde(default)]
    pub steps: Vec<RawStep>,
}

/// One step adjustment: applies when `lower <= metric - threshold < upper`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Lower bound (absent: minus infinity).
    pub lower: Option<f64>,
    /// Upper bound (absent: infinity).
    pub upper: Option<f64>,
    /// The adjustment (count, percent or exact capacity).
    pub adjustment: Option<i64>,
}

/// `[[scaler.services.scheduled]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduledAction {
    /// Action name used in logs and metrics (default `scheduled[i]`).
    pub name: Option<String>,
    /// `"cron(m h dom mon dow)"`, `"at(2025-06-01T08:00:00)"` or `"rate(5 minutes)"`.
    pub schedule: Option<String>,
    /// IANA time zone of `cron` and `at` (default `"UTC"`).
    pub timezone: Option<String>,
    /// Minimum capacity from this action on.
    pub min_capacity: Option<i64>,
    /// Maximum capacity from this action on.
    pub max_capacity: Option<i64>,
}

/// `[[listeners]]`: where clients connect.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, used in metrics labels.
    pub name: Option<String>,
    /// `ip:port` to bind.
    pub bind: Option<String>,
    /// `"http"` (default), `"https"`, `"tcp"` or `"tls"` (TLS terminated, then TCP).
    pub protocol: Option<String>,
    /// TLS certificates for `https`; the first is the default, the others are picked by SNI.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// `[listeners.mtls]`: mutual TLS on https listeners (default off).
    pub mtls: Option<RawMtls>,
    /// Accept HTTP/2 (ALPN `h2` on https, prior knowledge h2c on http). Default true on https.
    pub http2: Option<bool>,
    /// Time allowed for the first request's head to arrive after the connection (and its
    /// PROXY header) is accepted (default `"60s"`); slower connections are closed.
    pub header_timeout: Option<String>,
    /// Idle timeout of client keep-alive connections (default `"60s"`, as ALB).
    pub idle_timeout: Option<String>,
    /// Largest request header accepted, in bytes; larger gets 431 (default 65536).
    pub max_header_bytes: Option<i64>,
    /// Accept PROXY protocol v1/v2 headers (any protocol).
    pub proxy_protocol: Option<RawProxyProtocol>,
    /// tcp/tls: time allowed to connect to a target (default `"10s"`, as NLB).
    pub connect_timeout: Option<String>,
    /// Connections open at once on this listener; more are refused (default 10000).
    pub max_connections: Option<i64>,
    /// Rules, matched in ascending priority.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Action when no rule matches.
    pub default_action: Option<RawAction>,
    /// `[listeners.response_headers]`: headers set on every response (http/https only).
    pub response_headers: Option<RawResponseHeaders>,
    /// `[listeners.access_log]`: overrides of the top-level `[access_log]`, key by key.
    pub access_log: Option<RawAccessLog>,
}

/// `[listeners.response_headers]`: ALB's header modification attributes
/// (`routing.http.response.*`); each set key replaces the target's value of that header.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponseHeaders {
    /// `Strict-Transport-Security`, e.g. `"max-age=31536000; includeSubDomains; preload"`.
    pub strict_transport_security: Option<String>,
    /// `Access-Control-Allow-Origin`: `"*"` or one origin (`https://example.com`).
    pub access_control_allow_origin: Option<String>,
    /// `Access-Control-Allow-Methods`: `"*"` or a comma-separated list of methods.
    pub access_control_allow_methods: Option<String>,
    /// `Access-Control-Allow-Headers`: `"*"` or a comma-separated list of header names.
    pub access_control_allow_headers: Option<String>,
    /// `Access-Control-Allow-Credentials`: only `"true"`.
    pub access_control_allow_credentials: Option<String>,
    /// `Access-Control-Expose-Headers`: `"*"` or a comma-separated list of header names.
    pub access_control_expose_headers: Option<String>,
    /// `Access-Control-Max-Age` in seconds, 0..=86400.
    pub access_control_max_age: Option<i64>,
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<String>,
    /// `X-Content-Type-Options`: only `"nosniff"`.
    pub x_content_type_options: Option<String>,
    /// `X-Frame-Options`: `"DENY"`, `"SAMEORIGIN"` or `"ALLOW-FROM <origin>"`.
    pub x_frame_options: Option<String>,
    /// `false` removes the `Server` header from responses (default `true`: passed through).
    pub server: Option<bool>,
}

/// `[access_log]` (top level) and `[listeners.access_log]` (per listener, each key falling
/// back to the top-level one).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Write one line per request and per L4 flow to stdout (default `false`, as ALB).
    pub enabled: Option<bool>,
    /// `"json"` (default) or `"alb"` (ALB's space-separated fields).
    pub format: Option<String>,
    /// The share of requests and flows logged, 0.0..=1.0 (default 1.0).
    pub sampling: Option<f64>,
    /// Top level only: lines queued for the writer before new ones are dropped (default 16384).
    pub buffer_lines: Option<i64>,
}

/// `[listeners.proxy_protocol]`: accept PROXY protocol headers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// Peers allowed to send a PROXY header (required; others are refused).
    pub trusted_cidrs: Option<Vec<String>>,
    /// Time allowed for the whole header to arrive (default `"3s"`).
    pub header_timeout: Option<String>,
    /// When set, only these VPC endpoint IDs (AWS TLV 0xEA) are accepted.
    pub allowed_vpc_endpoints: Option<Vec<String>>,
}

/// `[[listeners.certificates]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain file.
    pub cert: Option<String>,
    /// PEM private key file.
    pub key: Option<String>,
    /// SNI names this certificate serves (`*.example.com` allowed). Empty: default certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// `[listeners.mtls]`: ALB's mutual TLS modes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// `"off"` (default), `"verify"` or `"passthrough"`.
    pub mode: Option<String>,
    /// verify: PEM file of the CA certificates client certificates must chain to (required).
    pub ca_bundle: Option<String>,
    /// verify: CRL files (PEM or DER) of revoked client certificates (default none).
    pub crls: Option<Vec<String>>,
}

/// `[[listeners.rules]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// 1..=50000, unique per listener; lower wins (as ALB).
    pub priority: Option<i64>,
    /// All conditions must match. An empty list matches everything.
    #[serde(default)]
    pub conditions: Vec<RawCondition>,
    /// What to do on a match.
    pub action: Option<RawAction>,
    /// Rewrites of the request's host or URL once this rule matched (ALB's rule transforms);
    /// at most one of each type.
    #[serde(default)]
    pub transforms: Vec<RawTransform>,
}

/// One rule transform: `{ type = "host_header_rewrite" | "url_rewrite", regex, replace }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransform {
    /// `"host_header_rewrite"` or `"url_rewrite"`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Regular expression (Rust `regex` syntax), at most 1024 characters.
    pub regex: Option<String>,
    /// Replacement; `$1`, `${1}`, `${name}` refer to capture groups, `$$` is a `$`.
    pub replace: Option<String>,
}

/// One rule condition; exactly one of the keys is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    /// Host header patterns, `*` and `?` wildcards, case-insensitive; any may match.
    pub host: Option<Vec<String>>,
    /// Exact paths; any may match.
    pub path_exact: Option<Vec<String>>,
    /// Path prefixes; any may match.
    pub path_prefix: Option<Vec<String>>,
    /// Path globs (`*` within a segment, `**` across); any may match.
    pub path_glob: Option<Vec<String>>,
    /// Header name for a header condition (with `values`).
    pub header: Option<String>,
    /// Query parameter name for a query condition (with `values`).
    pub query: Option<String>,
    /// Values (wildcards allowed) for `header` / `query`; any may match.
    pub values: Option<Vec<String>>,
    /// HTTP methods; any may match.
    pub method: Option<Vec<String>>,
    /// Client source CIDRs; any may match.
    pub source_cidr: Option<Vec<String>>,
    /// VPC endpoint IDs from the PROXY v2 header (PrivateLink); any may match.
    pub vpc_endpoint: Option<Vec<String>>,
}

/// An action; exactly one of the keys is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// Forward to one or several weighted target groups.
    pub forward: Option<Vec<RawWeightedGroup>>,
    /// Answer with a fixed response.
    pub fixed_response: Option<RawFixedResponse>,
    /// Answer with a redirect.
    pub redirect: Option<RawRedirect>,
    /// Only with `forward`: group-level stickiness (ALB's target group stickiness of a
    /// forward action), a client stays on the group it was first sent to.
    pub stickiness: Option<RawForwardStickiness>,
}

/// `stickiness` of a forward action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardStickiness {
    /// On or off (default on when the table is present).
    pub enabled: Option<bool>,
    /// How long a client stays on its group (default `"1h"`; 1s..7d as ALB).
    pub duration: Option<String>,
}

/// One target group of a forward action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedGroup {
    /// Target group name.
    pub target_group: Option<String>,
    /// Relative weight 0..=999 (default 1).
    pub weight: Option<i64>,
}

/// A fixed response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFixedResponse {
    /// Status code 200..=599.
    pub status: Option<i64>,
    /// Content type (default `text/plain`).
    pub content_type: Option<String>,
    /// Body, at most 1024 bytes (as ALB).
    pub body: Option<String>,
}

/// A redirect; unset parts keep the request's own (`#{host}`-style placeholders are not needed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// 301 (default), 302, 303, 307 or 308.
    pub status: Option<i64>,
    /// New scheme, `"http"` or `"https"`.
    pub protocol: Option<String>,
    /// New host name.
    pub host: Option<String>,
    /// New port, 1..=65535.
    pub port: Option<i64>,
    /// New path, starting with `/`.
    pub path: Option<String>,
    /// New query without `?`; `""` removes the request's query.
    pub query: Option<String>,
}

/// `[[target_groups]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetGroup {
    /// Name that forward actions and the scaler refer to; unique among target groups.
    pub name: Option<String>,
    /// `round_robin` (default), `least_outstanding_requests`, `weighted_random`,
    /// `consistent_hash`.
    pub algorithm: Option<String>,
    /// For `consistent_hash`: what to hash.
    pub hash_on: Option<RawHashOn>,
    /// Cookie stickiness: a client returns to the target named in the proxy's cookie.
    pub stickiness: Option<RawStickiness>,
    /// Time a draining target keeps its in-flight requests (default `"300s"`, as ALB).
    pub deregistration_delay: Option<String>,
    /// Time over which a new target's share ramps up (default `"0s"`: off; 30s..900s as ALB).
    pub slow_start: Option<String>,
    /// Timeouts towards the targets.
    pub timeouts: Option<RawTimeouts>,
    /// Retries of idempotent requests.
    pub retry: Option<RawRetry>,
    /// Active health check.
    pub health_check: Option<RawHealthCheck>,
    /// Passive outlier ejection.
    pub outlier: Option<RawOutlier>,
    /// Where targets come from.
    pub source: Option<RawSource>,
    /// Send a PROXY protocol v2 header to targets (tcp/tls listeners; default false).
    pub proxy_protocol_v2: Option<bool>,
    /// `"http"` (default) or `"https"`: TLS to the targets.
    pub protocol: Option<String>,
    /// `"http1"` (default), `"http2"` or `"grpc"`: the HTTP version spoken to the targets.
    pub protocol_version: Option<String>,
    /// TLS settings towards the targets (only with `protocol = "https"`).
    pub tls: Option<RawTargetTls>,
    /// Zone-aware routing: prefer targets in the proxy's own Availability Zone.
    pub zone_aware: Option<RawZoneAware>,
}

/// `zone_aware`: keep requests in the proxy's Availability Zone while it has capacity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZoneAware {
    /// On or off (default on when the table is present).
    pub enabled: Option<bool>,
    /// Fewest healthy targets for zone-aware routing; below it, plain balancing over all
    /// zones (default 6, Envoy's `min_cluster_size`).
    pub min_targets: Option<i64>,
    /// How the proxy fleet is spread over zones, as relative weights by zone name (default:
    /// evenly over the zones the group's targets are in).
    pub proxy_zones: Option<std::collections::BTreeMap<String, i64>>,
}

/// `[target_groups.tls]`: how an `https` group's targets are verified.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetTls {
    /// SNI and the name verified (default: the target's IP, verified as an IP SAN).
    pub server_name: Option<String>,
    /// PEM file of the CAs trusted for target certificates (default: the system roots).
    pub ca_bundle: Option<String>,
    /// Verify the target's certificate (default true; ALB does not verify).
    pub verify: Option<bool>,
}

/// `hash_on`: exactly one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHashOn {
    /// Hash a request header.
    pub header: Option<String>,
    /// Hash a cookie.
    pub cookie: Option<String>,
    /// Hash the client address.
    pub source_ip: Option<bool>,
}

/// `stickiness`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStickiness {
    /// On or off (default on when the table is present).
    pub enabled: Option<bool>,
    /// `"lb_cookie"` (default: berth's cookie from the first response) or `"app_cookie"`
    /// (berth's cookie only once the target sets the application cookie `cookie_name`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Cookie lifetime (default `"1d"`, as ALB).
    pub duration: Option<String>,
    /// `lb_cookie`: berth's cookie name (default `BERTHSTICKY`); `app_cookie`: the
    /// application's cookie name (required).
    pub cookie_name: Option<String>,
}

/// `timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect (default `"5s"`).
    pub connect: Option<String>,
    /// Waiting for the upstream response header and between body reads (default `"60s"`).
    pub read: Option<String>,
    /// Whole request, end to end (default none).
    pub total: Option<String>,
    /// Idle upstream keep-alive connection lifetime in the pool (default `"60s"`).
    pub idle: Option<String>,
}

/// `retry`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Extra attempts per request (default 2).
    pub attempts: Option<i64>,
    /// Retries allowed as a share of requests, in percent (default 20).
    pub budget_percent: Option<i64>,
    /// Retries always allowed per second regardless of the budget (default 10).
    pub min_per_second: Option<i64>,
}

/// `health_check`. Defaults are ALB's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Checks on (default true).
    pub enabled: Option<bool>,
    /// `"http"`, `"https"`, `"tcp"` or `"grpc"` (default: `"https"` for https groups,
    /// `"grpc"` for grpc groups, `"http"` otherwise).
    pub protocol: Option<String>,
    /// gRPC checks: the service asked about (default `""`: the whole server).
    pub grpc_service: Option<String>,
    /// Path for HTTP checks (default `/`).
    pub path: Option<String>,
    /// Host header for HTTP checks (default the target address).
    pub host: Option<String>,
    /// Port to check (default the target's port).
    pub port: Option<i64>,
    /// Status codes counted healthy, e.g. `"200"`, `"200-399"`, `"200,204"` (default `"200"`);
    /// for gRPC checks, gRPC codes `0..=99` (default `"12"`, as ALB).
    pub matcher: Option<String>,
    /// Time between checks (default `"30s"`).
    pub interval: Option<String>,
    /// Time a check may take (default `"5s"`).
    pub timeout: Option<String>,
    /// Consecutive successes to become healthy (default 5).
    pub healthy_threshold: Option<i64>,
    /// Consecutive failures to become unhealthy (default 2).
    pub unhealthy_threshold: Option<i64>,
}

/// `outlier`: passive ejection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Whether ejection is on (default true).
    pub enabled: Option<bool>,
    /// Consecutive 5xx responses that eject (default 5).
    pub consecutive_5xx: Option<i64>,
    /// Consecutive connect failures that eject (default 3).
    pub consecutive_connect_failures: Option<i64>,
    /// First ejection time, multiplied by the ejection count (default `"30s"`).
    pub base_ejection_time: Option<String>,
    /// Longest ejection (default `"300s"`).
    pub max_ejection_time: Option<String>,
    /// Largest share of the group ejected at once, percent (default 50).
    pub max_ejection_percent: Option<i64>,
}

/// `source`: where targets come from. `kind` selects the fields that apply.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `"static"`, `"file"` or `"ecs"`.
    pub kind: Option<String>,
    /// For `static`: the targets.
    pub targets: Option<Vec<RawTarget>>,
    /// For `file`: a TOML or JSON file holding `targets = [...]`, watched for changes.
    pub path: Option<String>,
    /// For `ecs`: the cluster name or ARN.
    pub cluster: Option<String>,
    /// For `ecs`: the service whose tasks are targets (or use `family`).
    pub service: Option<String>,
    /// For `ecs`: a task definition family whose running tasks are targets (or use `service`).
    pub family: Option<String>,
    /// For `ecs`: the container that receives traffic.
    pub container: Option<String>,
    /// For `ecs`: the container port (a number) or the name of its port mapping (a string).
    pub port: Option<RawPort>,
    /// For `ecs`: how often to ask ECS (default `"750ms"`).
    pub poll_interval: Option<String>,
}

/// A container port by number or by port-mapping name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    /// The container port.
    Number(i64),
    /// The port mapping's `name`.
    Name(String),
}

/// One static target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// `ip:port`.
    pub address: Option<String>,
    /// Relative weight 1..=1000 (default 1).
    pub weight: Option<i64>,
    /// The target's Availability Zone, for zone-aware routing (default: unknown, never local).
    pub zone: Option<String>,
}

/// The content of a targets file (`kind = "file"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetsFile {
    /// The targets; an empty list is valid (the group then has no target).
    #[serde(default)]
    pub targets: Vec<RawTarget>,
}
