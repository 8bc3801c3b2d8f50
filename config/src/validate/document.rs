//! The whole document: each top-level section deserialized on its own, then checked into a
//! [`Config`], with the names and bind addresses that must be unique across the file.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::Checker;
use crate::model::{Config, Listener, TargetGroup};
use crate::raw::{
    RawAccessLog, RawAdmin, RawListener, RawLog, RawProxy, RawScaler, RawTargetGroup,
};

/// Top-level keys of the configuration file.
const TOP_LEVEL_KEYS: [&str; 7] = [
    "proxy",
    "log",
    "access_log",
    "admin",
    "scaler",
    "listeners",
    "target_groups",
];

/// The sections of a configuration, each deserialized on its own; `None` elements failed to
/// deserialize (their error is already recorded).
pub(super) struct Sections {
    proxy: RawProxy,
    log: RawLog,
    access_log: RawAccessLog,
    admin: RawAdmin,
    scaler: RawScaler,
    listeners: Vec<Option<RawListener>>,
    target_groups: Vec<Option<RawTargetGroup>>,
    /// Names of every target group written, including ones that failed to deserialize, so
    /// that forward actions naming them do not report a second, misleading error.
    target_group_names: HashSet<String>,
}

impl Checker<'_> {
    /// Deserializes each section and each array element on its own.
    pub(super) fn deserialize_sections(&mut self, table: toml::Table) -> Sections {
        let mut sections = Sections {
            proxy: RawProxy::default(),
            log: RawLog::default(),
            access_log: RawAccessLog::default(),
            admin: RawAdmin::default(),
            scaler: RawScaler::default(),
            listeners: Vec::new(),
            target_groups: Vec::new(),
            target_group_names: HashSet::new(),
        };
        for (key, value) in table {
            match key.as_str() {
                "proxy" => sections.proxy = self.deserialize(value, "proxy").unwrap_or_default(),
                "log" => sections.log = self.deserialize(value, "log").unwrap_or_default(),
                "access_log" => {
                    sections.access_log = self.deserialize(value, "access_log").unwrap_or_default()
                }
                "admin" => sections.admin = self.deserialize(value, "admin").unwrap_or_default(),
                "scaler" => sections.scaler = self.deserialize(value, "scaler").unwrap_or_default(),
                "listeners" | "target_groups" => {
                    let toml::Value::Array(items) = value else {
                        self.error(
                            &key,
                            format!(
                                "expected an array of tables ([[{key}]]), found {}",
                                value.type_str()
                            ),
                        );
                        continue;
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let prefix = format!("{key}[{i}]");
                        if key == "listeners" {
                            let l = self.deserialize(item, &prefix);
                            sections.listeners.push(l);
                        } else {
                            if let Some(name) = item.get("name").and_then(|n| n.as_str()) {
                                sections.target_group_names.insert(name.to_owned());
                            }
                            let t = self.deserialize(item, &prefix);
                            sections.target_groups.push(t);
                        }
                    }
                }
                _ => self.error(
                    &key,
                    format!(
                        "unknown key {key:?} (expected one of: {})",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
            }
        }
        sections
    }

    /// Checks every section and builds the model (meaningful only when no error was recorded).
    pub(super) fn config(&mut self, sections: Sections) -> Config {
        let config = Config {
            proxy: self.proxy(&sections.proxy),
            log: self.log(&sections.log),
            access_log: self.access_log(&sections.access_log, &sections.listeners),
            admin: self.admin(&sections.admin),
            scaler: self.scaler(&sections.scaler, &sections.target_group_names),
            target_groups: self.target_groups(&sections.target_groups),
            listeners: self.listeners(&sections.listeners, &sections.target_group_names),
        };
        self.l4_forwards_to_http_groups(&config, &sections.target_groups);
        config
    }

    /// The target groups that deserialized, checked; a name used twice is an error.
    fn target_groups(&mut self, raw: &[Option<RawTargetGroup>]) -> Vec<TargetGroup> {
        let mut target_groups = Vec::new();
        let mut tg_seen: HashMap<String, usize> = HashMap::new();
        for (i, t) in raw.iter().enumerate() {
            let Some(t) = t else { continue };
            let p = format!("target_groups[{i}]");
            if let Some(name) = &t.name {
                if let Some(first) = tg_seen.get(name) {
                    self.error(
                        &format!("{p}.name"),
                        format!("duplicate target group name {name:?} (also used by target_groups[{first}])"),
                    );
                } else {
                    tg_seen.insert(name.clone(), i);
                }
            }
            if let Some(tg) = self.target_group(&p, t) {
                target_groups.push(tg);
            }
        }
        target_groups
    }

    /// The listeners that deserialized, checked; a name or bind address used twice is an error.
    fn listeners(
        &mut self,
        raw: &[Option<RawListener>],
        target_group_names: &HashSet<String>,
    ) -> Vec<Listener> {
        let mut listeners = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, l) in raw.iter().enumerate() {
            let Some(l) = l else { continue };
            let p = format!("listeners[{i}]");
            let Some(listener) = self.listener(&p, l, target_group_names) else {
                continue;
            };
            if let Some(first) = names.get(&listener.name) {
                self.error(
                    &format!("{p}.name"),
                    format!(
                        "duplicate listener name {:?} (also used by listeners[{first}])",
                        listener.name
                    ),
                );
            } else {
                names.insert(listener.name.clone(), i);
            }
            if let Some(first) = binds.get(&listener.bind) {
                self.error(
                    &format!("{p}.bind"),
                    format!(
                        "duplicate bind address {} (also used by listeners[{first}])",
                        listener.bind
                    ),
                );
            } else {
                binds.insert(listener.bind, i);
            }
            listeners.push(listener);
        }
        listeners
    }
}
