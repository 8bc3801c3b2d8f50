//! Scaling policies as pure functions: `decide(now, &Inputs, &State) -> Decision`.
//!
//! Each policy votes ([`Vote`]); [`decide`] combines the votes as Application Auto Scaling
//! does: the largest desired count wins; a scale-in happens only when no policy objects (a
//! target tracking policy without data, within its tolerance, stabilizing or with scale-in
//! disabled objects); the minimum and maximum capacity (after scheduled actions) always clamp;
//! suspended scale-in / scale-out / scheduled actions are ignored. The caller folds the
//! decision back into the [`State`] with [`State::record`].

pub mod scheduled;
pub mod step;
pub mod target_tracking;
pub mod vote;

pub use vote::Vote;

use berth_config::model::{ScaledService, ScalingMetric};
use chrono::{DateTime, Utc};

use crate::source::Figures;

/// What the policies see at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// The target group's figures; `None` when there is no data this tick.
    pub figures: Option<Figures>,
    /// ECS desired count now: the capacity asked for, healthy or still starting. Target
    /// tracking compares its recommendation with this count; for per-target figures the
    /// recommendation is the total load over the target, where pending tasks do not count
    /// (see [`target_tracking`]).
    pub current: u32,
    /// ECS running count now (reported, not used by the formulas).
    pub running: u32,
    /// ECS pending count now (reported, not used by the formulas: pending capacity is counted
    /// through `current`).
    pub pending: u32,
}

/// The direction of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A higher desired count than the current one (scale out).
    Out,
    /// A lower desired count (scale in).
    In,
    /// The current count stays.
    None,
}

impl Direction {
    /// `out`, `in` or `none` (the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::None => "none",
        }
    }
}

/// The outcome of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The desired count to set (always within `[min, max]`).
    pub desired: u32,
    /// The desired count ECS had at this tick.
    pub current: u32,
    /// `desired` compared with `current`.
    pub direction: Direction,
    /// The winning policy (or `min_capacity`, `max_capacity`, a scheduled action's name, or
    /// `none`).
    pub policy: String,
    /// Why, in one line.
    pub reason: String,
    /// Effective minimum capacity.
    pub min: u32,
    /// Effective maximum capacity.
    pub max: u32,
    /// Every policy's vote.
    pub votes: Vec<Vote>,
    /// Raw target tracking recommendations to remember (one per policy).
    pub tracking_raw: Vec<Option<u32>>,
    /// Step policies' next states (one per policy; their datapoints and open period).
    pub step_next: Vec<step::StepState>,
}

/// What the policies of one service remember between ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// When the scaler started (anchor of `rate()` schedules).
    pub started: DateTime<Utc>,
    /// The history of each target tracking policy, in the service's configuration order.
    pub tracking: Vec<target_tracking::TrackingState>,
    /// The periods and last adjustment of each step policy, in configuration order.
    pub step: Vec<step::StepState>,
}

impl State {
    /// The empty state of `service`'s policies.
    pub fn new(service: &ScaledService, started: DateTime<Utc>) -> State {
        State {
            started,
            tracking: vec![Default::default(); service.target_tracking.len()],
            step: vec![Default::default(); service.step.len()],
        }
    }

    /// Folds a decision taken at `now` into the state. `applied` says whether the new desired
    /// count took effect (ECS accepted it, or dry run); the winning policy's cooldown starts
    /// only then.
    pub fn record(
        &mut self,
        now: DateTime<Utc>,
        service: &ScaledService,
        d: &Decision,
        applied: bool,
    ) {
        let won = |name: &str| applied && d.direction != Direction::None && name == d.policy;
        for ((st, p), raw) in self
            .tracking
            .iter_mut()
            .zip(&service.target_tracking)
            .zip(&d.tracking_raw)
        {
            st.record(now, *raw, p);
            if won(&p.name) {
                match d.direction {
                    Direction::Out => st.last_scale_out = Some((now, d.desired)),
                    Direction::In => st.last_scale_in = Some(now),
                    Direction::None => {}
                }
            }
        }
        for ((st, p), next) in self.step.iter_mut().zip(&service.step).zip(&d.step_next) {
            let last = st.last_adjustment;
            *st = next.clone();
            st.last_adjustment = if won(&p.name) {
                Some(step::Adjustment {
                    at: now,
                    from: d.current,
                    to: d.desired,
                })
            } else {
                last
            };
        }
    }
}

/// Whether `m` is a figure per healthy target (its value times the healthy targets is the
/// group's total).
fn per_target(m: ScalingMetric) -> bool {
    matches!(
        m,
        ScalingMetric::RequestsPerTarget(_) | ScalingMetric::ActiveConnectionsPerTarget
    )
}

/// Decides `service`'s desired count at `now`.
pub fn decide(
    now: DateTime<Utc>,
    service: &ScaledService,
    inputs: &Inputs,
    state: &State,
) -> Decision {
    let current = inputs.current;
    let fig = inputs.figures.as_ref();
    let partial = fig.is_some_and(|f| f.partial);
    // The capacity the figures were measured on: the healthy targets (pending ones are in
    // `current`, not in `base`).
    let base = fig
        .map(|f| f.healthy.round())
        .filter(|h| *h >= 1.0)
        .map_or(current, |h| h.min(f64::from(u32::MAX)) as u32);
    let mut votes = Vec::new();
    let mut tracking_raw = Vec::new();
    for (i, p) in service.target_tracking.iter().enumerate() {
        let value = fig.and_then(|f| f.value(p.metric));
        let empty = target_tracking::TrackingState::default();
        let st = state.tracking.get(i).unwrap_or(&empty);
        // Only a per-target figure times the healthy count is the total load; a latency or a
        // rate scales the desired count as AAS does.
        let scale_on = if per_target(p.metric) { base } else { current };
        let (v, raw) = target_tracking::decide(now, p, value, scale_on, partial, current, st);
        votes.push(v);
        tracking_raw.push(raw);
    }
    let mut step_next = Vec::new();
    for (i, p) in service.step.iter().enumerate() {
        let value = fig.and_then(|f| f.value(p.metric));
        let empty = step::StepState::default();
        let st = state.step.get(i).unwrap_or(&empty);
        let (mut v, next) = step::decide(now, p, value, current, st);
        if partial && v.desired.is_some_and(|d| d < current) {
            v.reason = format!("{}; ignored: figures are partial", v.reason);
            v.desired = None;
        }
        votes.push(v);
        step_next.push(next);
    }

    // Combine.
    let top = votes.iter().filter_map(|v| v.desired.map(|d| (d, v))).fold(
        None::<(u32, &Vote)>,
        |best, (d, v)| match best {
            Some((bd, _)) if bd >= d => best,
            _ => Some((d, v)),
        },
    );
    let (mut desired, mut policy, mut reason) = match top {
        None if votes.is_empty() => (current, "none".to_owned(), "no policy".to_owned()),
        None => (
            current,
            "none".to_owned(),
            "no policy has an opinion".to_owned(),
        ),
        Some((d, v)) if d > current => {
            if service.suspend_scale_out {
                (
                    current,
                    "none".to_owned(),
                    format!("{} wants {d}: scale-out suspended", v.policy),
                )
            } else {
                (d, v.policy.clone(), v.reason.clone())
            }
        }
        Some((d, v)) if d < current => {
            if let Some(b) = votes.iter().find(|v| v.blocks_scale_in) {
                (
                    current,
                    "none".to_owned(),
                    format!(
                        "{} wants {d}; scale-in blocked by {}: {}",
                        v.policy, b.policy, b.reason
                    ),
                )
            } else if service.suspend_scale_in {
                (
                    current,
                    "none".to_owned(),
                    format!("{} wants {d}: scale-in suspended", v.policy),
                )
            } else {
                (d, v.policy.clone(), v.reason.clone())
            }
        }
        Some((_, v)) => {
            let lower = votes
                .iter()
                .filter(|w| w.desired.is_some_and(|d| d < current))
                .min_by_key(|w| w.desired);
            let why = match lower {
                Some(w) => format!(
                    "{} wants {}; scale-in blocked by {}: {}",
                    w.policy,
                    w.desired.unwrap_or(current),
                    v.policy,
                    v.reason
                ),
                None => format!("{}: {}", v.policy, v.reason),
            };
            (current, "none".to_owned(), why)
        }
    };

    // Limits: configured, then scheduled actions.
    let mut min = service.min_capacity;
    let mut max = service.max_capacity;
    let mut min_from = "min_capacity".to_owned();
    let mut max_from = "max_capacity".to_owned();
    if !service.suspend_scheduled {
        let l = scheduled::limits(&service.scheduled, now, state.started);
        if let Some(m) = l.min {
            min = m.value;
            min_from = m.action;
        }
        if let Some(m) = l.max {
            max = m.value;
            max_from = m.action;
        }
        if min > max {
            // A newer minimum above an older maximum raises the maximum (and the reverse).
            max = min;
        }
    }
    // The winning policy keeps the credit when a limit only bounds its change; the limit
    // takes it when it causes the change (or turns it around).
    let wanted = desired;
    if desired < min {
        reason = format!("{reason}; raised to the minimum {min} ({min_from})");
        desired = min;
        if policy == "none" || (wanted < current) != (desired < current) {
            policy = min_from;
        }
    } else if desired > max {
        reason = format!("{reason}; lowered to the maximum {max} ({max_from})");
        desired = max;
        if policy == "none" || (wanted > current) != (desired > current) {
            policy = max_from;
        }
    }
    let direction = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::Out,
        std::cmp::Ordering::Less => Direction::In,
        std::cmp::Ordering::Equal => Direction::None,
    };
    if direction == Direction::None {
        policy = "none".to_owned();
    }
    Decision {
        desired,
        current,
        direction,
        policy,
        reason,
        min,
        max,
        votes,
        tracking_raw,
        step_next,
    }
}

#[cfg(test)]
mod tests;
