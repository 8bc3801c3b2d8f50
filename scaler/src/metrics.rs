//! The scaler's own metric names, served on its admin port (`/metrics`). Dashboards and alerts
//! use exactly these names.

use metrics_exporter_prometheus::PrometheusHandle;

/// The desired count the scaler last decided (or observed), by `cluster` and `service`.
pub const DESIRED_COUNT: &str = "berth_scaler_desired_count";
/// ECS running count at the last tick, by `cluster` and `service`.
pub const RUNNING_COUNT: &str = "berth_scaler_running_count";
/// Effective minimum capacity (after scheduled actions), by `cluster` and `service`.
pub const MIN_CAPACITY: &str = "berth_scaler_min_capacity";
/// Effective maximum capacity (after scheduled actions), by `cluster` and `service`.
pub const MAX_CAPACITY: &str = "berth_scaler_max_capacity";
/// Decisions by `cluster`, `service`, winning `policy` and `direction` (`out`, `in`, `none`).
pub const DECISIONS: &str = "berth_scaler_decisions_total";
/// Seconds since the last decision, by `cluster` and `service`.
pub const LAST_DECISION_AGE: &str = "berth_scaler_last_decision_age_seconds";
/// Other scaler replicas seen publishing heartbeats for the same service (`aggregate = "local"`
/// with `publish = true`), by `cluster` and `service`. Above 0, each scaler decides on its own
/// share of the load: set `aggregate = "cloudwatch"`.
pub const OTHER_REPLICAS: &str = "berth_scaler_other_replicas";
/// CloudWatch datapoints dropped because the publish buffer was full.
pub const METRICS_DROPPED: &str = "berth_scaler_metrics_dropped_total";
/// Failed scrapes of the proxy's `/metrics`.
pub const SCRAPE_ERRORS: &str = "berth_scaler_scrape_errors_total";
/// AWS API calls by `operation` and `outcome`: the series both binaries count in.
pub use berth_common::aws_calls::AWS_API_CALLS;

/// Installs the global Prometheus recorder once (see [`berth_common::prometheus::install`])
/// and returns its handle for `/metrics`.
pub fn install() -> PrometheusHandle {
    berth_common::prometheus::install(&[], describe)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(DESIRED_COUNT, "Desired count decided by the scaler.");
    describe_gauge!(RUNNING_COUNT, "ECS running count at the last tick.");
    describe_gauge!(MIN_CAPACITY, "Effective minimum capacity.");
    describe_gauge!(MAX_CAPACITY, "Effective maximum capacity.");
    describe_counter!(
        DECISIONS,
        "Scaling decisions by winning policy and direction."
    );
    describe_gauge!(
        LAST_DECISION_AGE,
        Unit::Seconds,
        "Seconds since the last decision."
    );
    describe_counter!(
        METRICS_DROPPED,
        "CloudWatch datapoints dropped from the full buffer."
    );
    describe_gauge!(
        OTHER_REPLICAS,
        "Other scaler replicas publishing for the same service while aggregate = local."
    );
    describe_counter!(SCRAPE_ERRORS, "Failed scrapes of the proxy's metrics.");
    berth_common::aws_calls::describe();
}
