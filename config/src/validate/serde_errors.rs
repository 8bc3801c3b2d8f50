//! serde and TOML error messages reworded for people editing TOML, and key paths rendered
//! as `a.b[2].c`.

use crate::error::ConfigError;
use crate::lines::Lines;

/// A TOML syntax error, as one [`ConfigError`] without a path.
pub(super) fn syntax_error(e: &toml::de::Error, lines: &Lines) -> ConfigError {
    let line = e.span().map(|s| lines.line_of_offset(s.start));
    let msg = e.message().trim().replace('\n', "; ");
    ConfigError::new("", format!("TOML syntax error: {msg}"), line)
}

/// Renders a serde_path_to_error path as `a.b[2].c`.
pub(super) fn path_string(path: &serde_path_to_error::Path) -> String {
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
pub(super) fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else if rest.is_empty() || rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

/// Appends an unknown key to the path unless it already ends with it.
pub(super) fn append_key(path: String, key: Option<String>) -> String {
    match key {
        Some(k) if !path.ends_with(&format!(".{k}")) && path != k => join(&path, &k),
        _ => path,
    }
}

/// The names written between backticks in a serde message.
pub(super) fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Rewords a serde message for people editing TOML. Returns the message and, for an unknown
/// key, the key.
pub(super) fn clean_serde_message(msg: &str) -> (String, Option<String>) {
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
    for prefix in ["invalid type: ", "invalid value: "] {
        let found_expected = msg
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "));
        if let Some((found, expected)) = found_expected {
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
pub(super) fn describe_expected(e: &str) -> String {
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
pub(super) fn describe_found(f: &str) -> String {
    match f.trim() {
        "map" => "a table".to_owned(),
        "sequence" => "an array".to_owned(),
        other => other.replace("floating point", "float"),
    }
}
