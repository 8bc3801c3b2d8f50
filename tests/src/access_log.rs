//! Reading berth's access log in tests: berth's stdout goes to a file ([`AccessLogFile`]), whose
//! lines are waited for and parsed (JSON objects, or ALB-format fields).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::config::{forward, static_group, Group, Listener};
use crate::net::listen_addr;
use crate::{Backend, Berth};

/// A file that receives berth's stdout.
pub struct AccessLogFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl AccessLogFile {
    /// A new empty file in a temporary folder.
    pub fn new() -> AccessLogFile {
        let dir = tempfile::Builder::new()
            .prefix("berth-access-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("stdout.log");
        std::fs::write(&path, b"").expect("create stdout file");
        AccessLogFile { _dir: dir, path }
    }

    /// The file as berth's stdout.
    pub fn stdio(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .expect("open stdout file")
            .into()
    }

    /// The complete lines written so far.
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` lines are there (panics after `timeout`), and returns them all.
    pub async fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} access log line(s) after {timeout:?}, expected {n}:\n{}",
                    lines.len(),
                    lines.join("\n")
                );
            }
            tokio::time::sleep(crate::wait::POLL).await;
        }
    }

    /// Waits for `n` lines and parses each as a JSON object (panics on any that is not).
    pub async fn wait_json(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        self.wait_lines(n, timeout)
            .await
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}"));
                assert!(v.is_object(), "not an object: {l}");
                v
            })
            .collect()
    }
}

impl Default for AccessLogFile {
    fn default() -> Self {
        AccessLogFile::new()
    }
}

/// The fields of an ALB-format line: space-separated, a quoted field to its closing quote
/// (backslash escapes kept as written).
pub fn alb_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    let (mut quoted, mut in_field) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_field => {
                quoted = true;
                in_field = true;
            }
            '"' if quoted => quoted = false,
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if !quoted => {
                if in_field {
                    fields.push(std::mem::take(&mut cur));
                }
                in_field = false;
            }
            _ => {
                in_field = true;
                cur.push(c);
            }
        }
    }
    if in_field {
        fields.push(cur);
    }
    fields
}

/// Whether `s` is `1-<8 lowercase hex>-<24 lowercase hex>`.
pub fn is_id(s: &str) -> bool {
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3 && parts[0] == "1" && hex(parts[1], 8) && hex(parts[2], 24)
}

/// Whether `s` is a trace id berth made: `Root=1-<8 hex>-<24 hex>`.
pub fn is_root(s: &str) -> bool {
    s.strip_prefix("Root=").is_some_and(is_id)
}

/// The one line whose `field` is `value` (panics unless exactly one).
pub fn find(
    lines: &[serde_json::Value],
    field: &str,
    value: impl Into<serde_json::Value>,
) -> serde_json::Value {
    let value = value.into();
    let found: Vec<_> = lines.iter().filter(|l| l[field] == value).collect();
    assert_eq!(found.len(), 1, "lines with {field} = {value}: {lines:#?}");
    found[0].clone()
}

/// Listener `web` (2 KiB header limit): `/dead` → a group whose target refuses connections,
/// `/empty` → a group with no target, `/r` a redirect (priority 5), `/f` a fixed response
/// (priority 6), anything else → group `a`.
pub fn web_config(web: SocketAddr, a: &Backend, top: &str) -> String {
    let dead = listen_addr();
    let listener = Listener::web(web, "a")
        .key("max_header_bytes = 2048")
        .rule(1, r#"{ path_prefix = ["/dead"] }"#, &forward("dead"))
        .rule(2, r#"{ path_prefix = ["/empty"] }"#, &forward("empty"))
        .rule(
            5,
            r#"{ path_prefix = ["/r"] }"#,
            r#"{ redirect = { status = 301, host = "elsewhere.test" } }"#,
        )
        .rule(
            6,
            r#"{ path_prefix = ["/f"] }"#,
            r#"{ fixed_response = { status = 418, body = "teapot" } }"#,
        );
    let dead_group = Group::new("dead")
        .key("[target_groups.health_check]\nenabled = false")
        .targets(&format!("[{{ address = \"{dead}\" }}]"));
    // A targets file that does not exist: a group with no target.
    let empty = Group::new("empty").key(
        "[target_groups.health_check]\nenabled = false\n[target_groups.source]\nkind = \"file\"\npath = \"none.toml\"",
    );
    format!(
        "{top}\n{listener}{}{dead_group}{empty}",
        static_group("a", &[a], "")
    )
}

/// Backend `a`, berth on [`web_config`] with `top` (its stdout to a new [`AccessLogFile`]),
/// `a` healthy.
pub async fn start_web(top: &str) -> (Backend, SocketAddr, Berth, AccessLogFile) {
    let a = Backend::spawn("a").await;
    let web = listen_addr();
    let out = AccessLogFile::new();
    let berth = Berth::start_with_stdout(&web_config(web, &a, top), &[], out.stdio()).await;
    berth
        .wait_healthy("a", &[a.addr()], Duration::from_secs(20))
        .await;
    (a, web, berth, out)
}
