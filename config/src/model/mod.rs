//! The validated configuration model. Built only by [`crate::validate`]; every value in it has
//! been checked, so the proxy never re-validates. Defaults follow AWS ALB's where ALB has one.

mod access_log;
mod listener;
mod scaler;
mod settings;
mod target_group;
mod transforms;

pub use access_log::*;
pub use listener::*;
pub use scaler::*;
pub use settings::*;
pub use target_group::*;
pub use transforms::*;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[proxy]`: threads, drain time, upstream pools, trusted proxies, request ids.
    pub proxy: ProxySettings,
    /// `[log]`: format and filter.
    pub log: LogSettings,
    /// `[access_log]` and each listener's `[listeners.access_log]`.
    pub access_log: AccessLogSettings,
    /// `[admin]`: where metrics, health and targets are served.
    pub admin: AdminSettings,
    /// `[scaler]`: read by `berth-scaler` only; the proxy ignores it.
    pub scaler: ScalerSettings,
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Target groups, in file order; names are unique.
    pub target_groups: Vec<TargetGroup>,
}

impl Config {
    /// The target group with this name.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|t| t.name == name)
    }

    /// One line describing the configuration, printed by `--check`.
    pub fn summary(&self) -> String {
        let rules: usize = self.listeners.iter().map(|l| l.rules.len()).sum();
        format!(
            "config ok: {} listener(s), {} rule(s), {} target group(s), admin on {}",
            self.listeners.len(),
            rules,
            self.target_groups.len(),
            self.admin.bind
        )
    }
}
