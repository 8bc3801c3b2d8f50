//! The proxy metric names the scaler scrapes from the proxy's `/metrics`. The proxy registers
//! its series under these constants and the scaler parses by them, so renaming one renames it
//! on both sides: a rename cannot silently stop scaling.

/// Requests answered, by `listener`, `target_group` (empty for proxy-generated answers with no
/// group), `class` (`2xx`..`5xx`) and `origin` (`target` or `proxy`).
/// ALB: `RequestCount`, `HTTPCode_Target_{2,3,4,5}XX_Count` (origin=target) and
/// `HTTPCode_ELB_{3,4,5}XX_Count` (origin=proxy).
pub const REQUESTS: &str = "berth_requests_total";
/// Time from sending the request to a target until its response header arrived, by
/// `target_group` (a histogram: `_bucket`, `_sum`, `_count`). ALB: `TargetResponseTime`.
pub const TARGET_RESPONSE_SECONDS: &str = "berth_target_response_seconds";
/// Targets by `target_group` and `state` (`initial`, `healthy`, `unhealthy`, `draining`).
/// ALB: `HealthyHostCount`, `UnHealthyHostCount`.
pub const TARGETS: &str = "berth_targets";
/// Client connections open now, by `listener`. ALB: `ActiveConnectionCount`.
pub const ACTIVE_CONNECTIONS: &str = "berth_active_connections";
