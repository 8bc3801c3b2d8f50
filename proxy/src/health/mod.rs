//! Health: one pure state machine ([`HealthState::observe`]) fed by the active checker
//! ([`active`], with gRPC checks in [`grpc`]), plus the pure ejection-time rule used by passive outlier detection.

pub mod active;
pub mod grpc;

use std::time::Duration;

/// Health status from active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Not yet passed `healthy_threshold` checks.
    Initial = 0,
    /// Passed `healthy_threshold` checks in a row (or checks are off); gets traffic.
    Healthy = 1,
    /// Failed `unhealthy_threshold` checks in a row.
    Unhealthy = 2,
}

impl Status {
    /// From the stored byte.
    pub fn from_u8(v: u8) -> Status {
        match v {
            1 => Status::Healthy,
            2 => Status::Unhealthy,
            _ => Status::Initial,
        }
    }
}

/// Thresholds of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes to become healthy.
    pub healthy: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy: u32,
}

/// A change of status caused by one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status before the observation.
    pub from: Status,
    /// The status it led to.
    pub to: Status,
}

/// The current run of check results of one target: how many passed, or failed, in a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckRun {
    successes: u32,
    failures: u32,
}

/// The health state of one target: its status and the current run of results. A target keeps
/// its status in one atomic (read on every pick) and its run beside it; this value joins the
/// two for one step of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    /// The status the run led to.
    pub status: Status,
    /// The run of results that led to it.
    pub run: CheckRun,
}

impl HealthState {
    /// A state with this status and no run.
    pub fn new(status: Status) -> Self {
        HealthState {
            status,
            run: CheckRun::default(),
        }
    }

    /// Feeds one check result; returns the new state and the transition, if any.
    ///
    /// `initial` becomes healthy after `healthy` successes in a row and unhealthy after
    /// `unhealthy` failures in a row (as ALB); healthy and unhealthy flip on the same runs.
    pub fn observe(self, ok: bool, th: Thresholds) -> (HealthState, Option<Transition>) {
        let (successes, failures) = if ok {
            (self.run.successes.saturating_add(1), 0)
        } else {
            (0, self.run.failures.saturating_add(1))
        };
        let to = match self.status {
            Status::Healthy if failures >= th.unhealthy.max(1) => Status::Unhealthy,
            Status::Unhealthy | Status::Initial if successes >= th.healthy.max(1) => {
                Status::Healthy
            }
            Status::Initial if failures >= th.unhealthy.max(1) => Status::Unhealthy,
            s => s,
        };
        let next = HealthState {
            status: to,
            run: CheckRun {
                successes,
                failures,
            },
        };
        let tr = (to != self.status).then_some(Transition {
            from: self.status,
            to,
        });
        (next, tr)
    }
}

/// Ejection time of the `n`th ejection in a row: `base × n`, at most `max`.
pub fn ejection_time(n: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(n.max(1)).min(max)
}

/// How many targets of a group of `total` may be ejected at once with `percent`.
/// Never ejects the last target of a group (ejecting it would only turn errors into 503s).
pub fn max_ejected(total: usize, percent: u32) -> usize {
    let n = total * percent.min(100) as usize / 100;
    n.min(total.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        healthy: 3,
        unhealthy: 2,
    };

    fn run(mut s: HealthState, results: &[bool]) -> (HealthState, Vec<Transition>) {
        let mut trs = vec![];
        for r in results {
            let (n, t) = s.observe(*r, TH);
            s = n;
            trs.extend(t);
        }
        (s, trs)
    }

    #[test]
    fn initial_becomes_healthy_after_threshold_successes() {
        let (s, trs) = run(HealthState::new(Status::Initial), &[true, true]);
        assert_eq!(s.status, Status::Initial);
        assert!(trs.is_empty());
        let (s, trs) = run(s, &[true]);
        assert_eq!(s.status, Status::Healthy);
        assert_eq!(
            trs,
            vec![Transition {
                from: Status::Initial,
                to: Status::Healthy
            }]
        );
    }

    #[test]
    fn a_failure_resets_the_success_run() {
        let (s, _) = run(
            HealthState::new(Status::Initial),
            &[true, true, false, true, true],
        );
        assert_eq!(s.status, Status::Initial);
    }

    #[test]
    fn healthy_becomes_unhealthy_after_threshold_failures_and_back() {
        let (s, _) = run(HealthState::new(Status::Healthy), &[false]);
        assert_eq!(s.status, Status::Healthy);
        let (s, _) = run(s, &[false]);
        assert_eq!(s.status, Status::Unhealthy);
        let (s, _) = run(s, &[true, true]);
        assert_eq!(s.status, Status::Unhealthy);
        let (s, _) = run(s, &[true]);
        assert_eq!(s.status, Status::Healthy);
    }

    #[test]
    fn initial_target_that_fails_becomes_unhealthy() {
        let (s, _) = run(HealthState::new(Status::Initial), &[false, false]);
        assert_eq!(s.status, Status::Unhealthy);
    }

    #[test]
    fn ejection_time_grows_linearly_to_max() {
        let b = Duration::from_secs(30);
        let m = Duration::from_secs(100);
        assert_eq!(ejection_time(1, b, m), b);
        assert_eq!(ejection_time(2, b, m), Duration::from_secs(60));
        assert_eq!(ejection_time(9, b, m), m);
    }

    #[test]
    fn max_ejected_keeps_one_target() {
        assert_eq!(max_ejected(1, 100), 0);
        assert_eq!(max_ejected(2, 50), 1);
        assert_eq!(max_ejected(4, 100), 3);
        assert_eq!(max_ejected(10, 10), 1);
        assert_eq!(max_ejected(3, 10), 0);
    }
}
