//! The scaler's own metric names, served on its admin port (`/metrics`). Dashboards and alerts
//! use exactly these names.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
/// AWS API calls by `operation` and `outcome` (`success`, `throttled`, `error`); the same name
/// as the proxy's.
pub const AWS_API_CALLS: &str = "berth_aws_api_calls_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once and returns its handle for `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A second install (tests in one process) keeps the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
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
    describe_counter!(AWS_API_CALLS, "AWS API calls by operation and outcome.");
}
