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

        let stickiness = match &t.stickiness {
            None => None,
            Some(s) => {
                let sp = format!("{p}.stickiness");
                let duration = self.duration_in(
                    &s.duration,
                    &format!("{sp}.duration"),
                    secs(86_400),
                    secs(1),
                    secs(7 * 86_400),
                    "between 1s and 7d",
                );
                let cookie_name = s
                    .cookie_name
                    .clone()
                    .unwrap_or_else(|| "BERTHSTICKY".to_owned());
                let valid = !cookie_name.is_empty()
                    && cookie_name.bytes().all(|b| {
                        b.is_ascii_graphic()
                            && !matches!(
                                b,
                                b'(' | b')'
                                    | b'<'
                                    | b'>'
                                    | b'@'
                                    | b','
                                    | b';'
                                    | b':'
                                    | b'\\'
                                    | b'"'
                                    | b'/'
                                    | b'['
                                    | b']'
                                    | b'?'
                                    | b'='
                                    | b'{'
                                    | b'}'
                            )
                    });
                if !valid {
                    self.error(
                        &format!("{sp}.cookie_name"),
                        format!("invalid cookie name {cookie_name:?}"),
                    );
                }
                s.enabled.unwrap_or(true).then_some(Stickiness {
                    duration,
                    cookie_name,
                })
            }
        };

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

        let health_check = self.health_check(
            &format!("{p}.health_check"),
            t.health_check
                .as_ref()
                .unwrap_or(&RawHealthCheck::default()),
        );
        let outlier = self.outlier(
            &format!("{p}.outlier"),
            t.outlier.as_ref().unwrap_or(&RawOutlier::default()),
        );
        let source = self.source(&format!("{p}.source"), t.source.as_ref());

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
        })
    }
}
