//! The life of one target group at run time: its discovery source, its active health checks
//! (results applied to each target's state machine), draining and reaping, and its gauges.
//! One loop per group, started by the running state ([`crate::runtime`]) and ended when a
//! reload removes the group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::discovery;
use crate::discovery::ecs::EcsHub;
use crate::group::Group;
use crate::health::{active, Thresholds};
use crate::metrics as m;
use crate::target::Target;

/// Longest sleep of an idle group loop: gauges and the discovery age are refreshed this often.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Sleep while a target drains, so it is reaped soon after its last request.
const DRAIN_TICK: Duration = Duration::from_millis(100);

/// The life of one target group: discovery, active health checks, draining, gauges. Ends when
/// the group is removed from the configuration. The loop sleeps until the next thing is due
/// (a poll, a check round, a drain to reap, at most `IDLE_TICK`) or a reload wakes it, so a
/// thousand idle groups cost next to nothing.
pub async fn run(group: Arc<Group>, ecs: Arc<EcsHub>, watch_interval: impl Fn() -> Duration) {
    let mut seen_cfg: Option<Arc<berth_config::model::TargetGroup>> = None;
    let mut source_cfg = None;
    let mut source: Option<Box<dyn discovery::Discovery>> = None;
    let mut next_discovery = Instant::now();
    let mut next_check = Instant::now();
    let mut next_gauges = Instant::now();
    let checking = Arc::new(AtomicBool::new(false));
    let mut last_success: Option<Instant> = None;
    while !group.removed.load(Ordering::SeqCst) {
        let cfg = group.config.load_full();
        if !seen_cfg.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cfg)) {
            // A reload stored a new configuration: rebuild the source if it changed.
            let src_key = format!("{:?}", cfg.source);
            if source_cfg.as_ref() != Some(&src_key) {
                let src = discovery::from_config(&cfg.source, watch_interval(), &ecs);
                group
                    .refreshable
                    .store(src.can_look_again(), Ordering::Relaxed);
                source = Some(src);
                source_cfg = Some(src_key);
                next_discovery = Instant::now();
            }
            if seen_cfg.is_some() {
                // `zone_aware.proxy_zones` may name other zones now.
                group.rebuild_zones();
            }
            seen_cfg = Some(Arc::clone(&cfg));
        }
        let now = Instant::now();
        if let Some(src) = source.as_ref() {
            if group.rediscover_asked.swap(false, Ordering::Relaxed) {
                // A request found every target refusing: the source looks again now.
                src.look_again();
            }
            if now >= next_discovery {
                next_discovery = now + src.poll_interval();
                match src.discover().await {
                    Ok(list) => {
                        last_success = Some(Instant::now());
                        if group.apply_discovered(&list) {
                            // New targets are checked at once rather than an interval later.
                            next_check = now;
                        }
                        group.discovered.notify_waiters();
                        metrics::counter!(m::DISCOVERY_UPDATES, "target_group" => group.name.clone(), "result" => "success").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!(m::DISCOVERY_UPDATES, "target_group" => group.name.clone(), "result" => "failure").increment(1);
                        tracing::warn!(target_group = %group.name, source = src.kind(), error = %e, "target source failed; keeping the last good targets");
                    }
                }
            }
        }
        if now >= next_check && !checking.load(Ordering::SeqCst) {
            next_check = now + cfg.health_check.interval;
            checking.store(true, Ordering::SeqCst);
            let g = Arc::clone(&group);
            let flag = Arc::clone(&checking);
            tokio::spawn(async move {
                check_group(&g).await;
                // Health changed the zones' capacity: a new zone-aware route at once.
                g.refresh_zones();
                flag.store(false, Ordering::SeqCst);
                g.publish_gauges();
            });
        }
        group.reap_drained();
        if now >= next_gauges {
            next_gauges = now + IDLE_TICK;
            // Ejections end and slow start ramps without an event: recompute each tick.
            group.refresh_zones();
            group.publish_gauges();
            if let Some(t) = last_success {
                metrics::gauge!(m::DISCOVERY_AGE, "target_group" => group.name.clone())
                    .set(t.elapsed().as_secs_f64());
            }
        }
        let draining = group.targets.load().list.iter().any(|t| t.is_draining());
        let tick = if draining { DRAIN_TICK } else { IDLE_TICK };
        let mut wake_at = (now + tick).min(next_gauges);
        if source.is_some() {
            wake_at = wake_at.min(next_discovery);
        }
        if !checking.load(Ordering::SeqCst) {
            wake_at = wake_at.min(next_check);
        }
        let changed = async {
            match source.as_ref() {
                Some(src) => src.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at.into()) => {}
            _ = group.wake.notified() => {}
            // The source has news (an ECS poll finished): discover now.
            _ = changed => next_discovery = Instant::now(),
        }
    }
    tracing::debug!(target_group = %group.name, "group loop stopped");
}

/// Checks every non-draining target of `group` once, concurrently, and applies the results.
pub async fn check_group(group: &Arc<Group>) {
    let cfg = group.config.load_full();
    let hc = &cfg.health_check;
    if !hc.enabled {
        return;
    }
    let th = Thresholds {
        healthy: hc.healthy_threshold,
        unhealthy: hc.unhealthy_threshold,
    };
    let set = group.targets.load_full();
    let via = active::Via::of(&cfg);
    let mut tasks = tokio::task::JoinSet::new();
    for t in set.list.iter().filter(|t| !t.is_draining()) {
        let t = Arc::clone(t);
        let hc = hc.clone();
        let via = via.clone();
        tasks.spawn(async move {
            let r = match &via {
                Ok(via) => active::check(t.address, &hc, via).await,
                Err(e) => Err(format!("TLS setup: {e}")),
            };
            (t, r)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((t, r)) = done else { continue };
        apply(group, &t, r, th);
    }
}

/// Counts and logs one check result of `t` and feeds it to its state machine.
fn apply(group: &Group, t: &Target, r: Result<(), String>, th: Thresholds) {
    let ok = r.is_ok();
    metrics::counter!(m::HEALTH_CHECKS, "target_group" => group.name.clone(), "result" => if ok { "success" } else { "failure" })
        .increment(1);
    if let Some(tr) = t.record_check(ok, th) {
        match &r {
            Ok(()) => {
                tracing::info!(target_group = %group.name, target = %t.label, from = ?tr.from, to = ?tr.to, "health changed")
            }
            Err(why) => {
                tracing::warn!(target_group = %group.name, target = %t.label, from = ?tr.from, to = ?tr.to, reason = %why, "health changed")
            }
        }
    } else if let Err(why) = &r {
        tracing::debug!(target_group = %group.name, target = %t.label, reason = %why, "health check failed");
    }
}
