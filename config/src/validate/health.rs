//! A target group's active health check and passive outlier ejection.

use std::time::Duration;

use super::values::{parse_matcher, secs};
use super::Checker;
use crate::model::{HealthCheck, HealthProtocol, Matcher, Outlier, ProtocolVersion};
use crate::raw::{RawHealthCheck, RawOutlier};

impl Checker<'_> {
    /// `health_check` at `p`, ALB's defaults for what is not written; the default protocol
    /// follows the group's (`https` for https groups, `grpc` for grpc groups).
    pub(super) fn health_check(
        &mut self,
        p: &str,
        h: &RawHealthCheck,
        https: bool,
        version: ProtocolVersion,
    ) -> HealthCheck {
        let protocol = match h.protocol.as_deref() {
            None if version == ProtocolVersion::Grpc => HealthProtocol::Grpc,
            None if https => HealthProtocol::Https,
            None | Some("http") => HealthProtocol::Http,
            Some("https") => HealthProtocol::Https,
            Some("tcp") => HealthProtocol::Tcp,
            Some("grpc") => HealthProtocol::Grpc,
            Some(other) => {
                self.error(
                    &format!("{p}.protocol"),
                    format!(
                        "unknown protocol {other:?} (expected \"http\", \"https\", \"tcp\" or \"grpc\")"
                    ),
                );
                HealthProtocol::Http
            }
        };
        let grpc = protocol == HealthProtocol::Grpc;
        if grpc && !version.is_http2() {
            self.error(
                &format!("{p}.protocol"),
                "grpc health checks need protocol_version = \"grpc\" or \"http2\"",
            );
        }
        let grpc_service = h.grpc_service.clone().unwrap_or_default();
        if h.grpc_service.is_some() && !grpc {
            self.error(
                &format!("{p}.grpc_service"),
                "only allowed with protocol = \"grpc\"",
            );
        }
        let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
        self.absolute_path(&path, &format!("{p}.path"));
        let port = self.port(h.port, &format!("{p}.port"));
        let matcher = match (&h.matcher, grpc) {
            (None, false) => Matcher(vec![(200, 200)]),
            (None, true) => Matcher(vec![(12, 12)]),
            (Some(m), false) => parse_matcher(m).unwrap_or_else(|e| {
                self.error(&format!("{p}.matcher"), e);
                Matcher(vec![(200, 200)])
            }),
            (Some(m), true) => parse_grpc_matcher(m).unwrap_or_else(|e| {
                self.error(&format!("{p}.matcher"), e);
                Matcher(vec![(12, 12)])
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
            grpc_service,
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

/// Parses a gRPC health check matcher: codes `0..=99` as a code (`"12"`), a range (`"0-99"`)
/// or a comma-separated list of both (`"0,12"`).
fn parse_grpc_matcher(text: &str) -> Result<Matcher, String> {
    let bad = |why: String| format!("invalid gRPC matcher {text:?}: {why}");
    let code = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        let n: u16 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a gRPC code")))?;
        if n <= 99 {
            Ok(n)
        } else {
            Err(bad(format!("gRPC code {n} is outside 0..=99")))
        }
    };
    let mut ranges = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(bad("empty entry".to_owned()));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (code(lo)?, code(hi)?),
            None => {
                let n = code(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} is reversed")));
        }
        ranges.push((lo, hi));
    }
    Ok(Matcher(ranges))
}
