//! Target selection: round robin, least outstanding requests, weighted random and consistent
//! hashing, all weighted, with slow start folded into the weights.
//!
//! Every function here is pure over a slice of targets and an eligibility predicate, so the
//! proxy can apply health, draining, ejection and retry exclusions without allocating.

mod ring;
pub mod zone;

pub use ring::Ring;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::target::Target;

/// Weight scale: a target's configured weight is multiplied by this so slow start can ramp it
/// in fine steps with integer arithmetic.
pub const WEIGHT_SCALE: u64 = 100;

/// The effective (scaled) weight of a target under slow start: its weight ramps linearly from
/// 1 % to 100 % over `slow_start` after it became healthy (as ALB's slow start mode).
pub fn effective_weight(
    weight: u32,
    healthy_since_ms: u64,
    now_ms: u64,
    slow_start: Duration,
) -> u64 {
    let full = u64::from(weight.max(1)) * WEIGHT_SCALE;
    let ramp = slow_start.as_millis() as u64;
    if ramp == 0 || healthy_since_ms == 0 {
        return full;
    }
    let age = now_ms.saturating_sub(healthy_since_ms);
    if age >= ramp {
        return full;
    }
    (full * age / ramp).max(1)
}

/// Weighted round robin. `counter` is shared by all requests of a target group. Positions are
/// spread by [`golden_step`], so one cycle visits every weight unit exactly once and heavy
/// targets are interleaved rather than served in bursts.
pub fn round_robin(
    targets: &[Arc<Target>],
    ok: impl Fn(&Target) -> bool,
    weight: impl Fn(&Target) -> u64,
    counter: &AtomicU64,
) -> Option<usize> {
    // Reduce weights by their common divisor so equal targets form a cycle of length n.
    let (total, g) = targets
        .iter()
        .filter(|t| ok(t))
        .map(|t| weight(t))
        .fold((0u64, 0u64), |(sum, g), w| (sum + w, gcd(g, w)));
    if total == 0 {
        return None;
    }
    let total = total / g;
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let pos = ((n % total) as u128 * u128::from(golden_step(total)) % u128::from(total)) as u64;
    pick_at(targets, &ok, &|t: &Target| weight(t) / g, pos)
}

/// A step near `total / φ` that is co-prime with `total`: stepping through `0..total` by it
/// visits every position once per cycle and spreads consecutive picks apart (Fibonacci
/// hashing), so equal targets alternate and heavy targets are interleaved.
pub fn golden_step(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let mut step = ((total as f64) * 0.618_033_988_75).round() as u64;
    while gcd(step, total) != 1 {
        step += 1;
    }
    step
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weighted random choice.
pub fn weighted_random(
    targets: &[Arc<Target>],
    ok: impl Fn(&Target) -> bool,
    weight: impl Fn(&Target) -> u64,
) -> Option<usize> {
    let total: u64 = targets.iter().filter(|t| ok(t)).map(|t| weight(t)).sum();
    if total == 0 {
        return None;
    }
    pick_at(targets, &ok, &weight, fastrand::u64(0..total))
}

fn pick_at(
    targets: &[Arc<Target>],
    ok: &impl Fn(&Target) -> bool,
    weight: &impl Fn(&Target) -> u64,
    mut pos: u64,
) -> Option<usize> {
    for (i, t) in targets.iter().enumerate() {
        if !ok(t) {
            continue;
        }
        let w = weight(t);
        if pos < w {
            return Some(i);
        }
        pos -= w;
    }
    None
}

/// Least outstanding requests: the eligible target with the fewest requests in flight per unit
/// of weight. Ties are broken from a random starting point so equal targets share load.
pub fn least_outstanding(
    targets: &[Arc<Target>],
    ok: impl Fn(&Target) -> bool,
    weight: impl Fn(&Target) -> u64,
) -> Option<usize> {
    let n = targets.len();
    if n == 0 {
        return None;
    }
    let start = fastrand::usize(0..n);
    let mut best: Option<(usize, u128, u128)> = None; // (index, outstanding+1, weight)
    for k in 0..n {
        let i = (start + k) % n;
        let t = &targets[i];
        if !ok(t) {
            continue;
        }
        let load = u128::from(t.outstanding.load(Ordering::Relaxed)) + 1;
        let w = u128::from(weight(t).max(1));
        match best {
            // load/w < bload/bw  <=>  load*bw < bload*w
            Some((_, bload, bw)) if load * bw >= bload * w => {}
            _ => best = Some((i, load, w)),
        }
    }
    best.map(|b| b.0)
}

/// Consistent hashing: the first eligible target at or after `key` on the ring.
pub fn consistent_hash(
    targets: &[Arc<Target>],
    ok: impl Fn(&Target) -> bool,
    ring: &Ring,
    key: u64,
) -> Option<usize> {
    ring.lookup(key, |i| targets.get(i).is_some_and(|t| ok(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn targets(weights: &[u32]) -> Vec<Arc<Target>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Target::new(
                    format!("127.0.0.{}:80", i + 2).parse().unwrap(),
                    *w,
                    false,
                ))
            })
            .collect()
    }

    fn w(t: &Target) -> u64 {
        u64::from(t.weight()) * WEIGHT_SCALE
    }

    fn counts(picks: impl Iterator<Item = Option<usize>>) -> HashMap<usize, usize> {
        let mut m = HashMap::new();
        for p in picks {
            *m.entry(p.unwrap()).or_default() += 1;
        }
        m
    }

    #[test]
    fn round_robin_is_exact_over_a_cycle_and_interleaved() {
        let ts = targets(&[1, 2, 1]);
        let c = AtomicU64::new(0);
        let picks: Vec<usize> = (0..400)
            .map(|_| round_robin(&ts, |_| true, w, &c).unwrap())
            .collect();
        let m = counts(picks.iter().map(|p| Some(*p)));
        assert_eq!(m[&0], 100);
        assert_eq!(m[&1], 200);
        assert_eq!(m[&2], 100);
        // no long bursts on one target
        let longest = picks
            .windows(5)
            .filter(|w| w.iter().all(|p| *p == w[0]))
            .count();
        assert_eq!(longest, 0);
    }

    #[test]
    fn equal_targets_alternate() {
        let ts = targets(&[1, 1]);
        let c = AtomicU64::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| round_robin(&ts, |_| true, w, &c).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn golden_step_is_coprime() {
        for total in 1..500u64 {
            assert_eq!(gcd(golden_step(total), total), 1, "total {total}");
        }
    }

    #[test]
    fn round_robin_skips_ineligible() {
        let ts = targets(&[1, 1, 1]);
        let c = AtomicU64::new(0);
        let skip = ts[1].address;
        for _ in 0..30 {
            let i = round_robin(&ts, |t| t.address != skip, w, &c).unwrap();
            assert_ne!(i, 1);
        }
        assert_eq!(round_robin(&ts, |_| false, w, &c), None);
    }

    #[test]
    fn weighted_random_honours_weights() {
        let ts = targets(&[1, 3]);
        let m = counts((0..40_000).map(|_| weighted_random(&ts, |_| true, w)));
        let share = m[&1] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "share {share}");
    }

    #[test]
    fn least_outstanding_prefers_idle_target() {
        let ts = targets(&[1, 1, 1]);
        ts[0].outstanding.store(5, Ordering::Relaxed);
        ts[2].outstanding.store(2, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(least_outstanding(&ts, |_| true, w), Some(1));
        }
    }

    #[test]
    fn least_outstanding_weights_and_spreads_ties() {
        let ts = targets(&[1, 1]);
        let m = counts((0..2000).map(|_| least_outstanding(&ts, |_| true, w)));
        assert!(m[&0] > 800 && m[&1] > 800);
        let ts = targets(&[1, 4]);
        ts[0].outstanding.store(1, Ordering::Relaxed);
        ts[1].outstanding.store(3, Ordering::Relaxed);
        // 2/1 vs 4/4: the heavier target wins
        assert_eq!(least_outstanding(&ts, |_| true, w), Some(1));
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let s = Duration::from_secs(100);
        assert_eq!(effective_weight(2, 1000, 1000, s), 1);
        assert_eq!(effective_weight(2, 1000, 51_000, s), 100);
        assert_eq!(effective_weight(2, 1000, 101_000, s), 200);
        assert_eq!(effective_weight(2, 1000, 5000, Duration::ZERO), 200);
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        let ts = targets(&[1, 1, 1, 1]);
        let ring = Ring::build(&ts);
        let a = consistent_hash(&ts, |_| true, &ring, 12345);
        assert_eq!(a, consistent_hash(&ts, |_| true, &ring, 12345));
        let m = counts((0..4000u64).map(|k| {
            consistent_hash(&ts, |_| true, &ring, crate::target::fnv1a(&k.to_le_bytes()))
        }));
        for i in 0..4 {
            assert!(m[&i] > 600, "{m:?}");
        }
    }

    #[test]
    fn consistent_hash_moves_only_keys_of_a_removed_target() {
        let ts = targets(&[1, 1, 1, 1]);
        let ring = Ring::build(&ts);
        let gone = ts[2].address;
        let mut moved_wrongly = 0;
        for k in 0..2000u64 {
            let key = crate::target::fnv1a(&k.to_le_bytes());
            let before = consistent_hash(&ts, |_| true, &ring, key).unwrap();
            let after = consistent_hash(&ts, |t| t.address != gone, &ring, key).unwrap();
            if before != 2 && before != after {
                moved_wrongly += 1;
            }
        }
        assert_eq!(moved_wrongly, 0);
    }
}
