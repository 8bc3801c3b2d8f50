//! A target group at run time: its configuration, its current target set, balancer state,
//! retry budget, and the reconciliation of discovered targets (add, drain, reap).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use berth_config::model::{Algorithm, TargetGroup, TargetSpec};

use crate::balance::{self, Ring};
use crate::health::{self, Status};
use crate::metrics as m;
use crate::target::{now_ms, Target, TargetState};
use crate::zone::{Locality, ZoneIndex};

/// An immutable list of targets with its hash ring.
#[derive(Debug, Default)]
pub struct TargetSet {
    /// Targets, draining ones included.
    pub list: Vec<Arc<Target>>,
    /// Consistent-hash ring over `list`.
    pub ring: Ring,
    /// `list` grouped by Availability Zone, with the current zone-aware route.
    pub zones: ZoneIndex,
}

/// What a request offers the balancer.
#[derive(Debug, Default)]
pub struct SelectInput<'a> {
    /// Hash key for consistent hashing.
    pub hash_key: Option<u64>,
    /// Sticky id from the stickiness cookie.
    pub sticky_id: Option<&'a str>,
    /// Targets already tried by this request (avoided by retries).
    pub exclude: &'a [SocketAddr],
}

/// The balancer's answer.
#[derive(Debug)]
pub struct Selection {
    /// The target the request or flow goes to.
    pub target: Arc<Target>,
    /// True when no target was healthy and the group failed open.
    pub fail_open: bool,
}

/// A running target group.
#[derive(Debug)]
pub struct Group {
    /// The target group name (`target_groups[].name`), used in labels and logs.
    pub name: String,
    /// Current configuration (swapped on reload).
    pub config: ArcSwap<TargetGroup>,
    /// The current targets, swapped whole when discovery changes them.
    pub targets: ArcSwap<TargetSet>,
    rr: AtomicU64,
    /// Limits retries to a share of requests (`retries.budget_percent`).
    pub retry_budget: RetryBudget,
    fail_open: AtomicBool,
    /// Set when the group was removed from the configuration; its loop stops.
    pub removed: AtomicBool,
    /// Set once its background loop runs.
    pub loop_started: AtomicBool,
    response_seconds: std::sync::OnceLock<metrics::Histogram>,
    /// Wakes the group's loop at once (a reload changed its configuration).
    pub wake: tokio::sync::Notify,
    /// Set by its loop when the group's source can be asked to look again at once (ECS).
    pub refreshable: AtomicBool,
    /// Asks the group's loop to have its source look again now (see [`Group::rediscover`]).
    pub rediscover_asked: AtomicBool,
    /// Notified by the group's loop each time its source answered and the answer was applied.
    pub discovered: tokio::sync::Notify,
    /// The proxy's own Availability Zone (learnt once at start).
    own_zone: Option<Arc<str>>,
    /// `berth_zone_routed_requests_total` handles, by [`Locality`] index.
    zone_routed: [std::sync::OnceLock<metrics::Counter>; 3],
}

impl Group {
    /// A new group with no targets, in the proxy's own zone ([`crate::zone::own`]).
    pub fn new(config: TargetGroup) -> Group {
        Group::in_zone(config, crate::zone::own())
    }

    /// A new group with no targets for a proxy in zone `own_zone` (`None`: unknown).
    pub fn in_zone(config: TargetGroup, own_zone: Option<Arc<str>>) -> Group {
        Group {
            name: config.name.clone(),
            config: ArcSwap::from_pointee(config),
            targets: ArcSwap::from_pointee(TargetSet::default()),
            rr: AtomicU64::new(0),
            retry_budget: RetryBudget::default(),
            fail_open: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            loop_started: AtomicBool::new(false),
            response_seconds: std::sync::OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            refreshable: AtomicBool::new(false),
            rediscover_asked: AtomicBool::new(false),
            discovered: tokio::sync::Notify::new(),
            own_zone,
            zone_routed: Default::default(),
        }
    }

    /// Has the group's source look again now and waits, at most `wait`, until its answer is
    /// applied; false at once when the source cannot be asked (static and file groups), or
    /// when no answer came in time. For a request that targets keep failing: when ECS is
    /// replacing the tasks, the next poll drains the stopping ones and shows the new ones.
    pub async fn rediscover(&self, wait: std::time::Duration) -> bool {
        if !self.refreshable.load(Ordering::Relaxed) {
            return false;
        }
        let changed = self.discovered.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        self.rediscover_asked.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        tokio::time::timeout(wait, changed).await.is_ok()
    }

    /// Reconciles the running targets with a complete discovered list: new addresses join
    /// (`initial`), known ones keep their state (and leave draining if they were), missing ones
    /// start draining. Returns true when a target was added.
    pub fn apply_discovered(&self, specs: &[TargetSpec]) -> bool {
        let cfg = self.config.load();
        let now = now_ms();
        let current = self.targets.load();
        let by_addr: HashMap<SocketAddr, &Arc<Target>> =
            current.list.iter().map(|t| (t.address, t)).collect();
        let wanted: HashMap<SocketAddr, u32> =
            specs.iter().map(|s| (s.address, s.weight)).collect();
        let mut list: Vec<Arc<Target>> = Vec::with_capacity(specs.len());
        let mut changed = false;
        let mut added = false;
        for s in specs {
            match by_addr.get(&s.address) {
                Some(t) => {
                    if t.is_draining() {
                        t.stop_draining();
                        tracing::info!(target_group = %self.name, target = %t.label, "target returned; no longer draining");
                    }
                    if t.weight() != s.weight {
                        t.set_weight(s.weight);
                        changed = true;
                    }
                    if t.set_zone(s.zone.as_deref()) {
                        changed = true;
                    }
                    list.push(Arc::clone(t));
                }
                None => {
                    changed = true;
                    added = true;
                    tracing::info!(target_group = %self.name, target = %s.address, "target registered");
                    let t = Target::new(s.address, s.weight, cfg.health_check.enabled);
                    t.set_zone(s.zone.as_deref());
                    list.push(Arc::new(t));
                }
            }
        }
        for t in current.list.iter() {
            if !wanted.contains_key(&t.address) {
                if !t.is_draining() {
                    changed = true;
                    tracing::info!(target_group = %self.name, target = %t.label, "target deregistered; draining");
                    t.start_draining(now);
                }
                list.push(Arc::clone(t));
            }
        }
        if changed || list.len() != current.list.len() {
            self.store(list);
        }
        added
    }

    fn store(&self, list: Vec<Arc<Target>>) {
        let ring = Ring::build(&list);
        let cfg = self.config.load();
        let zones = ZoneIndex::build(&list, self.own_zone.clone(), &cfg.zone_aware);
        self.targets
            .store(Arc::new(TargetSet { list, ring, zones }));
        self.refresh_zones();
    }

    /// Rebuilds the zone index of the current targets (a reload changed `zone_aware`).
    pub fn rebuild_zones(&self) {
        let list = self.targets.load().list.clone();
        self.store(list);
    }

    /// Recomputes the zone-aware route of the current targets from their health, ejections
    /// and slow-start weights. The group's loop calls it after each check round and each
    /// second; ejections call it at once.
    pub fn refresh_zones(&self) {
        let cfg = self.config.load();
        let set = self.targets.load();
        let now = now_ms();
        let slow_start = cfg.slow_start;
        set.zones.refresh(&cfg.zone_aware, now, |t| {
            balance::effective_weight(t.weight(), t.healthy_since_ms(), now, slow_start)
        });
    }

    /// Counts one pick of the target at `i` in `set` by its locality.
    fn count_locality(&self, set: &TargetSet, i: usize) {
        let l = set
            .zones
            .locality
            .get(i)
            .copied()
            .unwrap_or(Locality::Unknown);
        self.zone_routed[l as usize]
            .get_or_init(|| {
                metrics::counter!(m::ZONE_ROUTED, "target_group" => self.name.clone(), "locality" => l.as_str())
            })
            .increment(1);
    }

    /// Removes draining targets whose requests finished or whose deregistration delay ended.
    pub fn reap_drained(&self) {
        let delay = self.config.load().deregistration_delay.as_millis() as u64;
        let now = now_ms();
        let current = self.targets.load();
        let gone = |t: &Target| {
            t.is_draining()
                && (t.outstanding.load(Ordering::Relaxed) == 0
                    || now.saturating_sub(t.drain_started_ms()) >= delay)
        };
        if current.list.iter().any(|t| gone(t)) {
            let list: Vec<Arc<Target>> = current
                .list
                .iter()
                .filter(|t| {
                    let g = gone(t);
                    if g {
                        tracing::info!(target_group = %self.name, target = %t.label, "drained target removed");
                    }
                    !g
                })
                .cloned()
                .collect();
            self.store(list);
        }
    }

    /// Whether [`Group::select`] would offer a target not in `tried`: an untried one in its
    /// first tier that has any target (healthy and not ejected; healthy; or, failing open,
    /// every target not leaving).
    pub fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        let set = self.targets.load();
        let now = now_ms();
        let healthy = |t: &Target| !t.is_draining() && t.status() == Status::Healthy;
        let in_rotation = |t: &Target| healthy(t) && !t.is_ejected(now);
        let leaving = |t: &Target| t.is_draining();
        let tier: &dyn Fn(&Target) -> bool = if set.list.iter().any(|t| in_rotation(t)) {
            &in_rotation
        } else if set.list.iter().any(|t| healthy(t)) {
            &healthy
        } else {
            &|t: &Target| !leaving(t)
        };
        set.list
            .iter()
            .any(|t| tier(t) && !tried.contains(&t.address))
    }

    /// Picks a target for a request.
    ///
    /// Eligible: not draining, healthy, not ejected, not already tried. When nothing is
    /// eligible: first tried targets are allowed again, then ejected ones; when no target is
    /// healthy the group fails open (as ALB) and routes to every non-draining target, `initial`
    /// ones included.
    ///
    /// A valid sticky id wins; then, unless a hash key decides, zone-aware routing picks a zone
    /// (see [`crate::zone`]) and the algorithm picks within it, falling back to every zone
    /// when nothing there is eligible. Each pick is counted by locality.
    pub fn select(&self, input: &SelectInput<'_>) -> Option<Selection> {
        let set = self.targets.load();
        let cfg = self.config.load();
        let now = now_ms();
        let list = &set.list;
        let slow_start = cfg.slow_start;
        let weight = |t: &Target| {
            balance::effective_weight(t.weight(), t.healthy_since_ms(), now, slow_start)
        };
        let tried = |t: &Target| input.exclude.contains(&t.address);

        if let Some(id) = input.sticky_id {
            if let Some(i) = list.iter().position(|t| {
                t.sticky_id == id
                    && !t.is_draining()
                    && t.status() == Status::Healthy
                    && !t.is_ejected(now)
            }) {
                if !tried(&list[i]) {
                    self.count_locality(&set, i);
                    return Some(Selection {
                        target: Arc::clone(&list[i]),
                        fail_open: false,
                    });
                }
            }
        }

        let healthy = |t: &Target| !t.is_draining() && t.status() == Status::Healthy;
        let any_healthy = list.iter().any(|t| healthy(t));
        let tiers: [&dyn Fn(&Target) -> bool; 3] = if any_healthy {
            [
                &|t: &Target| healthy(t) && !t.is_ejected(now) && !tried(t),
                &|t: &Target| healthy(t) && !t.is_ejected(now),
                &|t: &Target| healthy(t),
            ]
        } else {
            // No healthy target: fail open over every target that is not leaving, whether it
            // failed its checks or has not finished them yet (`initial`). Answering 503 could
            // only be worse: a freshly started or restarted berth, whose targets are all
            // `initial`, would refuse every request until the first checks pass.
            if !list.iter().any(|t| !t.is_draining()) {
                self.set_fail_open(false);
                return None;
            }
            [
                &|t: &Target| !t.is_draining() && !tried(t),
                &|t: &Target| !t.is_draining(),
                &|t: &Target| !t.is_draining(),
            ]
        };
        self.set_fail_open(!any_healthy);
        // Zone-aware routing chooses a zone first, then the algorithm picks within it; a
        // consistent hash keeps its key's target whatever its zone, and failing open ignores
        // zones.
        let hashed =
            matches!(cfg.algorithm, Algorithm::ConsistentHash(_)) && input.hash_key.is_some();
        let zone = if any_healthy && !hashed {
            set.zones.pick()
        } else {
            None
        };
        for ok in tiers {
            if let Some(slot) = zone {
                let members = &set.zones.members[slot];
                let rr = &set.zones.rr[slot];
                let pick = match &cfg.algorithm {
                    Algorithm::LeastOutstandingRequests => {
                        balance::least_outstanding(members, ok, weight)
                    }
                    Algorithm::WeightedRandom => balance::weighted_random(members, ok, weight),
                    _ => balance::round_robin(members, ok, weight, rr),
                };
                if let Some(j) = pick {
                    if let Some(i) = set.zones.member_index[slot].get(j) {
                        self.count_locality(&set, *i);
                    }
                    return Some(Selection {
                        target: Arc::clone(&members[j]),
                        fail_open: false,
                    });
                }
                // Nothing eligible in the chosen zone at this tier: any zone.
            }
            let pick = match &cfg.algorithm {
                Algorithm::RoundRobin => balance::round_robin(list, ok, weight, &self.rr),
                Algorithm::LeastOutstandingRequests => balance::least_outstanding(list, ok, weight),
                Algorithm::WeightedRandom => balance::weighted_random(list, ok, weight),
                Algorithm::ConsistentHash(_) => match input.hash_key {
                    Some(k) => balance::consistent_hash(list, ok, &set.ring, k),
                    None => balance::round_robin(list, ok, weight, &self.rr),
                },
            };
            if let Some(i) = pick {
                self.count_locality(&set, i);
                return Some(Selection {
                    target: Arc::clone(&list[i]),
                    fail_open: !any_healthy,
                });
            }
        }
        None
    }

    fn set_fail_open(&self, on: bool) {
        if self.fail_open.swap(on, Ordering::Relaxed) != on {
            if on {
                tracing::warn!(target_group = %self.name, "no healthy target: failing open");
            }
            metrics::gauge!(m::FAIL_OPEN, "target_group" => self.name.clone()).set(if on {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Records one target response time (the histogram handle is registered once).
    pub fn record_response_time(&self, seconds: f64) {
        self.response_seconds
            .get_or_init(|| {
                metrics::histogram!(crate::metrics::TARGET_RESPONSE_SECONDS, "target_group" => self.name.clone())
            })
            .record(seconds);
    }

    /// Ejects `target` unless the group's ejection limit is reached. Returns true if ejected.
    pub fn try_eject(&self, target: &Target, reason: &'static str) -> bool {
        let cfg = self.config.load();
        let o = &cfg.outlier;
        if !o.enabled {
            return false;
        }
        let now = now_ms();
        let set = self.targets.load();
        let live = set.list.iter().filter(|t| !t.is_draining()).count();
        let ejected = set.list.iter().filter(|t| t.is_ejected(now)).count();
        if target.is_ejected(now) || ejected >= health::max_ejected(live, o.max_ejection_percent) {
            return false;
        }
        let d = target.eject(now, o.base_ejection_time, o.max_ejection_time);
        tracing::warn!(target_group = %self.name, target = %target.label, reason, seconds = d.as_secs_f64(), "target ejected");
        self.refresh_zones();
        metrics::counter!(m::EJECTIONS, "target_group" => self.name.clone(), "reason" => reason)
            .increment(1);
        true
    }

    /// Publishes target counts by state.
    pub fn publish_gauges(&self) {
        let set = self.targets.load();
        let mut counts = [0u32; 4];
        for t in set.list.iter() {
            counts[t.state() as usize] += 1;
        }
        for s in TargetState::ALL {
            metrics::gauge!(m::TARGETS, "target_group" => self.name.clone(), "state" => s.as_str())
                .set(f64::from(counts[s as usize]));
        }
        let (mode, local) = crate::zone::describe(&set.zones.route.load());
        for each in crate::zone::MODES {
            metrics::gauge!(m::ZONE_AWARE_MODE, "target_group" => self.name.clone(), "mode" => each)
                .set(if each == mode { 1.0 } else { 0.0 });
        }
        metrics::gauge!(m::ZONE_LOCAL_RATIO, "target_group" => self.name.clone()).set(local);
    }
}

/// A retry budget: retries may be at most `budget_percent` of requests, plus
/// `min_per_second` retries that are always allowed, so a failing group cannot multiply its
/// own load.
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Balance in thousandths of a retry.
    milli: AtomicU64,
    second: AtomicU64,
    used_in_second: AtomicU32,
}

/// Largest balance, in thousandths of a retry.
const BUDGET_CAP_MILLI: u64 = 1_000_000;

impl RetryBudget {
    /// Counts one request: deposits `percent` % of a retry.
    pub fn deposit(&self, percent: u32) {
        let add = u64::from(percent) * 10;
        let cur = self.milli.load(Ordering::Relaxed);
        if cur < BUDGET_CAP_MILLI {
            self.milli.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// Takes one retry if the budget allows it.
    pub fn withdraw(&self, min_per_second: u32, now_ms: u64) -> bool {
        let sec = now_ms / 1000;
        if self.second.swap(sec, Ordering::Relaxed) != sec {
            self.used_in_second.store(0, Ordering::Relaxed);
        }
        if self.used_in_second.fetch_add(1, Ordering::Relaxed) < min_per_second {
            return true;
        }
        self.milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                v.checked_sub(1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::*;
    use std::time::Duration;

    fn cfg(alg: Algorithm) -> TargetGroup {
        TargetGroup {
            name: "g".into(),
            algorithm: alg,
            stickiness: None,
            deregistration_delay: Duration::from_secs(300),
            slow_start: Duration::ZERO,
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_secs(1),
                total: None,
                idle: Duration::from_secs(1),
            },
            retry: RetryPolicy {
                attempts: 2,
                budget_percent: 20,
                min_per_second: 10,
            },
            health_check: HealthCheck {
                enabled: true,
                protocol: HealthProtocol::Http,
                grpc_service: String::new(),
                path: "/".into(),
                host: None,
                port: None,
                matcher: Matcher(vec![(200, 200)]),
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                healthy_threshold: 5,
                unhealthy_threshold: 2,
            },
            outlier: Outlier {
                enabled: true,
                consecutive_5xx: 5,
                consecutive_connect_failures: 3,
                base_ejection_time: Duration::from_secs(30),
                max_ejection_time: Duration::from_secs(300),
                max_ejection_percent: 50,
            },
            source: Source::Static(vec![]),
            proxy_protocol_v2: false,
            tls: None,
            protocol_version: ProtocolVersion::Http1,
            zone_aware: ZoneAware::default(),
        }
    }

    /// A round-robin group of targets 127.0.0.`last`:80, all healthy.
    fn healthy_group(lasts: &[u8]) -> Group {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&lasts.iter().map(|l| spec(*l)).collect::<Vec<_>>());
        for t in g.targets.load().list.iter() {
            t.set_status(Status::Healthy);
        }
        g
    }

    fn spec(last: u8) -> TargetSpec {
        TargetSpec {
            address: format!("127.0.0.{last}:80").parse().unwrap(),
            weight: 1,
            zone: None,
        }
    }

    #[test]
    fn initial_targets_get_no_traffic_once_one_is_healthy() {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&[spec(2), spec(3)]);
        // All initial: fail open over them rather than refuse.
        let first = g.select(&SelectInput::default()).unwrap();
        assert!(first.fail_open);
        g.targets.load().list[0].set_status(Status::Healthy);
        for _ in 0..5 {
            let s = g.select(&SelectInput::default()).unwrap();
            assert_eq!(s.target.address, spec(2).address);
            assert!(!s.fail_open);
        }
    }

    #[test]
    fn only_draining_targets_select_nothing() {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&[spec(2)]);
        g.apply_discovered(&[]);
        assert!(g.select(&SelectInput::default()).is_none());
    }

    #[test]
    fn all_unhealthy_fails_open() {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&[spec(2), spec(3)]);
        for t in g.targets.load().list.iter() {
            t.set_status(Status::Unhealthy);
        }
        let s = g.select(&SelectInput::default()).unwrap();
        assert!(s.fail_open);
    }

    #[test]
    fn removed_target_drains_and_is_reaped_when_idle() {
        let g = healthy_group(&[2, 3]);
        let t3 = g.targets.load().list[1].clone();
        let inflight = crate::target::InFlight::new(t3.clone());
        g.apply_discovered(&[spec(2)]);
        assert_eq!(t3.state(), TargetState::Draining);
        for _ in 0..10 {
            assert_eq!(
                g.select(&SelectInput::default()).unwrap().target.address,
                spec(2).address
            );
        }
        g.reap_drained();
        assert_eq!(g.targets.load().list.len(), 2, "in-flight request keeps it");
        drop(inflight);
        g.reap_drained();
        assert_eq!(g.targets.load().list.len(), 1);
    }

    #[test]
    fn returning_target_keeps_its_state() {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&[spec(2)]);
        let t = g.targets.load().list[0].clone();
        t.set_status(Status::Healthy);
        let _hold = crate::target::InFlight::new(t.clone());
        g.apply_discovered(&[]);
        g.apply_discovered(&[spec(2)]);
        assert_eq!(t.state(), TargetState::Healthy);
        assert!(Arc::ptr_eq(&t, &g.targets.load().list[0]));
    }

    #[test]
    fn retries_avoid_tried_targets() {
        let g = healthy_group(&[2, 3]);
        let ex = [spec(2).address];
        for _ in 0..10 {
            let s = g
                .select(&SelectInput {
                    exclude: &ex,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(s.target.address, spec(3).address);
        }
    }

    #[test]
    fn ejection_respects_max_percent() {
        let g = Group::new(cfg(Algorithm::RoundRobin));
        g.apply_discovered(&[spec(2), spec(3)]);
        let list = g.targets.load().list.clone();
        assert!(g.try_eject(&list[0], "5xx"));
        assert!(!g.try_eject(&list[1], "5xx"), "50% of 2 is 1");
    }

    #[test]
    fn sticky_id_routes_to_its_target() {
        let g = healthy_group(&[2, 3, 4]);
        let id = g.targets.load().list[2].sticky_id.clone();
        for _ in 0..10 {
            let s = g
                .select(&SelectInput {
                    sticky_id: Some(&id),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(s.target.address, spec(4).address);
        }
    }

    /// A zone-aware group in zone "a" of `per_zone` healthy targets in each of zones a, b, c
    /// (127.0.0.10.. in a, 20.. in b, 30.. in c).
    fn zoned_group(alg: Algorithm, per_zone: u8) -> Group {
        let mut c = cfg(alg);
        c.zone_aware = ZoneAware {
            enabled: true,
            min_targets: 6,
            proxy_zones: Vec::new(),
        };
        let g = Group::in_zone(c, Some(Arc::from("a")));
        let mut specs = Vec::new();
        for (zi, z) in ["a", "b", "c"].iter().enumerate() {
            for k in 0..per_zone {
                let mut s = spec(10 * (zi as u8 + 1) + k);
                s.zone = Some(z.to_string());
                specs.push(s);
            }
        }
        g.apply_discovered(&specs);
        for t in g.targets.load().list.iter() {
            t.set_status(Status::Healthy);
        }
        g.refresh_zones();
        g
    }

    /// Picks per zone (a, b, c) over `n` selections.
    fn zone_counts(g: &Group, n: usize) -> [usize; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            let s = g.select(&SelectInput::default()).unwrap();
            let last = match s.target.address.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                _ => unreachable!(),
            };
            c[usize::from(last / 10 - 1)] += 1;
        }
        c
    }

    #[test]
    fn zone_aware_keeps_requests_local_while_healthy() {
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::LeastOutstandingRequests,
            Algorithm::WeightedRandom,
        ] {
            let g = zoned_group(alg, 3);
            assert_eq!(zone_counts(&g, 300), [300, 0, 0]);
        }
        // Round robin still spreads within the zone.
        let g = zoned_group(Algorithm::RoundRobin, 3);
        let mut per = HashMap::new();
        for _ in 0..300 {
            *per.entry(g.select(&SelectInput::default()).unwrap().target.address)
                .or_insert(0) += 1;
        }
        assert_eq!(per.len(), 3);
        assert!(per.values().all(|n| *n == 100), "{per:?}");
    }

    #[test]
    fn zone_aware_spills_when_local_targets_fail() {
        let g = zoned_group(Algorithm::RoundRobin, 3);
        let list = g.targets.load().list.clone();
        list[0].set_status(Status::Unhealthy);
        list[1].set_status(Status::Unhealthy);
        g.refresh_zones();
        let c = zone_counts(&g, 14_000);
        // 3/7 local, 2/7 to b and to c.
        assert!((5_600..6_400).contains(&c[0]), "{c:?}");
        assert!((3_600..4_400).contains(&c[1]), "{c:?}");
        assert!((3_600..4_400).contains(&c[2]), "{c:?}");
        list[2].set_status(Status::Unhealthy);
        g.refresh_zones();
        let c = zone_counts(&g, 6_000);
        assert_eq!(c[0], 0);
        assert!((2_700..3_300).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn zone_aware_is_off_without_own_zone_or_below_min_targets() {
        let mut c = cfg(Algorithm::RoundRobin);
        c.zone_aware.enabled = true;
        c.zone_aware.min_targets = 6;
        let g = Group::in_zone(c, None);
        let mut s = spec(10);
        s.zone = Some("a".into());
        let mut t = spec(20);
        t.zone = Some("b".into());
        g.apply_discovered(&[s, t]);
        for t in g.targets.load().list.iter() {
            t.set_status(Status::Healthy);
        }
        g.refresh_zones();
        let c = zone_counts(&g, 100);
        assert_eq!(c, [50, 50, 0]);
        // In zone a, but only 2 healthy targets (< 6): plain balancing too.
        let g2 = zoned_group(Algorithm::RoundRobin, 1);
        let c = zone_counts(&g2, 300);
        assert_eq!(c, [100, 100, 100]);
    }

    #[test]
    fn stickiness_and_hashing_win_over_zones() {
        let g = zoned_group(Algorithm::RoundRobin, 3);
        let id = g.targets.load().list[5].sticky_id.clone();
        for _ in 0..10 {
            let s = g
                .select(&SelectInput {
                    sticky_id: Some(&id),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(s.target.address, spec(22).address);
        }
        let g = zoned_group(Algorithm::ConsistentHash(HashOn::SourceIp), 3);
        let mut zones_hit = [0; 3];
        for k in 0..300u64 {
            let s = g
                .select(&SelectInput {
                    hash_key: Some(crate::target::fnv1a(&k.to_le_bytes())),
                    ..Default::default()
                })
                .unwrap();
            let last = s.target.address.to_string();
            zones_hit[usize::from(last.as_bytes()[8] - b'1')] += 1;
        }
        assert!(zones_hit.iter().all(|n| *n > 30), "{zones_hit:?}");
    }

    #[test]
    fn zone_aware_retries_leave_a_zone_when_it_is_all_tried() {
        let g = zoned_group(Algorithm::RoundRobin, 3);
        let tried: Vec<SocketAddr> = [10, 11, 12].iter().map(|l| spec(*l).address).collect();
        for _ in 0..20 {
            let s = g
                .select(&SelectInput {
                    exclude: &tried,
                    ..Default::default()
                })
                .unwrap();
            assert!(!tried.contains(&s.target.address));
        }
    }

    #[test]
    fn retry_budget_allows_min_then_percent() {
        let b = RetryBudget::default();
        for _ in 0..3 {
            assert!(b.withdraw(3, 1000));
        }
        assert!(!b.withdraw(3, 1000));
        for _ in 0..10 {
            b.deposit(20);
        }
        assert!(b.withdraw(3, 1000), "10 requests at 20% buy 2 retries");
        assert!(b.withdraw(3, 1000));
        assert!(!b.withdraw(3, 1000));
        assert!(b.withdraw(3, 2000), "a new second");
    }
}
