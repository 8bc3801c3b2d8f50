//! ECS targets as Prometheus HTTP service-discovery entries (`GET /sd/ecs` on the admin port),
//! read from the pollers' last snapshots.

use std::collections::HashMap;

use berth_config::model::EcsSource;
use serde::Serialize;

use super::hub::EcsHub;
use super::resolve::targets_of;

/// One entry of Prometheus HTTP service discovery: a target and its `__meta_*` labels.
#[derive(Debug, Serialize)]
pub struct SdEntry {
    /// `ip:port` of each target.
    pub targets: Vec<String>,
    /// Labels, `__meta_ecs_*`.
    pub labels: HashMap<String, String>,
}

/// Prometheus HTTP SD entries for every ECS target group's tasks, from the last snapshots of
/// `hub`'s pollers.
pub fn sd_entries(hub: &EcsHub, sources: &[(String, EcsSource)]) -> Vec<SdEntry> {
    let mut out = Vec::new();
    for (group, src) in sources {
        let Some(snap) = hub.existing(&src.cluster).and_then(|p| p.last_snapshot()) else {
            continue;
        };
        for t in targets_of(src, &snap) {
            let mut labels: HashMap<String, String> = t
                .labels
                .into_iter()
                .map(|(k, v)| (format!("__meta_ecs_{k}"), v))
                .collect();
            labels.insert("__meta_berth_target_group".into(), group.clone());
            out.push(SdEntry {
                targets: vec![t.address.to_string()],
                labels,
            });
        }
    }
    out
}
