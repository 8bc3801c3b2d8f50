//! Targets at run time: one [`Target`] per address in a target group, shared by the balancer,
//! the health checkers and the proxy. Hot-path fields are atomics; the target list itself is an
//! immutable snapshot swapped with arc-swap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::health::{CheckRun, HealthState, Status, Thresholds, Transition};

/// A monotonic clock in milliseconds since the first call, cheap to store in atomics.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().duration_since(epoch).as_millis() as u64 + 1
}

/// The state a target reports in `/targets` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Registered, not yet passed its health checks; gets no traffic.
    Initial,
    /// Passing health checks.
    Healthy,
    /// Failing health checks.
    Unhealthy,
    /// Leaving: no new requests, in-flight requests finish.
    Draining,
}

impl TargetState {
    /// All states, for metrics.
    pub const ALL: [TargetState; 4] = [
        TargetState::Initial,
        TargetState::Healthy,
        TargetState::Unhealthy,
        TargetState::Draining,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Draining => "draining",
        }
    }
}

/// One target of a target group.
#[derive(Debug)]
pub struct Target {
    /// Address requests go to.
    pub address: SocketAddr,
    /// `ip:port` as text, for labels and logs.
    pub label: String,
    /// Stable id used in stickiness cookies (hex of a hash of the address).
    pub sticky_id: String,
    weight: AtomicU32,
    /// The health status ([`Status`] as a byte): its one home, read on every pick.
    status: AtomicU8,
    /// The run of active check results behind `status` (see [`Target::record_check`]).
    check_run: Mutex<CheckRun>,
    /// Requests in flight to this target.
    pub outstanding: AtomicU32,
    healthy_since_ms: AtomicU64,
    draining: AtomicBool,
    drain_started_ms: AtomicU64,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_connect_failures: AtomicU32,
    requests: std::sync::OnceLock<metrics::Counter>,
    /// Idle keep-alive HTTP connections to this target; they close when the target is dropped.
    pub pool: crate::upstream::Pool,
    /// Its Availability Zone as its source reported it (read when the target set's zone index
    /// is built, not per request).
    zone: arc_swap::ArcSwapOption<String>,
}

impl Target {
    /// Counts one request sent to this target of `group` (the handle is registered once).
    pub fn count_request(&self, group: &str) {
        self.requests
            .get_or_init(|| {
                metrics::counter!(crate::metrics::TARGET_REQUESTS, "target_group" => group.to_string(), "target" => self.label.clone())
            })
            .increment(1);
    }

    /// A new target; it starts `initial`, or `healthy` when health checks are off.
    pub fn new(address: SocketAddr, weight: u32, checks_enabled: bool) -> Self {
        let label = address.to_string();
        let sticky_id = format!("{:016x}", fnv1a(label.as_bytes()));
        let status = if checks_enabled {
            Status::Initial
        } else {
            Status::Healthy
        };
        let t = Target {
            address,
            label,
            sticky_id,
            weight: AtomicU32::new(weight.max(1)),
            status: AtomicU8::new(status as u8),
            check_run: Mutex::new(CheckRun::default()),
            outstanding: AtomicU32::new(0),
            healthy_since_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drain_started_ms: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_connect_failures: AtomicU32::new(0),
            requests: std::sync::OnceLock::new(),
            pool: Default::default(),
            zone: arc_swap::ArcSwapOption::empty(),
        };
        if status == Status::Healthy {
            t.healthy_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        t
    }

    /// Its Availability Zone, `None` when unknown.
    pub fn zone(&self) -> Option<Arc<String>> {
        self.zone.load_full()
    }

    /// Records its zone (from its source); returns true when it changed.
    pub fn set_zone(&self, zone: Option<&str>) -> bool {
        if self.zone.load().as_deref().map(String::as_str) == zone {
            return false;
        }
        self.zone.store(zone.map(|z| Arc::new(z.to_string())));
        true
    }

    /// The weight the balancer gives it (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the weight (the source reported a new one).
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    /// Health status from active checks.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    /// Records a new health status (from the active checker).
    pub fn set_status(&self, s: Status) {
        let old = self.status.swap(s as u8, Ordering::Relaxed);
        if s == Status::Healthy && old != Status::Healthy as u8 {
            self.healthy_since_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Feeds one active check result through the health state machine ([`HealthState`]) and
    /// stores the new status; returns the transition, if any.
    pub fn record_check(&self, ok: bool, th: Thresholds) -> Option<Transition> {
        // A panicked holder left the run whole: keep using it.
        let mut run = self
            .check_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = HealthState {
            status: self.status(),
            run: *run,
        };
        let (next, tr) = now.observe(ok, th);
        *run = next.run;
        if let Some(tr) = tr {
            self.set_status(tr.to);
        }
        tr
    }

    /// When it last became healthy (ms clock), 0 if never.
    pub fn healthy_since_ms(&self) -> u64 {
        self.healthy_since_ms.load(Ordering::Relaxed)
    }

    /// The state reported to users; a passively ejected target reports `unhealthy`.
    pub fn state(&self) -> TargetState {
        if self.is_draining() {
            return TargetState::Draining;
        }
        if self.is_ejected(now_ms()) {
            return TargetState::Unhealthy;
        }
        match self.status() {
            Status::Initial => TargetState::Initial,
            Status::Healthy => TargetState::Healthy,
            Status::Unhealthy => TargetState::Unhealthy,
        }
    }

    /// Whether the target is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining (idempotent).
    pub fn start_draining(&self, now: u64) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            self.drain_started_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Stops draining: the target came back to its source.
    pub fn stop_draining(&self) {
        self.draining.store(false, Ordering::Relaxed);
    }

    /// When draining started (ms clock).
    pub fn drain_started_ms(&self) -> u64 {
        self.drain_started_ms.load(Ordering::Relaxed)
    }

    /// Whether passive ejection currently excludes the target.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }

    /// Records a response status from the target; returns true when it should be ejected.
    pub fn observe_status(&self, status: u16, threshold: u32) -> bool {
        self.consecutive_connect_failures
            .store(0, Ordering::Relaxed);
        if status >= 500 {
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            threshold > 0 && n >= threshold
        } else {
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            false
        }
    }

    /// Records a connect failure; returns true when it should be ejected.
    pub fn observe_connect_failure(&self, threshold: u32) -> bool {
        let n = self
            .consecutive_connect_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        threshold > 0 && n >= threshold
    }

    /// Ejects the target until `now + duration(ejection count)`; returns the duration.
    pub fn eject(&self, now: u64, base: Duration, max: Duration) -> Duration {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        // The count decays once the target has stayed in service for `max` since its last one.
        if until != 0 && now > until + max.as_millis() as u64 {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let d = crate::health::ejection_time(n, base, max);
        self.ejected_until_ms
            .store(now + d.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_connect_failures
            .store(0, Ordering::Relaxed);
        d
    }
}

/// FNV-1a, 64 bit: a stable hash for stickiness ids and the consistent-hash ring, identical on
/// every replica.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A guard counting one request in flight on a target; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(pub Arc<Target>);

impl InFlight {
    /// Counts a new request on `target`.
    pub fn new(target: Arc<Target>) -> Self {
        target.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(target)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Target {
        Target::new("127.0.0.2:80".parse().unwrap(), 1, true)
    }

    #[test]
    fn new_target_is_initial_or_healthy_without_checks() {
        assert_eq!(t().state(), TargetState::Initial);
        let u = Target::new("127.0.0.2:80".parse().unwrap(), 1, false);
        assert_eq!(u.state(), TargetState::Healthy);
    }

    #[test]
    fn five_hundreds_eject_after_threshold_and_success_resets() {
        let t = t();
        assert!(!t.observe_status(502, 3));
        assert!(!t.observe_status(200, 3));
        assert!(!t.observe_status(502, 3));
        assert!(!t.observe_status(503, 3));
        assert!(t.observe_status(500, 3));
    }

    #[test]
    fn ejection_grows_and_expires() {
        let t = t();
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        assert_eq!(t.eject(1000, base, max), Duration::from_secs(1));
        assert!(t.is_ejected(1500));
        assert!(!t.is_ejected(2001));
        assert_eq!(t.eject(2001, base, max), Duration::from_secs(2));
        // long after: count resets
        assert_eq!(t.eject(100_000, base, max), Duration::from_secs(1));
    }

    #[test]
    fn ejected_target_reports_unhealthy() {
        let t = Target::new("127.0.0.2:80".parse().unwrap(), 1, false);
        assert_eq!(t.state(), TargetState::Healthy);
        t.eject(now_ms(), Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(t.state(), TargetState::Unhealthy);
    }

    #[test]
    fn draining_state_wins() {
        let t = t();
        t.start_draining(5);
        assert_eq!(t.state(), TargetState::Draining);
        t.stop_draining();
        assert_eq!(t.state(), TargetState::Initial);
    }

    #[test]
    fn in_flight_guard_counts() {
        let t = Arc::new(t());
        {
            let _a = InFlight::new(t.clone());
            let _b = InFlight::new(t.clone());
            assert_eq!(t.outstanding.load(Ordering::Relaxed), 2);
        }
        assert_eq!(t.outstanding.load(Ordering::Relaxed), 0);
    }
}
