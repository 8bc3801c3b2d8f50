//! `[access_log]` and `[listeners.access_log]`: each listener's table overrides the top-level
//! one key by key; `buffer_lines` exists at the top level only.

use std::collections::HashMap;

use super::Checker;
use crate::model::{AccessLog, AccessLogFormat, AccessLogSettings, DEFAULT_BUFFER_LINES};
use crate::raw::{RawAccessLog, RawListener};

impl Checker<'_> {
    /// The access log settings: the top-level table over the defaults, then every listener's
    /// table over that.
    pub(super) fn access_log(
        &mut self,
        top: &RawAccessLog,
        listeners: &[Option<RawListener>],
    ) -> AccessLogSettings {
        let buffer_lines = self.int_in(
            top.buffer_lines,
            "access_log.buffer_lines",
            DEFAULT_BUFFER_LINES as i64,
            1,
            10_000_000,
        ) as usize;
        let default = self.access_log_table(top, AccessLog::default(), "access_log");
        let mut by_name = HashMap::new();
        for (i, l) in listeners.iter().enumerate() {
            let Some(l) = l else { continue };
            let Some(own) = &l.access_log else { continue };
            let p = format!("listeners[{i}].access_log");
            if own.buffer_lines.is_some() {
                self.error(
                    &format!("{p}.buffer_lines"),
                    "only in the top-level [access_log] (one writer serves every listener)",
                );
            }
            let merged = self.access_log_table(own, default, &p);
            if let Some(name) = &l.name {
                by_name.insert(name.clone(), merged);
            }
        }
        AccessLogSettings {
            buffer_lines,
            default,
            listeners: by_name,
        }
    }

    /// One table at `p` over `base`.
    fn access_log_table(&mut self, t: &RawAccessLog, base: AccessLog, p: &str) -> AccessLog {
        let format = match t.format.as_deref() {
            None => base.format,
            Some("json") => AccessLogFormat::Json,
            Some("alb") => AccessLogFormat::Alb,
            Some(other) => {
                self.error(
                    &format!("{p}.format"),
                    format!("unknown access log format {other:?} (expected \"json\" or \"alb\")"),
                );
                base.format
            }
        };
        let sampling = match t.sampling {
            None => base.sampling,
            Some(s) if (0.0..=1.0).contains(&s) => s,
            Some(s) => {
                self.error(
                    &format!("{p}.sampling"),
                    format!(
                        "must be between 0.0 and 1.0 (the share of requests logged), found {s}"
                    ),
                );
                base.sampling
            }
        };
        AccessLog {
            enabled: t.enabled.unwrap_or(base.enabled),
            format,
            sampling,
        }
    }
}
