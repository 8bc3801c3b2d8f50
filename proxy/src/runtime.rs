//! The running state: the current configuration generation (swapped atomically on reload), the
//! target groups that outlive reloads, and the start of each group's loop ([`crate::group_loop`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use berth_config::{Config, ConfigError, ConfigErrors};

use crate::discovery::ecs::EcsHub;
use crate::group::Group;
use crate::group_loop;
use crate::metrics as m;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read on reload.
    File(PathBuf),
    /// The embedded default; relative paths resolve against the working directory.
    Embedded,
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(p) => berth_config::load(p),
            ConfigSource::Embedded => {
                berth_config::parse(berth_config::EMBEDDED_DEFAULT, std::path::Path::new("."))
            }
        }
    }
}

/// One immutable view of the configuration and its target groups; requests hold it for
/// their whole life, so a reload never changes a request in flight.
#[derive(Debug)]
pub struct Generation {
    /// The validated configuration of this generation.
    pub config: Arc<Config>,
    /// Running target groups by name.
    pub groups: HashMap<String, Arc<Group>>,
    /// Reload generation (0 at start).
    pub generation: u64,
}

impl Generation {
    /// The listener configuration with this name.
    pub fn listener(&self, name: &str) -> Option<&berth_config::model::Listener> {
        self.config.listeners.iter().find(|l| l.name == name)
    }
}

/// State shared by the listeners, the admin endpoint and the background loops.
#[derive(Debug)]
pub struct ProxyState {
    /// The configuration generation new requests and connections use.
    pub current: ArcSwap<Generation>,
    /// Where reloads read from.
    pub source: ConfigSource,
    /// Groups by name; kept across reloads so targets keep their health and counters.
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// True once every listener accepts connections.
    pub ready: AtomicBool,
    /// The ECS client and cluster pollers of every ECS-discovered group.
    pub ecs: Arc<EcsHub>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Notified on SIGHUP and after each successful reload: the listener certificate watcher
    /// ([`crate::tls::Certificates::watch`]) re-reads every certificate file at once.
    pub reread_certificates: Arc<tokio::sync::Notify>,
}

impl ProxyState {
    /// Builds the first snapshot from a valid configuration; ECS sources poll through `ecs`.
    pub fn new(config: Config, source: ConfigSource, ecs: Arc<EcsHub>) -> Arc<ProxyState> {
        let mut groups = HashMap::new();
        let first = build_generation(&mut groups, config, 0);
        record_reload_success();
        Arc::new(ProxyState {
            current: ArcSwap::from_pointee(first),
            source,
            groups: Mutex::new(groups),
            ready: AtomicBool::new(false),
            ecs,
            reload_lock: tokio::sync::Mutex::new(()),
            reread_certificates: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Re-reads and validates the configuration; on success swaps it in, on any error keeps the
    /// running one. Either way the outcome is logged and counted.
    pub async fn reload(self: &Arc<Self>, why: &str) -> Result<u64, ConfigErrors> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let started = Instant::now();
        // Reading and validating a large file takes tens of milliseconds: off the control
        // runtime, whose group loops and health checks keep running meanwhile.
        let loader = Arc::clone(self);
        let loaded = tokio::task::spawn_blocking(move || loader.source.load())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors(vec![berth_config::ConfigError::new(
                    "",
                    format!("configuration loader failed: {e}"),
                    None,
                )]))
            });
        let result = loaded.and_then(|new| {
            let old = self.current.load();
            restart_only_changes(&old.config, &new).map(|()| new)
        });
        match result {
            Ok(config) => {
                let generation = self.current.load().generation + 1;
                let next = {
                    let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
                    build_generation(&mut groups, config, generation)
                };
                let new_groups: Vec<Arc<Group>> = next.groups.values().cloned().collect();
                self.current.store(Arc::new(next));
                for g in new_groups {
                    // Running loops look at their (possibly changed) configuration at once.
                    g.wake.notify_one();
                    self.ensure_loop(g);
                }
                record_reload_success();
                // Certificate paths and mTLS settings may have changed.
                self.reread_certificates.notify_one();
                metrics::counter!(m::RELOADS, "result" => "success").increment(1);
                metrics::gauge!(m::CONFIG_RELOAD_SECONDS).set(started.elapsed().as_secs_f64());
                tracing::info!(
                    trigger = why,
                    generation,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "configuration reloaded"
                );
                Ok(generation)
            }
            Err(errors) => {
                metrics::counter!(m::RELOADS, "result" => "failure").increment(1);
                for e in &errors.0 {
                    tracing::error!(trigger = why, error = %e, "configuration reload rejected; keeping the running configuration");
                }
                Err(errors)
            }
        }
    }

    /// Brings every group's `berth_targets` gauges (targets by state) up to date; the group
    /// loops do it each second, a scrape does it first so it reads no stale state.
    pub fn refresh_gauges(&self) {
        for g in self.current.load().groups.values() {
            g.publish_gauges();
        }
    }

    /// Starts the background loop of every group that has none yet (call inside the control
    /// runtime).
    pub fn start_loops(self: &Arc<Self>) {
        let groups: Vec<Arc<Group>> = self.current.load().groups.values().cloned().collect();
        for g in groups {
            self.ensure_loop(g);
        }
    }

    fn ensure_loop(self: &Arc<Self>, group: Arc<Group>) {
        if group.loop_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = Arc::clone(self);
        let watch_interval = move || shared.current.load().config.proxy.watch_interval;
        tokio::spawn(group_loop::run(
            group,
            Arc::clone(&self.ecs),
            watch_interval,
        ));
    }
}

/// Reloads on SIGHUP and when the configuration file changes (polled).
pub async fn watch_reloads(shared: Arc<ProxyState>, mut hangup: tokio::signal::unix::Signal) {
    let path = match &shared.source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::Embedded => None,
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut last = path.as_deref().and_then(stamp);
    loop {
        let interval = shared.current.load().config.proxy.watch_interval;
        tokio::select! {
            _ = hangup.recv() => {
                let _ = shared.reload("SIGHUP").await;
                // Certificates are re-read even when the configuration was refused.
                shared.reread_certificates.notify_one();
                last = path.as_deref().and_then(stamp);
            }
            _ = tokio::time::sleep(interval) => {
                if let Some(p) = path.as_deref() {
                    let now = stamp(p);
                    if now != last {
                        last = now;
                        if now.is_some() {
                            let _ = shared.reload("file change").await;
                        }
                    }
                }
            }
        }
    }
}

/// Builds a configuration generation, reusing groups that keep their name and retiring the others.
fn build_generation(
    groups: &mut HashMap<String, Arc<Group>>,
    config: Config,
    generation: u64,
) -> Generation {
    crate::cookie_signing::install_keys(&config);
    let mut next = HashMap::new();
    for tg in &config.target_groups {
        crate::upstream::tls::prepare(tg);
        let g = match groups.remove(&tg.name) {
            Some(g) => {
                g.config.store(Arc::new(tg.clone()));
                g
            }
            None => {
                let g = Arc::new(Group::new(tg.clone()));
                // Static targets are known now: register them before any listener accepts,
                // rather than at the group loop's first pass.
                if let berth_config::model::Source::Static(list) = &tg.source {
                    g.apply_discovered(list);
                }
                g
            }
        };
        next.insert(tg.name.clone(), g);
    }
    for (name, old) in groups.drain() {
        tracing::info!(target_group = %name, "target group removed");
        old.removed.store(true, Ordering::SeqCst);
        old.wake.notify_one();
    }
    groups.extend(next.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
    Generation {
        config: Arc::new(config),
        groups: next,
        generation,
    }
}

fn record_reload_success() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!(m::CONFIG_LAST_RELOAD).set(now);
}

/// Settings that bind sockets or size the process cannot change without a restart; a reload
/// that changes them is rejected as a whole, naming each. A listener's certificates and
/// `mtls` may change.
fn restart_only_changes(old: &Config, new: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |path: String, what: &str| {
        errors.push(ConfigError::new(
            path,
            format!("{what} cannot change on reload; restart berth to apply it"),
            None,
        ))
    };
    if old.admin.bind != new.admin.bind {
        err("admin.bind".into(), "the admin address");
    }
    if old.proxy.threads != new.proxy.threads {
        err("proxy.threads".into(), "the thread count");
    }
    if old.proxy.upstream_keepalive_pool != new.proxy.upstream_keepalive_pool {
        err("proxy.upstream_keepalive_pool".into(), "the pool size");
    }
    if old.proxy.availability_zone != new.proxy.availability_zone {
        err("proxy.availability_zone".into(), "the proxy's zone");
    }
    if old.listeners.len() != new.listeners.len() {
        err("listeners".into(), "the set of listeners");
    }
    for (i, (a, b)) in old.listeners.iter().zip(&new.listeners).enumerate() {
        if a.name != b.name || a.bind != b.bind {
            err(
                format!("listeners[{i}]"),
                "a listener's name or bind address",
            );
        }
        if a.protocol != b.protocol || a.http2 != b.http2 {
            err(format!("listeners[{i}].protocol"), "a listener's protocol");
        }
        // Certificates and mutual TLS may change: the certificate watcher loads them (ALB
        // swaps listener certificates live too).
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
