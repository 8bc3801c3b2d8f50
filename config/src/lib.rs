//! berth configuration: TOML text → [`raw`] serde structs (unknown keys rejected) → checked
//! [`model::Config`]. Every error names its key path and, where known, its line; all errors are
//! reported at once.

#![warn(missing_docs)]

pub mod error;
mod lines;
pub mod model;
pub mod raw;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::Config;

use std::path::Path;

/// The configuration `berth-proxy` and `berth-scaler` run when no `--config` is given: an HTTP
/// listener on 127.0.0.1:8080 forwarding to the targets listed in `./berth-targets.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../examples/default.toml");

/// Parses and validates configuration text. Relative file paths in it are resolved against
/// `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(text, base_dir)
}

/// Reads, parses and validates a configuration file; relative paths resolve against its folder.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
            None,
        )])
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base)
}

/// Parses the content of a targets file (`targets = [{ address = "ip:port", weight = 1 }]`),
/// TOML or, when it starts with `{`, JSON.
pub fn parse_targets_file(text: &str) -> Result<Vec<model::TargetSpec>, ConfigErrors> {
    validate::parse_targets_file(text)
}
