//! Rule and default actions: forward, fixed response and redirect.

use std::collections::HashSet;

use super::Checker;
use crate::model::{Action, FixedResponse, Forward, Redirect, WeightedGroup};
use crate::raw::RawAction;

impl Checker<'_> {
    /// A rule or default action.
    pub(super) fn action(
        &mut self,
        p: &str,
        a: &RawAction,
        groups: &HashSet<String>,
    ) -> Option<Action> {
        let mut kinds = Vec::new();
        if a.forward.is_some() {
            kinds.push("forward");
        }
        if a.fixed_response.is_some() {
            kinds.push("fixed_response");
        }
        if a.redirect.is_some() {
            kinds.push("redirect");
        }
        if a.stickiness.is_some() && a.forward.is_none() {
            self.error(
                &format!("{p}.stickiness"),
                "only with forward: group-level stickiness keeps a client on one of its groups",
            );
        }
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                "an action needs exactly one of: forward, fixed_response, redirect".to_owned()
            } else {
                format!(
                    "an action has exactly one kind, found {}",
                    kinds.join(" and ")
                )
            };
            self.error(p, msg);
            return None;
        }
        if let Some(list) = &a.forward {
            let fp = format!("{p}.forward");
            if list.is_empty() {
                self.error(&fp, "must list at least one target group");
                return None;
            }
            if list.len() > 5 {
                self.error(&fp, "at most 5 target groups (as ALB)");
                return None;
            }
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            let mut ok = true;
            for (i, g) in list.iter().enumerate() {
                let gp = format!("{fp}[{i}]");
                let weight = match g.weight {
                    None => 1,
                    Some(w) if (0..=999).contains(&w) => w as u32,
                    Some(_) => {
                        self.error(&format!("{gp}.weight"), "must be between 0 and 999");
                        ok = false;
                        0
                    }
                };
                let tgp = format!("{gp}.target_group");
                let Some(name) = self.required(&g.target_group, &tgp) else {
                    ok = false;
                    continue;
                };
                if !groups.contains(name) {
                    self.error(&tgp, format!("unknown target group {name:?}"));
                    ok = false;
                } else if !seen.insert(name.to_owned()) {
                    self.error(&tgp, format!("target group {name:?} is listed twice"));
                    ok = false;
                }
                out.push(WeightedGroup {
                    target_group: name.to_owned(),
                    weight,
                });
            }
            if ok && out.iter().all(|g| g.weight == 0) {
                self.error(&fp, "weights must not all be 0");
                ok = false;
            }
            let stickiness = a
                .stickiness
                .as_ref()
                .and_then(|s| self.forward_stickiness(s, &format!("{p}.stickiness")));
            return ok.then_some(Action::Forward(Forward {
                groups: out,
                stickiness,
            }));
        }
        if let Some(f) = &a.fixed_response {
            let fp = format!("{p}.fixed_response");
            let status = match f.status {
                None => {
                    self.error(&format!("{fp}.status"), "required");
                    None
                }
                Some(s) if (200..=599).contains(&s) => Some(s as u16),
                Some(_) => {
                    self.error(&format!("{fp}.status"), "must be between 200 and 599");
                    None
                }
            };
            let body = f.body.clone().unwrap_or_default();
            if body.len() > 1024 {
                self.error(
                    &format!("{fp}.body"),
                    format!("must be at most 1024 bytes (is {})", body.len()),
                );
            }
            let content_type = f
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".to_owned());
            if http::HeaderValue::from_str(&content_type).is_err() || content_type.is_empty() {
                self.error(
                    &format!("{fp}.content_type"),
                    format!("invalid content type {content_type:?}"),
                );
            }
            return Some(Action::FixedResponse(FixedResponse {
                status: status?,
                content_type,
                body,
            }));
        }
        if let Some(r) = &a.redirect {
            let rp = format!("{p}.redirect");
            let status = match r.status {
                None => 301,
                Some(s @ (301 | 302 | 303 | 307 | 308)) => s as u16,
                Some(_) => {
                    self.error(
                        &format!("{rp}.status"),
                        "must be one of 301, 302, 303, 307, 308",
                    );
                    301
                }
            };
            let protocol = match r.protocol.as_deref() {
                None => None,
                Some(s @ ("http" | "https")) => Some(s.to_owned()),
                Some(other) => {
                    self.error(
                        &format!("{rp}.protocol"),
                        format!("unknown protocol {other:?} (expected \"http\" or \"https\")"),
                    );
                    None
                }
            };
            let port = self.port(r.port, &format!("{rp}.port"));
            if let Some(path) = &r.path {
                self.absolute_path(path, &format!("{rp}.path"));
            }
            if let Some(host) = &r.host {
                if host.trim().is_empty() {
                    self.error(&format!("{rp}.host"), "must not be empty");
                }
            }
            if r.protocol.is_none()
                && r.host.is_none()
                && r.port.is_none()
                && r.path.is_none()
                && r.query.is_none()
            {
                self.error(
                    &rp,
                    "a redirect must change at least one of protocol, host, port, path, query",
                );
            }
            return Some(Action::Redirect(Redirect {
                status,
                protocol,
                host: r.host.clone(),
                port,
                path: r.path.clone(),
                query: r
                    .query
                    .clone()
                    .map(|q| q.trim_start_matches('?').to_owned()),
            }));
        }
        None
    }
}
