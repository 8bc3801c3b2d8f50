//! `[proxy]`, `[log]` and `[admin]`, and the `proxy_protocol` table that `[admin]` shares with
//! listeners.

use std::time::Duration;

use super::values::secs;
use super::Checker;
use crate::model::{AdminSettings, LogFormat, LogSettings, ProxyProtocolIn, ProxySettings};
use crate::raw::{RawAdmin, RawLog, RawProxy, RawProxyProtocol};

impl Checker<'_> {
    /// `[proxy]`, defaults for what is not written.
    pub(super) fn proxy(&mut self, p: &RawProxy) -> ProxySettings {
        let threads = self.int_in(p.threads, "proxy.threads", 1, 1, 64) as usize;
        let grace_period = self.duration(&p.grace_period, "proxy.grace_period", secs(30));
        let upstream_keepalive_pool = self.int_in(
            p.upstream_keepalive_pool,
            "proxy.upstream_keepalive_pool",
            128,
            1,
            1_000_000,
        ) as usize;
        let trusted_proxies = match &p.trusted_proxies {
            None => Vec::new(),
            Some(list) => self.cidrs(list, "proxy.trusted_proxies"),
        };
        let request_id_header = match &p.request_id_header {
            None => "x-request-id".to_owned(),
            Some(h) => self
                .header_name(h, "proxy.request_id_header")
                .unwrap_or_default(),
        };
        let watch_interval =
            self.positive_duration(&p.watch_interval, "proxy.watch_interval", secs(1));
        let certificate_poll_interval = self.duration_in(
            &p.certificate_poll_interval,
            "proxy.certificate_poll_interval",
            secs(5),
            Duration::from_millis(100),
            secs(3600),
            "between 100ms and 1h",
        );
        let stickiness_key = self.stickiness_key(p);
        let availability_zone = p
            .availability_zone
            .as_deref()
            .and_then(|z| self.zone_name(z, "proxy.availability_zone"));
        ProxySettings {
            availability_zone,
            certificate_poll_interval,
            stickiness_key,
            trace_id: p.trace_id.unwrap_or(true),
            threads,
            grace_period,
            upstream_keepalive_pool,
            trusted_proxies,
            request_id_header,
            watch_interval,
        }
    }

    /// `[admin]`; its `proxy_protocol` may not list VPC endpoints.
    pub(super) fn admin(&mut self, a: &RawAdmin) -> AdminSettings {
        AdminSettings {
            bind: self.socket_addr(&a.bind, "admin.bind", ([127, 0, 0, 1], 9901)),
            proxy_protocol: a.proxy_protocol.as_ref().map(|pp| {
                if pp.allowed_vpc_endpoints.is_some() {
                    self.error(
                        "admin.proxy_protocol.allowed_vpc_endpoints",
                        "not supported on the admin port (health checks carry no VPC endpoint ID); trusted_cidrs alone decides",
                    );
                }
                self.proxy_protocol_in(pp, "admin.proxy_protocol")
            }),
        }
    }

    /// `[log]`: format `text` or `json`, and a non-empty filter.
    pub(super) fn log(&mut self, l: &RawLog) -> LogSettings {
        let format = match l.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.error(
                    "log.format",
                    format!("unknown log format {other:?} (expected \"text\" or \"json\")"),
                );
                LogFormat::Text
            }
        };
        let level = match &l.level {
            None => "info".to_owned(),
            Some(s) if s.trim().is_empty() => {
                self.error("log.level", "must not be empty");
                String::new()
            }
            Some(s) => s.trim().to_owned(),
        };
        LogSettings { format, level }
    }

    /// Checks a `proxy_protocol` table at path `table_path` (`listeners[i].proxy_protocol` or
    /// `admin.proxy_protocol`).
    pub(super) fn proxy_protocol_in(
        &mut self,
        pp: &RawProxyProtocol,
        table_path: &str,
    ) -> ProxyProtocolIn {
        let trusted_cidrs = match &pp.trusted_cidrs {
            None => {
                self.error(
                    &format!("{table_path}.trusted_cidrs"),
                    "required: the peers (load balancers) allowed to send PROXY headers",
                );
                Vec::new()
            }
            Some(list) => self.cidrs(list, &format!("{table_path}.trusted_cidrs")),
        };
        let header_timeout = self.duration_in(
            &pp.header_timeout,
            &format!("{table_path}.header_timeout"),
            secs(3),
            Duration::from_millis(10),
            secs(60),
            "between 10ms and 60s",
        );
        let allowed_vpc_endpoints = match &pp.allowed_vpc_endpoints {
            Some(list) => self.vpce_ids(list, &format!("{table_path}.allowed_vpc_endpoints")),
            None => Vec::new(),
        };
        ProxyProtocolIn {
            trusted_cidrs,
            header_timeout,
            allowed_vpc_endpoints,
        }
    }

    /// VPC endpoint IDs (`vpce-` followed by letters and digits).
    pub(super) fn vpce_ids(&mut self, list: &[String], p: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, id) in list.iter().enumerate() {
            let ok = id
                .strip_prefix("vpce-")
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()));
            if ok {
                out.push(id.clone());
            } else {
                self.error(
                    &format!("{p}[{i}]"),
                    format!("invalid VPC endpoint ID {id:?} (expected e.g. \"vpce-0abc123\")"),
                );
            }
        }
        out
    }
}
