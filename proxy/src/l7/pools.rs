//! Keeps the upstream connection pools tidy: once a second, idle connections past their target
//! group's `timeouts.idle` close, a draining target's idle connections close at once, and the
//! idle count per target group is published.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics as m;
use crate::runtime::ProxyState;
use crate::target::now_ms;

/// How often pools are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps every target group's pools once.
pub fn sweep(shared: &ProxyState) {
    let snap = shared.current.load();
    let now = now_ms();
    for group in snap.groups.values() {
        let idle_ms = group.config.load().timeouts.idle.as_millis() as u64;
        let mut idle = 0;
        for t in &group.targets.load().list {
            if t.is_draining() {
                t.pool.clear();
            } else {
                idle += t.pool.prune(now, idle_ms);
            }
        }
        metrics::gauge!(m::UPSTREAM_IDLE_CONNECTIONS, "target_group" => group.name.clone())
            .set(idle as f64);
    }
}

/// Sweeps forever, every [`SWEEP_INTERVAL`], and gives memory freed by parked client
/// connections back to the OS.
pub async fn run(shared: Arc<ProxyState>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(&shared);
        crate::heap::trim_if_worthwhile();
    }
}
