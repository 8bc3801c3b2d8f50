//! Rule conditions: host, path, header, query, method, source CIDR and VPC endpoint.

use super::values::{compile, escape_wildcard};
use super::Checker;
use crate::model::{Condition, Wildcard};
use crate::raw::RawCondition;

/// Condition kinds, in the order they are listed in messages.
const CONDITION_KINDS: [&str; 9] = [
    "host",
    "path_exact",
    "path_prefix",
    "path_glob",
    "header",
    "query",
    "method",
    "source_cidr",
    "vpc_endpoint",
];

impl Checker<'_> {
    /// One rule condition at `p`: exactly one kind, and `values` only with header or query.
    pub(super) fn condition(&mut self, p: &str, c: &RawCondition) -> Option<Condition> {
        let set = [
            c.host.is_some(),
            c.path_exact.is_some(),
            c.path_prefix.is_some(),
            c.path_glob.is_some(),
            c.header.is_some(),
            c.query.is_some(),
            c.method.is_some(),
            c.source_cidr.is_some(),
            c.vpc_endpoint.is_some(),
        ];
        let kinds: Vec<&str> = CONDITION_KINDS
            .iter()
            .zip(set)
            .filter(|(_, s)| *s)
            .map(|(k, _)| *k)
            .collect();
        if kinds.is_empty() && c.values.is_some() {
            self.error(
                &format!("{p}.values"),
                "only allowed with header or query conditions (add header = \"...\" or query = \"...\")",
            );
            return None;
        }
        if kinds.is_empty() {
            self.error(
                p,
                format!(
                    "a condition needs exactly one of: {}",
                    CONDITION_KINDS.join(", ")
                ),
            );
            return None;
        }
        if kinds.len() > 1 {
            self.error(
                p,
                format!(
                    "a condition has exactly one kind, found {} (use one condition per kind)",
                    kinds.join(" and ")
                ),
            );
            return None;
        }
        let with_values = c.header.is_some() || c.query.is_some();
        if c.values.is_some() && !with_values {
            self.error(
                &format!("{p}.values"),
                "only allowed with header or query conditions",
            );
            return None;
        }
        if let Some(list) = &c.host {
            return self
                .checked_list(list, &format!("{p}.host"), Self::host_patterns)
                .map(Condition::Host);
        }
        if let Some(list) = &c.path_exact {
            return self
                .paths(list, &format!("{p}.path_exact"))
                .map(Condition::PathExact);
        }
        if let Some(list) = &c.path_prefix {
            return self
                .paths(list, &format!("{p}.path_prefix"))
                .map(Condition::PathPrefix);
        }
        if let Some(list) = &c.path_glob {
            let paths = self.paths(list, &format!("{p}.path_glob"))?;
            let mut out = Vec::new();
            for (i, g) in paths.iter().enumerate() {
                match compile(g, g, false, true) {
                    Ok(w) => out.push(w),
                    Err(m) => self.error(&format!("{p}.path_glob[{i}]"), m),
                }
            }
            return (out.len() == paths.len()).then_some(Condition::PathGlob(out));
        }
        if c.header.is_some() || c.query.is_some() {
            let (kind, name) = match (&c.header, &c.query) {
                (Some(h), _) => ("header", h),
                (_, Some(q)) => ("query", q),
                _ => return None,
            };
            let np = format!("{p}.{kind}");
            let name = if kind == "header" {
                self.header_name(name, &np)
            } else if name.is_empty() {
                self.error(&np, "must not be empty");
                None
            } else {
                Some(name.clone())
            };
            let vp = format!("{p}.values");
            let values = match &c.values {
                None => {
                    self.error(&vp, format!("required with {kind}"));
                    None
                }
                Some(v) => self.non_empty(v, &vp).then(|| v.clone()),
            };
            let mut out = Vec::new();
            let values = values.unwrap_or_default();
            for (i, v) in values.iter().enumerate() {
                match compile(v, &escape_wildcard(v), true, false) {
                    Ok(w) => out.push(w),
                    Err(m) => self.error(&format!("{vp}[{i}]"), m),
                }
            }
            let name = name?;
            if out.is_empty() || out.len() != values.len() {
                return None;
            }
            return Some(if kind == "header" {
                Condition::Header { name, values: out }
            } else {
                Condition::Query { name, values: out }
            });
        }
        if let Some(list) = &c.method {
            return self
                .checked_list(list, &format!("{p}.method"), Self::methods)
                .map(Condition::Method);
        }
        if let Some(list) = &c.source_cidr {
            return self
                .checked_list(list, &format!("{p}.source_cidr"), Self::cidrs)
                .map(Condition::SourceCidr);
        }
        if let Some(list) = &c.vpc_endpoint {
            return self
                .checked_list(list, &format!("{p}.vpc_endpoint"), Self::vpce_ids)
                .map(Condition::VpcEndpoint);
        }
        None
    }

    /// A non-empty list at `path` whose every element passes `check`, which returns the
    /// elements that pass and records an error at `path[i]` for each that does not.
    fn checked_list<T>(
        &mut self,
        list: &[String],
        path: &str,
        check: fn(&mut Self, &[String], &str) -> Vec<T>,
    ) -> Option<Vec<T>> {
        if !self.non_empty(list, path) {
            return None;
        }
        let out = check(self, list, path);
        (out.len() == list.len()).then_some(out)
    }

    /// Host patterns, lower-cased: ALB's characters only, at most 128 of them.
    fn host_patterns(&mut self, list: &[String], p: &str) -> Vec<Wildcard> {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            let hp = format!("{p}[{i}]");
            let lower = h.trim().to_ascii_lowercase();
            let valid_chars = lower
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_' | '*' | '?'));
            if lower.is_empty() || !valid_chars || lower.len() > 128 {
                self.error(
                    &hp,
                    format!("invalid host pattern {h:?} (letters, digits, - . _ and the wildcards * ? only)"),
                );
                continue;
            }
            match compile(&lower, &lower, true, false) {
                Ok(w) => out.push(w),
                Err(m) => self.error(&hp, m),
            }
        }
        out
    }

    /// HTTP methods, upper-cased.
    fn methods(&mut self, list: &[String], mp: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            if !upper.is_empty() && http::Method::from_bytes(upper.as_bytes()).is_ok() {
                out.push(upper);
            } else {
                self.error(&format!("{mp}[{i}]"), format!("invalid HTTP method {m:?}"));
            }
        }
        out
    }

    /// A non-empty list of paths each starting with `/`.
    pub(super) fn paths(&mut self, list: &[String], path: &str) -> Option<Vec<String>> {
        if list.is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        let mut ok = true;
        for (i, s) in list.iter().enumerate() {
            ok &= self.absolute_path(s, &format!("{path}[{i}]"));
        }
        ok.then(|| list.to_vec())
    }
}
