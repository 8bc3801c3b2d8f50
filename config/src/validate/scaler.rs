//! `[scaler]` and its `[[scaler.services]]`; the policies of a service are in
//! [`super::scaling_policies`].

use std::collections::{HashMap, HashSet};

use super::values::secs;
use super::Checker;
use crate::model::{Aggregate, ScaledService, ScalerSettings};
use crate::raw::{RawScaledService, RawScaler};

impl Checker<'_> {
    /// `[scaler]`; `groups` holds every target group name written.
    pub(super) fn scaler(&mut self, s: &RawScaler, groups: &HashSet<String>) -> ScalerSettings {
        let metrics_url = match &s.metrics_url {
            None => "http://127.0.0.1:9901/metrics".to_owned(),
            Some(u) => {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && u.parse::<http::Uri>().is_ok_and(|uri| uri.host().is_some());
                if !ok {
                    self.error(
                        "scaler.metrics_url",
                        format!("invalid URL {u:?} (expected http://host:port/path)"),
                    );
                }
                u.clone()
            }
        };
        let dry_run = s.dry_run.unwrap_or(true);
        let namespace = match &s.namespace {
            None => "berth".to_owned(),
            Some(n) => {
                let n = n.trim();
                if n.is_empty() || n.len() > 255 || n.starts_with("AWS/") || !n.is_ascii() {
                    self.error(
                        "scaler.namespace",
                        "must be 1..=255 ASCII characters and not start with \"AWS/\"",
                    );
                }
                n.to_owned()
            }
        };
        let replica = match &s.replica {
            None => default_replica(),
            Some(r) => {
                let r = r.trim();
                if r.is_empty() || r.len() > 1024 {
                    self.error("scaler.replica", "must be 1..=1024 characters");
                }
                r.to_owned()
            }
        };
        let storage_resolution = match s.storage_resolution {
            None => 60,
            Some(r @ (1 | 60)) => r as u32,
            Some(_) => {
                self.error("scaler.storage_resolution", "must be 1 or 60 (seconds)");
                60
            }
        };
        let publish = s.publish.unwrap_or(false);
        let aggregate = match s.aggregate.as_deref() {
            None | Some("local") => Aggregate::Local,
            Some("cloudwatch") => {
                if !publish {
                    self.error(
                        "scaler.aggregate",
                        "\"cloudwatch\" needs publish = true (every replica publishes its figures)",
                    );
                }
                Aggregate::CloudWatch
            }
            Some(other) => {
                self.error(
                    "scaler.aggregate",
                    format!("unknown aggregate {other:?} (expected \"local\" or \"cloudwatch\")"),
                );
                Aggregate::Local
            }
        };
        let publish_buffer = self.int_in(
            s.publish_buffer,
            "scaler.publish_buffer",
            10_000,
            1,
            10_000_000,
        ) as usize;
        let aggregate_window = self.duration_in(
            &s.aggregate_window,
            "scaler.aggregate_window",
            secs(60),
            secs(10),
            secs(3600),
            "between 10s and 3600s",
        );
        let mut services = Vec::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (i, raw) in s.services.iter().enumerate() {
            let p = format!("scaler.services[{i}]");
            if let Some(svc) = self.scaled_service(&p, raw, dry_run, groups) {
                let key = (svc.cluster.clone(), svc.service.clone());
                if let Some(first) = seen.get(&key) {
                    self.error(
                        &format!("{p}.service"),
                        format!(
                            "service {:?} of cluster {:?} is already scaled by scaler.services[{first}]",
                            svc.service, svc.cluster
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
                services.push(svc);
            }
        }
        ScalerSettings {
            metrics_url,
            interval: self.positive_duration(&s.interval, "scaler.interval", secs(5)),
            dry_run,
            admin_bind: self.socket_addr(
                &s.admin_bind,
                "scaler.admin_bind",
                ([127, 0, 0, 1], 9902),
            ),
            namespace,
            replica,
            storage_resolution,
            aggregate,
            publish,
            publish_buffer,
            aggregate_window,
            services,
        }
    }

    /// A capacity: an integer in 0..=100000.
    pub(super) fn capacity(&mut self, v: Option<i64>, path: &str) -> Option<u32> {
        self.optional_int_in(v, path, 0, 100_000).map(|x| x as u32)
    }

    /// Records an error at `{p}.min_capacity` when both capacities are known and the minimum
    /// exceeds the maximum.
    pub(super) fn min_not_above_max(&mut self, p: &str, min: Option<u32>, max: Option<u32>) {
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                self.error(
                    &format!("{p}.min_capacity"),
                    format!("min_capacity {lo} is greater than max_capacity {hi}"),
                );
            }
        }
    }

    /// One `[[scaler.services]]` element.
    pub(super) fn scaled_service(
        &mut self,
        p: &str,
        s: &RawScaledService,
        dry_run: bool,
        groups: &HashSet<String>,
    ) -> Option<ScaledService> {
        let cluster = self
            .required(&s.cluster, &format!("{p}.cluster"))
            .map(str::to_owned);
        let service = self
            .required(&s.service, &format!("{p}.service"))
            .map(str::to_owned);
        let target_group = self
            .required(&s.target_group, &format!("{p}.target_group"))
            .map(str::to_owned);
        if let Some(tg) = &target_group {
            if !groups.contains(tg) {
                self.error(
                    &format!("{p}.target_group"),
                    format!("unknown target group {tg:?} (not in [[target_groups]])"),
                );
            }
        }
        let min = self.capacity(s.min_capacity, &format!("{p}.min_capacity"));
        let max = self.capacity(s.max_capacity, &format!("{p}.max_capacity"));
        if s.min_capacity.is_none() {
            self.error(&format!("{p}.min_capacity"), "required");
        }
        if s.max_capacity.is_none() {
            self.error(&format!("{p}.max_capacity"), "required");
        }
        self.min_not_above_max(p, min, max);
        let dry_run_count = self.capacity(s.dry_run_count, &format!("{p}.dry_run_count"));
        if dry_run_count.is_some() && !dry_run {
            self.error(
                &format!("{p}.dry_run_count"),
                "only allowed with scaler.dry_run = true (a live scaler reads the count from ECS)",
            );
        }

        let mut names = HashSet::new();
        let target_tracking = self.policies(
            p,
            "target_tracking",
            &s.target_tracking,
            &mut names,
            |t| &t.name,
            Self::target_tracking,
        );
        let step = self.policies(
            p,
            "step",
            &s.step,
            &mut names,
            |t| &t.name,
            Self::step_policy,
        );
        let scheduled = self.policies(
            p,
            "scheduled",
            &s.scheduled,
            &mut names,
            |a| &a.name,
            Self::scheduled_action,
        );

        Some(ScaledService {
            cluster: cluster?,
            service: service?,
            target_group: target_group?,
            min_capacity: min?,
            max_capacity: max?,
            dry_run_count,
            suspend_scale_in: s.suspend_scale_in.unwrap_or(false),
            suspend_scale_out: s.suspend_scale_out.unwrap_or(false),
            suspend_scheduled: s.suspend_scheduled.unwrap_or(false),
            target_tracking,
            step,
            scheduled,
        })
    }
}

/// The default replica name: `$HOSTNAME`, else the kernel's host name, else `"berth"`.
fn default_replica() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".to_owned())
}
