//! [`Checker`]: the document's line index and the errors found so far, and the checks of
//! single values that every section uses (durations, integers, addresses, required strings).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::serde_errors::{append_key, clean_serde_message, join, path_string};
use super::values::{parse_cidr, parse_duration};
use crate::error::{ConfigError, ConfigErrors};
use crate::lines::Lines;

/// Checks one document: turns key paths into lines through `lines`, resolves relative file
/// paths against `base_dir`, and collects every error instead of stopping at the first.
pub(super) struct Checker<'a> {
    /// The document's line index; `None` for JSON targets files, whose errors carry no line.
    lines: Option<&'a Lines>,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker with no error yet.
    pub(super) fn new(lines: Option<&'a Lines>, base_dir: &'a Path) -> Self {
        Self {
            lines,
            base_dir,
            errors: Vec::new(),
        }
    }

    /// How many errors were recorded so far (to tell whether one check added any).
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// `path` resolved against the configuration file's folder.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// Records an error at `path`.
    pub(super) fn error(&mut self, path: &str, msg: impl Into<String>) {
        let line = self.lines.and_then(|l| l.line_of(path));
        self.errors.push(ConfigError::new(path, msg, line));
    }

    /// The result: `value`, or every error sorted by line.
    pub(super) fn finish<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(self.errors))
        }
    }

    /// Deserializes `value` into `T`, recording the error (with its full path) on failure.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        value: toml::Value,
        prefix: &str,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let path = join(prefix, &path_string(e.path()));
                let (msg, key) = clean_serde_message(&e.into_inner().to_string());
                let path = append_key(path, key);
                self.error(&path, msg);
                None
            }
        }
    }

    /// A duration, `default` when absent or invalid.
    pub(super) fn duration(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(msg) => {
                    self.error(path, msg);
                    default
                }
            },
        }
    }

    /// A duration that must lie in `min..=max`; `bounds` describes the range in messages.
    pub(super) fn duration_in(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: Duration,
        min: Duration,
        max: Duration,
        bounds: &str,
    ) -> Duration {
        let d = self.duration(v, path, default);
        if d < min || d > max {
            self.error(path, format!("must be {bounds}"));
        }
        d
    }

    /// A duration above zero.
    pub(super) fn positive_duration(
        &mut self,
        v: &Option<String>,
        path: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration(v, path, default);
        if d.is_zero() {
            self.error(path, "must be greater than 0");
        }
        d
    }

    /// An integer in `lo..=hi`, `default` when absent or invalid.
    pub(super) fn int_in(
        &mut self,
        v: Option<i64>,
        path: &str,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> i64 {
        self.optional_int_in(v, path, lo, hi).unwrap_or(default)
    }

    /// A required string; records `required` or `must not be empty`.
    pub(super) fn required<'s>(&mut self, v: &'s Option<String>, path: &str) -> Option<&'s str> {
        match v.as_deref() {
            None => {
                self.error(path, "required");
                None
            }
            Some(s) if s.trim().is_empty() => {
                self.error(path, "must not be empty");
                None
            }
            Some(s) => Some(s),
        }
    }

    /// An `ip:port` address, `default` when absent or invalid.
    pub(super) fn socket_addr(
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

    /// Parses `ip:port`, recording an error at `path` when it is not one.
    pub(super) fn parse_addr(&mut self, s: &str, path: &str) -> Option<SocketAddr> {
        match s.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    path,
                    format!("invalid address {s:?} (expected ip:port, e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        }
    }

    /// A header name, lower-cased.
    pub(super) fn header_name(&mut self, s: &str, path: &str) -> Option<String> {
        let lower = s.trim().to_ascii_lowercase();
        match http::HeaderName::from_bytes(lower.as_bytes()) {
            Ok(_) => Some(lower),
            Err(_) => {
                self.error(path, format!("invalid header name {s:?}"));
                None
            }
        }
    }

    /// An optional integer that must lie in `lo..=hi`; `None` when absent or out of range.
    pub(super) fn optional_int_in(
        &mut self,
        v: Option<i64>,
        path: &str,
        lo: i64,
        hi: i64,
    ) -> Option<i64> {
        let x = v?;
        if (lo..=hi).contains(&x) {
            Some(x)
        } else {
            self.error(path, format!("must be between {lo} and {hi}"));
            None
        }
    }

    /// A port number, 1..=65535.
    pub(super) fn port(&mut self, v: Option<i64>, path: &str) -> Option<u16> {
        self.optional_int_in(v, path, 1, 65535).map(|n| n as u16)
    }

    /// Records an error unless the URL path `s` starts with `/`; true when it does.
    pub(super) fn absolute_path(&mut self, s: &str, path: &str) -> bool {
        let ok = s.starts_with('/');
        if !ok {
            self.error(path, format!("path {s:?} must start with \"/\""));
        }
        ok
    }

    /// The CIDRs of `list` that parse; each one that does not is an error at `path[i]`.
    pub(super) fn cidrs(&mut self, list: &[String], path: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match parse_cidr(s) {
                Some(net) => out.push(net),
                None => self.error(
                    &format!("{path}[{i}]"),
                    format!("invalid CIDR {s:?} (expected e.g. \"10.0.0.0/8\" or an IP address)"),
                ),
            }
        }
        out
    }

    /// Records `must not be empty` for an empty list; true when the list has elements.
    pub(super) fn non_empty<T>(&mut self, list: &[T], path: &str) -> bool {
        if list.is_empty() {
            self.error(path, "must not be empty");
        }
        !list.is_empty()
    }

    /// A required file path that must exist, resolved against the base directory.
    pub(super) fn existing_file(&mut self, v: &Option<String>, path: &str) -> Option<PathBuf> {
        let s = self.required(v, path)?;
        let resolved = self.resolve(s);
        if resolved.is_file() {
            Some(resolved)
        } else {
            self.error(path, format!("file not found: {}", resolved.display()));
            None
        }
    }
}
