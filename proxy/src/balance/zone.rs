//! Zone-aware routing, the pure decision (after Envoy's zone aware routing): how many of one
//! proxy's requests stay in its own Availability Zone, and how the rest spread over the other
//! zones.
//!
//! Inputs are per zone *slot*: the healthy capacity of the group's targets there (the sum of
//! their effective weights) and the share of the proxy fleet there. With `u` a zone's share of
//! the capacity and `f` its share of the fleet:
//!
//! - `u(local) >= f(local)`: the local zone can carry what its proxies send: every request
//!   stays local ([`ZoneRoute::Local`]).
//! - otherwise `u(local) / f(local)` of the requests stay local and the rest go to the zones
//!   with spare capacity, `u - f > 0` (Envoy's *residual*), in proportion to it
//!   ([`ZoneRoute::Spill`]).
//!
//! Summed over a fleet spread as `f` says, every zone then receives exactly its share `u` of
//! the load: no zone starves and none is overloaded (unit-tested below). A slot with no
//! proxies (targets of unknown zone) has `f = 0` and only ever receives spill.

/// Requests are split in parts per [`PARTS`]: `local_parts` of every `PARTS` stay local.
pub const PARTS: u32 = 10_000;

/// Spill weights are scaled to sum to about this, so a pick is one random number.
const SPILL_SCALE: u128 = 1_000_000;

/// Why zone-aware routing does not apply and requests are balanced over every zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Off {
    /// `zone_aware` is off for the group.
    Disabled,
    /// The proxy does not know its own zone.
    OwnZoneUnknown,
    /// Fewer healthy targets than `zone_aware.min_targets`.
    TooFewTargets,
    /// The proxy's zone has no share of the fleet (not in `proxy_zones`, or no target there
    /// at all when the fleet is assumed even over the targets' zones).
    NoLocalShare,
    /// No healthy capacity anywhere (the group fails open instead).
    NoCapacity,
}

impl Off {
    /// A short snake_case word for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Off::Disabled => "disabled",
            Off::OwnZoneUnknown => "own_zone_unknown",
            Off::TooFewTargets => "too_few_targets",
            Off::NoLocalShare => "no_local_share",
            Off::NoCapacity => "no_capacity",
        }
    }
}

/// How one proxy splits its requests across zone slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneRoute {
    /// Not zone-aware: balance over every target.
    All(Off),
    /// Every request stays in the local zone.
    Local,
    /// `local_parts` of every [`PARTS`] requests stay local; the others go to slot `i` with
    /// probability `spill[i] / sum(spill)` (the local slot's weight is 0).
    Spill {
        /// Requests per [`PARTS`] that stay local.
        local_parts: u32,
        /// Spill weight of each slot, in proportion to its residual capacity.
        spill: Vec<u64>,
    },
}

/// The route of a proxy in slot `local`. `capacity[i]` is slot `i`'s healthy capacity,
/// `fleet[i]` the weight of the proxy fleet there (0 for a slot of targets of unknown zone);
/// `healthy` targets are counted against `min_targets`.
pub fn route(
    capacity: &[u64],
    fleet: &[u64],
    local: usize,
    healthy: usize,
    min_targets: usize,
) -> ZoneRoute {
    if healthy < min_targets {
        return ZoneRoute::All(Off::TooFewTargets);
    }
    let total_cap: u128 = capacity.iter().map(|c| u128::from(*c)).sum();
    let total_fleet: u128 = fleet.iter().map(|f| u128::from(*f)).sum();
    if total_cap == 0 {
        return ZoneRoute::All(Off::NoCapacity);
    }
    let cap = |i: usize| u128::from(capacity.get(i).copied().unwrap_or(0));
    let fl = |i: usize| u128::from(fleet.get(i).copied().unwrap_or(0));
    if total_fleet == 0 || fl(local) == 0 {
        return ZoneRoute::All(Off::NoLocalShare);
    }
    // u(i) = cap(i) / total_cap and f(i) = fl(i) / total_fleet, compared over the common
    // denominator total_cap * total_fleet.
    let u_num = |i: usize| cap(i) * total_fleet;
    let f_num = |i: usize| fl(i) * total_cap;
    if u_num(local) >= f_num(local) {
        return ZoneRoute::Local;
    }
    let local_parts = (u_num(local) * u128::from(PARTS) / f_num(local)) as u32;
    let slots = capacity.len().max(fleet.len());
    let residual: Vec<u128> = (0..slots)
        .map(|i| {
            if i == local {
                0
            } else {
                u_num(i).saturating_sub(f_num(i))
            }
        })
        .collect();
    let sum: u128 = residual.iter().sum();
    if sum == 0 {
        // Not reachable when the local zone is short (another zone must then have a
        // surplus), kept for safety: balance over every zone.
        return ZoneRoute::All(Off::NoCapacity);
    }
    let spill = residual
        .iter()
        .map(|r| {
            let w = r * SPILL_SCALE / sum;
            // A zone with any residual keeps a weight of at least 1.
            (if *r > 0 { w.max(1) } else { 0 }) as u64
        })
        .collect();
    ZoneRoute::Spill { local_parts, spill }
}

impl ZoneRoute {
    /// The slot a request goes to, from two uniform draws: `local_draw` in `0..PARTS` and
    /// `spill_draw` in `0..u64::MAX`; `None` for [`ZoneRoute::All`] (any target).
    pub fn pick(&self, local: usize, local_draw: u32, spill_draw: u64) -> Option<usize> {
        match self {
            ZoneRoute::All(_) => None,
            ZoneRoute::Local => Some(local),
            ZoneRoute::Spill { local_parts, spill } => {
                if local_draw < *local_parts {
                    return Some(local);
                }
                let total: u64 = spill.iter().sum();
                if total == 0 {
                    return None;
                }
                let mut pos = spill_draw % total;
                for (i, w) in spill.iter().enumerate() {
                    if pos < *w {
                        return Some(i);
                    }
                    pos -= w;
                }
                None
            }
        }
    }

    /// The share of this proxy's requests that go to `slot` (0.0..=1.0); for
    /// [`ZoneRoute::All`], `capacity_share` (the slot's share of the capacity) is what plain
    /// balancing gives it.
    pub fn share(&self, local: usize, slot: usize, capacity_share: f64) -> f64 {
        match self {
            ZoneRoute::All(_) => capacity_share,
            ZoneRoute::Local => f64::from(u8::from(slot == local)),
            ZoneRoute::Spill { local_parts, spill } => {
                let stay = f64::from(*local_parts) / f64::from(PARTS);
                if slot == local {
                    return stay;
                }
                let total: u64 = spill.iter().sum();
                let w = spill.get(slot).copied().unwrap_or(0);
                (1.0 - stay) * w as f64 / total.max(1) as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load each slot receives from a whole fleet spread as `fleet`, each proxy routing
    /// with its own local slot.
    fn fleet_load(capacity: &[u64], fleet: &[u64], healthy: usize, min: usize) -> Vec<f64> {
        let total_fleet: u64 = fleet.iter().sum();
        let total_cap: u64 = capacity.iter().sum();
        let mut load = vec![0.0; capacity.len()];
        for (z, f) in fleet.iter().enumerate() {
            if *f == 0 {
                continue;
            }
            let r = route(capacity, fleet, z, healthy, min);
            for (slot, l) in load.iter_mut().enumerate() {
                let cap_share = capacity[slot] as f64 / total_cap as f64;
                *l += *f as f64 / total_fleet as f64 * r.share(z, slot, cap_share);
            }
        }
        load
    }

    #[test]
    fn healthy_even_zones_stay_local() {
        assert_eq!(route(&[3, 3, 3], &[1, 1, 1], 0, 9, 6), ZoneRoute::Local);
        // More capacity than the local share: still local.
        assert_eq!(route(&[5, 3, 3], &[1, 1, 1], 0, 11, 6), ZoneRoute::Local);
    }

    #[test]
    fn local_zone_short_spills_by_residual() {
        // Zone a lost 2 of 3 targets: 1/7 of capacity against 1/3 of the fleet.
        let r = route(&[1, 3, 3], &[1, 1, 1], 0, 7, 6);
        let ZoneRoute::Spill { local_parts, spill } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(*local_parts, 4285, "3/7 stay local");
        assert_eq!(spill[0], 0);
        assert_eq!(spill[1], spill[2], "b and c have the same residual");
        assert!((r.share(0, 1, 0.0) - 2.0 / 7.0).abs() < 1e-3);
        // Uneven residuals: b has 4, c has 2 → residuals 4/8-1/3 and 2/8-1/3 (< 0).
        let r = route(&[2, 4, 2], &[1, 1, 1], 0, 8, 6);
        let ZoneRoute::Spill { local_parts, spill } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(*local_parts, 7500, "2/8 against 1/3");
        assert!(spill[1] > 0 && spill[2] == 0, "{spill:?}");
    }

    #[test]
    fn local_zone_empty_spills_everything() {
        let r = route(&[0, 3, 3], &[1, 1, 1], 0, 6, 6);
        assert_eq!(r.share(0, 0, 0.0), 0.0);
        assert!((r.share(0, 1, 0.0) - 0.5).abs() < 1e-6);
        assert!((r.share(0, 2, 0.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn preconditions_turn_it_off() {
        assert_eq!(
            route(&[1, 1, 1], &[1, 1, 1], 0, 3, 6),
            ZoneRoute::All(Off::TooFewTargets)
        );
        assert_eq!(
            route(&[0, 0], &[1, 1], 0, 6, 6),
            ZoneRoute::All(Off::NoCapacity)
        );
        assert_eq!(
            route(&[3, 3, 3], &[0, 1, 1], 0, 9, 6),
            ZoneRoute::All(Off::NoLocalShare)
        );
    }

    #[test]
    fn unknown_zone_slot_only_receives_spill() {
        // Slots a, b, unknown; proxies in a and b only.
        let cap = [2, 2, 4];
        let fleet = [1, 1, 0];
        let r = route(&cap, &fleet, 0, 8, 6);
        assert!(matches!(r, ZoneRoute::Spill { .. }), "{r:?}");
        let load = fleet_load(&cap, &fleet, 8, 6);
        for (l, c) in load.iter().zip([0.25, 0.25, 0.5]) {
            assert!((l - c).abs() < 1e-3, "{load:?}");
        }
    }

    #[test]
    fn pick_follows_the_route() {
        let r = route(&[1, 3, 3], &[1, 1, 1], 0, 7, 6);
        assert_eq!(r.pick(0, 0, 0), Some(0));
        assert_eq!(r.pick(0, 4284, 0), Some(0));
        assert_ne!(r.pick(0, 4285, 0), Some(0));
        let mut counts = [0u32; 3];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..70_000 {
            let s = r.pick(0, rng.u32(0..PARTS), rng.u64(..)).unwrap();
            counts[s] += 1;
        }
        assert!((29_000..31_000).contains(&counts[0]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[1]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[2]), "{counts:?}");
        assert_eq!(ZoneRoute::All(Off::Disabled).pick(0, 0, 0), None);
        assert_eq!(ZoneRoute::Local.pick(2, 9999, 5), Some(2));
    }

    /// No zone starves: with proxies spread as `fleet`, every zone receives load in
    /// proportion to its healthy capacity, whichever zones are short, for many layouts.
    #[test]
    fn fleet_wide_load_is_proportional_to_capacity() {
        let mut rng = fastrand::Rng::with_seed(16);
        for case in 0..2000 {
            let zones = rng.usize(1..6);
            let even = case % 2 == 0;
            let capacity: Vec<u64> = (0..zones).map(|_| rng.u64(0..20)).collect();
            let fleet: Vec<u64> = (0..zones)
                .map(|_| if even { 1 } else { rng.u64(1..5) })
                .collect();
            let total: u64 = capacity.iter().sum();
            if total == 0 {
                continue;
            }
            let load = fleet_load(&capacity, &fleet, total as usize, 1);
            for (i, l) in load.iter().enumerate() {
                let want = capacity[i] as f64 / total as f64;
                assert!(
                    (l - want).abs() < 2e-3,
                    "case {case}: capacity {capacity:?} fleet {fleet:?} load {load:?}"
                );
            }
        }
    }

    #[test]
    fn off_reasons_are_short_words() {
        for o in [
            Off::Disabled,
            Off::OwnZoneUnknown,
            Off::TooFewTargets,
            Off::NoLocalShare,
            Off::NoCapacity,
        ] {
            assert!(o
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
