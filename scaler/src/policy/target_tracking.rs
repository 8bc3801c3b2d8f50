//! Target tracking: hold a figure at a target value, as Application Auto Scaling does, with
//! Kubernetes-style stabilization windows.
//!
//! # The capacity rule
//!
//! `raw = ceil(base × value / target)` unless `value / target` is within the tolerance of 1
//! (then `raw = current`), where
//!
//! * `value` is the figure as the proxy measured it: requests or connections **per healthy
//!   target**, or a latency percentile of the healthy targets;
//! * `base`, for a per-target figure, is the capacity it was measured on: the healthy
//!   targets of the target group (the desired count when the figures have none); for other
//!   figures (latency, error rate, request rate, healthy targets) it is `current`, as in AAS;
//! * `current` is the ECS desired count: healthy targets **plus pending ones** (asked for, not
//!   yet passing health checks).
//!
//! For a per-target figure `base × value` is the total load, so `raw = ceil(total / target)`:
//! the count that will carry the load once every task is healthy, whatever the share of
//! pending tasks. Pending capacity therefore counts as capacity: while new tasks start, `raw`
//! stays at the count already asked for (no second scale-out on the same load), and a load
//! that grows beyond what the desired count will carry still scales out at once (pending tasks
//! never block a needed scale-out). Multiplying `current` instead (AAS's formula, where the
//! metric is averaged over running capacity) would multiply the pending tasks again on every
//! tick until `max_capacity`.
//!
//! # Windows and cooldowns
//!
//! A scale-out takes the *smallest* recommendation of the scale-out window, a scale-in the
//! *largest* of the scale-in window, so one spike never scales out when the window is set and
//! one dip never scales in before the window (default 300 s) has seen nothing but lower figures.
//!
//! As AAS target tracking: after this policy's scale-out took effect, during
//! `scale_out_cooldown` only a scale-out to a count *larger than the one it set* proceeds (the
//! capacity added counts for the next decision); after its scale-in, no scale-in during
//! `scale_in_cooldown` (a scale-out still proceeds).

use std::collections::VecDeque;

use berth_config::model::TargetTracking;
use chrono::{DateTime, Utc};

use super::vote::Vote;

/// What a target tracking policy remembers: its recent raw recommendations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackingState {
    /// (time, raw recommendation), oldest first.
    pub history: VecDeque<(DateTime<Utc>, u32)>,
    /// When the policy first had a recommendation: a scale-in needs a whole scale-in window of
    /// observation, so a restarted scaler does not scale in on its first tick.
    pub since: Option<DateTime<Utc>>,
    /// This policy's last scale-out that took effect: when, and the count it set.
    pub last_scale_out: Option<(DateTime<Utc>, u32)>,
    /// When this policy's last scale-in took effect.
    pub last_scale_in: Option<DateTime<Utc>>,
}

impl TrackingState {
    /// Remembers this tick's raw recommendation and forgets what no window can see.
    pub fn record(&mut self, now: DateTime<Utc>, raw: Option<u32>, p: &TargetTracking) {
        if let Some(raw) = raw {
            self.history.push_back((now, raw));
            self.since.get_or_insert(now);
        }
        let keep = p.scale_in_stabilization.max(p.scale_out_stabilization);
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::zero());
        while self.history.front().is_some_and(|(t, _)| *t < now - keep) {
            self.history.pop_front();
        }
    }

    /// The raw recommendations recorded since `start`, then this tick's `raw`.
    fn recommendations_since(
        &self,
        start: DateTime<Utc>,
        raw: u32,
    ) -> impl Iterator<Item = u32> + '_ {
        self.history
            .iter()
            .filter(move |(t, _)| *t >= start)
            .map(|(_, r)| *r)
            .chain(std::iter::once(raw))
    }
}

/// The capacity rule (see the module documentation): `current` when `value / target` is within
/// `tolerance` of 1, else `ceil(base × value / target)`, robust to float noise
/// (`ceil(2.0000000001)` is 2). `base` is the capacity `value` was measured on (healthy
/// targets), `current` the desired count (healthy plus pending). A base of 0 counts as 1 so a
/// service scaled to zero can come back.
pub fn raw_recommendation(current: u32, base: u32, value: f64, target: f64, tolerance: f64) -> u32 {
    let ratio = value / target;
    if !ratio.is_finite() {
        return current;
    }
    if (ratio - 1.0).abs() <= tolerance + 1e-12 {
        return current;
    }
    let x = f64::from(base.max(1)) * ratio;
    let x = (x - 1e-9).ceil().max(0.0);
    if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x as u32
    }
}

fn window_start(now: DateTime<Utc>, w: std::time::Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::zero())
}

fn until(at: DateTime<Utc>, w: std::time::Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(w).unwrap_or(chrono::Duration::zero())
}

/// The policy's vote for this tick. `value` is the watched figure (`None`: no data, which
/// holds and blocks scale-in), measured on `base` healthy targets; `current` is the desired
/// count (healthy and pending); `partial` marks a lower-bound figure (never scales in).
/// Also returns the raw recommendation to record.
pub fn decide(
    now: DateTime<Utc>,
    p: &TargetTracking,
    value: Option<f64>,
    base: u32,
    partial: bool,
    current: u32,
    st: &TrackingState,
) -> (Vote, Option<u32>) {
    let Some(value) = value else {
        return (
            Vote::hold(
                &p.name,
                current,
                "no data (holds; never scales in on a gap)",
            ),
            None,
        );
    };
    let raw = raw_recommendation(current, base, value, p.target, p.tolerance);
    let seen = format!(
        "value {value:.3} on {base} healthy vs target {:.3}",
        p.target
    );
    if raw > current {
        let start = window_start(now, p.scale_out_stabilization);
        let low = st.recommendations_since(start, raw).min().unwrap_or(raw);
        if low > current {
            if let Some((at, set)) = st.last_scale_out {
                let end = until(at, p.scale_out_cooldown);
                if now < end && low <= set {
                    let why = format!(
                        "{seen}: wants {low}, in scale-out cooldown until {end}: only a count \
                         above {set} (set by its last scale-out) proceeds"
                    );
                    return (Vote::hold(&p.name, current, &why), Some(raw));
                }
            }
            let why = format!("{seen}: scale out to {low} (raw {raw})");
            let vote = Vote::wants(&p.name, low, true, why);
            return (vote, Some(raw));
        }
        let why = format!("{seen}: wants {raw}, stabilizing (lowest in scale-out window {low})");
        return (Vote::hold(&p.name, current, &why), Some(raw));
    }
    if raw < current {
        if p.disable_scale_in {
            let why = format!("{seen}: wants {raw}, scale-in disabled");
            return (Vote::hold(&p.name, current, &why), Some(raw));
        }
        if partial {
            let why = format!(
                "{seen}: wants {raw}, but figures are partial (CloudWatch aggregate unavailable)"
            );
            return (Vote::hold(&p.name, current, &why), Some(raw));
        }
        if let Some(at) = st.last_scale_in {
            let end = until(at, p.scale_in_cooldown);
            if now < end {
                let why = format!("{seen}: wants {raw}, in scale-in cooldown until {end}");
                return (Vote::hold(&p.name, current, &why), Some(raw));
            }
        }
        let start = window_start(now, p.scale_in_stabilization);
        if st.since.is_none_or(|since| since > start) && !p.scale_in_stabilization.is_zero() {
            let why = format!(
                "{seen}: wants {raw}, stabilizing (observed for less than the scale-in window {:?})",
                p.scale_in_stabilization
            );
            return (Vote::hold(&p.name, current, &why), Some(raw));
        }
        let high = st.recommendations_since(start, raw).max().unwrap_or(raw);
        if high < current {
            let why = format!("{seen}: scale in to {high} (raw {raw})");
            let vote = Vote::wants(&p.name, high, false, why);
            return (vote, Some(raw));
        }
        let why = format!("{seen}: wants {raw}, stabilizing (highest in scale-in window {high})");
        return (Vote::hold(&p.name, current, &why), Some(raw));
    }
    (
        Vote::hold(&p.name, current, &format!("{seen}: within tolerance")),
        Some(raw),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{t, tt};
    use std::time::Duration;

    /// Requests per target per second around `target`, scale-in stabilized over 300 s, a
    /// 60 s scale-out cooldown and no scale-in cooldown.
    fn policy(target: f64) -> TargetTracking {
        TargetTracking {
            scale_in_cooldown: Duration::ZERO,
            ..tt("tt", target)
        }
    }

    /// The vote at t(0) of a policy with no history, and nothing recorded.
    fn first_vote(
        p: &TargetTracking,
        value: Option<f64>,
        base: u32,
        partial: bool,
        current: u32,
    ) -> (Vote, Option<u32>) {
        decide(
            t(0),
            p,
            value,
            base,
            partial,
            current,
            &TrackingState::default(),
        )
    }

    #[test]
    fn formula_and_tolerance_band() {
        // (current, base, value, target, tolerance, recommendation, why)
        #[rustfmt::skip]
        let cases = [
            (4, 4, 200.0, 100.0, 0.1, 8, "twice the target"),
            (4, 4, 150.0, 100.0, 0.1, 6, "1.5 times the target"),
            (3, 3, 101.0, 100.0, 0.1, 3, "inside the band"),
            (3, 3, 110.0, 100.0, 0.1, 3, "edge of the band holds"),
            (3, 3, 111.0, 100.0, 0.1, 4, "ceil(3.33)"),
            (3, 3, 90.0, 100.0, 0.1, 3, "lower edge holds"),
            (10, 10, 50.0, 100.0, 0.1, 5, "half the target"),
            (10, 10, 0.0, 100.0, 0.1, 0, "no load"),
            (5, 5, 120.0, 100.0, 0.0, 6, "no tolerance"),
            (3, 3, 0.3 * 4.0, 0.3 * 3.0, 0.0, 4, "float noise: 3 × 1.2 / 1.2 must not become 4"),
            (0, 0, 250.0, 100.0, 0.1, 3, "from zero counts as one"),
            (2, 2, f64::INFINITY, 100.0, 0.1, 2, "an infinite figure holds"),
        ];
        for (current, base, value, target, tolerance, want, why) in cases {
            assert_eq!(
                raw_recommendation(current, base, value, target, tolerance),
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn no_data_holds_and_blocks_scale_in() {
        let (v, raw) = first_vote(&policy(100.0), None, 5, false, 5);
        assert_eq!(v.desired, Some(5));
        assert!(v.blocks_scale_in);
        assert_eq!(raw, None);
    }

    #[test]
    fn scale_out_is_immediate_without_window() {
        let (v, _) = first_vote(&policy(100.0), Some(300.0), 2, false, 2);
        assert_eq!(v.desired, Some(6));
        assert!(v.blocks_scale_in);
    }

    #[test]
    fn scale_out_window_takes_the_lowest_recommendation() {
        let mut p = policy(100.0);
        p.scale_out_stabilization = Duration::from_secs(30);
        let mut st = TrackingState::default();
        st.record(t(0), Some(2), &p);
        // A spike: the window still remembers "2", so no scale-out yet.
        let (v, raw) = decide(t(5), &p, Some(400.0), 2, false, 2, &st);
        assert_eq!(v.desired, Some(2));
        st.record(t(5), raw, &p);
        let (v, raw) = decide(t(20), &p, Some(300.0), 2, false, 2, &st);
        assert_eq!(v.desired, Some(2), "t=0 still in window");
        st.record(t(20), raw, &p);
        // After the window passed the calm datapoint: the lowest of 8 and 6 and 6.
        let (v, _) = decide(t(31), &p, Some(300.0), 2, false, 2, &st);
        assert_eq!(v.desired, Some(6));
    }

    #[test]
    fn scale_in_waits_for_the_whole_window() {
        let p = policy(100.0);
        let mut st = TrackingState::default();
        st.record(t(0), Some(10), &p);
        let (v, raw) = decide(t(10), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(10));
        assert!(v.blocks_scale_in);
        st.record(t(10), raw, &p);
        let (v, raw) = decide(t(299), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(10), "t=0 (10) is still in the 300 s window");
        st.record(t(299), raw, &p);
        let (v, _) = decide(t(301), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(2));
        assert!(!v.blocks_scale_in);
    }

    #[test]
    fn scale_in_takes_the_highest_in_window() {
        let mut p = policy(100.0);
        p.scale_in_stabilization = Duration::from_secs(60);
        let mut st = TrackingState::default();
        st.record(t(0), Some(6), &p);
        st.record(t(30), Some(4), &p);
        let (v, _) = decide(t(50), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(10), "observed for 50 s of a 60 s window");
        let (v, _) = decide(t(60), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(6));
    }

    #[test]
    fn disable_scale_in_and_partial_hold() {
        let mut p = policy(100.0);
        p.scale_in_stabilization = Duration::ZERO;
        let (v, _) = first_vote(&p, Some(10.0), 10, true, 10);
        assert_eq!(v.desired, Some(10));
        assert!(v.blocks_scale_in);
        // partial figures may still scale out
        let (v, _) = first_vote(&p, Some(300.0), 2, true, 2);
        assert_eq!(v.desired, Some(6));
        p.disable_scale_in = true;
        let (v, _) = first_vote(&p, Some(10.0), 10, false, 10);
        assert_eq!(v.desired, Some(10));
        assert!(v.blocks_scale_in);
    }

    #[test]
    fn a_fresh_state_does_not_scale_in() {
        let p = policy(100.0);
        let (v, _) = first_vote(&p, Some(10.0), 10, false, 10);
        assert_eq!(v.desired, Some(10));
        assert!(v.blocks_scale_in);
    }

    #[test]
    fn history_is_pruned() {
        let p = policy(100.0);
        let mut st = TrackingState::default();
        for i in 0..1000 {
            st.record(t(i * 5), Some(3), &p);
        }
        assert!(st.history.len() <= 61, "{}", st.history.len());
    }

    #[test]
    fn pending_capacity_counts_and_never_blocks() {
        // 1 healthy target carries 1000 rps; 10 tasks asked for (9 pending): hold at 10.
        assert_eq!(raw_recommendation(10, 1, 1000.0, 100.0, 0.1), 10);
        // The load grows to 2000 rps while they start: 20 at once.
        assert_eq!(raw_recommendation(10, 1, 2000.0, 100.0, 0.1), 20);
        // The load falls to 500 rps: 5 (a scale-in, subject to the windows).
        assert_eq!(raw_recommendation(10, 1, 500.0, 100.0, 0.1), 5);
        // All healthy, within the band: no change.
        assert_eq!(raw_recommendation(10, 10, 105.0, 100.0, 0.1), 10);
        let (v, _) = first_vote(&policy(100.0), Some(1000.0), 1, false, 10);
        assert_eq!(v.desired, Some(10));
        assert!(v.reason.contains("on 1 healthy"), "{}", v.reason);
    }

    #[test]
    fn scale_out_cooldown_lets_only_a_larger_count_through() {
        let p = policy(100.0);
        let st = TrackingState {
            last_scale_out: Some((t(0), 10)),
            ..TrackingState::default()
        };
        // Someone lowered the count to 8 after we set 10: 9 is not above 10, held.
        let (v, _) = decide(t(30), &p, Some(900.0), 1, false, 8, &st);
        assert_eq!(v.desired, Some(8));
        assert!(v.reason.contains("scale-out cooldown"), "{}", v.reason);
        // 12 is: proceeds.
        let (v, _) = decide(t(30), &p, Some(1200.0), 1, false, 8, &st);
        assert_eq!(v.desired, Some(12));
        // After the cooldown (60 s), 9 proceeds.
        let (v, _) = decide(t(60), &p, Some(900.0), 1, false, 8, &st);
        assert_eq!(v.desired, Some(9));
    }

    #[test]
    fn scale_in_cooldown_blocks_scale_in_only() {
        let mut p = policy(100.0);
        p.scale_in_stabilization = Duration::ZERO;
        p.scale_in_cooldown = Duration::from_secs(300);
        let st = TrackingState {
            last_scale_in: Some(t(0)),
            since: Some(t(0)),
            ..TrackingState::default()
        };
        let (v, _) = decide(t(100), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(10));
        assert!(v.blocks_scale_in);
        assert!(v.reason.contains("scale-in cooldown"), "{}", v.reason);
        let (v, _) = decide(t(100), &p, Some(300.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(30), "a scale-out proceeds");
        let (v, _) = decide(t(300), &p, Some(20.0), 10, false, 10, &st);
        assert_eq!(v.desired, Some(2));
    }
}
