//! Step scaling, as Application Auto Scaling does it: a CloudWatch-style alarm (a comparison
//! with a threshold over `evaluation_periods` periods of `period` seconds, `datapoints_to_alarm`
//! of them breaching) and step adjustments chosen by how far the newest datapoint is past the
//! threshold.
//!
//! # Periods
//!
//! Periods are aligned on the clock (as CloudWatch's): period `k` covers `((k-1)·P, k·P]`. A
//! tick's figures describe the scrape interval that ends at the tick, so a tick at `t` adds its
//! value to the period holding `t`. A period's datapoint is the average of its ticks' values
//! (missing when no tick had data; a missing datapoint never breaches). It is final at the
//! first tick at or after the period's end, and only then is the alarm evaluated and, in
//! alarm, the policy invoked: once per period, as AAS invokes a policy while its alarm stays
//! in ALARM.
//!
//! # Cooldown
//!
//! After this policy's scale-out took effect (from `from` to `to`), during `cooldown` the
//! adjustment is computed from `from` again, and applies only if it goes beyond `to`: the
//! capacity added counts, and only a larger step than the one applied adds capacity (AAS:
//! "+2, then +3 during the cooldown adds 1"). After its scale-in, no scale-in during the
//! cooldown; a scale-out proceeds.

use std::collections::VecDeque;

use berth_config::model::{AdjustmentType, StepPolicy};
use chrono::{DateTime, Utc};

use super::vote::Vote;

/// The period being accumulated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenPeriod {
    /// Period number `k` (the period ends at `k × period` since the epoch).
    pub index: i64,
    /// Sum of the values seen in it.
    pub sum: f64,
    /// Ticks with a value in it (the datapoint is `sum / count`).
    pub count: u32,
}

impl OpenPeriod {
    fn datapoint(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }
}

/// An adjustment of this policy that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjustment {
    /// When it was set; its cooldown runs from here.
    pub at: DateTime<Utc>,
    /// The desired count it adjusted (the base of a step within the cooldown).
    pub from: u32,
    /// The desired count it set (what a later step in the cooldown must exceed).
    pub to: u32,
}

/// What a step policy remembers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepState {
    /// Final datapoints of the last `evaluation_periods` periods, newest last (`None`: missing).
    pub datapoints: VecDeque<Option<f64>>,
    /// The period being accumulated.
    pub open: Option<OpenPeriod>,
    /// The number of the newest final period (periods skipped after it are missing).
    pub last_index: Option<i64>,
    /// This policy's last adjustment that took effect.
    pub last_adjustment: Option<Adjustment>,
}

fn period_ms(p: &StepPolicy) -> i64 {
    i64::try_from(p.period.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

impl StepState {
    /// The state after the tick at `now` saw `value`, and whether a period's datapoint became
    /// final at this tick. Pure; the adjustment is kept.
    pub fn advance(
        &self,
        now: DateTime<Utc>,
        value: Option<f64>,
        p: &StepPolicy,
    ) -> (StepState, bool) {
        let len = i64::from(p.evaluation_periods.max(1));
        let pm = period_ms(p);
        let t = now.timestamp_millis();
        // ceil(t / pm): the period ((k-1)·P, k·P] holding t.
        let index = t.div_euclid(pm) + i64::from(t.rem_euclid(pm) != 0);
        let mut next = self.clone();
        let mut closed = false;
        let finish = |next: &mut StepState, o: OpenPeriod| {
            if let Some(last) = next.last_index {
                // Periods without any tick (a stalled scaler): missing datapoints.
                for _ in 0..(o.index - last - 1).clamp(0, len) {
                    next.datapoints.push_back(None);
                }
            }
            next.datapoints.push_back(o.datapoint());
            next.last_index = Some(o.index);
        };
        if let Some(o) = next.open.take() {
            if o.index < index {
                let k = o.index;
                finish(&mut next, o);
                // Periods between it and this tick's had no tick (a stalled scaler): they are
                // missing now, so the closed one is not taken for the newest.
                if index - k > 1 {
                    for _ in 0..(index - k - 1).clamp(0, len) {
                        next.datapoints.push_back(None);
                    }
                    next.last_index = Some(index - 1);
                }
                closed = true;
            } else {
                // Same period (or a clock that went back: kept in the open one).
                next.open = Some(o);
            }
        }
        let open = next.open.get_or_insert(OpenPeriod {
            index,
            sum: 0.0,
            count: 0,
        });
        if let Some(v) = value {
            open.sum += v;
            open.count += 1;
        }
        if t == index.saturating_mul(pm) {
            // A tick on the period's end: its datapoint is final now.
            if let Some(o) = next.open.take() {
                finish(&mut next, o);
                closed = true;
            }
        }
        while next.datapoints.len() > len as usize {
            next.datapoints.pop_front();
        }
        (next, closed)
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

fn apply(p: &StepPolicy, from: u32, adjustment: i64) -> u32 {
    let new = match p.adjustment_type {
        AdjustmentType::ChangeInCapacity => i64::from(from) + adjustment,
        AdjustmentType::PercentChangeInCapacity => {
            i64::from(from) + percent_change(from, adjustment, p.min_adjustment_magnitude)
        }
        AdjustmentType::ExactCapacity => adjustment,
    };
    new.clamp(0, i64::from(u32::MAX)) as u32
}

/// The policy's vote at `now` and its next state (record it with the decision).
pub fn decide(
    now: DateTime<Utc>,
    p: &StepPolicy,
    value: Option<f64>,
    current: u32,
    st: &StepState,
) -> (Vote, StepState) {
    let (next, closed) = st.advance(now, value, p);
    let quiet = |why: String| Vote {
        policy: p.name.clone(),
        desired: None,
        blocks_scale_in: false,
        reason: why,
    };
    if !closed {
        return (
            quiet(format!(
                "period of {:?} in progress (alarm evaluated when it ends)",
                p.period
            )),
            next,
        );
    }
    let breaching = |d: &Option<f64>| d.is_some_and(|v| p.comparison.breaches(v, p.threshold));
    let count = next.datapoints.iter().filter(|d| breaching(d)).count();
    let Some(newest) = next.datapoints.back().copied().flatten() else {
        return (
            quiet("no data in the last period (missing datapoint)".into()),
            next,
        );
    };
    if count < p.datapoints_to_alarm as usize {
        return (
            quiet(format!(
                "datapoint {newest:.3}: {count} of {} periods breach {}, alarm needs {}",
                p.evaluation_periods, p.threshold, p.datapoints_to_alarm
            )),
            next,
        );
    }
    if !p.comparison.breaches(newest, p.threshold) {
        // An alarm stays in ALARM only while the newest datapoint breaches (as an adjustment
        // is computed from the newest value).
        return (
            quiet(format!(
                "datapoint {newest:.3} no longer breaches {}",
                p.threshold
            )),
            next,
        );
    }
    let breach = newest - p.threshold;
    let Some(step) = find_step(p, breach) else {
        return (
            quiet(format!(
                "datapoint {newest:.3}: no step covers {breach:+.3} past the threshold"
            )),
            next,
        );
    };
    let cooldown = chrono::Duration::from_std(p.cooldown).unwrap_or(chrono::Duration::zero());
    let cooling = st.last_adjustment.filter(|a| now < a.at + cooldown);
    let what = |from: u32, new: u32| {
        format!(
            "datapoint {newest:.3} breaches {} by {breach:+.3}: step adjustment {} ({:?}) from {from} → {new}",
            p.threshold, step.adjustment, p.adjustment_type
        )
    };
    let vote = |new: u32, reason: String| Vote::wants(&p.name, new, false, reason);
    match cooling {
        Some(a) if a.to > a.from => {
            // After a scale-out: the added capacity counts; only a larger step adds more.
            let new = apply(p, a.from, step.adjustment);
            if new > a.to && new > current {
                let why = format!(
                    "{}; in cooldown: beyond the {} it set",
                    what(a.from, new),
                    a.to
                );
                (vote(new, why), next)
            } else {
                let why = format!(
                    "{}; in cooldown until {}: not beyond the {} it set",
                    what(a.from, new),
                    a.at + cooldown,
                    a.to
                );
                (quiet(why), next)
            }
        }
        Some(a) => {
            let new = apply(p, current, step.adjustment);
            if new > current {
                (vote(new, what(current, new)), next)
            } else {
                let why = format!(
                    "{}; in cooldown until {}",
                    what(current, new),
                    a.at + cooldown
                );
                (quiet(why), next)
            }
        }
        None => {
            let new = apply(p, current, step.adjustment);
            (vote(new, what(current, new)), next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::t;
    use berth_config::model::{Comparison, Per, ScalingMetric, Step};
    use std::time::Duration;

    fn out_policy() -> StepPolicy {
        StepPolicy {
            name: "step".into(),
            metric: ScalingMetric::RequestRate(Per::Second),
            comparison: Comparison::GreaterOrEqual,
            threshold: 100.0,
            period: Duration::from_secs(5),
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

    fn one_period(mut p: StepPolicy) -> StepPolicy {
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        p
    }

    #[test]
    fn alarm_needs_datapoints_to_alarm_of_evaluation_periods() {
        let p = out_policy();
        let st = StepState::default();
        let (v, st) = decide(t(0), &p, Some(120.0), 4, &st);
        assert_eq!(v.desired, None, "1 of 3 breaching");
        let (v, st) = decide(t(5), &p, Some(10.0), 4, &st);
        assert_eq!(v.desired, None);
        let (v, _) = decide(t(10), &p, Some(130.0), 4, &st);
        assert_eq!(v.desired, Some(5), "2 of 3: alarm, step [0,50) +1");
    }

    #[test]
    fn periods_are_seconds_not_ticks() {
        // 60 s periods, ticks every 5 s: a period's datapoint is the average of its 12 ticks,
        // final at the tick on its end; 3 breaching periods are needed (3 minutes, not 15 s).
        let mut p = out_policy();
        p.period = Duration::from_secs(60);
        p.datapoints_to_alarm = 3;
        let mut st = StepState::default();
        // Start on a period boundary: 1_700_000_040 is a multiple of 60.
        let base = 40;
        let mut first_vote = None;
        for k in 1..=48 {
            let now = base + 5 * k;
            let (v, next) = decide(t(now), &p, Some(160.0), 4, &st);
            st = next;
            if v.desired.is_some() && first_vote.is_none() {
                first_vote = Some((now - base, v.desired));
            }
            if k % 12 != 0 {
                assert_eq!(v.desired, None, "no vote inside a period (tick {k})");
            }
        }
        assert_eq!(
            first_vote,
            Some((180, Some(7))),
            "the third breaching period ends at 180 s"
        );
        // The datapoint is the period's average: half the ticks at 160, half at 0 → 80.
        let mut st = StepState::default();
        let mut p1 = one_period(p.clone());
        p1.comparison = Comparison::GreaterOrEqual;
        p1.threshold = 70.0;
        for k in 1..=12 {
            let v = if k <= 6 { 160.0 } else { 0.0 };
            let (vote, next) = decide(t(base + 5 * k), &p1, Some(v), 4, &st);
            st = next;
            if k == 12 {
                assert_eq!(st.datapoints.back().copied().flatten(), Some(80.0));
                assert_eq!(vote.desired, Some(5), "80 breaches 70 by 10: +1");
            }
        }
    }

    #[test]
    fn periods_without_ticks_are_missing_datapoints() {
        let mut p = out_policy();
        p.evaluation_periods = 3;
        p.datapoints_to_alarm = 3;
        let (_, st) = decide(t(0), &p, Some(200.0), 4, &StepState::default());
        // The scaler stalled for two periods: they are missing, so not 3 of 3 breaching.
        let (v, st) = decide(t(15), &p, Some(200.0), 4, &st);
        assert_eq!(st.datapoints, VecDeque::from(vec![None, None, Some(200.0)]));
        assert_eq!(v.desired, None);
    }

    #[test]
    fn a_period_closed_late_is_not_taken_for_the_newest() {
        let mut p = out_policy();
        p.evaluation_periods = 1;
        p.datapoints_to_alarm = 1;
        // A tick inside period (0, 5] s, then none until period (15, 20] s.
        let (_, st) = decide(t(1), &p, Some(200.0), 4, &StepState::default());
        let (v, st) = decide(t(16), &p, Some(0.0), 4, &st);
        assert_eq!(
            st.datapoints.back().copied(),
            Some(None),
            "periods (5, 15] s had no tick: the newest datapoint is missing"
        );
        assert_eq!(v.desired, None, "a 15 s old breach does not scale");
    }

    #[test]
    fn step_bounds_choose_the_adjustment() {
        let out = one_period(out_policy());
        let scale_in = in_policy();
        let st = StepState::default();
        // (policy, value, current count, desired, why)
        #[rustfmt::skip]
        let cases = [
            (&out, 100.0, 4, Some(5), "lower inclusive"),
            (&out, 149.9, 4, Some(5), "first step"),
            (&out, 150.0, 4, Some(7), "upper exclusive"),
            (&out, 99.9, 4, None, "below the threshold"),
            (&scale_in, 15.0, 4, Some(3), "first step down"),
            (&scale_in, 10.0, 4, Some(2), "below: -10 is in (-inf, -10]"),
            (&scale_in, 9.0, 4, Some(2), "further below"),
            (&scale_in, 0.0, 1, Some(0), "never negative"),
        ];
        for (p, value, current, want, why) in cases {
            assert_eq!(
                decide(t(0), p, Some(value), current, &st).0.desired,
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn no_step_for_the_breach_does_nothing() {
        let mut p = one_period(out_policy());
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
        let mut p = one_period(out_policy());
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
        let mut p = one_period(out_policy());
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

    fn after(from: u32, to: u32) -> StepState {
        StepState {
            last_adjustment: Some(Adjustment { at: t(0), from, to }),
            ..StepState::default()
        }
    }

    #[test]
    fn cooldown_only_a_larger_step_adds_capacity() {
        let out = one_period(out_policy());
        let scale_in = in_policy();
        // (policy, now, value, current count, last step (from, to), desired, why)
        #[rustfmt::skip]
        let cases = [
            (&out, 10, 110.0, 5, (4, 5), None, "+1 took 4 to 5: in the cooldown +1 from 4 adds nothing"),
            (&out, 10, 160.0, 5, (4, 5), Some(7), "a larger step (+3 from 4 = 7) adds the difference"),
            (&out, 10, 110.0, 6, (5, 8), None, "someone lowered 8 to 6; +1 from 5 = 6: nothing"),
            (&out, 10, 160.0, 9, (4, 5), None, "a larger step not above the current count: nothing"),
            (&out, 60, 110.0, 6, (5, 8), Some(7), "after the cooldown, from the current count"),
            (&scale_in, 30, 5.0, 4, (6, 4), None, "a scale-in in its cooldown: nothing"),
            (&scale_in, 60, 5.0, 4, (6, 4), Some(2), "a scale-in after its cooldown"),
            (&out, 30, 110.0, 4, (6, 4), Some(5), "a scale-out in a scale-in's cooldown proceeds"),
        ];
        for (p, now, value, current, (from, to), want, why) in cases {
            let (vote, _) = decide(t(now), p, Some(value), current, &after(from, to));
            assert_eq!(vote.desired, want, "{why}");
        }
    }

    #[test]
    fn missing_data_is_not_breaching() {
        let p = out_policy();
        let (_, st) = decide(t(0), &p, Some(200.0), 4, &StepState::default());
        let (v, st) = decide(t(5), &p, None, 4, &st);
        assert_eq!(v.desired, None);
        assert_eq!(st.datapoints.back(), Some(&None));
    }
}
