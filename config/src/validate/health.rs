//! A target group's active health check and passive outlier ejection.

use std::time::Duration;

use super::values::{parse_matcher, secs};
use super::Checker;
use crate::model::{HealthCheck, HealthProtocol, Matcher, Outlier};
use crate::raw::{RawHealthCheck, RawOutlier};

impl Checker<'_> {
    /// `health_check` at `p`, ALB's defaults for what is not written.
    pub(super) fn health_check(&mut self, p: &str, h: &RawHealthCheck) -> HealthCheck {
        let protocol = match h.protocol.as_deref() {
            None | Some("http") => HealthProtocol::Http,
            Some("tcp") => HealthProtocol::Tcp,
            Some(other) => {
                self.error(
                    &format!("{p}.protocol"),
                    format!("unknown protocol {other:?} (expected \"http\" or \"tcp\")"),
                );
                HealthProtocol::Http
            }
        };
        let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
        self.absolute_path(&path, &format!("{p}.path"));
        let port = self.port(h.port, &format!("{p}.port"));
        let matcher = match &h.matcher {
            None => Matcher(vec![(200, 200)]),
            Some(m) => parse_matcher(m).unwrap_or_else(|e| {
                self.error(&format!("{p}.matcher"), e);
                Matcher(vec![(200, 200)])
            }),
        };
        let ip = format!("{p}.interval");
        let errors_before = self.error_count();
        let interval = self.duration_in(
            &h.interval,
            &ip,
            secs(30),
            secs(1),
            secs(300),
            "between 1s and 300s",
        );
        let interval_ok = self.error_count() == errors_before;
        let tp = format!("{p}.timeout");
        let timeout = self.duration(&h.timeout, &tp, secs(5));
        if timeout < Duration::from_millis(100) {
            self.error(&tp, "must be at least 100ms");
        } else if interval_ok && timeout >= interval {
            self.error(
                &tp,
                format!(
                    "must be less than interval ({})",
                    humantime::format_duration(interval)
                ),
            );
        }
        HealthCheck {
            enabled: h.enabled.unwrap_or(true),
            protocol,
            path,
            host: h.host.clone(),
            port,
            matcher,
            interval,
            timeout,
            healthy_threshold: self.int_in(
                h.healthy_threshold,
                &format!("{p}.healthy_threshold"),
                5,
                2,
                10,
            ) as u32,
            unhealthy_threshold: self.int_in(
                h.unhealthy_threshold,
                &format!("{p}.unhealthy_threshold"),
                2,
                2,
                10,
            ) as u32,
        }
    }

    /// `outlier` at `p`; `max_ejection_time` may not be below `base_ejection_time`.
    pub(super) fn outlier(&mut self, p: &str, o: &RawOutlier) -> Outlier {
        let base_ejection_time = self.positive_duration(
            &o.base_ejection_time,
            &format!("{p}.base_ejection_time"),
            secs(30),
        );
        let mp = format!("{p}.max_ejection_time");
        let max_ejection_time = self.duration(&o.max_ejection_time, &mp, secs(300));
        if max_ejection_time < base_ejection_time {
            self.error(
                &mp,
                format!(
                    "must be at least base_ejection_time ({})",
                    humantime::format_duration(base_ejection_time)
                ),
            );
        }
        Outlier {
            enabled: o.enabled.unwrap_or(true),
            consecutive_5xx: self.int_in(
                o.consecutive_5xx,
                &format!("{p}.consecutive_5xx"),
                5,
                1,
                1000,
            ) as u32,
            consecutive_connect_failures: self.int_in(
                o.consecutive_connect_failures,
                &format!("{p}.consecutive_connect_failures"),
                3,
                1,
                1000,
            ) as u32,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: self.int_in(
                o.max_ejection_percent,
                &format!("{p}.max_ejection_percent"),
                50,
                0,
                100,
            ) as u32,
        }
    }
}
