//! Where a target group's targets come from: a static list, a watched file or ECS; and the
//! target lists of static sources and targets files.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::Checker;
use crate::model::{EcsSelector, EcsSource, PortRef, Source, TargetSpec};
use crate::raw::{RawPort, RawSource, RawTarget};

impl Checker<'_> {
    /// `source` at `p` (required): `kind` decides which other keys are allowed.
    pub(super) fn source(&mut self, p: &str, s: Option<&RawSource>) -> Option<Source> {
        let Some(s) = s else {
            self.error(
                p,
                "required (kind = \"static\" with targets, kind = \"file\" with path, or kind = \"ecs\")",
            );
            return None;
        };
        let kp = format!("{p}.kind");
        match s.kind.as_deref() {
            None => {
                self.error(&kp, "required (\"static\", \"file\" or \"ecs\")");
                None
            }
            Some("static") => {
                if s.path.is_some() {
                    self.error(&format!("{p}.path"), "only allowed with kind = \"file\"");
                }
                let tp = format!("{p}.targets");
                match &s.targets {
                    None => {
                        self.error(&tp, "required with kind = \"static\"");
                        None
                    }
                    Some(list) => Some(Source::Static(self.targets(list, &tp, true))),
                }
            }
            Some("file") => {
                if s.targets.is_some() {
                    self.error(
                        &format!("{p}.targets"),
                        "only allowed with kind = \"static\"",
                    );
                }
                let path = self.required(&s.path, &format!("{p}.path"))?;
                Some(Source::File(self.resolve(path)))
            }
            Some("ecs") => self.ecs_source(p, s).map(Source::Ecs),
            Some(other) => {
                self.error(
                    &kp,
                    format!(
                        "unknown source kind {other:?} (expected \"static\", \"file\" or \"ecs\")"
                    ),
                );
                None
            }
        }
    }

    /// `source` with `kind = "ecs"`.
    pub(super) fn ecs_source(&mut self, p: &str, s: &RawSource) -> Option<EcsSource> {
        for (key, set) in [("targets", s.targets.is_some()), ("path", s.path.is_some())] {
            if set {
                self.error(&format!("{p}.{key}"), "not allowed with kind = \"ecs\"");
            }
        }
        let cluster = self.required(&s.cluster, &format!("{p}.cluster"));
        let container = self.required(&s.container, &format!("{p}.container"));
        let selector = match (&s.service, &s.family) {
            (Some(svc), None) if !svc.trim().is_empty() => Some(EcsSelector::Service(svc.clone())),
            (None, Some(fam)) if !fam.trim().is_empty() => Some(EcsSelector::Family(fam.clone())),
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{p}.family"),
                    "set either service or family, not both",
                );
                None
            }
            (None, None) => {
                self.error(p, "kind = \"ecs\" needs service or family");
                None
            }
            _ => {
                self.error(p, "service / family must not be empty");
                None
            }
        };
        let pp = format!("{p}.port");
        let port = match &s.port {
            None => {
                self.error(
                    &pp,
                    "required (the container port, or its port mapping's name)",
                );
                None
            }
            Some(RawPort::Number(n)) if (1..=65535).contains(n) => Some(PortRef::Number(*n as u16)),
            Some(RawPort::Number(_)) => {
                self.error(&pp, "must be between 1 and 65535");
                None
            }
            Some(RawPort::Name(n)) if !n.trim().is_empty() => Some(PortRef::Name(n.clone())),
            Some(RawPort::Name(_)) => {
                self.error(&pp, "must not be empty");
                None
            }
        };
        let poll_interval = self.duration_in(
            &s.poll_interval,
            &format!("{p}.poll_interval"),
            Duration::from_millis(750),
            Duration::from_millis(100),
            Duration::from_secs(300),
            "between 100ms and 300s",
        );
        Some(EcsSource {
            cluster: cluster?.to_string(),
            selector: selector?,
            container: container?.to_string(),
            port: port?,
            poll_interval,
        })
    }

    /// A list of targets at `p` (`targets`); `non_empty` for static sources.
    pub(super) fn targets(
        &mut self,
        list: &[RawTarget],
        p: &str,
        non_empty: bool,
    ) -> Vec<TargetSpec> {
        if non_empty && list.is_empty() {
            self.error(p, "must list at least one target");
        }
        let mut out = Vec::new();
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, t) in list.iter().enumerate() {
            let tp = format!("{p}[{i}]");
            let ap = format!("{tp}.address");
            let address = self
                .required(&t.address, &ap)
                .and_then(|a| self.parse_addr(a, &ap));
            let weight = self.int_in(t.weight, &format!("{tp}.weight"), 1, 1, 1000) as u32;
            let zone = t
                .zone
                .as_deref()
                .and_then(|z| self.zone_name(z, &format!("{tp}.zone")));
            let Some(address) = address else { continue };
            if let Some(first) = seen.get(&address) {
                self.error(
                    &ap,
                    format!("duplicate target {address} (also at {p}[{first}])"),
                );
                continue;
            }
            seen.insert(address, i);
            out.push(TargetSpec {
                address,
                weight,
                zone,
            });
        }
        out
    }
}
