//! `[access_log]` and `[listeners.access_log]`: whether, how and how often berth writes one line
//! per HTTP request and per L4 flow to stdout.

use std::collections::HashMap;

/// How access log lines are written (`access_log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line, keyed by ALB's field names; absent fields are omitted.
    Json,
    /// ALB's space-separated fields in ALB's order (`-` or `-1` for what does not apply),
    /// berth's extra fields at the end.
    Alb,
}

/// The access log settings of one listener, after falling back to the top-level table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLog {
    /// Lines are written (default false, as ALB).
    pub enabled: bool,
    /// JSON (default) or ALB's format.
    pub format: AccessLogFormat,
    /// The share of requests (and flows) that get a line, 0.0..=1.0 (default 1.0).
    pub sampling: f64,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: false,
            format: AccessLogFormat::Json,
            sampling: 1.0,
        }
    }
}

/// Lines queued for the writer thread when `buffer_lines` is not set.
pub const DEFAULT_BUFFER_LINES: usize = 16_384;

/// The access log of the whole process: the writer's queue size, the top-level settings, and
/// each listener's own where its table overrides any key.
#[derive(Debug, Clone, Default)]
pub struct AccessLogSettings {
    /// Lines queued for the writer before new lines are dropped (default 16384; read at start).
    pub buffer_lines: usize,
    /// `[access_log]`: what listeners without their own table use.
    pub default: AccessLog,
    /// `[listeners.access_log]` merged over `default`, by listener name.
    pub listeners: HashMap<String, AccessLog>,
}

impl AccessLogSettings {
    /// The settings of listener `name`.
    pub fn for_listener(&self, name: &str) -> &AccessLog {
        if self.listeners.is_empty() {
            return &self.default;
        }
        self.listeners.get(name).unwrap_or(&self.default)
    }
}
