//! One `[[listeners]]` element: protocol, certificates, timeouts and its rules.

use std::collections::{HashMap, HashSet};

use super::values::secs;
use super::Checker;
use crate::model::*;
use crate::raw::*;

impl Checker<'_> {
    /// One `[[listeners]]` element at `p`; `groups` holds every target group name written.
    pub(super) fn listener(
        &mut self,
        p: &str,
        l: &RawListener,
        groups: &HashSet<String>,
    ) -> Option<Listener> {
        let name = self
            .required(&l.name, &format!("{p}.name"))
            .map(str::to_owned);
        let bind_path = format!("{p}.bind");
        let bind = self
            .required(&l.bind, &bind_path)
            .and_then(|b| self.parse_addr(b, &bind_path));
        let protocol = match l.protocol.as_deref() {
            None | Some("http") => Some(ListenerProtocol::Http),
            Some("https") => Some(ListenerProtocol::Https),
            Some("tcp") => Some(ListenerProtocol::Tcp),
            Some("tls") => Some(ListenerProtocol::Tls),
            Some(other) => {
                self.error(
                    &format!("{p}.protocol"),
                    format!(
                        "unknown protocol {other:?} (expected \"http\", \"https\", \"tcp\" or \"tls\")"
                    ),
                );
                None
            }
        };
        let mut certificates = Vec::new();
        match protocol {
            Some(proto) if proto.terminates_tls() && l.certificates.is_empty() => self.error(
                &format!("{p}.certificates"),
                "an https or tls listener needs at least one certificate",
            ),
            Some(proto) if !proto.terminates_tls() && !l.certificates.is_empty() => self.error(
                &format!("{p}.certificates"),
                "certificates are only allowed with protocol = \"https\" or \"tls\"",
            ),
            _ => {}
        }
        for (i, c) in l.certificates.iter().enumerate() {
            let cp = format!("{p}.certificates[{i}]");
            let cert = self.existing_file(&c.cert, &format!("{cp}.cert"));
            let key = self.existing_file(&c.key, &format!("{cp}.key"));
            let mut server_names = Vec::new();
            for (j, n) in c.server_names.iter().enumerate() {
                let n = n.trim().to_ascii_lowercase();
                let valid = !n.is_empty()
                    && n.strip_prefix("*.")
                        .unwrap_or(&n)
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'));
                if valid {
                    server_names.push(n);
                } else {
                    self.error(
                        &format!("{cp}.server_names[{j}]"),
                        format!(
                            "invalid server name {:?} (expected a DNS name, optionally starting with \"*.\")",
                            c.server_names[j]
                        ),
                    );
                }
            }
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(Certificate {
                    cert,
                    key,
                    server_names,
                });
            }
        }
        let mtls = match &l.mtls {
            None => Mtls::Off,
            Some(m) => self.mtls(&format!("{p}.mtls"), m, protocol),
        };
        let http2 = l.http2.unwrap_or(protocol == Some(ListenerProtocol::Https));
        let header_timeout =
            self.positive_duration(&l.header_timeout, &format!("{p}.header_timeout"), secs(60));
        let l4 = protocol.is_some_and(ListenerProtocol::is_l4);
        // ALB's idle timeout is 60 s; NLB's TCP idle timeout is 350 s.
        let idle_default = if l4 { secs(350) } else { secs(60) };
        let idle_timeout =
            self.positive_duration(&l.idle_timeout, &format!("{p}.idle_timeout"), idle_default);
        let connect_timeout = self.positive_duration(
            &l.connect_timeout,
            &format!("{p}.connect_timeout"),
            secs(10),
        );
        let max_connections = self.int_in(
            l.max_connections,
            &format!("{p}.max_connections"),
            10_000,
            1,
            1_000_000,
        ) as usize;
        let proxy_protocol = l
            .proxy_protocol
            .as_ref()
            .map(|pp| self.proxy_protocol_in(pp, &format!("{p}.proxy_protocol")));
        if protocol == Some(ListenerProtocol::Https) && proxy_protocol.is_some() {
            self.error(
                &format!("{p}.proxy_protocol"),
                "not supported on https listeners (the PROXY header precedes TLS); use protocol = \"tls\" for TLS with PROXY headers, or terminate TLS in front",
            );
        }
        if l4 && !l.rules.is_empty() {
            self.error(
                &format!("{p}.rules"),
                "tcp and tls listeners have no rules; use default_action with forward",
            );
        }
        let max_header_bytes = self.int_in(
            l.max_header_bytes,
            &format!("{p}.max_header_bytes"),
            65536,
            1024,
            1_048_576,
        ) as usize;

        let mut rules = Vec::new();
        let mut priorities: HashMap<i64, usize> = HashMap::new();
        for (i, r) in l.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{i}]");
            let priority = match r.priority {
                None => {
                    self.error(&format!("{rp}.priority"), "required");
                    None
                }
                Some(n) if !(1..=50_000).contains(&n) => {
                    self.error(&format!("{rp}.priority"), "must be between 1 and 50000");
                    None
                }
                Some(n) => {
                    if let Some(first) = priorities.get(&n) {
                        self.error(
                            &format!("{rp}.priority"),
                            format!("duplicate priority {n} (also used by rules[{first}])"),
                        );
                    } else {
                        priorities.insert(n, i);
                    }
                    Some(n as u32)
                }
            };
            let mut conditions = Vec::new();
            for (j, c) in r.conditions.iter().enumerate() {
                if let Some(c) = self.condition(&format!("{rp}.conditions[{j}]"), c) {
                    conditions.push(c);
                }
            }
            let action = match &r.action {
                None => {
                    self.error(&format!("{rp}.action"), "required");
                    None
                }
                Some(a) => self.action(&format!("{rp}.action"), a, groups),
            };
            let transforms = self.transforms(&rp, &r.transforms, action.as_ref());
            if let (Some(priority), Some(mut action)) = (priority, action) {
                super::stickiness::scope_forward(
                    &mut action,
                    name.as_deref().unwrap_or(""),
                    Some(priority),
                );
                rules.push(Rule {
                    priority,
                    conditions,
                    action,
                    transforms,
                });
            }
        }
        rules.sort_by_key(|r| r.priority);

        let default_action = match &l.default_action {
            None => {
                self.error(&format!("{p}.default_action"), "required");
                None
            }
            Some(a) => self.action(&format!("{p}.default_action"), a, groups),
        };
        let mut default_action = default_action;
        if let Some(a) = default_action.as_mut() {
            super::stickiness::scope_forward(a, name.as_deref().unwrap_or(""), None);
        }
        if l4
            && default_action
                .as_ref()
                .is_some_and(|a| !matches!(a, Action::Forward(_)))
        {
            self.error(
                &format!("{p}.default_action"),
                "tcp and tls listeners can only forward",
            );
        }
        if l4 && matches!(&default_action, Some(Action::Forward(f)) if f.stickiness.is_some()) {
            self.error(
                &format!("{p}.default_action.stickiness"),
                "group-level stickiness needs cookies: http and https listeners only",
            );
        }

        let response_headers = match &l.response_headers {
            None => ResponseHeaders::default(),
            Some(r) => self.response_headers(&format!("{p}.response_headers"), r, protocol),
        };

        Some(Listener {
            name: name?,
            bind: bind?,
            protocol: protocol?,
            certificates,
            mtls,
            http2,
            header_timeout,
            idle_timeout,
            max_header_bytes,
            proxy_protocol,
            connect_timeout,
            max_connections,
            rules,
            default_action: default_action?,
            response_headers,
        })
    }
}

impl Checker<'_> {
    /// `[listeners.mtls]` at `p`: `mode`, and for `verify` an existing `ca_bundle` and CRL files.
    fn mtls(&mut self, p: &str, m: &RawMtls, protocol: Option<ListenerProtocol>) -> Mtls {
        let mode = match m.mode.as_deref() {
            None => {
                self.error(
                    &format!("{p}.mode"),
                    "required (\"off\", \"verify\" or \"passthrough\")",
                );
                return Mtls::Off;
            }
            Some(mode @ ("off" | "verify" | "passthrough")) => mode,
            Some(other) => {
                self.error(
                    &format!("{p}.mode"),
                    format!(
                        "unknown mode {other:?} (expected \"off\", \"verify\" or \"passthrough\")"
                    ),
                );
                return Mtls::Off;
            }
        };
        if mode != "off" && protocol.is_some_and(|pr| pr != ListenerProtocol::Https) {
            self.error(p, "mutual TLS is only supported on https listeners");
        }
        if mode != "verify" {
            for (key, given) in [
                ("ca_bundle", m.ca_bundle.is_some()),
                ("crls", m.crls.is_some()),
            ] {
                if given {
                    self.error(
                        &format!("{p}.{key}"),
                        "only used with mode = \"verify\" (passthrough checks no CA)",
                    );
                }
            }
            return if mode == "off" {
                Mtls::Off
            } else {
                Mtls::Passthrough
            };
        }
        let ca_bundle = self.existing_file(&m.ca_bundle, &format!("{p}.ca_bundle"));
        let mut crls = Vec::new();
        for (i, c) in m.crls.iter().flatten().enumerate() {
            if let Some(f) = self.existing_file(&Some(c.clone()), &format!("{p}.crls[{i}]")) {
                crls.push(f);
            }
        }
        match ca_bundle {
            Some(ca_bundle) => Mtls::Verify { ca_bundle, crls },
            None => Mtls::Off,
        }
    }
}
