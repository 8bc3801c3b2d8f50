//! Metric names and recorders: the one source of truth for what berth exports. The names the
//! scaler reads are defined in [`berth_common::proxy_metric_names`] and re-exported here, so
//! both sides use the same constants. Labels are bounded: listener, target group, target address (targets are
//! configured or discovered, never client-supplied), status class and fixed reason strings —
//! never a raw path or a client address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;

pub use berth_common::proxy_metric_names::{
    ACTIVE_CONNECTIONS, REQUESTS, TARGETS, TARGET_RESPONSE_SECONDS,
};

/// Proxy-generated responses by `listener` and `reason` (`no_healthy_target`,
/// `header_too_large`, `fixed_response`, `redirect`, `upstream_connect`, `upstream_timeout`,
/// `upstream_error`, `bad_request`, `request_timeout`, `incompatible_protocol`, `internal`, `upgrade_failed`: a target
/// answered a WebSocket upgrade with neither `101` nor an error status; `transform_failed`: a
/// rule transform matched but produced an invalid host or request target, answered 500).
pub const PROXY_RESPONSES: &str = "berth_proxy_responses_total";
/// Access log lines written to stdout.
pub const ACCESS_LOG_LINES: &str = "berth_access_log_lines_total";
/// Access log lines dropped because the writer's queue was full (stdout stalled or slow).
pub const ACCESS_LOG_DROPPED: &str = "berth_access_log_dropped_lines_total";
/// gRPC calls answered, by `listener`, `target_group` and `grpc_status`: the code (`0` to `16`)
/// of the `grpc-status` trailer, or of the headers of a trailers-only answer (berth's own
/// included), `invalid` for a value outside the spec, `missing` when the response ended without
/// one, `cancelled` when the client went away first. A `grpc-status: 14` on HTTP 200 counts as
/// `14` here, and as a 2xx in [`REQUESTS`]. ALB: none (its gRPC status is only in access logs).
pub const GRPC_RESPONSES: &str = "berth_grpc_responses_total";
/// Whole request duration as the client saw it, by `listener`.
pub const REQUEST_SECONDS: &str = "berth_request_duration_seconds";
/// Requests sent to each target, by `target_group` and `target`. ALB: `RequestCountPerTarget`.
pub const TARGET_REQUESTS: &str = "berth_target_requests_total";
/// 1 when every target of a `target_group` is unhealthy and it fails open (routes to all).
pub const FAIL_OPEN: &str = "berth_target_group_fail_open";
/// Client connections closed before any request, by `listener` and `reason`
/// (`connection_limit`, `header_timeout`, `tls_handshake`, and for mutual TLS
/// `client_cert_missing`, `client_cert_expired`, `client_cert_revoked`, `client_cert_untrusted`,
/// `client_cert_invalid`). ALB: `RejectedConnectionCount`, `ClientTLSNegotiationErrorCount`.
pub const REJECTED_CONNECTIONS: &str = "berth_rejected_connections_total";
/// Client connections accepted, by `listener`. ALB: `NewConnectionCount`.
pub const NEW_CONNECTIONS: &str = "berth_new_connections_total";
/// Request body bytes received from clients (and bytes from clients on upgraded connections),
/// by `listener`. ALB: `ProcessedBytes` (part).
pub const BYTES_IN: &str = "berth_received_bytes_total";
/// Response body bytes sent to clients (and bytes to clients on upgraded connections), by
/// `listener`. ALB: `ProcessedBytes` (part).
pub const BYTES_OUT: &str = "berth_sent_bytes_total";
/// Failed connects to targets, by `target_group`. ALB: `TargetConnectionErrorCount`.
pub const CONNECT_ERRORS: &str = "berth_target_connect_errors_total";
/// New HTTP connections opened to targets, by `target_group` (few, while pooled keep-alive
/// connections are reused).
pub const UPSTREAM_CONNECTIONS: &str = "berth_upstream_connections_total";
/// Idle keep-alive HTTP connections to targets held in the pools, by `target_group`.
pub const UPSTREAM_IDLE_CONNECTIONS: &str = "berth_upstream_idle_connections";
/// Client connections upgraded (WebSocket) and tunnelled to a target, by `listener` and
/// `target_group`. ALB counts them in `ActiveConnectionCount` and `NewConnectionCount`.
pub const UPGRADED_CONNECTIONS: &str = "berth_upgraded_connections_total";
/// Upgraded (WebSocket) connections open now, by `listener` and `target_group`.
pub const ACTIVE_UPGRADED_CONNECTIONS: &str = "berth_active_upgraded_connections";
/// Upgraded connections ended, by `listener`, `target_group` and `reason` (`closed`: both sides
/// closed; `reset`; `error`; `idle_timeout`: no byte either way for the listener's idle timeout;
/// `deregistered`: the target's deregistration delay ended).
pub const UPGRADED_CLOSES: &str = "berth_upgraded_connection_closes_total";
/// Retries sent to another target, by `target_group`.
pub const RETRIES: &str = "berth_retries_total";
/// Requests sent again because no target had received them (`reason`: `connect`,
/// `pooled_closed`, `reset_unread`, `unprocessed`, `rediscovered`).
pub const UNSENT_RESENDS: &str = "berth_unsent_resends_total";
/// Retries refused because the budget was spent, by `target_group`.
pub const RETRY_BUDGET_EXHAUSTED: &str = "berth_retry_budget_exhausted_total";
/// Passive ejections, by `target_group` and `reason` (`5xx`, `connect`).
pub const EJECTIONS: &str = "berth_ejections_total";
/// Active health checks, by `target_group` and `result` (`success`, `failure`).
pub const HEALTH_CHECKS: &str = "berth_health_checks_total";
/// Config reloads by `result` (`success`, `failure`).
pub const RELOADS: &str = "berth_config_reloads_total";
/// Seconds the last successful reload took, from reading the file to the new snapshot in place.
pub const CONFIG_RELOAD_SECONDS: &str = "berth_config_reload_duration_seconds";
/// Unix time of the last successful config load.
pub const CONFIG_LAST_RELOAD: &str = "berth_config_last_reload_success_timestamp_seconds";
/// Target source refreshes, by `target_group` and `result` (`success`, `failure`).
pub const DISCOVERY_UPDATES: &str = "berth_discovery_updates_total";
/// Seconds since the last successful refresh of a `target_group`'s source.
pub const DISCOVERY_AGE: &str = "berth_discovery_last_success_age_seconds";
pub use berth_common::aws_calls::AWS_API_CALLS;
/// ECS tasks seen in each `cluster` by last `state` (`PENDING`, `RUNNING`, ...).
pub const ECS_TASKS: &str = "berth_ecs_tasks";

/// TCP flows open now, by `listener`. NLB: `ActiveFlowCount`.
pub const L4_ACTIVE_FLOWS: &str = "berth_l4_active_flows";
/// TCP flows accepted, by `listener`. NLB: `NewFlowCount`.
pub const L4_NEW_FLOWS: &str = "berth_l4_new_flows_total";
/// Bytes relayed, by `listener` and `direction` (`in`: client to target, `out`). NLB:
/// `ProcessedBytes`.
pub const L4_BYTES: &str = "berth_l4_bytes_total";
/// Failed connects to targets from TCP listeners, by `target_group`. NLB:
/// `TCP_Target_Reset_Count` / connection errors.
pub const L4_CONNECT_ERRORS: &str = "berth_l4_target_connect_errors_total";
/// Flows ended by a reset, by `listener`. NLB: `TCP_Client_Reset_Count` +
/// `TCP_Target_Reset_Count`.
pub const L4_RESETS: &str = "berth_l4_resets_total";
/// TCP connections refused before relaying, by `listener` and `reason` (`connection_limit`,
/// `tls_handshake`).
pub const L4_REFUSED: &str = "berth_l4_refused_total";
/// Connections refused for their PROXY header, by `listener` and `reason` (`untrusted`,
/// `malformed`, `truncated`, `timeout`, `vpce_not_allowed`).
pub const PROXY_PROTOCOL_REJECTED: &str = "berth_proxy_protocol_rejected_total";
/// Listener certificate reloads (file change, SIGHUP, config reload), by `listener` and
/// `result` (`success`, `failure`: the running certificates were kept).
pub const TLS_CERTIFICATE_RELOADS: &str = "berth_tls_certificate_reloads_total";
/// notAfter of each listener certificate's leaf as a Unix time, by `listener` and
/// `certificate` (the file), for alerts before expiry.
pub const TLS_CERTIFICATE_EXPIRY: &str = "berth_tls_certificate_expiry_timestamp_seconds";
/// Stickiness cookies ignored, by `target_group` and `reason` (`invalid`: malformed, a MAC
/// that does not verify (forged, tampered, another group's); `expired`: past its signed
/// expiry; `unknown_target`: its target is no longer a healthy member of the group). The
/// request was balanced as if it had no cookie. ALB: none.
pub const STICKY_COOKIE_REJECTED: &str = "berth_sticky_cookie_rejected_total";
/// Group stickiness cookies of forward actions ignored, by `listener` and `reason`
/// (`invalid`, `expired`, `unknown_target`: its group is no longer in the action with a
/// weight above 0). The group was picked by weight again. ALB: none.
pub const GROUP_STICKY_COOKIE_REJECTED: &str = "berth_group_sticky_cookie_rejected_total";

/// Requests (and TCP flows) sent to a target, by `target_group` and `locality` of the target
/// against the proxy's own Availability Zone: `same_zone`, `cross_zone`, or `unknown` (either
/// zone unknown). Counted at each pick, so retries count once per attempt.
pub const ZONE_ROUTED: &str = "berth_zone_routed_requests_total";
/// 1 for the current zone-aware routing `mode` of a `target_group`: `local`, `spill`, or why
/// it is off (`disabled`, `own_zone_unknown`, `too_few_targets`, `no_local_share`,
/// `no_capacity`); 0 for the other modes.
pub const ZONE_AWARE_MODE: &str = "berth_zone_aware_mode";
/// Share of a `target_group`'s requests that zone-aware routing keeps in the proxy's zone
/// (1: all; below 1: the zone is short of healthy targets and spills; 0 when off).
pub const ZONE_LOCAL_RATIO: &str = "berth_zone_aware_local_ratio";
/// Always 1: the proxy's own `availability_zone` (`unknown` when not learnt) and its `source`
/// (`config`, `ecs_metadata`, `none`).
pub const AVAILABILITY_ZONE_INFO: &str = "berth_availability_zone_info";

/// Buckets of the latency histograms, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the global Prometheus recorder once, histograms with [`LATENCY_BUCKETS`] (see
/// [`berth_common::prometheus::install`]), and returns its handle for `/metrics`.
pub fn install() -> PrometheusHandle {
    berth_common::prometheus::install(LATENCY_BUCKETS, describe)
}

/// What a metric family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family berth-proxy exports (besides the AWS call counters, described by
/// `berth_common`): name, kind, unit and the `# HELP` text.
const FAMILIES: &[(&str, Kind, Option<metrics::Unit>, &str)] = &[
    (REQUESTS, Kind::Counter, None, "Requests answered, by status class and origin (target or proxy)."),
    (PROXY_RESPONSES, Kind::Counter, None, "Proxy-generated responses by reason."),
    (ACCESS_LOG_LINES, Kind::Counter, None, "Access log lines written to stdout."),
    (ACCESS_LOG_DROPPED, Kind::Counter, None, "Access log lines dropped because the writer's queue was full (stdout stalled or too slow)."),
    (GRPC_RESPONSES, Kind::Counter, None, "gRPC calls answered, by the gRPC status of the call (trailers, or headers of a trailers-only answer; missing: none seen; cancelled: the client went away first)."),
    (TARGET_RESPONSE_SECONDS, Kind::Histogram, Some(metrics::Unit::Seconds), "Target response time (to response header)."),
    (REQUEST_SECONDS, Kind::Histogram, Some(metrics::Unit::Seconds), "Whole request duration."),
    (TARGET_REQUESTS, Kind::Counter, None, "Requests sent to each target."),
    (TARGETS, Kind::Gauge, None, "Targets by state."),
    (FAIL_OPEN, Kind::Gauge, None, "1 when the target group has no healthy target and routes to all."),
    (ACTIVE_CONNECTIONS, Kind::Gauge, None, "Open client connections."),
    (NEW_CONNECTIONS, Kind::Counter, None, "Accepted client connections."),
    (REJECTED_CONNECTIONS, Kind::Counter, None, "Client connections closed before any request, by reason."),
    (BYTES_IN, Kind::Counter, Some(metrics::Unit::Bytes), "Request body bytes from clients, and bytes from clients on upgraded connections."),
    (BYTES_OUT, Kind::Counter, Some(metrics::Unit::Bytes), "Response body bytes to clients, and bytes to clients on upgraded connections."),
    (CONNECT_ERRORS, Kind::Counter, None, "Failed connects to targets."),
    (UPSTREAM_CONNECTIONS, Kind::Counter, None, "New HTTP connections opened to targets."),
    (UPSTREAM_IDLE_CONNECTIONS, Kind::Gauge, None, "Idle keep-alive HTTP connections to targets in the pools."),
    (UPGRADED_CONNECTIONS, Kind::Counter, None, "Client connections upgraded (WebSocket) and tunnelled to a target."),
    (ACTIVE_UPGRADED_CONNECTIONS, Kind::Gauge, None, "Upgraded (WebSocket) connections open now."),
    (UPGRADED_CLOSES, Kind::Counter, None, "Upgraded connections ended, by reason."),
    (RETRIES, Kind::Counter, None, "Requests retried on another target."),
    (UNSENT_RESENDS, Kind::Counter, None, "Requests sent again, whatever their method, because no target had received them: a failed connect (reason connect), a pooled connection the target had closed (reason pooled_closed), an HTTP/1.1 connection the target reset before answering (reason reset_unread), an HTTP/2 stream refused or not taken by a GOAWAY (reason unprocessed), or every known target refused and a fresh ECS poll showed new ones (reason rediscovered)."),
    (RETRY_BUDGET_EXHAUSTED, Kind::Counter, None, "Retries refused by the retry budget."),
    (EJECTIONS, Kind::Counter, None, "Passive outlier ejections."),
    (HEALTH_CHECKS, Kind::Counter, None, "Active health checks by result."),
    (RELOADS, Kind::Counter, None, "Configuration reloads by result."),
    (CONFIG_RELOAD_SECONDS, Kind::Gauge, Some(metrics::Unit::Seconds), "Duration of the last successful configuration reload."),
    (CONFIG_LAST_RELOAD, Kind::Gauge, Some(metrics::Unit::Seconds), "Unix time of the last successful config load."),
    (DISCOVERY_UPDATES, Kind::Counter, None, "Target source refreshes by result."),
    (DISCOVERY_AGE, Kind::Gauge, Some(metrics::Unit::Seconds), "Seconds since the last successful target source refresh."),
    (ECS_TASKS, Kind::Gauge, None, "ECS tasks seen by last status."),
    (L4_ACTIVE_FLOWS, Kind::Gauge, None, "Open TCP flows."),
    (L4_NEW_FLOWS, Kind::Counter, None, "Accepted TCP flows."),
    (L4_BYTES, Kind::Counter, Some(metrics::Unit::Bytes), "Bytes relayed by TCP listeners."),
    (L4_CONNECT_ERRORS, Kind::Counter, None, "Failed target connects from TCP listeners."),
    (L4_RESETS, Kind::Counter, None, "TCP flows ended by a reset."),
    (L4_REFUSED, Kind::Counter, None, "TCP connections refused before relaying."),
    (PROXY_PROTOCOL_REJECTED, Kind::Counter, None, "Connections refused for their PROXY header."),
    (TLS_CERTIFICATE_RELOADS, Kind::Counter, None, "Listener certificate reloads by result (failure: the running certificates were kept)."),
    (ZONE_ROUTED, Kind::Counter, None, "Requests and flows sent to a target, by locality against the proxy's own zone (same_zone, cross_zone, unknown)."),
    (ZONE_AWARE_MODE, Kind::Gauge, None, "1 for the current zone-aware routing mode of the target group (local, spill, or why it is off)."),
    (ZONE_LOCAL_RATIO, Kind::Gauge, None, "Share of the target group's requests zone-aware routing keeps in the proxy's zone."),
    (AVAILABILITY_ZONE_INFO, Kind::Gauge, None, "The proxy's own Availability Zone and where it was learnt (always 1)."),
    (TLS_CERTIFICATE_EXPIRY, Kind::Gauge, Some(metrics::Unit::Seconds), "notAfter of each listener certificate, as a Unix time."),
    (STICKY_COOKIE_REJECTED, Kind::Counter, None, "Stickiness cookies ignored (invalid, expired, unknown_target); the request was balanced normally."),
    (GROUP_STICKY_COOKIE_REJECTED, Kind::Counter, None, "Group stickiness cookies of forward actions ignored (invalid, expired, unknown_target); the group was picked by weight."),
];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for &(name, kind, unit, help) in FAMILIES {
        match (kind, unit) {
            (Kind::Counter, Some(u)) => describe_counter!(name, u, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => describe_gauge!(name, u, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => describe_histogram!(name, u, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
    berth_common::aws_calls::describe();
}

/// The status class labels, in [`status_class_index`] order.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The status class label of a status code (anything outside 100..=499 counts as `5xx`).
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// Index of a status class in [`status_class`] order (`1xx` = 0 .. `5xx` = 4).
fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// A map of registered metric handles, so the request path does not rebuild label sets and
/// look them up in the recorder's registry on every request (that cost about 9,000
/// instructions per request, measured with callgrind). Readers share a read lock.
#[derive(Debug)]
pub struct HandleCache<K, V> {
    map: RwLock<HashMap<K, V>>,
}

impl<K, V> Default for HandleCache<K, V> {
    fn default() -> Self {
        HandleCache {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> HandleCache<K, V> {
    /// The handle for `key`, registering it with `make` the first time.
    pub fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> V
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Ok(map) = self.map.read() {
            if let Some(v) = map.get(key) {
                return v.clone();
            }
        }
        let (k, v) = make();
        match self.map.write() {
            Ok(mut map) => map.entry(k).or_insert(v).clone(),
            Err(_) => v,
        }
    }
}

/// Request counters of one (listener, target group) pair, by status class and origin; each is
/// registered at its first use, so the export shows only series that happened.
#[derive(Debug)]
pub struct RequestCounters {
    listener: String,
    group: String,
    by_class: [[OnceLock<Counter>; 2]; 5],
}

impl RequestCounters {
    fn new(listener: &str, group: &str) -> RequestCounters {
        RequestCounters {
            listener: listener.to_string(),
            group: group.to_string(),
            by_class: Default::default(),
        }
    }

    /// Counts one answered request.
    pub fn count(&self, status: u16, from_target: bool) {
        let origin = usize::from(!from_target);
        self.by_class[status_class_index(status)][origin]
            .get_or_init(|| {
                metrics::counter!(REQUESTS, "listener" => self.listener.clone(), "target_group" => self.group.clone(), "class" => status_class(status), "origin" => ["target", "proxy"][origin])
            })
            .increment(1);
    }
}

/// The metric handles of one HTTP listener, registered once.
#[derive(Debug)]
pub struct ListenerMetrics {
    name: String,
    /// New client connections.
    pub new_connections: Counter,
    /// Open client connections.
    pub active_connections: Gauge,
    /// Request body bytes.
    pub bytes_in: Counter,
    /// Response body bytes.
    pub bytes_out: Counter,
    /// Whole request durations.
    pub request_seconds: Histogram,
    requests: HandleCache<String, std::sync::Arc<RequestCounters>>,
    proxy_responses: HandleCache<&'static str, Counter>,
    grpc_responses: HandleCache<(String, &'static str), Counter>,
}

impl ListenerMetrics {
    /// Registers the handles of listener `name`.
    pub fn new(name: &str) -> ListenerMetrics {
        let l = || name.to_string();
        ListenerMetrics {
            name: name.to_string(),
            new_connections: metrics::counter!(NEW_CONNECTIONS, "listener" => l()),
            active_connections: metrics::gauge!(ACTIVE_CONNECTIONS, "listener" => l()),
            bytes_in: metrics::counter!(BYTES_IN, "listener" => l()),
            bytes_out: metrics::counter!(BYTES_OUT, "listener" => l()),
            request_seconds: metrics::histogram!(REQUEST_SECONDS, "listener" => l()),
            requests: HandleCache::default(),
            proxy_responses: HandleCache::default(),
            grpc_responses: HandleCache::default(),
        }
    }

    /// The request counters for answers on behalf of `group` (empty: no group).
    pub fn requests(&self, group: &str) -> std::sync::Arc<RequestCounters> {
        self.requests.get(group, || {
            (
                group.to_string(),
                std::sync::Arc::new(RequestCounters::new(&self.name, group)),
            )
        })
    }

    /// Counts one proxy-generated response of `reason`.
    pub fn proxy_response(&self, reason: &'static str) {
        self.proxy_responses
            .get(reason, || {
                (
                    reason,
                    metrics::counter!(PROXY_RESPONSES, "listener" => self.name.clone(), "reason" => reason),
                )
            })
            .increment(1);
    }

    /// Counts one gRPC call of `group` that ended with status label `status` (a fixed word or
    /// code, see [`GRPC_RESPONSES`]).
    pub fn grpc_response(&self, group: &str, status: &'static str) {
        self.grpc_responses
            .get(&(group.to_string(), status), || {
                (
                    (group.to_string(), status),
                    metrics::counter!(GRPC_RESPONSES, "listener" => self.name.clone(), "target_group" => group.to_string(), "grpc_status" => status),
                )
            })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_matches_class_label() {
        let labels = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let cases = [
            (100, "1xx"),
            (199, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (301, "3xx"),
            (404, "4xx"),
            (499, "4xx"),
            (500, "5xx"),
            (503, "5xx"),
            (599, "5xx"),
            (0, "5xx"),
            (999, "5xx"),
        ];
        for (s, label) in cases {
            assert_eq!(labels[status_class_index(s)], status_class(s), "status {s}");
            assert_eq!(status_class(s), label, "status {s}");
        }
    }

    #[test]
    fn handle_cache_registers_once() {
        let cache: HandleCache<String, u32> = HandleCache::default();
        let mut made = 0;
        for _ in 0..3 {
            let v = cache.get("a", || {
                made += 1;
                ("a".to_string(), 7)
            });
            assert_eq!(v, 7);
        }
        assert_eq!(made, 1);
    }
}
