//! Availability Zone names (`proxy.availability_zone`, a target's `zone`) and a target
//! group's `zone_aware` table.

use super::Checker;
use crate::model::ZoneAware;
use crate::raw::RawZoneAware;

/// Longest zone name accepted; AWS names (`us-east-1a`) and ids (`use1-az1`) are far shorter.
const MAX_ZONE_LEN: usize = 64;

/// Whether `name` can be a zone name: 1 to 64 ASCII letters, digits and `-`, as AWS zone
/// names and zone ids are (it is also a metric label value, so nothing else is allowed).
pub fn valid_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ZONE_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Checker<'_> {
    /// A zone name at `p`.
    pub(super) fn zone_name(&mut self, name: &str, p: &str) -> Option<String> {
        if valid_zone_name(name) {
            Some(name.to_owned())
        } else {
            self.error(
                p,
                format!(
                    "invalid zone name {name:?} (expected 1 to {MAX_ZONE_LEN} letters, digits and '-', like \"us-east-1a\")"
                ),
            );
            None
        }
    }

    /// `zone_aware` at `p`: defaults when absent (off), on when present unless disabled.
    pub(super) fn zone_aware(&mut self, p: &str, raw: Option<&RawZoneAware>) -> ZoneAware {
        let Some(z) = raw else {
            return ZoneAware {
                enabled: false,
                min_targets: 6,
                proxy_zones: Vec::new(),
            };
        };
        let min_targets = self.int_in(z.min_targets, &format!("{p}.min_targets"), 6, 1, 10_000);
        let mut proxy_zones = Vec::new();
        if let Some(map) = &z.proxy_zones {
            let pp = format!("{p}.proxy_zones");
            if map.is_empty() {
                self.error(
                    &pp,
                    "must name at least one zone (or leave it out: zones are then weighted evenly)",
                );
            }
            for (zone, weight) in map {
                let kp = format!("{pp}.{zone}");
                let Some(zone) = self.zone_name(zone, &kp) else {
                    continue;
                };
                let w = self.int_in(Some(*weight), &kp, 1, 1, 10_000) as u32;
                proxy_zones.push((zone, w));
            }
        }
        ZoneAware {
            enabled: z.enabled.unwrap_or(true),
            min_targets: min_targets as u32,
            proxy_zones,
        }
    }
}
