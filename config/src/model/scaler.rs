//! `[scaler]`: what the scaler reads, where it publishes, and the scaling policies of each
//! ECS service (modelled on Application Auto Scaling).

use std::net::SocketAddr;
use std::time::Duration;

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
