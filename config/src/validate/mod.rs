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
//! * `max_header_bytes` is 1024..=1048576, `threads` 1..=64, target weights 1..=1000;
//! * rule `transforms`: at most one of each type, forward actions only; `regex` and `replace`
//!   at most 1024 bytes, the regex compiled within 1 MiB, every `$` reference of `replace`
//!   naming a group of the regex; `[listeners.response_headers]` values as ALB accepts them.
//!
//! Where things are: `checker` holds the `Checker` (line index, base folder, errors) and
//! the checks of single values; `document` splits the file into sections and checks names
//! and binds that must be unique; one module per section follows (`settings`, `scaler` and
//! `scaling_policies`, `listener` with `conditions` and `actions`, `target_group` with
//! `health` and `sources`); `values` parses durations, matchers, CIDRs, wildcards and
//! schedules; `serde_errors` rewords serde's messages.

mod access_log;
mod actions;
mod checker;
mod conditions;
mod document;
mod health;
mod listener;
mod response_headers;
mod scaler;
mod scaling_policies;
mod serde_errors;
mod settings;
mod sources;
mod stickiness;
#[cfg(test)]
mod stickiness_tests;
mod target_group;
#[cfg(test)]
mod target_protocol_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transform_tests;
mod transforms;
mod values;
mod zones;

use std::path::Path;

use crate::error::{ConfigError, ConfigErrors};
use crate::lines::Lines;
use crate::model::{Config, TargetSpec};
use crate::raw::RawTargetsFile;
use checker::Checker;
use serde_errors::{append_key, clean_serde_message, path_string, syntax_error};
pub use values::{parse_duration, parse_matcher, parse_schedule};

/// Parses and validates configuration text; relative file paths resolve against `base_dir`.
///
/// Returns every problem found, sorted by line.
pub fn parse_and_validate(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let lines = Lines::new(text);
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return Err(ConfigErrors(vec![syntax_error(&e, &lines)])),
    };
    let mut checker = Checker::new(Some(&lines), base_dir);
    let sections = checker.deserialize_sections(table);
    let config = checker.config(sections);
    checker.finish(config)
}

/// Parses a targets file: TOML (`targets = [{ address = "ip:port", weight = 1 }]`), or JSON
/// (`{"targets": [{"address": "ip:port", "weight": 1}]}`) when the text starts with `{`.
///
/// Addresses must be `ip:port` and unique, weights 1..=1000 (default 1). An empty list is valid.
pub fn parse_targets_file(text: &str) -> Result<Vec<TargetSpec>, ConfigErrors> {
    if text.trim_start().starts_with('{') {
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
        let mut checker = Checker::new(None, Path::new("."));
        let targets = checker.targets(&raw.targets, "targets", false);
        checker.finish(targets)
    } else {
        let lines = Lines::new(text);
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => return Err(ConfigErrors(vec![syntax_error(&e, &lines)])),
        };
        let mut checker = Checker::new(Some(&lines), Path::new("."));
        let raw: RawTargetsFile = checker
            .deserialize(toml::Value::Table(table), "")
            .unwrap_or_default();
        let targets = checker.targets(&raw.targets, "targets", false);
        checker.finish(targets)
    }
}
