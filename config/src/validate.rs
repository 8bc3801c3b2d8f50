//! Parsing and validation: configuration text → [`crate::raw`] → checked [`crate::model`].
//!
//! Errors are collected, never stopped at: the text is parsed once as a TOML table, then each
//! section (`proxy`, `log`, `admin`, `scaler`) and each element of `listeners` and
//! `target_groups` is deserialized on its own, so a wrong type in one element does not hide the
//! problems of another. Every deserialized part is then checked field by field. Each error
//! carries its key path and line, and the list is returned sorted by line.
//!
//! Limits that are not obvious from the schema documentation:
//!
//! * health check `interval` is 1s..=300s, `timeout` at least 100ms and below `interval`,
//!   thresholds 2..=10 (as ALB); `matcher` is `"200"`, `"200-399"` or `"200,204,300-399"`
//!   with codes 100..=599;
//! * `slow_start` is 0 (off) or 30s..=900s; `deregistration_delay` at most 3600s;
//! * `host` condition patterns use only `*` (any run, dots included) and `?` (one character),
//!   case-insensitively, with ALB's character set (letters, digits, `-`, `.`, `_`, `*`, `?`);
//!   `header` and `query` value patterns use the same wildcards, also case-insensitively;
//!   `path_glob` is a glob in which `*` stays within a path segment and `**` crosses segments;
//! * a forward action lists 1..=5 target groups with weights 0..=999 summing above 0;
//! * a redirect must change at least one of protocol, host, port, path or query;
//! * `max_header_bytes` is 1024..=1048576, `threads` 1..=64, target weights 1..=1000.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, ConfigErrors};
use crate::lines::Lines;
use crate::model::*;
use crate::raw::*;

/// Top-level keys of the configuration file.
const TOP_LEVEL_KEYS: [&str; 6] = [
    "proxy",
    "log",
    "admin",
    "scaler",
    "listeners",
    "target_groups",
];

/// Algorithm names accepted in `target_groups.algorithm`.
const ALGORITHMS: [&str; 4] = [
    "round_robin",
    "least_outstanding_requests",
    "weighted_random",
    "consistent_hash",
];

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

/// Parses and validates configuration text; relative file paths resolve against `base_dir`.
///
/// Returns every problem found, sorted by line.
pub fn parse_and_validate(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let lines = Lines::new(text);
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return Err(ConfigErrors(vec![syntax_error(&e, &lines)])),
    };
    let mut cx = Cx {
        lines: Some(&lines),
        base_dir,
        errors: Vec::new(),
    };
    let parts = cx.deserialize_sections(table);
    let config = cx.build(parts);
    cx.finish(config)
}

/// Parses a targets file: TOML (`targets = [{ address = "ip:port", weight = 1 }]`), or JSON
/// (`{"targets": [{"address": "ip:port", "weight": 1}]}`) when the text starts with `{`.
///
/// Addresses must be `ip:port` and unique, weights 1..=1000 (default 1). An empty list is valid.
pub fn parse_targets_file(text: &str) -> Result<Vec<TargetSpec>, ConfigErrors> {
    if text.trim_start().starts_with('{') {
        let mut cx = Cx {
            lines: None,
            base_dir: Path::new("."),
            errors: Vec::new(),
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: RawTargetsFile = match serde_path_to_error::deserialize(&mut de) {
            Ok(raw) => raw,
            Err(e) => {
                let path = path_string(e.path());
                let inner = e.into_inner();
                let line = (inner.line() > 0).then_some(inner.line());
                let full = inner.to_string();
                let msg = full
                    .rfind(" at line ")
                    .map_or(full.as_str(), |i| &full[..i]);
                let (msg, key) = clean_serde_message(msg);
                let path = append_key(path, key);
                return Err(ConfigErrors(vec![ConfigError::new(path, msg, line)]));
            }
        };
        if let Err(e) = de.end() {
            let line = (e.line() > 0).then_some(e.line());
            return Err(ConfigErrors(vec![ConfigError::new(
                "",
                "trailing characters after the JSON object",
                line,
            )]));
        }
        let targets = cx.targets(&raw.targets, "targets", false);
        cx.finish(targets)
    } else {
        let lines = Lines::new(text);
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => return Err(ConfigErrors(vec![syntax_error(&e, &lines)])),
        };
        let mut cx = Cx {
            lines: Some(&lines),
            base_dir: Path::new("."),
            errors: Vec::new(),
        };
        let raw: RawTargetsFile = cx.de(toml::Value::Table(table), "").unwrap_or_default();
        let targets = cx.targets(&raw.targets, "targets", false);
        cx.finish(targets)
    }
}

/// Parses a duration such as `"30s"`, `"1m30s"`, `"250ms"` or `"1d"`.
///
/// The error reads `invalid duration "3x": ...`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a health check matcher: a status code (`"200"`), a range (`"200-399"`) or a
/// comma-separated list of both (`"200,204,300-399"`), codes 100..=599.
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let bad = |why: String| format!("invalid matcher {text:?}: {why}");
    let code = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        let n: u16 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a status code")))?;
        if (100..=599).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("status code {n} is outside 100..=599")))
        }
    };
    let mut ranges = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(bad("empty entry".to_owned()));
        }
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(bad(format!("range {lo}-{hi} is reversed")));
                }
                ranges.push((lo, hi));
            }
            None => {
                let n = code(part)?;
                ranges.push((n, n));
            }
        }
    }
    Ok(Matcher(ranges))
}

/// A TOML syntax error, as one [`ConfigError`] without a path.
fn syntax_error(e: &toml::de::Error, lines: &Lines) -> ConfigError {
    let line = e.span().map(|s| lines.line_of_offset(s.start));
    let msg = e.message().trim().replace('\n', "; ");
    ConfigError::new("", format!("TOML syntax error: {msg}"), line)
}

/// Renders a serde_path_to_error path as `a.b[2].c`.
fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment as S;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            S::Seq { index } => out.push_str(&format!("[{index}]")),
            S::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            S::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            S::Unknown => {}
        }
    }
    out
}

/// `prefix` joined with a relative path (which may start with `[`).
fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else if rest.is_empty() || rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

/// Appends an unknown key to the path unless it already ends with it.
fn append_key(path: String, key: Option<String>) -> String {
    match key {
        Some(k) if !path.ends_with(&format!(".{k}")) && path != k => join(&path, &k),
        _ => path,
    }
}

/// The names written between backticks in a serde message.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Rewords a serde message for people editing TOML. Returns the message and, for an unknown
/// key, the key.
fn clean_serde_message(msg: &str) -> (String, Option<String>) {
    // toml appends `\nin `table`` context lines; the path already says where.
    let msg = msg
        .lines()
        .take_while(|l| !l.starts_with("in `"))
        .collect::<Vec<_>>()
        .join("; ");
    let msg = msg.as_str();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let key = names.first().map(|k| (*k).to_owned());
        let expected = names.get(1..).unwrap_or_default().join(", ");
        let shown = key.as_deref().unwrap_or("?");
        let msg = if expected.is_empty() {
            format!("unknown key {shown:?}")
        } else {
            format!("unknown key {shown:?} (expected one of: {expected})")
        };
        return (msg, key);
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return (
                format!(
                    "expected {}, found {}",
                    describe_expected(expected),
                    describe_found(found)
                ),
                None,
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return (
                format!(
                    "expected {}, found {}",
                    describe_expected(expected),
                    describe_found(found)
                ),
                None,
            );
        }
    }
    (msg.trim().replace('\n', "; "), None)
}

/// Serde's name of an expected type, in TOML words.
fn describe_expected(e: &str) -> String {
    let e = e.trim();
    if e.starts_with("struct ") || e == "a map" || e == "map" {
        "a table".to_owned()
    } else if e == "a sequence" || e == "sequence" {
        "an array".to_owned()
    } else if matches!(e, "i64" | "i32" | "u64" | "u32" | "u16" | "usize") {
        "an integer".to_owned()
    } else {
        e.to_owned()
    }
}

/// Serde's description of a found value, in TOML words.
fn describe_found(f: &str) -> String {
    match f.trim() {
        "map" => "a table".to_owned(),
        "sequence" => "an array".to_owned(),
        other => other.replace("floating point", "float"),
    }
}

/// Parses `1.2.3.0/24`, `::1/128`, or a bare address (a single-host network).
fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Escapes glob syntax other than `*` and `?`.
fn escape_wildcard(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '[' | ']' | '{' | '}' | '\\' | '!' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Compiles a pattern with globset.
fn compile(
    pattern: &str,
    glob_text: &str,
    case_insensitive: bool,
    literal_separator: bool,
) -> Result<Wildcard, String> {
    // Without glob syntax the pattern is the text to equal. Non-ASCII patterns keep the glob
    // matcher, whose case-insensitivity is Unicode's.
    if glob_text == pattern
        && pattern.is_ascii()
        && !pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
    {
        return Ok(Wildcard {
            pattern: pattern.to_owned(),
            matcher: None,
            case_insensitive,
        });
    }
    globset::GlobBuilder::new(glob_text)
        .case_insensitive(case_insensitive)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map(|g| Wildcard {
            pattern: pattern.to_owned(),
            matcher: Some(g.compile_matcher()),
            case_insensitive,
        })
        .map_err(|e| format!("invalid pattern {pattern:?}: {}", e.kind()))
}

/// Deserialized parts of a configuration; `None` elements failed to deserialize.
struct Parts {
    proxy: RawProxy,
    log: RawLog,
    admin: RawAdmin,
    scaler: RawScaler,
    listeners: Vec<Option<RawListener>>,
    target_groups: Vec<Option<RawTargetGroup>>,
    /// Names of every target group written, including ones that failed to deserialize, so
    /// that forward actions naming them do not report a second, misleading error.
    target_group_names: HashSet<String>,
}

/// Validation context: where errors go and how paths become lines.
struct Cx<'a> {
    lines: Option<&'a Lines>,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    /// Records an error at `path`.
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        let line = self.lines.and_then(|l| l.line_of(path));
        self.errors.push(ConfigError::new(path, msg, line));
    }

    /// The result: `value`, or every error sorted by line.
    fn finish<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(self.errors))
        }
    }

    /// Deserializes `value` into `T`, recording the error (with its full path) on failure.
    fn de<T: DeserializeOwned>(&mut self, value: toml::Value, prefix: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let path = join(prefix, &path_string(e.path()));
                let (msg, key) = clean_serde_message(&e.into_inner().to_string());
                let path = append_key(path, key);
                self.err(&path, msg);
                None
            }
        }
    }

    /// Deserializes each section and each array element on its own.
    fn deserialize_sections(&mut self, table: toml::Table) -> Parts {
        let mut parts = Parts {
            proxy: RawProxy::default(),
            log: RawLog::default(),
            admin: RawAdmin::default(),
            scaler: RawScaler::default(),
            listeners: Vec::new(),
            target_groups: Vec::new(),
            target_group_names: HashSet::new(),
        };
        for (key, value) in table {
            match key.as_str() {
                "proxy" => parts.proxy = self.de(value, "proxy").unwrap_or_default(),
                "log" => parts.log = self.de(value, "log").unwrap_or_default(),
                "admin" => parts.admin = self.de(value, "admin").unwrap_or_default(),
                "scaler" => parts.scaler = self.de(value, "scaler").unwrap_or_default(),
                "listeners" | "target_groups" => {
                    let toml::Value::Array(items) = value else {
                        self.err(
                            &key,
                            format!(
                                "expected an array of tables ([[{key}]]), found {}",
                                value.type_str()
                            ),
                        );
                        continue;
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let prefix = format!("{key}[{i}]");
                        if key == "listeners" {
                            let l = self.de(item, &prefix);
                            parts.listeners.push(l);
                        } else {
                            if let Some(name) = item.get("name").and_then(|n| n.as_str()) {
                                parts.target_group_names.insert(name.to_owned());
                            }
                            let t = self.de(item, &prefix);
                            parts.target_groups.push(t);
                        }
                    }
                }
                _ => self.err(
                    &key,
                    format!(
                        "unknown key {key:?} (expected one of: {})",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
            }
        }
        parts
    }

    /// Checks everything and builds the model (meaningful only when no error was recorded).
    fn build(&mut self, parts: Parts) -> Config {
        let proxy = self.proxy(&parts.proxy);
        let log = self.log(&parts.log);
        let admin = AdminSettings {
            bind: self.socket_addr(&parts.admin.bind, "admin.bind", ([127, 0, 0, 1], 9901)),
            proxy_protocol: parts.admin.proxy_protocol.as_ref().map(|pp| {
                if pp.allowed_vpc_endpoints.is_some() {
                    self.err(
                        "admin.proxy_protocol.allowed_vpc_endpoints",
                        "not supported on the admin port (health checks carry no VPC endpoint ID); trusted_cidrs alone decides",
                    );
                }
                self.proxy_protocol_in(pp, "admin.proxy_protocol")
            }),
        };
        let scaler = self.scaler(&parts.scaler, &parts.target_group_names);

        let mut target_groups = Vec::new();
        let mut tg_seen: HashMap<String, usize> = HashMap::new();
        for (i, t) in parts.target_groups.iter().enumerate() {
            let Some(t) = t else { continue };
            let p = format!("target_groups[{i}]");
            if let Some(name) = &t.name {
                if let Some(first) = tg_seen.get(name) {
                    self.err(
                        &format!("{p}.name"),
                        format!("duplicate target group name {name:?} (also used by target_groups[{first}])"),
                    );
                } else {
                    tg_seen.insert(name.clone(), i);
                }
            }
            if let Some(tg) = self.target_group(&p, t) {
                target_groups.push(tg);
            }
        }

        let mut listeners = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, l) in parts.listeners.iter().enumerate() {
            let Some(l) = l else { continue };
            let p = format!("listeners[{i}]");
            let Some(listener) = self.listener(&p, l, &parts.target_group_names) else {
                continue;
            };
            if let Some(first) = names.get(&listener.name) {
                self.err(
                    &format!("{p}.name"),
                    format!(
                        "duplicate listener name {:?} (also used by listeners[{first}])",
                        listener.name
                    ),
                );
            } else {
                names.insert(listener.name.clone(), i);
            }
            if let Some(first) = binds.get(&listener.bind) {
                self.err(
                    &format!("{p}.bind"),
                    format!(
                        "duplicate bind address {} (also used by listeners[{first}])",
                        listener.bind
                    ),
                );
            } else {
                binds.insert(listener.bind, i);
            }
            listeners.push(listener);
        }

        Config {
            proxy,
            log,
            admin,
            scaler,
            listeners,
            target_groups,
        }
    }

    // ---- small checked values ------------------------------------------------------------

    /// A duration, `default` when absent or invalid.
    fn dur(&mut self, v: &Option<String>, path: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(msg) => {
                    self.err(path, msg);
                    default
                }
            },
        }
    }

    /// A duration that must lie in `min..=max`; `bounds` describes the range in messages.
    fn dur_in(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: Duration,
        min: Duration,
        max: Duration,
        bounds: &str,
    ) -> Duration {
        let d = self.dur(v, path, default);
        if d < min || d > max {
            self.err(path, format!("must be {bounds}"));
        }
        d
    }

    /// A duration above zero.
    fn dur_pos(&mut self, v: &Option<String>, path: &str, default: Duration) -> Duration {
        let d = self.dur(v, path, default);
        if d.is_zero() {
            self.err(path, "must be greater than 0");
        }
        d
    }

    /// An integer in `lo..=hi`, `default` when absent or invalid.
    fn int(&mut self, v: Option<i64>, path: &str, default: i64, lo: i64, hi: i64) -> i64 {
        match v {
            None => default,
            Some(x) if (lo..=hi).contains(&x) => x,
            Some(_) => {
                self.err(path, format!("must be between {lo} and {hi}"));
                default
            }
        }
    }

    /// A required string; records `required` or `must not be empty`.
    fn required<'s>(&mut self, v: &'s Option<String>, path: &str) -> Option<&'s str> {
        match v.as_deref() {
            None => {
                self.err(path, "required");
                None
            }
            Some(s) if s.trim().is_empty() => {
                self.err(path, "must not be empty");
                None
            }
            Some(s) => Some(s),
        }
    }

    /// An `ip:port` address, `default` when absent or invalid.
    fn socket_addr(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: ([u8; 4], u16),
    ) -> SocketAddr {
        let default = SocketAddr::from(default);
        match v {
            None => default,
            Some(s) => self.parse_addr(s, path).unwrap_or(default),
        }
    }

    /// Parses `ip:port`.
    fn parse_addr(&mut self, s: &str, path: &str) -> Option<SocketAddr> {
        match s.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("invalid address {s:?} (expected ip:port, e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        }
    }

    /// A header name, lower-cased.
    fn header_name(&mut self, s: &str, path: &str) -> Option<String> {
        let lower = s.trim().to_ascii_lowercase();
        match http::HeaderName::from_bytes(lower.as_bytes()) {
            Ok(_) => Some(lower),
            Err(_) => {
                self.err(path, format!("invalid header name {s:?}"));
                None
            }
        }
    }

    /// Records `must not be empty` for an empty list; true when the list has elements.
    fn non_empty<T>(&mut self, list: &[T], path: &str) -> bool {
        if list.is_empty() {
            self.err(path, "must not be empty");
        }
        !list.is_empty()
    }

    // ---- sections --------------------------------------------------------------------------

    /// `[proxy]`.
    fn proxy(&mut self, p: &RawProxy) -> ProxySettings {
        let threads = self.int(p.threads, "proxy.threads", 1, 1, 64) as usize;
        let grace_period = self.dur(&p.grace_period, "proxy.grace_period", secs(30));
        let upstream_keepalive_pool = self.int(
            p.upstream_keepalive_pool,
            "proxy.upstream_keepalive_pool",
            128,
            1,
            1_000_000,
        ) as usize;
        let mut trusted_proxies = Vec::new();
        for (i, c) in p.trusted_proxies.iter().flatten().enumerate() {
            match parse_cidr(c) {
                Some(net) => trusted_proxies.push(net),
                None => self.err(
                    &format!("proxy.trusted_proxies[{i}]"),
                    format!("invalid CIDR {c:?} (expected e.g. \"10.0.0.0/8\" or an IP address)"),
                ),
            }
        }
        let request_id_header = match &p.request_id_header {
            None => "x-request-id".to_owned(),
            Some(h) => self
                .header_name(h, "proxy.request_id_header")
                .unwrap_or_default(),
        };
        let watch_interval = self.dur_pos(&p.watch_interval, "proxy.watch_interval", secs(1));
        ProxySettings {
            threads,
            grace_period,
            upstream_keepalive_pool,
            trusted_proxies,
            request_id_header,
            watch_interval,
        }
    }

    /// `[log]`.
    fn log(&mut self, l: &RawLog) -> LogSettings {
        let format = match l.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.err(
                    "log.format",
                    format!("unknown log format {other:?} (expected \"text\" or \"json\")"),
                );
                LogFormat::Text
            }
        };
        let level = match &l.level {
            None => "info".to_owned(),
            Some(s) if s.trim().is_empty() => {
                self.err("log.level", "must not be empty");
                String::new()
            }
            Some(s) => s.trim().to_owned(),
        };
        LogSettings { format, level }
    }

    /// `[scaler]`.
    fn scaler(&mut self, s: &RawScaler, groups: &HashSet<String>) -> ScalerSettings {
        let metrics_url = match &s.metrics_url {
            None => "http://127.0.0.1:9901/metrics".to_owned(),
            Some(u) => {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && u.parse::<http::Uri>().is_ok_and(|uri| uri.host().is_some());
                if !ok {
                    self.err(
                        "scaler.metrics_url",
                        format!("invalid URL {u:?} (expected http://host:port/path)"),
                    );
                }
                u.clone()
            }
        };
        let dry_run = s.dry_run.unwrap_or(true);
        let namespace = match &s.namespace {
            None => "berth".to_owned(),
            Some(n) => {
                let n = n.trim();
                if n.is_empty() || n.len() > 255 || n.starts_with("AWS/") || !n.is_ascii() {
                    self.err(
                        "scaler.namespace",
                        "must be 1..=255 ASCII characters and not start with \"AWS/\"",
                    );
                }
                n.to_owned()
            }
        };
        let replica = match &s.replica {
            None => default_replica(),
            Some(r) => {
                let r = r.trim();
                if r.is_empty() || r.len() > 1024 {
                    self.err("scaler.replica", "must be 1..=1024 characters");
                }
                r.to_owned()
            }
        };
        let storage_resolution = match s.storage_resolution {
            None => 60,
            Some(r @ (1 | 60)) => r as u32,
            Some(_) => {
                self.err("scaler.storage_resolution", "must be 1 or 60 (seconds)");
                60
            }
        };
        let publish = s.publish.unwrap_or(false);
        let aggregate = match s.aggregate.as_deref() {
            None | Some("local") => Aggregate::Local,
            Some("cloudwatch") => {
                if !publish {
                    self.err(
                        "scaler.aggregate",
                        "\"cloudwatch\" needs publish = true (every replica publishes its figures)",
                    );
                }
                Aggregate::CloudWatch
            }
            Some(other) => {
                self.err(
                    "scaler.aggregate",
                    format!("unknown aggregate {other:?} (expected \"local\" or \"cloudwatch\")"),
                );
                Aggregate::Local
            }
        };
        let publish_buffer = self.int(
            s.publish_buffer,
            "scaler.publish_buffer",
            10_000,
            1,
            10_000_000,
        ) as usize;
        let aggregate_window = self.dur_in(
            &s.aggregate_window,
            "scaler.aggregate_window",
            secs(60),
            secs(10),
            secs(3600),
            "between 10s and 3600s",
        );
        let mut services = Vec::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (i, raw) in s.services.iter().enumerate() {
            let p = format!("scaler.services[{i}]");
            if let Some(svc) = self.scaled_service(&p, raw, dry_run, groups) {
                let key = (svc.cluster.clone(), svc.service.clone());
                if let Some(first) = seen.get(&key) {
                    self.err(
                        &format!("{p}.service"),
                        format!(
                            "service {:?} of cluster {:?} is already scaled by scaler.services[{first}]",
                            svc.service, svc.cluster
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
                services.push(svc);
            }
        }
        ScalerSettings {
            metrics_url,
            interval: self.dur_pos(&s.interval, "scaler.interval", secs(5)),
            dry_run,
            admin_bind: self.socket_addr(
                &s.admin_bind,
                "scaler.admin_bind",
                ([127, 0, 0, 1], 9902),
            ),
            namespace,
            replica,
            storage_resolution,
            aggregate,
            publish,
            publish_buffer,
            aggregate_window,
            services,
        }
    }

    /// A capacity: an integer in 0..=100000.
    fn capacity(&mut self, v: Option<i64>, path: &str) -> Option<u32> {
        match v {
            None => None,
            Some(x) if (0..=100_000).contains(&x) => Some(x as u32),
            Some(_) => {
                self.err(path, "must be between 0 and 100000");
                None
            }
        }
    }

    /// A policy's name: unique within the service, default `kind[i]`.
    fn policy_name(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: String,
        names: &mut HashSet<String>,
    ) -> String {
        let name = match v {
            None => default,
            Some(n) if n.trim().is_empty() => {
                self.err(path, "must not be empty");
                default
            }
            Some(n) => n.trim().to_owned(),
        };
        if !names.insert(name.clone()) {
            self.err(
                path,
                format!("duplicate policy name {name:?} in this service"),
            );
        }
        name
    }

    /// `metric` (+ `per`, `percentile`) of a policy; `allowed` lists the names accepted.
    fn scaling_metric(
        &mut self,
        p: &str,
        metric: &Option<String>,
        per: &Option<String>,
        percentile: Option<f64>,
        allowed: &[&str],
        default_per: Per,
    ) -> Option<ScalingMetric> {
        let name = self.required(metric, &format!("{p}.metric"))?;
        if !allowed.contains(&name) {
            self.err(
                &format!("{p}.metric"),
                format!(
                    "unknown metric {name:?} (expected one of: {})",
                    allowed.join(", ")
                ),
            );
            return None;
        }
        let takes_per = matches!(name, "request_rate" | "requests_per_target");
        if per.is_some() && !takes_per {
            self.err(
                &format!("{p}.per"),
                format!("only applies to request metrics, not {name:?}"),
            );
        }
        if percentile.is_some() && name != "latency" {
            self.err(
                &format!("{p}.percentile"),
                format!("only applies to \"latency\", not {name:?}"),
            );
        }
        let per = match per.as_deref() {
            None => default_per,
            Some("second") => Per::Second,
            Some("minute") => Per::Minute,
            Some(other) => {
                self.err(
                    &format!("{p}.per"),
                    format!("unknown unit {other:?} (expected \"second\" or \"minute\")"),
                );
                default_per
            }
        };
        let percentile = match percentile {
            None => 99.0,
            Some(x) if (1.0..=99.99).contains(&x) => x,
            Some(_) => {
                self.err(&format!("{p}.percentile"), "must be between 1 and 99.99");
                99.0
            }
        };
        Some(match name {
            "request_rate" => ScalingMetric::RequestRate(per),
            "requests_per_target" => ScalingMetric::RequestsPerTarget(per),
            "latency" => ScalingMetric::Latency(percentile),
            "error_rate" => ScalingMetric::ErrorRate,
            "active_connections_per_target" => ScalingMetric::ActiveConnectionsPerTarget,
            _ => ScalingMetric::HealthyTargets,
        })
    }

    /// One `[[scaler.services]]` element.
    fn scaled_service(
        &mut self,
        p: &str,
        s: &RawScaledService,
        dry_run: bool,
        groups: &HashSet<String>,
    ) -> Option<ScaledService> {
        let cluster = self
            .required(&s.cluster, &format!("{p}.cluster"))
            .map(str::to_owned);
        let service = self
            .required(&s.service, &format!("{p}.service"))
            .map(str::to_owned);
        let target_group = self
            .required(&s.target_group, &format!("{p}.target_group"))
            .map(str::to_owned);
        if let Some(tg) = &target_group {
            if !groups.contains(tg) {
                self.err(
                    &format!("{p}.target_group"),
                    format!("unknown target group {tg:?} (not in [[target_groups]])"),
                );
            }
        }
        let min = self.capacity(s.min_capacity, &format!("{p}.min_capacity"));
        let max = self.capacity(s.max_capacity, &format!("{p}.max_capacity"));
        if s.min_capacity.is_none() {
            self.err(&format!("{p}.min_capacity"), "required");
        }
        if s.max_capacity.is_none() {
            self.err(&format!("{p}.max_capacity"), "required");
        }
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                self.err(
                    &format!("{p}.min_capacity"),
                    format!("min_capacity {lo} is greater than max_capacity {hi}"),
                );
            }
        }
        let dry_run_count = self.capacity(s.dry_run_count, &format!("{p}.dry_run_count"));
        if dry_run_count.is_some() && !dry_run {
            self.err(
                &format!("{p}.dry_run_count"),
                "only allowed with scaler.dry_run = true (a live scaler reads the count from ECS)",
            );
        }

        let mut names = HashSet::new();
        let mut target_tracking = Vec::new();
        for (i, t) in s.target_tracking.iter().enumerate() {
            let tp = format!("{p}.target_tracking[{i}]");
            let name = self.policy_name(
                &t.name,
                &format!("{tp}.name"),
                format!("target_tracking[{i}]"),
                &mut names,
            );
            let metric = self.scaling_metric(
                &tp,
                &t.metric,
                &t.per,
                t.percentile,
                &[
                    "requests_per_target",
                    "latency",
                    "active_connections_per_target",
                ],
                Per::Minute,
            );
            let target = match t.target {
                None => {
                    self.err(&format!("{tp}.target"), "required");
                    None
                }
                Some(x) if x > 0.0 && x.is_finite() => Some(x),
                Some(_) => {
                    self.err(&format!("{tp}.target"), "must be greater than 0");
                    None
                }
            };
            let tolerance = match t.tolerance_percent {
                None => 0.1,
                Some(x) if (0.0..100.0).contains(&x) => x / 100.0,
                Some(_) => {
                    self.err(
                        &format!("{tp}.tolerance_percent"),
                        "must be at least 0 and below 100",
                    );
                    0.1
                }
            };
            let scale_out_stabilization = self.dur_in(
                &t.scale_out_stabilization,
                &format!("{tp}.scale_out_stabilization"),
                secs(0),
                secs(0),
                secs(3600),
                "at most 3600s",
            );
            let scale_in_stabilization = self.dur_in(
                &t.scale_in_stabilization,
                &format!("{tp}.scale_in_stabilization"),
                secs(300),
                secs(0),
                secs(3600),
                "at most 3600s",
            );
            let scale_out_cooldown = self.dur_in(
                &t.scale_out_cooldown,
                &format!("{tp}.scale_out_cooldown"),
                secs(60),
                secs(0),
                secs(86_400),
                "at most 86400s",
            );
            let scale_in_cooldown = self.dur_in(
                &t.scale_in_cooldown,
                &format!("{tp}.scale_in_cooldown"),
                secs(300),
                secs(0),
                secs(86_400),
                "at most 86400s",
            );
            if let (Some(metric), Some(target)) = (metric, target) {
                target_tracking.push(TargetTracking {
                    name,
                    metric,
                    target,
                    tolerance,
                    scale_out_stabilization,
                    scale_in_stabilization,
                    scale_out_cooldown,
                    scale_in_cooldown,
                    disable_scale_in: t.disable_scale_in.unwrap_or(false),
                });
            }
        }

        let mut step = Vec::new();
        for (i, t) in s.step.iter().enumerate() {
            let tp = format!("{p}.step[{i}]");
            if let Some(policy) = self.step_policy(&tp, t, i, &mut names) {
                step.push(policy);
            }
        }

        let mut scheduled = Vec::new();
        for (i, a) in s.scheduled.iter().enumerate() {
            let ap = format!("{p}.scheduled[{i}]");
            let name = self.policy_name(
                &a.name,
                &format!("{ap}.name"),
                format!("scheduled[{i}]"),
                &mut names,
            );
            let timezone = match a.timezone.as_deref() {
                None => chrono_tz::UTC,
                Some(tz) => match tz.trim().parse::<chrono_tz::Tz>() {
                    Ok(tz) => tz,
                    Err(_) => {
                        self.err(
                            &format!("{ap}.timezone"),
                            format!("unknown time zone {tz:?} (expected an IANA name such as \"Europe/Paris\")"),
                        );
                        chrono_tz::UTC
                    }
                },
            };
            let schedule = match self.required(&a.schedule, &format!("{ap}.schedule")) {
                None => None,
                Some(text) => match parse_schedule(text) {
                    Ok(s) => Some((text.trim().to_owned(), s)),
                    Err(msg) => {
                        self.err(&format!("{ap}.schedule"), msg);
                        None
                    }
                },
            };
            let amin = self.capacity(a.min_capacity, &format!("{ap}.min_capacity"));
            let amax = self.capacity(a.max_capacity, &format!("{ap}.max_capacity"));
            if a.min_capacity.is_none() && a.max_capacity.is_none() {
                self.err(&ap, "needs min_capacity, max_capacity or both");
            }
            if let (Some(lo), Some(hi)) = (amin, amax) {
                if lo > hi {
                    self.err(
                        &format!("{ap}.min_capacity"),
                        format!("min_capacity {lo} is greater than max_capacity {hi}"),
                    );
                }
            }
            if let Some((expression, schedule)) = schedule {
                scheduled.push(ScheduledAction {
                    name,
                    expression,
                    schedule,
                    timezone,
                    min_capacity: amin,
                    max_capacity: amax,
                });
            }
        }

        Some(ScaledService {
            cluster: cluster?,
            service: service?,
            target_group: target_group?,
            min_capacity: min?,
            max_capacity: max?,
            dry_run_count,
            suspend_scale_in: s.suspend_scale_in.unwrap_or(false),
            suspend_scale_out: s.suspend_scale_out.unwrap_or(false),
            suspend_scheduled: s.suspend_scheduled.unwrap_or(false),
            target_tracking,
            step,
            scheduled,
        })
    }

    /// One `[[scaler.services.step]]` element.
    fn step_policy(
        &mut self,
        tp: &str,
        t: &RawStepPolicy,
        i: usize,
        names: &mut HashSet<String>,
    ) -> Option<StepPolicy> {
        let name = self.policy_name(&t.name, &format!("{tp}.name"), format!("step[{i}]"), names);
        let metric = self.scaling_metric(
            tp,
            &t.metric,
            &t.per,
            t.percentile,
            &[
                "request_rate",
                "requests_per_target",
                "latency",
                "error_rate",
                "active_connections_per_target",
                "healthy_targets",
            ],
            Per::Second,
        );
        let comparison = match self.required(&t.comparison, &format!("{tp}.comparison")) {
            None => None,
            Some(">=") => Some(Comparison::GreaterOrEqual),
            Some(">") => Some(Comparison::Greater),
            Some("<=") => Some(Comparison::LessOrEqual),
            Some("<") => Some(Comparison::Less),
            Some(other) => {
                self.err(
                    &format!("{tp}.comparison"),
                    format!(
                        "unknown comparison {other:?} (expected \">=\", \">\", \"<=\" or \"<\")"
                    ),
                );
                None
            }
        };
        let threshold = match t.threshold {
            None => {
                self.err(&format!("{tp}.threshold"), "required");
                None
            }
            Some(x) if x.is_finite() => Some(x),
            Some(_) => {
                self.err(&format!("{tp}.threshold"), "must be a finite number");
                None
            }
        };
        let evaluation_periods = self.int(
            t.evaluation_periods,
            &format!("{tp}.evaluation_periods"),
            1,
            1,
            100,
        ) as u32;
        let datapoints_to_alarm = self.int(
            t.datapoints_to_alarm,
            &format!("{tp}.datapoints_to_alarm"),
            i64::from(evaluation_periods),
            1,
            100,
        ) as u32;
        if datapoints_to_alarm > evaluation_periods {
            self.err(
                &format!("{tp}.datapoints_to_alarm"),
                format!("must not exceed evaluation_periods ({evaluation_periods})"),
            );
        }
        let period = self.dur_in(
            &t.period,
            &format!("{tp}.period"),
            secs(60),
            secs(1),
            secs(86_400),
            "between 1s and 86400s",
        );
        if period.as_secs() * u64::from(evaluation_periods) > 86_400 {
            self.err(
                &format!("{tp}.evaluation_periods"),
                format!(
                    "evaluation_periods × period must not exceed one day (as a CloudWatch alarm): \
                     {evaluation_periods} × {}s",
                    period.as_secs()
                ),
            );
        }
        let adjustment_type = match t.adjustment_type.as_deref() {
            None | Some("ChangeInCapacity") => AdjustmentType::ChangeInCapacity,
            Some("PercentChangeInCapacity") => AdjustmentType::PercentChangeInCapacity,
            Some("ExactCapacity") => AdjustmentType::ExactCapacity,
            Some(other) => {
                self.err(
                    &format!("{tp}.adjustment_type"),
                    format!(
                        "unknown adjustment type {other:?} (expected \"ChangeInCapacity\", \
                         \"PercentChangeInCapacity\" or \"ExactCapacity\")"
                    ),
                );
                AdjustmentType::ChangeInCapacity
            }
        };
        if t.min_adjustment_magnitude.is_some()
            && adjustment_type != AdjustmentType::PercentChangeInCapacity
        {
            self.err(
                &format!("{tp}.min_adjustment_magnitude"),
                "only applies to adjustment_type = \"PercentChangeInCapacity\"",
            );
        }
        let min_adjustment_magnitude = self.int(
            t.min_adjustment_magnitude,
            &format!("{tp}.min_adjustment_magnitude"),
            1,
            1,
            100_000,
        ) as u32;
        let cooldown = self.dur_in(
            &t.cooldown,
            &format!("{tp}.cooldown"),
            secs(300),
            secs(0),
            secs(86_400),
            "at most 86400s",
        );
        let mut steps = Vec::new();
        if self.non_empty(&t.steps, &format!("{tp}.steps")) {
            for (j, st) in t.steps.iter().enumerate() {
                let sp = format!("{tp}.steps[{j}]");
                let lower = st.lower.unwrap_or(f64::NEG_INFINITY);
                let upper = st.upper.unwrap_or(f64::INFINITY);
                if lower.is_nan() || upper.is_nan() || lower >= upper {
                    self.err(&sp, "lower must be below upper");
                    continue;
                }
                let Some(adjustment) = st.adjustment else {
                    self.err(&format!("{sp}.adjustment"), "required");
                    continue;
                };
                if adjustment_type == AdjustmentType::ExactCapacity
                    && !(0..=100_000).contains(&adjustment)
                {
                    self.err(
                        &format!("{sp}.adjustment"),
                        "an ExactCapacity adjustment must be between 0 and 100000",
                    );
                    continue;
                }
                if !(-100_000..=100_000).contains(&adjustment) {
                    self.err(
                        &format!("{sp}.adjustment"),
                        "must be between -100000 and 100000",
                    );
                    continue;
                }
                steps.push((
                    j,
                    Step {
                        lower,
                        upper,
                        adjustment,
                    },
                ));
            }
            steps.sort_by(|a, b| a.1.lower.total_cmp(&b.1.lower));
            for w in steps.windows(2) {
                if w[1].1.lower < w[0].1.upper {
                    self.err(
                        &format!("{tp}.steps[{}]", w[1].0),
                        format!("overlaps steps[{}]", w[0].0),
                    );
                }
            }
        }
        Some(StepPolicy {
            name,
            metric: metric?,
            comparison: comparison?,
            threshold: threshold?,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            adjustment_type,
            min_adjustment_magnitude,
            cooldown,
            steps: steps.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// One `[[listeners]]` element.
    fn listener(&mut self, p: &str, l: &RawListener, groups: &HashSet<String>) -> Option<Listener> {
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
                self.err(
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
            Some(proto) if proto.terminates_tls() && l.certificates.is_empty() => self.err(
                &format!("{p}.certificates"),
                "an https or tls listener needs at least one certificate",
            ),
            Some(proto) if !proto.terminates_tls() && !l.certificates.is_empty() => self.err(
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
                    self.err(
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
        let http2 = l.http2.unwrap_or(protocol == Some(ListenerProtocol::Https));
        let header_timeout =
            self.dur_pos(&l.header_timeout, &format!("{p}.header_timeout"), secs(60));
        let l4 = protocol.is_some_and(ListenerProtocol::is_l4);
        // ALB's idle timeout is 60 s; NLB's TCP idle timeout is 350 s.
        let idle_default = if l4 { secs(350) } else { secs(60) };
        let idle_timeout =
            self.dur_pos(&l.idle_timeout, &format!("{p}.idle_timeout"), idle_default);
        let connect_timeout = self.dur_pos(
            &l.connect_timeout,
            &format!("{p}.connect_timeout"),
            secs(10),
        );
        let max_connections = self.int(
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
            self.err(
                &format!("{p}.proxy_protocol"),
                "not supported on https listeners (the PROXY header precedes TLS); use protocol = \"tls\" for TLS with PROXY headers, or terminate TLS in front",
            );
        }
        if l4 && !l.rules.is_empty() {
            self.err(
                &format!("{p}.rules"),
                "tcp and tls listeners have no rules; use default_action with forward",
            );
        }
        let max_header_bytes = self.int(
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
                    self.err(&format!("{rp}.priority"), "required");
                    None
                }
                Some(n) if !(1..=50_000).contains(&n) => {
                    self.err(&format!("{rp}.priority"), "must be between 1 and 50000");
                    None
                }
                Some(n) => {
                    if let Some(first) = priorities.get(&n) {
                        self.err(
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
                    self.err(&format!("{rp}.action"), "required");
                    None
                }
                Some(a) => self.action(&format!("{rp}.action"), a, groups),
            };
            if let (Some(priority), Some(action)) = (priority, action) {
                rules.push(Rule {
                    priority,
                    conditions,
                    action,
                });
            }
        }
        rules.sort_by_key(|r| r.priority);

        let default_action = match &l.default_action {
            None => {
                self.err(&format!("{p}.default_action"), "required");
                None
            }
            Some(a) => self.action(&format!("{p}.default_action"), a, groups),
        };
        if l4
            && default_action
                .as_ref()
                .is_some_and(|a| !matches!(a, Action::Forward(_)))
        {
            self.err(
                &format!("{p}.default_action"),
                "tcp and tls listeners can only forward",
            );
        }

        Some(Listener {
            name: name?,
            bind: bind?,
            protocol: protocol?,
            certificates,
            http2,
            header_timeout,
            idle_timeout,
            max_header_bytes,
            proxy_protocol,
            connect_timeout,
            max_connections,
            rules,
            default_action: default_action?,
        })
    }

    /// A required file path that must exist, resolved against the base directory.
    fn existing_file(&mut self, v: &Option<String>, path: &str) -> Option<std::path::PathBuf> {
        let s = self.required(v, path)?;
        let resolved = self.base_dir.join(s);
        if resolved.is_file() {
            Some(resolved)
        } else {
            self.err(path, format!("file not found: {}", resolved.display()));
            None
        }
    }

    /// One rule condition.
    fn condition(&mut self, p: &str, c: &RawCondition) -> Option<Condition> {
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
            self.err(
                &format!("{p}.values"),
                "only allowed with header or query conditions (add header = \"...\" or query = \"...\")",
            );
            return None;
        }
        if kinds.is_empty() {
            self.err(
                p,
                format!(
                    "a condition needs exactly one of: {}",
                    CONDITION_KINDS.join(", ")
                ),
            );
            return None;
        }
        if kinds.len() > 1 {
            self.err(
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
            self.err(
                &format!("{p}.values"),
                "only allowed with header or query conditions",
            );
            return None;
        }
        if let Some(list) = &c.host {
            if !self.non_empty(list, &format!("{p}.host")) {
                return None;
            }
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                let hp = format!("{p}.host[{i}]");
                let lower = h.trim().to_ascii_lowercase();
                let valid_chars = lower.chars().all(|ch| {
                    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_' | '*' | '?')
                });
                if lower.is_empty() || !valid_chars || lower.len() > 128 {
                    self.err(
                        &hp,
                        format!("invalid host pattern {h:?} (letters, digits, - . _ and the wildcards * ? only)"),
                    );
                    continue;
                }
                match compile(&lower, &lower, true, false) {
                    Ok(w) => out.push(w),
                    Err(m) => self.err(&hp, m),
                }
            }
            return (out.len() == list.len()).then_some(Condition::Host(out));
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
                    Err(m) => self.err(&format!("{p}.path_glob[{i}]"), m),
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
                self.err(&np, "must not be empty");
                None
            } else {
                Some(name.clone())
            };
            let vp = format!("{p}.values");
            let values = match &c.values {
                None => {
                    self.err(&vp, format!("required with {kind}"));
                    None
                }
                Some(v) => self.non_empty(v, &vp).then(|| v.clone()),
            };
            let mut out = Vec::new();
            let values = values.unwrap_or_default();
            for (i, v) in values.iter().enumerate() {
                match compile(v, &escape_wildcard(v), true, false) {
                    Ok(w) => out.push(w),
                    Err(m) => self.err(&format!("{vp}[{i}]"), m),
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
            let mp = format!("{p}.method");
            if !self.non_empty(list, &mp) {
                return None;
            }
            let mut out = Vec::new();
            for (i, m) in list.iter().enumerate() {
                let upper = m.trim().to_ascii_uppercase();
                if !upper.is_empty() && http::Method::from_bytes(upper.as_bytes()).is_ok() {
                    out.push(upper);
                } else {
                    self.err(&format!("{mp}[{i}]"), format!("invalid HTTP method {m:?}"));
                }
            }
            return (out.len() == list.len()).then_some(Condition::Method(out));
        }
        if let Some(list) = &c.source_cidr {
            let sp = format!("{p}.source_cidr");
            if !self.non_empty(list, &sp) {
                return None;
            }
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                match parse_cidr(s) {
                    Some(net) => out.push(net),
                    None => self.err(
                        &format!("{sp}[{i}]"),
                        format!(
                            "invalid CIDR {s:?} (expected e.g. \"10.0.0.0/8\" or an IP address)"
                        ),
                    ),
                }
            }
            return (out.len() == list.len()).then_some(Condition::SourceCidr(out));
        }
        if let Some(list) = &c.vpc_endpoint {
            let vp = format!("{p}.vpc_endpoint");
            if !self.non_empty(list, &vp) {
                return None;
            }
            let ids = self.vpce_ids(list, &vp);
            return (ids.len() == list.len()).then_some(Condition::VpcEndpoint(ids));
        }
        None
    }

    /// Checks a `proxy_protocol` table at path `ppp` (`listeners[i].proxy_protocol` or
    /// `admin.proxy_protocol`).
    fn proxy_protocol_in(&mut self, pp: &RawProxyProtocol, ppp: &str) -> ProxyProtocolIn {
        let trusted_cidrs = match &pp.trusted_cidrs {
            None => {
                self.err(
                    &format!("{ppp}.trusted_cidrs"),
                    "required: the peers (load balancers) allowed to send PROXY headers",
                );
                Vec::new()
            }
            Some(list) => {
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match parse_cidr(s) {
                        Some(n) => out.push(n),
                        None => self.err(
                            &format!("{ppp}.trusted_cidrs[{i}]"),
                            format!("invalid CIDR {s:?} (expected e.g. \"10.0.0.0/8\" or an IP address)"),
                        ),
                    }
                }
                out
            }
        };
        let header_timeout = self.dur_in(
            &pp.header_timeout,
            &format!("{ppp}.header_timeout"),
            secs(3),
            Duration::from_millis(10),
            secs(60),
            "between 10ms and 60s",
        );
        let allowed_vpc_endpoints = match &pp.allowed_vpc_endpoints {
            Some(list) => self.vpce_ids(list, &format!("{ppp}.allowed_vpc_endpoints")),
            None => Vec::new(),
        };
        ProxyProtocolIn {
            trusted_cidrs,
            header_timeout,
            allowed_vpc_endpoints,
        }
    }

    /// VPC endpoint IDs (`vpce-` followed by letters and digits).
    fn vpce_ids(&mut self, list: &[String], p: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, id) in list.iter().enumerate() {
            let ok = id
                .strip_prefix("vpce-")
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()));
            if ok {
                out.push(id.clone());
            } else {
                self.err(
                    &format!("{p}[{i}]"),
                    format!("invalid VPC endpoint ID {id:?} (expected e.g. \"vpce-0abc123\")"),
                );
            }
        }
        out
    }

    /// A non-empty list of paths each starting with `/`.
    fn paths(&mut self, list: &[String], path: &str) -> Option<Vec<String>> {
        if list.is_empty() {
            self.err(path, "must not be empty");
            return None;
        }
        let mut ok = true;
        for (i, s) in list.iter().enumerate() {
            if !s.starts_with('/') {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("path {s:?} must start with \"/\""),
                );
                ok = false;
            }
        }
        ok.then(|| list.to_vec())
    }

    /// A rule or default action.
    fn action(&mut self, p: &str, a: &RawAction, groups: &HashSet<String>) -> Option<Action> {
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
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                "an action needs exactly one of: forward, fixed_response, redirect".to_owned()
            } else {
                format!(
                    "an action has exactly one kind, found {}",
                    kinds.join(" and ")
                )
            };
            self.err(p, msg);
            return None;
        }
        if let Some(list) = &a.forward {
            let fp = format!("{p}.forward");
            if list.is_empty() {
                self.err(&fp, "must list at least one target group");
                return None;
            }
            if list.len() > 5 {
                self.err(&fp, "at most 5 target groups (as ALB)");
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
                        self.err(&format!("{gp}.weight"), "must be between 0 and 999");
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
                    self.err(&tgp, format!("unknown target group {name:?}"));
                    ok = false;
                } else if !seen.insert(name.to_owned()) {
                    self.err(&tgp, format!("target group {name:?} is listed twice"));
                    ok = false;
                }
                out.push(WeightedGroup {
                    target_group: name.to_owned(),
                    weight,
                });
            }
            if ok && out.iter().all(|g| g.weight == 0) {
                self.err(&fp, "weights must not all be 0");
                ok = false;
            }
            return ok.then_some(Action::Forward(out));
        }
        if let Some(f) = &a.fixed_response {
            let fp = format!("{p}.fixed_response");
            let status = match f.status {
                None => {
                    self.err(&format!("{fp}.status"), "required");
                    None
                }
                Some(s) if (200..=599).contains(&s) => Some(s as u16),
                Some(_) => {
                    self.err(&format!("{fp}.status"), "must be between 200 and 599");
                    None
                }
            };
            let body = f.body.clone().unwrap_or_default();
            if body.len() > 1024 {
                self.err(
                    &format!("{fp}.body"),
                    format!("must be at most 1024 bytes (is {})", body.len()),
                );
            }
            let content_type = f
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".to_owned());
            if http::HeaderValue::from_str(&content_type).is_err() || content_type.is_empty() {
                self.err(
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
                    self.err(
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
                    self.err(
                        &format!("{rp}.protocol"),
                        format!("unknown protocol {other:?} (expected \"http\" or \"https\")"),
                    );
                    None
                }
            };
            let port = match r.port {
                None => None,
                Some(n) if (1..=65535).contains(&n) => Some(n as u16),
                Some(_) => {
                    self.err(&format!("{rp}.port"), "must be between 1 and 65535");
                    None
                }
            };
            if let Some(path) = &r.path {
                if !path.starts_with('/') {
                    self.err(
                        &format!("{rp}.path"),
                        format!("path {path:?} must start with \"/\""),
                    );
                }
            }
            if let Some(host) = &r.host {
                if host.trim().is_empty() {
                    self.err(&format!("{rp}.host"), "must not be empty");
                }
            }
            if r.protocol.is_none()
                && r.host.is_none()
                && r.port.is_none()
                && r.path.is_none()
                && r.query.is_none()
            {
                self.err(
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

    /// One `[[target_groups]]` element.
    fn target_group(&mut self, p: &str, t: &RawTargetGroup) -> Option<TargetGroup> {
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
                        self.err(&format!("{hp}.cookie"), "must not be empty");
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
                    self.err(&hp, "set exactly one of: header, cookie, source_ip = true");
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
                    self.err(
                        &format!("{p}.hash_on"),
                        "required with algorithm = \"consistent_hash\"",
                    );
                }
                hash_on.clone().map(Algorithm::ConsistentHash)
            }
            Some(other) => {
                self.err(
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
            self.err(
                &format!("{p}.hash_on"),
                "only allowed with algorithm = \"consistent_hash\"",
            );
        }

        let stickiness = match &t.stickiness {
            None => None,
            Some(s) => {
                let sp = format!("{p}.stickiness");
                let duration = self.dur_in(
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
                    self.err(
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

        let deregistration_delay = self.dur_in(
            &t.deregistration_delay,
            &format!("{p}.deregistration_delay"),
            secs(300),
            Duration::ZERO,
            secs(3600),
            "at most 3600s",
        );
        let ssp = format!("{p}.slow_start");
        let slow_start = self.dur(&t.slow_start, &ssp, Duration::ZERO);
        if !slow_start.is_zero() && (slow_start < secs(30) || slow_start > secs(900)) {
            self.err(&ssp, "must be 0s (off) or between 30s and 900s");
        }

        let no_timeouts = RawTimeouts::default();
        let to = t.timeouts.as_ref().unwrap_or(&no_timeouts);
        let tp = format!("{p}.timeouts");
        let timeouts = Timeouts {
            connect: self.dur_pos(&to.connect, &format!("{tp}.connect"), secs(5)),
            read: self.dur_pos(&to.read, &format!("{tp}.read"), secs(60)),
            total: to
                .total
                .is_some()
                .then(|| self.dur_pos(&to.total, &format!("{tp}.total"), secs(1))),
            idle: self.dur_pos(&to.idle, &format!("{tp}.idle"), secs(60)),
        };

        let rp = format!("{p}.retry");
        let r = t.retry.as_ref();
        let retry = RetryPolicy {
            attempts: self.int(
                r.and_then(|x| x.attempts),
                &format!("{rp}.attempts"),
                2,
                0,
                10,
            ) as u32,
            budget_percent: self.int(
                r.and_then(|x| x.budget_percent),
                &format!("{rp}.budget_percent"),
                20,
                0,
                100,
            ) as u32,
            min_per_second: self.int(
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

    /// `health_check`.
    fn health_check(&mut self, p: &str, h: &RawHealthCheck) -> HealthCheck {
        let protocol = match h.protocol.as_deref() {
            None | Some("http") => HealthProtocol::Http,
            Some("tcp") => HealthProtocol::Tcp,
            Some(other) => {
                self.err(
                    &format!("{p}.protocol"),
                    format!("unknown protocol {other:?} (expected \"http\" or \"tcp\")"),
                );
                HealthProtocol::Http
            }
        };
        let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') {
            self.err(
                &format!("{p}.path"),
                format!("path {path:?} must start with \"/\""),
            );
        }
        let port = match h.port {
            None => None,
            Some(n) if (1..=65535).contains(&n) => Some(n as u16),
            Some(_) => {
                self.err(&format!("{p}.port"), "must be between 1 and 65535");
                None
            }
        };
        let matcher = match &h.matcher {
            None => Matcher(vec![(200, 200)]),
            Some(m) => parse_matcher(m).unwrap_or_else(|e| {
                self.err(&format!("{p}.matcher"), e);
                Matcher(vec![(200, 200)])
            }),
        };
        let ip = format!("{p}.interval");
        let errors_before = self.errors.len();
        let interval = self.dur_in(
            &h.interval,
            &ip,
            secs(30),
            secs(1),
            secs(300),
            "between 1s and 300s",
        );
        let interval_ok = self.errors.len() == errors_before;
        let tp = format!("{p}.timeout");
        let timeout = self.dur(&h.timeout, &tp, secs(5));
        if timeout < Duration::from_millis(100) {
            self.err(&tp, "must be at least 100ms");
        } else if interval_ok && timeout >= interval {
            self.err(
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
            healthy_threshold: self.int(
                h.healthy_threshold,
                &format!("{p}.healthy_threshold"),
                5,
                2,
                10,
            ) as u32,
            unhealthy_threshold: self.int(
                h.unhealthy_threshold,
                &format!("{p}.unhealthy_threshold"),
                2,
                2,
                10,
            ) as u32,
        }
    }

    /// `outlier`.
    fn outlier(&mut self, p: &str, o: &RawOutlier) -> Outlier {
        let base_ejection_time = self.dur_pos(
            &o.base_ejection_time,
            &format!("{p}.base_ejection_time"),
            secs(30),
        );
        let mp = format!("{p}.max_ejection_time");
        let max_ejection_time = self.dur(&o.max_ejection_time, &mp, secs(300));
        if max_ejection_time < base_ejection_time {
            self.err(
                &mp,
                format!(
                    "must be at least base_ejection_time ({})",
                    humantime::format_duration(base_ejection_time)
                ),
            );
        }
        Outlier {
            enabled: o.enabled.unwrap_or(true),
            consecutive_5xx: self.int(
                o.consecutive_5xx,
                &format!("{p}.consecutive_5xx"),
                5,
                1,
                1000,
            ) as u32,
            consecutive_connect_failures: self.int(
                o.consecutive_connect_failures,
                &format!("{p}.consecutive_connect_failures"),
                3,
                1,
                1000,
            ) as u32,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: self.int(
                o.max_ejection_percent,
                &format!("{p}.max_ejection_percent"),
                50,
                0,
                100,
            ) as u32,
        }
    }

    /// `source`.
    fn source(&mut self, p: &str, s: Option<&RawSource>) -> Option<Source> {
        let Some(s) = s else {
            self.err(
                p,
                "required (kind = \"static\" with targets, kind = \"file\" with path, or kind = \"ecs\")",
            );
            return None;
        };
        let kp = format!("{p}.kind");
        match s.kind.as_deref() {
            None => {
                self.err(&kp, "required (\"static\", \"file\" or \"ecs\")");
                None
            }
            Some("static") => {
                if s.path.is_some() {
                    self.err(&format!("{p}.path"), "only allowed with kind = \"file\"");
                }
                let tp = format!("{p}.targets");
                match &s.targets {
                    None => {
                        self.err(&tp, "required with kind = \"static\"");
                        None
                    }
                    Some(list) => Some(Source::Static(self.targets(list, &tp, true))),
                }
            }
            Some("file") => {
                if s.targets.is_some() {
                    self.err(
                        &format!("{p}.targets"),
                        "only allowed with kind = \"static\"",
                    );
                }
                let path = self.required(&s.path, &format!("{p}.path"))?;
                Some(Source::File(self.base_dir.join(path)))
            }
            Some("ecs") => self.ecs_source(p, s).map(Source::Ecs),
            Some(other) => {
                self.err(
                    &kp,
                    format!(
                        "unknown source kind {other:?} (expected \"static\", \"file\" or \"ecs\")"
                    ),
                );
                None
            }
        }
    }

    /// `source` with `kind = "ecs"`.
    fn ecs_source(&mut self, p: &str, s: &RawSource) -> Option<EcsSource> {
        for (key, set) in [("targets", s.targets.is_some()), ("path", s.path.is_some())] {
            if set {
                self.err(&format!("{p}.{key}"), "not allowed with kind = \"ecs\"");
            }
        }
        let cluster = self.required(&s.cluster, &format!("{p}.cluster"));
        let container = self.required(&s.container, &format!("{p}.container"));
        let selector = match (&s.service, &s.family) {
            (Some(svc), None) if !svc.trim().is_empty() => Some(EcsSelector::Service(svc.clone())),
            (None, Some(fam)) if !fam.trim().is_empty() => Some(EcsSelector::Family(fam.clone())),
            (Some(_), Some(_)) => {
                self.err(
                    &format!("{p}.family"),
                    "set either service or family, not both",
                );
                None
            }
            (None, None) => {
                self.err(p, "kind = \"ecs\" needs service or family");
                None
            }
            _ => {
                self.err(p, "service / family must not be empty");
                None
            }
        };
        let pp = format!("{p}.port");
        let port = match &s.port {
            None => {
                self.err(
                    &pp,
                    "required (the container port, or its port mapping's name)",
                );
                None
            }
            Some(RawPort::Number(n)) if (1..=65535).contains(n) => Some(PortRef::Number(*n as u16)),
            Some(RawPort::Number(_)) => {
                self.err(&pp, "must be between 1 and 65535");
                None
            }
            Some(RawPort::Name(n)) if !n.trim().is_empty() => Some(PortRef::Name(n.clone())),
            Some(RawPort::Name(_)) => {
                self.err(&pp, "must not be empty");
                None
            }
        };
        let poll_interval = self.dur_in(
            &s.poll_interval,
            &format!("{p}.poll_interval"),
            Duration::from_millis(750),
            Duration::from_millis(100),
            Duration::from_secs(300),
            "between 100ms and 300s",
        );
        Some(EcsSource {
            cluster: cluster?.to_string(),
            selector: selector?,
            container: container?.to_string(),
            port: port?,
            poll_interval,
        })
    }

    /// A list of targets at `p` (`targets`); `non_empty` for static sources.
    fn targets(&mut self, list: &[RawTarget], p: &str, non_empty: bool) -> Vec<TargetSpec> {
        if non_empty && list.is_empty() {
            self.err(p, "must list at least one target");
        }
        let mut out = Vec::new();
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, t) in list.iter().enumerate() {
            let tp = format!("{p}[{i}]");
            let ap = format!("{tp}.address");
            let address = self
                .required(&t.address, &ap)
                .and_then(|a| self.parse_addr(a, &ap));
            let weight = self.int(t.weight, &format!("{tp}.weight"), 1, 1, 1000) as u32;
            let Some(address) = address else { continue };
            if let Some(first) = seen.get(&address) {
                self.err(
                    &ap,
                    format!("duplicate target {address} (also at {p}[{first}])"),
                );
                continue;
            }
            seen.insert(address, i);
            out.push(TargetSpec { address, weight });
        }
        out
    }
}

/// `n` seconds.
/// The default replica name: `$HOSTNAME`, else the kernel's host name, else `"berth"`.
fn default_replica() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".to_owned())
}

/// Parses a scheduled action's schedule, as Application Auto Scaling writes them:
///
/// * `cron(m h dom mon dow)` — five fields (croner syntax: `*`, `,`, `-`, `/`, `?`, `L`, `#`,
///   `MON`..`SUN`, `JAN`..`DEC`); a sixth field, the year, is accepted only as `*`;
/// * `at(yyyy-mm-ddThh:mm:ss)` — once, local time in the action's time zone;
/// * `rate(N minute[s]|hour[s]|day[s])` — every N units from the scaler's start.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let t = text.trim();
    let inner = |prefix: &str| {
        t.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(expr) = inner("cron(") {
        let mut fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() == 6 {
            if fields[5] != "*" {
                return Err(format!(
                    "invalid cron expression {expr:?}: the year field must be \"*\""
                ));
            }
            fields.pop();
        }
        if fields.len() != 5 {
            return Err(format!(
                "invalid cron expression {expr:?}: expected 5 fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let five = fields.join(" ");
        return croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .dom_and_dow(false)
            .build()
            .parse(&five)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"));
    }
    if let Some(at) = inner("at(") {
        return chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S")
            .map(Schedule::At)
            .map_err(|e| format!("invalid at() time {at:?}: {e} (expected yyyy-mm-ddThh:mm:ss)"));
    }
    if let Some(rate) = inner("rate(") {
        let bad = || {
            format!("invalid rate {rate:?} (expected e.g. \"5 minutes\", \"1 hour\", \"2 days\")")
        };
        let (n, unit) = rate.split_once(char::is_whitespace).ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let unit_secs = match unit.trim() {
            "minute" | "minutes" => 60,
            "hour" | "hours" => 3600,
            "day" | "days" => 86_400,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!("invalid rate {rate:?}: must be at least 1"));
        }
        return Ok(Schedule::Rate(Duration::from_secs(
            n.saturating_mul(unit_secs),
        )));
    }
    Err(format!(
        "invalid schedule {t:?} (expected cron(...), at(...) or rate(...))"
    ))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_single_range_list() {
        assert_eq!(parse_matcher("200").unwrap(), Matcher(vec![(200, 200)]));
        assert_eq!(parse_matcher("200-399").unwrap(), Matcher(vec![(200, 399)]));
        let m = parse_matcher("200, 204,300-399").unwrap();
        assert_eq!(m, Matcher(vec![(200, 200), (204, 204), (300, 399)]));
        assert!(m.matches(204) && m.matches(301) && !m.matches(201) && !m.matches(400));
    }

    #[test]
    fn matcher_errors() {
        assert_eq!(
            parse_matcher("600").unwrap_err(),
            "invalid matcher \"600\": status code 600 is outside 100..=599"
        );
        assert_eq!(
            parse_matcher("399-200").unwrap_err(),
            "invalid matcher \"399-200\": range 399-200 is reversed"
        );
        assert_eq!(
            parse_matcher("200,").unwrap_err(),
            "invalid matcher \"200,\": empty entry"
        );
        assert_eq!(
            parse_matcher("2xx").unwrap_err(),
            "invalid matcher \"2xx\": \"2xx\" is not a status code"
        );
        assert!(parse_matcher("").is_err());
        assert!(parse_matcher("99").is_err());
        assert!(parse_matcher("200-").is_err());
        assert!(parse_matcher("-").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1d").unwrap(), secs(86_400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        let e = parse_duration("3x").unwrap_err();
        assert!(e.starts_with("invalid duration \"3x\": "), "{e}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("30").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nope").is_none());
    }

    #[test]
    fn serde_messages() {
        assert_eq!(
            clean_serde_message("unknown field `intervl`, expected one of `a`, `b`"),
            (
                "unknown key \"intervl\" (expected one of: a, b)".to_owned(),
                Some("intervl".to_owned())
            )
        );
        assert_eq!(
            clean_serde_message("invalid type: integer `5`, expected a string").0,
            "expected a string, found integer `5`"
        );
        assert_eq!(
            clean_serde_message("invalid type: string \"x\", expected i64").0,
            "expected an integer, found string \"x\""
        );
    }

    const MINIMAL: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = { forward = [{ target_group = "app" }] }

[[target_groups]]
name = "app"
source = { kind = "static", targets = [{ address = "127.0.0.1:9000" }] }
"#;

    #[test]
    fn defaults() {
        let c = parse_and_validate(MINIMAL, Path::new("/base")).unwrap();
        assert_eq!(c.proxy.threads, 1);
        assert_eq!(c.proxy.grace_period, secs(30));
        assert_eq!(c.proxy.upstream_keepalive_pool, 128);
        assert!(c.proxy.trusted_proxies.is_empty());
        assert_eq!(c.proxy.request_id_header, "x-request-id");
        assert_eq!(c.proxy.watch_interval, secs(1));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.admin.bind, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(c.scaler.metrics_url, "http://127.0.0.1:9901/metrics");
        assert_eq!(c.scaler.interval, secs(5));
        assert!(c.scaler.dry_run);
        assert_eq!(c.scaler.admin_bind, "127.0.0.1:9902".parse().unwrap());

        let l = &c.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Http);
        assert!(!l.http2);
        assert_eq!(l.header_timeout, secs(60));
        assert_eq!(l.idle_timeout, secs(60));
        assert_eq!(l.max_header_bytes, 65536);
        assert!(l.rules.is_empty());
        match &l.default_action {
            Action::Forward(g) => {
                assert_eq!(g.len(), 1);
                assert_eq!(g[0].target_group, "app");
                assert_eq!(g[0].weight, 1);
            }
            other => panic!("unexpected {other:?}"),
        }

        let t = &c.target_groups[0];
        assert_eq!(t.algorithm, Algorithm::RoundRobin);
        assert!(t.stickiness.is_none());
        assert_eq!(t.deregistration_delay, secs(300));
        assert_eq!(t.slow_start, Duration::ZERO);
        assert_eq!(t.timeouts.connect, secs(5));
        assert_eq!(t.timeouts.read, secs(60));
        assert_eq!(t.timeouts.idle, secs(60));
        assert_eq!(t.timeouts.total, None);
        assert_eq!(t.retry.attempts, 2);
        assert_eq!(t.retry.budget_percent, 20);
        assert_eq!(t.retry.min_per_second, 10);
        let h = &t.health_check;
        assert!(h.enabled);
        assert_eq!(h.protocol, HealthProtocol::Http);
        assert_eq!(h.path, "/");
        assert_eq!(h.matcher, Matcher(vec![(200, 200)]));
        assert_eq!(h.interval, secs(30));
        assert_eq!(h.timeout, secs(5));
        assert_eq!(h.healthy_threshold, 5);
        assert_eq!(h.unhealthy_threshold, 2);
        let o = &t.outlier;
        assert!(o.enabled);
        assert_eq!(o.consecutive_5xx, 5);
        assert_eq!(o.consecutive_connect_failures, 3);
        assert_eq!(o.base_ejection_time, secs(30));
        assert_eq!(o.max_ejection_time, secs(300));
        assert_eq!(o.max_ejection_percent, 50);
        match &t.source {
            Source::Static(ts) => assert_eq!(
                ts,
                &vec![TargetSpec {
                    address: "127.0.0.1:9000".parse().unwrap(),
                    weight: 1
                }]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn admin_proxy_protocol_is_optional_and_checked() {
        let c = parse_and_validate(MINIMAL, Path::new("/base")).unwrap();
        assert!(c.admin.proxy_protocol.is_none());

        let text = format!(
            "[admin]\nbind = \"0.0.0.0:9901\"\n[admin.proxy_protocol]\ntrusted_cidrs = [\"10.0.0.0/16\"]\n{MINIMAL}"
        );
        let c = parse_and_validate(&text, Path::new("/base")).unwrap();
        let pp = c.admin.proxy_protocol.as_ref().unwrap();
        assert_eq!(
            pp.trusted_cidrs,
            vec!["10.0.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(pp.header_timeout, secs(3));
        assert!(pp.allowed_vpc_endpoints.is_empty());

        let text = format!(
            "[admin.proxy_protocol]\nheader_timeout = \"1h\"\nallowed_vpc_endpoints = [\"vpce-1\"]\n{MINIMAL}"
        );
        let e = parse_and_validate(&text, Path::new("/base")).unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "admin.proxy_protocol.trusted_cidrs",
                "admin.proxy_protocol.header_timeout",
                "admin.proxy_protocol.allowed_vpc_endpoints",
            ],
            "{e}"
        );
    }

    #[test]
    fn https_defaults_http2_and_stickiness_defaults() {
        let text = MINIMAL.replace(
            "name = \"app\"",
            "name = \"app\"\nstickiness = {}\nhash_on = { source_ip = true }\nalgorithm = \"consistent_hash\"",
        );
        let c = parse_and_validate(&text, Path::new("/base")).unwrap();
        let s = c.target_groups[0].stickiness.as_ref().unwrap();
        assert_eq!(s.duration, secs(86_400));
        assert_eq!(s.cookie_name, "BERTHSTICKY");
        assert_eq!(
            c.target_groups[0].algorithm,
            Algorithm::ConsistentHash(HashOn::SourceIp)
        );
    }

    #[test]
    fn rules_sorted_and_wildcards() {
        let text = MINIMAL.replace(
            "default_action",
            r#"rules = [
  { priority = 20, conditions = [{ host = ["*.Example.com"] }], action = { fixed_response = { status = 200 } } },
  { priority = 10, conditions = [{ path_glob = ["/api/*/x", "/static/**"] }], action = { redirect = { path = "/new" } } },
]
default_action"#,
        );
        let c = parse_and_validate(&text, Path::new("/base")).unwrap();
        let rules = &c.listeners[0].rules;
        assert_eq!(rules[0].priority, 10);
        assert_eq!(rules[1].priority, 20);
        let Condition::Host(h) = &rules[1].conditions[0] else {
            panic!()
        };
        assert!(h[0].is_match("a.b.example.com"));
        assert!(h[0].is_match("www.example.com"));
        assert!(!h[0].is_match("example.com"));
        let Condition::PathGlob(g) = &rules[0].conditions[0] else {
            panic!()
        };
        assert!(g[0].is_match("/api/v1/x"));
        assert!(!g[0].is_match("/api/v1/v2/x"));
        assert!(g[1].is_match("/static/a/b/c.css"));
        let Action::Redirect(r) = &rules[0].action else {
            panic!()
        };
        assert_eq!(r.status, 301);
    }

    #[test]
    fn patterns_without_wildcards_match_by_equality() {
        let host = compile("api.example.com", "api.example.com", true, false).unwrap();
        assert!(host.matcher.is_none());
        assert!(host.is_match("api.example.com") && host.is_match("API.example.COM"));
        assert!(!host.is_match("api.example.com.evil") && !host.is_match("xapi.example.com"));
        let path = compile("/static/app.css", "/static/app.css", false, true).unwrap();
        assert!(path.matcher.is_none());
        assert!(path.is_match("/static/app.css") && !path.is_match("/STATIC/app.css"));
        let wild = compile("*.example.com", "*.example.com", true, false).unwrap();
        assert!(wild.matcher.is_some() && wild.is_match("a.example.com"));
        // Non-ASCII keeps the glob matcher and its own notion of case.
        let uni = compile("Ä", "Ä", true, false).unwrap();
        assert!(uni.matcher.is_some() && uni.is_match("Ä"));
    }

    #[test]
    fn wildcard_escapes_other_glob_syntax() {
        let w = compile("a[b]{c}", &escape_wildcard("a[b]{c}*"), true, false).unwrap();
        assert!(w.is_match("A[B]{C}anything"));
        assert!(!w.is_match("ab{c}"));
    }
}
