//! `[scaler]`: what the scaler reads, where it publishes, and the scaling policies of each
//! ECS service (modelled on Application Auto Scaling).

use std::net::SocketAddr;
use std::time::Duration;

/// `[scaler]`: read by `berth-scaler` only.
#[derive(Debug, Clone)]
pub struct ScalerSettings {
    /// The proxy's Prometheus `/metrics` URL the figures are scraped from
    /// (default `http://127.0.0.1:9901/metrics`).
    pub metrics_url: String,
    /// Time between two scrapes and decisions (default 5 s).
    pub interval: Duration,
    /// Compute and log decisions without changing any desired count in ECS (default true).
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
    /// ECS service whose desired count is set.
    pub service: String,
    /// Target group whose figures drive the policies (exists in the config).
    pub target_group: String,
    /// Lowest desired count a decision may set.
    pub min_capacity: u32,
    /// Highest desired count a decision may set (≥ `min_capacity`).
    pub max_capacity: u32,
    /// Dry run only: the assumed desired count (no ECS calls at all).
    pub dry_run_count: Option<u32>,
    /// Whether decisions to lower the count are ignored.
    pub suspend_scale_in: bool,
    /// Whether decisions to raise the count are ignored.
    pub suspend_scale_out: bool,
    /// Whether scheduled actions are ignored.
    pub suspend_scheduled: bool,
    /// Policies that hold a figure near a target value.
    pub target_tracking: Vec<TargetTracking>,
    /// Policies that change the count by steps when a figure crosses a threshold.
    pub step: Vec<StepPolicy>,
    /// Actions that change the capacity bounds at set times.
    pub scheduled: Vec<ScheduledAction>,
}

/// Per what time unit a request figure is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The figure counts requests per second.
    Second,
    /// The figure counts requests per minute (as ALBRequestCountPerTarget).
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
    /// The number of healthy targets in the group.
    HealthyTargets,
}

/// A target tracking policy (`[[scaler.services.target_tracking]]`): sets the count that
/// brings the figure back to `target`, as Application Auto Scaling does.
#[derive(Debug, Clone)]
pub struct TargetTracking {
    /// Name in logs and metric labels (default `target_tracking[i]`); unique in the service.
    pub name: String,
    /// Watched figure (requests per target, latency or active connections per target).
    pub metric: ScalingMetric,
    /// Target value (> 0).
    pub target: f64,
    /// No change while the figure is within this fraction of the target (default 0.1).
    pub tolerance: f64,
    /// A scale-out takes the lowest count wanted over this window (default 0).
    pub scale_out_stabilization: Duration,
    /// A scale-in takes the highest count wanted over this window (default 300 s).
    pub scale_in_stabilization: Duration,
    /// After this policy's scale-out, only a scale-out beyond the count it set proceeds
    /// (default 60 s; AAS's ScaleOutCooldown defaults to 300 s).
    pub scale_out_cooldown: Duration,
    /// After this policy's scale-in, no scale-in (default 300 s, as AAS's ScaleInCooldown).
    pub scale_in_cooldown: Duration,
    /// Whether this policy never lowers the count (default false).
    pub disable_scale_in: bool,
}

/// How a step policy compares the metric with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Breaches when the figure is at or above the threshold (`>=`).
    GreaterOrEqual,
    /// Breaches when the figure is above the threshold (`>`).
    Greater,
    /// Breaches when the figure is at or below the threshold (`<=`).
    LessOrEqual,
    /// Breaches when the figure is below the threshold (`<`).
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
    /// Change applied when the step matches, read according to the policy's adjustment type.
    pub adjustment: i64,
}

/// A step scaling policy (`[[scaler.services.step]]`): a CloudWatch-alarm-like threshold
/// and the count changes applied while it is breached.
#[derive(Debug, Clone)]
pub struct StepPolicy {
    /// Name in logs and metric labels (default `step[i]`); unique in the service.
    pub name: String,
    /// The figure compared with the threshold.
    pub metric: ScalingMetric,
    /// Comparison with the threshold.
    pub comparison: Comparison,
    /// Value the figure is compared with; step bounds are relative to it.
    pub threshold: f64,
    /// Length of one evaluation period (default 60 s, a CloudWatch alarm period).
    pub period: Duration,
    /// Number of most recent periods looked at (default 1).
    pub evaluation_periods: u32,
    /// Breaching periods needed among them to act (default `evaluation_periods`).
    pub datapoints_to_alarm: u32,
    /// How step adjustments change the count (default `ChangeInCapacity`).
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
    /// Name in logs and metric labels (default `scheduled[i]`); unique in the service.
    pub name: String,
    /// The schedule as written.
    pub expression: String,
    /// `expression`, parsed.
    pub schedule: Schedule,
    /// Time zone of `cron` and `at`.
    pub timezone: chrono_tz::Tz,
    /// The service's minimum capacity from this occurrence on, if set.
    pub min_capacity: Option<u32>,
    /// The service's maximum capacity from this occurrence on, if set.
    pub max_capacity: Option<u32>,
}
