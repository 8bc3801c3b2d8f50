//! Step scaling, as Application Auto Scaling does it: an alarm (comparison with a threshold
//! over `evaluation_periods` ticks, `datapoints_to_alarm` of them breaching) and step
//! adjustments chosen by how far the metric is past the threshold.
//!
//! A tick without data is a missing datapoint, never a breaching one. During the cooldown
//! after the policy's own adjustment, a scale-out applies only if it goes beyond the count it
//! set, and a scale-in does not apply.

use std::collections::VecDeque;

use berth_config::model::{AdjustmentType, StepPolicy};
use chrono::{DateTime, Utc};

use super::Vote;

/// What a step policy remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepState {
    /// The last datapoints, newest last: breaching or not (missing counts as not).
    pub datapoints: VecDeque<bool>,
    /// When this policy's last adjustment was applied and the count it set.
    pub last_adjustment: Option<(DateTime<Utc>, u32)>,
}

impl StepState {
    /// Records this tick's datapoint.
    pub fn record(&mut self, breaching: bool, p: &StepPolicy) {
        self.datapoints.push_back(breaching);
        while self.datapoints.len() > p.evaluation_periods as usize {
            self.datapoints.pop_front();
        }
    }
}

/// The capacity change of a `PercentChangeInCapacity` adjustment: truncated towards zero,
/// at least ±1 when not zero, at least `min_magnitude` in size (AAS rounding).
pub fn percent_change(current: u32, percent: i64, min_magnitude: u32) -> i64 {
    let exact = f64::from(current) * percent as f64 / 100.0;
    let mut change = exact.trunc() as i64;
    if change == 0 && exact != 0.0 {
        change = exact.signum() as i64;
    }
    if change != 0 && change.unsigned_abs() < u64::from(min_magnitude) {
        change = change.signum() * i64::from(min_magnitude);
    }
    change
}

/// The step whose interval holds `breach` (`metric - threshold`): lower bound inclusive and
/// upper exclusive above the threshold, the reverse below it.
pub fn find_step(p: &StepPolicy, breach: f64) -> Option<&berth_config::model::Step> {
    p.steps.iter().find(|s| {
        if breach >= 0.0 {
            s.lower <= breach && breach < s.upper
        } else {
            s.lower < breach && breach <= s.upper
        }
    })
}

/// The policy's vote and the datapoint to record (`breaching`).
pub fn decide(
    now: DateTime<Utc>,
    p: &StepPolicy,
    value: Option<f64>,
    current: u32,
    st: &StepState,
) -> (Vote, bool) {
    let breaching = value.is_some_and(|v| p.comparison.breaches(v, p.threshold));
    let earlier = st
        .datapoints
        .iter()
        .rev()
        .take(p.evaluation_periods.saturating_sub(1) as usize)
        .filter(|b| **b)
        .count();
    let count = earlier + usize::from(breaching);
    let quiet = |why: String| Vote {
        policy: p.name.clone(),
        desired: None,
        blocks_scale_in: false,
        reason: why,
    };
    let Some(value) = value else {
        return (quiet("no data (missing datapoint)".into()), false);
    };
    if count < p.datapoints_to_alarm as usize {
        return (
            quiet(format!(
                "value {value:.3}: {count} of {} datapoints breach {}, alarm needs {}",
                p.evaluation_periods, p.threshold, p.datapoints_to_alarm
            )),
            breaching,
        );
    }
    if !breaching {
        // An alarm stays in ALARM only while the newest datapoint breaches (as an adjustment
        // is computed from the newest value).
        return (
            quiet(format!(
                "value {value:.3} no longer breaches {}",
                p.threshold
            )),
            false,
        );
    }
    let breach = value - p.threshold;
    let Some(step) = find_step(p, breach) else {
        return (
            quiet(format!(
                "value {value:.3}: no step covers {breach:+.3} past the threshold"
            )),
            breaching,
        );
    };
    let new = match p.adjustment_type {
        AdjustmentType::ChangeInCapacity => i64::from(current) + step.adjustment,
        AdjustmentType::PercentChangeInCapacity => {
            i64::from(current)
                + percent_change(current, step.adjustment, p.min_adjustment_magnitude)
        }
        AdjustmentType::ExactCapacity => step.adjustment,
    };
    let new = new.clamp(0, i64::from(u32::MAX)) as u32;
    let what = format!(
        "value {value:.3} breaches {} by {breach:+.3}: step adjustment {} ({:?}) → {new}",
        p.threshold, step.adjustment, p.adjustment_type
    );
    if let Some((at, set)) = st.last_adjustment {
        let cooldown = chrono::Duration::from_std(p.cooldown).unwrap_or(chrono::Duration::zero());
        if now < at + cooldown {
            if new > current && new > set {
                // Scale-out during cooldown: only what goes beyond the previous adjustment.
            } else {
                return (
                    quiet(format!("{what}; in cooldown until {}", at + cooldown)),
                    breaching,
                );
            }
        }
    }
    let vote = Vote {
        policy: p.name.clone(),
        desired: Some(new),
        blocks_scale_in: false,
        reason: what,
    };
    (vote, breaching)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::{Comparison, Per, ScalingMetric, Step};
    use std::time::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn out_policy() -> StepPolicy {
        StepPolicy {
            name: "step".into(),
            metric: ScalingMetric::RequestRate(Per::Second),
            comparison: Comparison::GreaterOrEqual,
            threshold: 100.0,
            evaluation_periods: 3,
            datapoints_to_alarm: 2,
            adjustment_type: AdjustmentType::ChangeInCapacity,
            min_adjustment_magnitude: 1,
            cooldown: Duration::from_secs(60),
            steps: vec![
                Step {
                    lower: 0.0,
                    upper: 50.0,
                    adjustment: 1,
                },
                Step {
                    lower: 50.0,
                    upper: f64::INFINITY,
                    adjustment: 3,
                },
            ],
        }
    }

    fn in_policy() -> StepPolicy {
        StepPolicy {
            comparison: Comparison::Less,
            threshold: 20.0,
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
            steps: vec![
                Step {
                    lower: -10.0,
                    upper: 0.0,
                    adjustment: -1,
                },
                Step {
                    lower: f64::NEG_INFINITY,
                    upper: -10.0,
                    adjustment: -2,
                },
            ],
            ..out_policy()
        }
    }

    #[test]
    fn alarm_needs_datapoints_to_alarm_of_evaluation_periods() {
        let p = out_policy();
        let mut st = StepState::default();
        let (v, b) = decide(t(0), &p, Some(120.0), 4, &st);
        assert_eq!(v.desired, None, "1 of 3 breaching");
        st.record(b, &p);
        let (v, b) = decide(t(5), &p, Some(10.0), 4, &st);
        assert_eq!(v.desired, None);
        st.record(b, &p);
        let (v, _) = decide(t(10), &p, Some(130.0), 4, &st);
        assert_eq!(v.desired, Some(5), "2 of 3: alarm, step [0,50) +1");
    }

    #[test]
    fn step_bounds_choose_the_adjustment() {
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        let st = StepState::default();
        assert_eq!(
            decide(t(0), &p, Some(100.0), 4, &st).0.desired,
            Some(5),
            "lower inclusive"
        );
        assert_eq!(decide(t(0), &p, Some(149.9), 4, &st).0.desired, Some(5));
        assert_eq!(
            decide(t(0), &p, Some(150.0), 4, &st).0.desired,
            Some(7),
            "upper exclusive"
        );
        assert_eq!(decide(t(0), &p, Some(99.9), 4, &st).0.desired, None);
        let p = in_policy();
        assert_eq!(decide(t(0), &p, Some(15.0), 4, &st).0.desired, Some(3));
        assert_eq!(
            decide(t(0), &p, Some(10.0), 4, &st).0.desired,
            Some(2),
            "below: -10 is in (-inf, -10]"
        );
        assert_eq!(decide(t(0), &p, Some(9.0), 4, &st).0.desired, Some(2));
        assert_eq!(
            decide(t(0), &p, Some(0.0), 1, &st).0.desired,
            Some(0),
            "never negative"
        );
    }

    #[test]
    fn no_step_for_the_breach_does_nothing() {
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        p.steps = vec![Step {
            lower: 10.0,
            upper: 20.0,
            adjustment: 1,
        }];
        assert_eq!(
            decide(t(0), &p, Some(105.0), 4, &StepState::default())
                .0
                .desired,
            None
        );
    }

    #[test]
    fn percent_rounding_and_min_magnitude() {
        assert_eq!(percent_change(10, 25, 1), 2, "2.5 truncates to 2");
        assert_eq!(percent_change(3, 10, 1), 1, "0.3 rounds up to 1");
        assert_eq!(percent_change(3, -10, 1), -1, "-0.3 rounds to -1");
        assert_eq!(percent_change(10, -25, 1), -2, "-2.5 truncates to -2");
        assert_eq!(
            percent_change(10, 10, 3),
            3,
            "1 raised to the min magnitude 3"
        );
        assert_eq!(percent_change(10, -10, 3), -3);
        assert_eq!(percent_change(100, 50, 3), 50);
        assert_eq!(percent_change(0, 50, 2), 0, "no change from zero");
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        p.adjustment_type = AdjustmentType::PercentChangeInCapacity;
        p.min_adjustment_magnitude = 2;
        p.steps = vec![Step {
            lower: 0.0,
            upper: f64::INFINITY,
            adjustment: 10,
        }];
        assert_eq!(
            decide(t(0), &p, Some(200.0), 5, &StepState::default())
                .0
                .desired,
            Some(7)
        );
    }

    #[test]
    fn exact_capacity() {
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        p.adjustment_type = AdjustmentType::ExactCapacity;
        p.steps = vec![Step {
            lower: 0.0,
            upper: f64::INFINITY,
            adjustment: 12,
        }];
        assert_eq!(
            decide(t(0), &p, Some(200.0), 5, &StepState::default())
                .0
                .desired,
            Some(12)
        );
    }

    #[test]
    fn cooldown_allows_only_larger_scale_outs() {
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        let st = StepState {
            datapoints: VecDeque::new(),
            last_adjustment: Some((t(0), 5)),
        };
        // current 5 (set by us); +1 → 6 > 5: allowed beyond the previous adjustment.
        assert_eq!(decide(t(10), &p, Some(110.0), 5, &st).0.desired, Some(6));
        // current 6 (someone else set it), previous set 8: 7 is not beyond 8.
        let st2 = StepState {
            last_adjustment: Some((t(0), 8)),
            ..st.clone()
        };
        assert_eq!(decide(t(10), &p, Some(110.0), 6, &st2).0.desired, None);
        // after the cooldown anything goes
        assert_eq!(decide(t(61), &p, Some(110.0), 6, &st2).0.desired, Some(7));
        // scale-in in cooldown: nothing
        let pin = in_policy();
        let st3 = StepState {
            last_adjustment: Some((t(0), 4)),
            datapoints: VecDeque::new(),
        };
        assert_eq!(decide(t(30), &pin, Some(5.0), 4, &st3).0.desired, None);
        assert_eq!(decide(t(60), &pin, Some(5.0), 4, &st3).0.desired, Some(2));
    }

    #[test]
    fn missing_data_is_not_breaching() {
        let p = out_policy();
        let mut st = StepState::default();
        st.record(true, &p);
        let (v, b) = decide(t(5), &p, None, 4, &st);
        assert_eq!(v.desired, None);
        assert!(!b);
    }
}
