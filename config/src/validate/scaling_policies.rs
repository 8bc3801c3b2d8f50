//! The policies of one scaled service: target tracking, step scaling and scheduled actions.

use std::collections::HashSet;

use super::values::{parse_schedule, secs};
use super::Checker;
use crate::model::*;
use crate::raw::*;

/// Metrics a step policy may watch.
const STEP_METRICS: [&str; 6] = [
    "request_rate",
    "requests_per_target",
    "latency",
    "error_rate",
    "active_connections_per_target",
    "healthy_targets",
];

/// Metrics a target tracking policy may watch: those that fall as the count rises.
const TARGET_TRACKING_METRICS: [&str; 3] = [
    "requests_per_target",
    "latency",
    "active_connections_per_target",
];

impl Checker<'_> {
    /// The checked policies of one kind (`kind` is `target_tracking`, `step` or `scheduled`)
    /// of the service at `service`: element `i` is at `{service}.{kind}[i]` and is named
    /// `kind[i]` unless it names itself; `names` holds the names of all the service's policies.
    pub(super) fn policies<R, P>(
        &mut self,
        service: &str,
        kind: &str,
        raw: &[R],
        names: &mut HashSet<String>,
        name_of: fn(&R) -> &Option<String>,
        check: fn(&mut Self, &str, &R, String) -> Option<P>,
    ) -> Vec<P> {
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let path = format!("{service}.{kind}[{i}]");
            let name = self.policy_name(
                name_of(r),
                &format!("{path}.name"),
                format!("{kind}[{i}]"),
                names,
            );
            if let Some(policy) = check(self, &path, r, name) {
                out.push(policy);
            }
        }
        out
    }

    /// A policy's name: unique within the service, default `kind[i]`.
    pub(super) fn policy_name(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: String,
        names: &mut HashSet<String>,
    ) -> String {
        let name = match v {
            None => default,
            Some(n) if n.trim().is_empty() => {
                self.error(path, "must not be empty");
                default
            }
            Some(n) => n.trim().to_owned(),
        };
        if !names.insert(name.clone()) {
            self.error(
                path,
                format!("duplicate policy name {name:?} in this service"),
            );
        }
        name
    }

    /// `metric` (+ `per`, `percentile`) of a policy; `allowed` lists the names accepted.
    pub(super) fn scaling_metric(
        &mut self,
        p: &str,
        metric: &Option<String>,
        per: &Option<String>,
        percentile: Option<f64>,
        allowed: &[&str],
        default_per: Per,
    ) -> Option<ScalingMetric> {
        let name = self.required(metric, &format!("{p}.metric"))?;
        if !allowed.contains(&name) {
            self.error(
                &format!("{p}.metric"),
                format!(
                    "unknown metric {name:?} (expected one of: {})",
                    allowed.join(", ")
                ),
            );
            return None;
        }
        let takes_per = matches!(name, "request_rate" | "requests_per_target");
        if per.is_some() && !takes_per {
            self.error(
                &format!("{p}.per"),
                format!("only applies to request metrics, not {name:?}"),
            );
        }
        if percentile.is_some() && name != "latency" {
            self.error(
                &format!("{p}.percentile"),
                format!("only applies to \"latency\", not {name:?}"),
            );
        }
        let per = match per.as_deref() {
            None => default_per,
            Some("second") => Per::Second,
            Some("minute") => Per::Minute,
            Some(other) => {
                self.error(
                    &format!("{p}.per"),
                    format!("unknown unit {other:?} (expected \"second\" or \"minute\")"),
                );
                default_per
            }
        };
        let percentile = match percentile {
            None => 99.0,
            Some(x) if (1.0..=99.99).contains(&x) => x,
            Some(_) => {
                self.error(&format!("{p}.percentile"), "must be between 1 and 99.99");
                99.0
            }
        };
        Some(match name {
            "request_rate" => ScalingMetric::RequestRate(per),
            "requests_per_target" => ScalingMetric::RequestsPerTarget(per),
            "latency" => ScalingMetric::Latency(percentile),
            "error_rate" => ScalingMetric::ErrorRate,
            "active_connections_per_target" => ScalingMetric::ActiveConnectionsPerTarget,
            _ => ScalingMetric::HealthyTargets,
        })
    }

    /// One `[[scaler.services.step]]` element at `tp`, already named.
    pub(super) fn step_policy(
        &mut self,
        tp: &str,
        t: &RawStepPolicy,
        name: String,
    ) -> Option<StepPolicy> {
        let metric = self.scaling_metric(
            tp,
            &t.metric,
            &t.per,
            t.percentile,
            &STEP_METRICS,
            Per::Second,
        );
        let comparison = match self.required(&t.comparison, &format!("{tp}.comparison")) {
            None => None,
            Some(">=") => Some(Comparison::GreaterOrEqual),
            Some(">") => Some(Comparison::Greater),
            Some("<=") => Some(Comparison::LessOrEqual),
            Some("<") => Some(Comparison::Less),
            Some(other) => {
                self.error(
                    &format!("{tp}.comparison"),
                    format!(
                        "unknown comparison {other:?} (expected \">=\", \">\", \"<=\" or \"<\")"
                    ),
                );
                None
            }
        };
        let threshold = match t.threshold {
            None => {
                self.error(&format!("{tp}.threshold"), "required");
                None
            }
            Some(x) if x.is_finite() => Some(x),
            Some(_) => {
                self.error(&format!("{tp}.threshold"), "must be a finite number");
                None
            }
        };
        let evaluation_periods = self.int_in(
            t.evaluation_periods,
            &format!("{tp}.evaluation_periods"),
            1,
            1,
            100,
        ) as u32;
        let datapoints_to_alarm = self.int_in(
            t.datapoints_to_alarm,
            &format!("{tp}.datapoints_to_alarm"),
            i64::from(evaluation_periods),
            1,
            100,
        ) as u32;
        if datapoints_to_alarm > evaluation_periods {
            self.error(
                &format!("{tp}.datapoints_to_alarm"),
                format!("must not exceed evaluation_periods ({evaluation_periods})"),
            );
        }
        let period = self.duration_in(
            &t.period,
            &format!("{tp}.period"),
            secs(60),
            secs(1),
            secs(86_400),
            "between 1s and 86400s",
        );
        if period.as_secs() * u64::from(evaluation_periods) > 86_400 {
            self.error(
                &format!("{tp}.evaluation_periods"),
                format!(
                    "evaluation_periods × period must not exceed one day (as a CloudWatch alarm): \
                     {evaluation_periods} × {}s",
                    period.as_secs()
                ),
            );
        }
        let adjustment_type = match t.adjustment_type.as_deref() {
            None | Some("ChangeInCapacity") => AdjustmentType::ChangeInCapacity,
            Some("PercentChangeInCapacity") => AdjustmentType::PercentChangeInCapacity,
            Some("ExactCapacity") => AdjustmentType::ExactCapacity,
            Some(other) => {
                self.error(
                    &format!("{tp}.adjustment_type"),
                    format!(
                        "unknown adjustment type {other:?} (expected \"ChangeInCapacity\", \
                         \"PercentChangeInCapacity\" or \"ExactCapacity\")"
                    ),
                );
                AdjustmentType::ChangeInCapacity
            }
        };
        if t.min_adjustment_magnitude.is_some()
            && adjustment_type != AdjustmentType::PercentChangeInCapacity
        {
            self.error(
                &format!("{tp}.min_adjustment_magnitude"),
                "only applies to adjustment_type = \"PercentChangeInCapacity\"",
            );
        }
        let min_adjustment_magnitude = self.int_in(
            t.min_adjustment_magnitude,
            &format!("{tp}.min_adjustment_magnitude"),
            1,
            1,
            100_000,
        ) as u32;
        let cooldown = self.duration_in(
            &t.cooldown,
            &format!("{tp}.cooldown"),
            secs(300),
            secs(0),
            secs(86_400),
            "at most 86400s",
        );
        let mut steps = Vec::new();
        if self.non_empty(&t.steps, &format!("{tp}.steps")) {
            for (j, st) in t.steps.iter().enumerate() {
                let sp = format!("{tp}.steps[{j}]");
                let lower = st.lower.unwrap_or(f64::NEG_INFINITY);
                let upper = st.upper.unwrap_or(f64::INFINITY);
                if lower.is_nan() || upper.is_nan() || lower >= upper {
                    self.error(&sp, "lower must be below upper");
                    continue;
                }
                let Some(adjustment) = st.adjustment else {
                    self.error(&format!("{sp}.adjustment"), "required");
                    continue;
                };
                if adjustment_type == AdjustmentType::ExactCapacity
                    && !(0..=100_000).contains(&adjustment)
                {
                    self.error(
                        &format!("{sp}.adjustment"),
                        "an ExactCapacity adjustment must be between 0 and 100000",
                    );
                    continue;
                }
                if !(-100_000..=100_000).contains(&adjustment) {
                    self.error(
                        &format!("{sp}.adjustment"),
                        "must be between -100000 and 100000",
                    );
                    continue;
                }
                steps.push((
                    j,
                    Step {
                        lower,
                        upper,
                        adjustment,
                    },
                ));
            }
            steps.sort_by(|a, b| a.1.lower.total_cmp(&b.1.lower));
            for w in steps.windows(2) {
                if w[1].1.lower < w[0].1.upper {
                    self.error(
                        &format!("{tp}.steps[{}]", w[1].0),
                        format!("overlaps steps[{}]", w[0].0),
                    );
                }
            }
        }
        Some(StepPolicy {
            name,
            metric: metric?,
            comparison: comparison?,
            threshold: threshold?,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            adjustment_type,
            min_adjustment_magnitude,
            cooldown,
            steps: steps.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// One `[[scaler.services.target_tracking]]` element at `tp`, already named.
    pub(super) fn target_tracking(
        &mut self,
        tp: &str,
        t: &RawTargetTracking,
        name: String,
    ) -> Option<TargetTracking> {
        let metric = self.scaling_metric(
            tp,
            &t.metric,
            &t.per,
            t.percentile,
            &TARGET_TRACKING_METRICS,
            Per::Minute,
        );
        let target = match t.target {
            None => {
                self.error(&format!("{tp}.target"), "required");
                None
            }
            Some(x) if x > 0.0 && x.is_finite() => Some(x),
            Some(_) => {
                self.error(&format!("{tp}.target"), "must be greater than 0");
                None
            }
        };
        let tolerance = match t.tolerance_percent {
            None => 0.1,
            Some(x) if (0.0..100.0).contains(&x) => x / 100.0,
            Some(_) => {
                self.error(
                    &format!("{tp}.tolerance_percent"),
                    "must be at least 0 and below 100",
                );
                0.1
            }
        };
        let scale_out_stabilization = self.duration_in(
            &t.scale_out_stabilization,
            &format!("{tp}.scale_out_stabilization"),
            secs(0),
            secs(0),
            secs(3600),
            "at most 3600s",
        );
        let scale_in_stabilization = self.duration_in(
            &t.scale_in_stabilization,
            &format!("{tp}.scale_in_stabilization"),
            secs(300),
            secs(0),
            secs(3600),
            "at most 3600s",
        );
        let scale_out_cooldown = self.duration_in(
            &t.scale_out_cooldown,
            &format!("{tp}.scale_out_cooldown"),
            secs(60),
            secs(0),
            secs(86_400),
            "at most 86400s",
        );
        let scale_in_cooldown = self.duration_in(
            &t.scale_in_cooldown,
            &format!("{tp}.scale_in_cooldown"),
            secs(300),
            secs(0),
            secs(86_400),
            "at most 86400s",
        );
        Some(TargetTracking {
            name,
            metric: metric?,
            target: target?,
            tolerance,
            scale_out_stabilization,
            scale_in_stabilization,
            scale_out_cooldown,
            scale_in_cooldown,
            disable_scale_in: t.disable_scale_in.unwrap_or(false),
        })
    }

    /// One `[[scaler.services.scheduled]]` element at `ap`, already named.
    pub(super) fn scheduled_action(
        &mut self,
        ap: &str,
        a: &RawScheduledAction,
        name: String,
    ) -> Option<ScheduledAction> {
        let timezone = match a.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(tz) => match tz.trim().parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    self.error(
                        &format!("{ap}.timezone"),
                        format!("unknown time zone {tz:?} (expected an IANA name such as \"Europe/Paris\")"),
                    );
                    chrono_tz::UTC
                }
            },
        };
        let schedule = match self.required(&a.schedule, &format!("{ap}.schedule")) {
            None => None,
            Some(text) => match parse_schedule(text) {
                Ok(s) => Some((text.trim().to_owned(), s)),
                Err(msg) => {
                    self.error(&format!("{ap}.schedule"), msg);
                    None
                }
            },
        };
        let amin = self.capacity(a.min_capacity, &format!("{ap}.min_capacity"));
        let amax = self.capacity(a.max_capacity, &format!("{ap}.max_capacity"));
        if a.min_capacity.is_none() && a.max_capacity.is_none() {
            self.error(ap, "needs min_capacity, max_capacity or both");
        }
        self.min_not_above_max(ap, amin, amax);
        let (expression, schedule) = schedule?;
        Some(ScheduledAction {
            name,
            expression,
            schedule,
            timezone,
            min_capacity: amin,
            max_capacity: amax,
        })
    }
}
