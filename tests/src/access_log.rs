//! Reading berth's access log in tests: berth's stdout goes to a file ([`AccessLogFile`]), whose
//! lines are waited for and parsed (JSON objects, or ALB-format fields).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
