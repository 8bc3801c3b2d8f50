//! One `[[target_groups]]` element: algorithm, stickiness, delays, timeouts and retries; its
//! health check and outlier ejection are in [`super::health`], its source in [`super::sources`].

use std::time::Duration;

use super::values::secs;
use super::Checker;
use crate::model::*;
use crate::raw::*;

/// Algorithm names accepted in `target_groups.algorithm`.
const ALGORITHMS: [&str; 4] = [
    "round_robin",
    "least_outstanding_requests",
    "weighted_random",
    "consistent_hash",
];

impl Checker<'_> {
    /// One `[[target_groups]]` element at `p` (its name's uniqueness is checked by the caller).
    pub(super) fn target_group(&mut self, p: &str, t: &RawTargetGroup) -> Option<TargetGroup> {
        let name = self
            .required(&t.name, &format!("{p}.name"))
            .map(str::to_owned);

        let hash_on = match &t.hash_on {
            None => None,
            Some(h) => {
                let hp = format!("{p}.hash_on");
                let mut found = Vec::new();
                if let Some(header) = &h.header {
                    if let Some(n) = self.header_name(header, &format!("{hp}.header")) {
                        found.push(HashOn::Header(n));
                    }
                }
                if let Some(cookie) = &h.cookie {
                    if cookie.trim().is_empty() {
                        self.error(&format!("{hp}.cookie"), "must not be empty");
                    } else {
                        found.push(HashOn::Cookie(cookie.trim().to_owned()));
                    }
                }
                if h.source_ip == Some(true) {
                    found.push(HashOn::SourceIp);
                }
                let count = usize::from(h.header.is_some())
                    + usize::from(h.cookie.is_some())
                    + usize::from(h.source_ip == Some(true));
                if count != 1 {
                    self.error(&hp, "set exactly one of: header, cookie, source_ip = true");
                    None
                } else {
                    found.pop()
                }
            }
        };
        let ap = format!("{p}.algorithm");
        let algorithm = match t.algorithm.as_deref() {
            None | Some("round_robin") => Some(Algorithm::RoundRobin),
            Some("least_outstanding_requests") => Some(Algorithm::LeastOutstandingRequests),
            Some("weighted_random") => Some(Algorithm::WeightedRandom),
            Some("consistent_hash") => {
                if t.hash_on.is_none() {
                    self.error(
                        &format!("{p}.hash_on"),
                        "required with algorithm = \"consistent_hash\"",
                    );
                }
                hash_on.clone().map(Algorithm::ConsistentHash)
            }
            Some(other) => {
                self.error(
                    &ap,
                    format!(
                        "unknown algorithm {other:?} (expected one of: {})",
                        ALGORITHMS.join(", ")
                    ),
                );
                None
            }
        };
        if t.hash_on.is_some()
            && !matches!(t.algorithm.as_deref(), Some("consistent_hash"))
            && algorithm.is_some()
        {
            self.error(
                &format!("{p}.hash_on"),
                "only allowed with algorithm = \"consistent_hash\"",
            );
        }

        let stickiness = t
            .stickiness
            .as_ref()
            .and_then(|s| self.target_stickiness(s, &format!("{p}.stickiness")));

        let deregistration_delay = self.duration_in(
            &t.deregistration_delay,
            &format!("{p}.deregistration_delay"),
            secs(300),
            Duration::ZERO,
            secs(3600),
            "at most 3600s",
        );
        let ssp = format!("{p}.slow_start");
        let slow_start = self.duration(&t.slow_start, &ssp, Duration::ZERO);
        if !slow_start.is_zero() && (slow_start < secs(30) || slow_start > secs(900)) {
            self.error(&ssp, "must be 0s (off) or between 30s and 900s");
        }

        let no_timeouts = RawTimeouts::default();
        let to = t.timeouts.as_ref().unwrap_or(&no_timeouts);
        let tp = format!("{p}.timeouts");
        let timeouts = Timeouts {
            connect: self.positive_duration(&to.connect, &format!("{tp}.connect"), secs(5)),
            read: self.positive_duration(&to.read, &format!("{tp}.read"), secs(60)),
            total: to
                .total
                .is_some()
                .then(|| self.positive_duration(&to.total, &format!("{tp}.total"), secs(1))),
            idle: self.positive_duration(&to.idle, &format!("{tp}.idle"), secs(60)),
        };

        let rp = format!("{p}.retry");
        let r = t.retry.as_ref();
        let retry = RetryPolicy {
            attempts: self.int_in(
                r.and_then(|x| x.attempts),
                &format!("{rp}.attempts"),
                2,
                0,
                10,
            ) as u32,
            budget_percent: self.int_in(
                r.and_then(|x| x.budget_percent),
                &format!("{rp}.budget_percent"),
                20,
                0,
                100,
            ) as u32,
            min_per_second: self.int_in(
                r.and_then(|x| x.min_per_second),
                &format!("{rp}.min_per_second"),
                10,
                0,
                100_000,
            ) as u32,
        };

        let (tls, protocol_version) = self.target_protocol(p, t);
        let health_check = self.health_check(
            &format!("{p}.health_check"),
            t.health_check
                .as_ref()
                .unwrap_or(&RawHealthCheck::default()),
            tls.is_some(),
            protocol_version,
        );
        let outlier = self.outlier(
            &format!("{p}.outlier"),
            t.outlier.as_ref().unwrap_or(&RawOutlier::default()),
        );
        let source = self.source(&format!("{p}.source"), t.source.as_ref());
        let zone_aware = self.zone_aware(&format!("{p}.zone_aware"), t.zone_aware.as_ref());

        Some(TargetGroup {
            name: name?,
            algorithm: algorithm?,
            stickiness,
            deregistration_delay,
            slow_start,
            timeouts,
            retry,
            health_check,
            outlier,
            source: source?,
            proxy_protocol_v2: t.proxy_protocol_v2.unwrap_or(false),
            tls,
            protocol_version,
            zone_aware,
        })
    }

    /// A tcp or tls listener relays bytes: the groups it forwards to cannot speak HTTP/2, gRPC
    /// or TLS to their targets. Errors name the group's key (`raw` gives its index).
    pub(super) fn l4_forwards_to_http_groups(
        &mut self,
        config: &Config,
        raw: &[Option<RawTargetGroup>],
    ) {
        for (li, l) in config.listeners.iter().enumerate() {
            if !l.protocol.is_l4() {
                continue;
            }
            let actions =
                std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action));
            for a in actions {
                let Action::Forward(groups) = a else { continue };
                for wg in groups {
                    let Some(tg) = config.target_group(&wg.target_group) else {
                        continue;
                    };
                    let Some(i) = raw.iter().position(|r| {
                        r.as_ref().and_then(|r| r.name.as_deref()) == Some(tg.name.as_str())
                    }) else {
                        continue;
                    };
                    if tg.protocol_version != ProtocolVersion::Http1 {
                        self.error(
                            &format!("target_groups[{i}].protocol_version"),
                            format!(
                                "must be \"http1\": tcp/tls listener listeners[{li}] ({}) forwards to this group",
                                l.name
                            ),
                        );
                    }
                    if tg.tls.is_some() {
                        self.error(
                            &format!("target_groups[{i}].protocol"),
                            format!(
                                "must be \"http\": tcp/tls listener listeners[{li}] ({}) forwards to this group",
                                l.name
                            ),
                        );
                    }
                }
            }
        }
    }

    /// `protocol`, `protocol_version` and `tls` of the group at `p`: the TLS settings (`Some`
    /// for https groups) and the HTTP version.
    fn target_protocol(
        &mut self,
        p: &str,
        t: &RawTargetGroup,
    ) -> (Option<TargetGroupTls>, ProtocolVersion) {
        let version = match t.protocol_version.as_deref() {
            None | Some("http1") => ProtocolVersion::Http1,
            Some("http2") => ProtocolVersion::Http2,
            Some("grpc") => ProtocolVersion::Grpc,
            Some(other) => {
                self.error(
                    &format!("{p}.protocol_version"),
                    format!(
                        "unknown protocol_version {other:?} (expected \"http1\", \"http2\" or \"grpc\")"
                    ),
                );
                ProtocolVersion::Http1
            }
        };
        let https = match t.protocol.as_deref() {
            None | Some("http") => false,
            Some("https") => true,
            Some(other) => {
                self.error(
                    &format!("{p}.protocol"),
                    format!("unknown protocol {other:?} (expected \"http\" or \"https\")"),
                );
                false
            }
        };
        let tp = format!("{p}.tls");
        let tls = match (&t.tls, https) {
            (Some(_), false) => {
                self.error(&tp, "only allowed with protocol = \"https\"");
                None
            }
            (None, false) => None,
            (None, true) => Some(TargetGroupTls {
                verify: true,
                ..TargetGroupTls::default()
            }),
            (Some(raw), true) => Some(self.target_tls(&tp, raw)),
        };
        (tls, version)
    }

    /// `[target_groups.tls]` at `p`: the server name must be a DNS name or an IP address, the
    /// CA bundle a readable PEM file holding at least one certificate.
    fn target_tls(&mut self, p: &str, raw: &RawTargetTls) -> TargetGroupTls {
        let server_name = raw.server_name.as_deref().map(str::trim).and_then(|n| {
            let ok = !n.is_empty()
                && n.len() <= 253
                && (n.parse::<std::net::IpAddr>().is_ok()
                    || n.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }));
            if !ok {
                self.error(
                    &format!("{p}.server_name"),
                    format!("invalid server name {n:?} (expected a DNS name or an IP address)"),
                );
            }
            ok.then(|| n.to_ascii_lowercase())
        });
        let ca_bundle = raw.ca_bundle.as_ref().and_then(|file| {
            let cp = format!("{p}.ca_bundle");
            let path = self.existing_file(&Some(file.clone()), &cp)?;
            match std::fs::read(&path) {
                Err(e) => {
                    self.error(&cp, format!("cannot read {}: {e}", path.display()));
                    None
                }
                Ok(pem) if !contains(&pem, b"-----BEGIN CERTIFICATE-----") => {
                    self.error(
                        &cp,
                        format!(
                            "{} is not a PEM certificate bundle (no BEGIN CERTIFICATE block)",
                            path.display()
                        ),
                    );
                    None
                }
                Ok(pem) => Some(CaBundle { path, pem }),
            }
        });
        let verify = raw.verify.unwrap_or(true);
        if !verify && ca_bundle.is_some() {
            self.error(
                &format!("{p}.ca_bundle"),
                "has no effect with verify = false; remove one of them",
            );
        }
        TargetGroupTls {
            server_name,
            ca_bundle,
            verify,
        }
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
