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

/// An immutable list of targets with its hash ring.
#[derive(Debug, Default)]
pub struct TargetSet {
    /// Targets, draining ones included.
    pub list: Vec<Arc<Target>>,
    /// Consistent-hash ring over `list`.
    pub ring: Ring,
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
}

impl Group {
    /// A new group with no targets.
    pub fn new(config: TargetGroup) -> Group {
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
                    list.push(Arc::clone(t));
                }
                None => {
                    changed = true;
                    added = true;
                    tracing::info!(target_group = %self.name, target = %s.address, "target registered");
                    list.push(Arc::new(Target::new(
                        s.address,
                        s.weight,
                        cfg.health_check.enabled,
                    )));
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
        self.targets.store(Arc::new(TargetSet { list, ring }));
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
            if let Some(t) = list.iter().find(|t| {
                t.sticky_id == id
                    && !t.is_draining()
                    && t.status() == Status::Healthy
                    && !t.is_ejected(now)
            }) {
                if !tried(t) {
                    return Some(Selection {
                        target: Arc::clone(t),
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
        for ok in tiers {
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
