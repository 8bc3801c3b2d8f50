//! A `berth-proxy` process under test.
//!
//! [`Berth::start`] writes the config (with an `[admin]` table added on a fresh loopback address)
//! into a temporary folder, starts the binary there with its output going to `berth.log`, and
//! waits for the admin `/healthz` to answer 200. On drop it sends SIGINT, then SIGKILL, and reaps
//! the process; if the test is panicking it prints the log's tail first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::client::Http;
use crate::wait::wait_for;

/// The `berth-proxy` binary: `$BERTH_PROXY_BIN`, else next to this test executable's target
/// folder (`target/release/berth-proxy`), else `$CARGO_TARGET_DIR/release`, else the workspace's
/// `target/release`. Panics with instructions when none exists.
pub fn proxy_bin() -> PathBuf {
    find_bin("berth-proxy", "BERTH_PROXY_BIN")
}

/// Finds a workspace binary by name, `env` overriding.
pub fn find_bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/deps/<test> → target/release
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join(name));
        }
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
        }
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&t).join("release").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release")
            .join(name),
    );
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "{name} not found (looked in {candidates:?}); build it first: cargo build --release -p {}",
        if name == "berth-proxy" {
            "berth-proxy"
        } else {
            name
        }
    );
}

/// A running `berth-proxy`.
pub struct Berth {
    child: Option<Child>,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    http: Http,
}

impl Berth {
    /// Starts berth on `config` and waits until `/healthz` answers 200.
    pub async fn start(config: &str) -> Berth {
        Self::start_with_files(config, &[]).await
    }

    /// Writes `files` (name, content) into the config folder first, then starts as
    /// [`Berth::start`].
    pub async fn start_with_files(config: &str, files: &[(&str, &str)]) -> Berth {
        let mut b = Self::spawn(config, files, &[]);
        b.wait_ready(Duration::from_secs(30)).await;
        b
    }

    /// Like [`Berth::start_with_files`] with extra environment variables for the process
    /// (e.g. AWS endpoint and credentials pointing at moto).
    pub async fn start_with_env(
        config: &str,
        files: &[(&str, &str)],
        env: &[(String, String)],
    ) -> Berth {
        let mut b = Self::spawn_with_env(config, files, &[], env);
        b.wait_ready(Duration::from_secs(30)).await;
        b
    }

    /// Starts the process with extra arguments and does not wait for readiness.
    pub fn spawn(config: &str, files: &[(&str, &str)], extra_args: &[&str]) -> Berth {
        Self::spawn_with_env(config, files, extra_args, &[])
    }

    /// Starts berth on `config` with its stdout (the access log) going to `stdout` instead of
    /// the log file (stderr still goes there), and waits until `/healthz` answers 200.
    pub async fn start_with_stdout(config: &str, files: &[(&str, &str)], stdout: Stdio) -> Berth {
        let mut b = Self::spawn_inner(config, files, &[], &[], Some(stdout));
        b.wait_ready(Duration::from_secs(30)).await;
        b
    }

    /// Like [`Berth::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        config: &str,
        files: &[(&str, &str)],
        extra_args: &[&str],
        env: &[(String, String)],
    ) -> Berth {
        Self::spawn_inner(config, files, extra_args, env, None)
    }

    fn spawn_inner(
        config: &str,
        files: &[(&str, &str)],
        extra_args: &[&str],
        env: &[(String, String)],
        stdout: Option<Stdio>,
    ) -> Berth {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        let admin = crate::net::listen_addr();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write file");
        }
        let mut b = Berth {
            child: None,
            dir,
            admin,
            http: Http::no_pool().with_timeout(Duration::from_secs(5)),
        };
        b.write_config(config);
        let log = std::fs::File::create(b.log_path()).expect("create log");
        let log2 = log.try_clone().expect("clone log");
        let child = Command::new(proxy_bin())
            .arg("--config")
            .arg(b.config_path())
            .args(extra_args)
            .current_dir(b.dir.path())
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout.unwrap_or_else(|| log.into()))
            .stderr(log2)
            .spawn()
            .expect("spawn berth-proxy");
        b.child = Some(child);
        b
    }

    /// Waits for `/healthz` to answer 200; panics (with the log) if the process exits first or
    /// `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let url = self.admin_url("/healthz");
        let http = self.http.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "berth-proxy exited with {status} before becoming ready; log:\n{}",
                    self.log_tail(80)
                );
            }
            if let Ok(r) = http.get(&url).await {
                if r.status == 200 {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("berth-proxy not ready after {timeout:?} (GET {url} never answered 200)");
            }
            tokio::time::sleep(crate::wait::POLL).await;
        }
    }

    /// Where the running config is: `berth.toml` in [`Berth::dir`].
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    /// The folder the config lives in (and the process runs in).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process's combined stdout and stderr file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("berth.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The admin listener's address (`/healthz`, `/metrics`, `/targets`), a free loopback port
    /// chosen at start.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Replaces the config file atomically (the `[admin]` table is added as at start). The
    /// running process notices on its own (file watch) or on [`Berth::reload`].
    pub fn write_config(&self, config: &str) {
        assert!(
            !config.contains("[admin]"),
            "the harness sets [admin]; leave it out of test configs"
        );
        let text = format!("[admin]\nbind = \"{}\"\n\n{}", self.admin, config);
        self.write_file("berth.toml", &text);
    }

    /// Writes a file in the config folder atomically (temporary file, then rename).
    pub fn write_file(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write temp file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename into place");
    }

    /// `GET /targets` parsed.
    pub async fn targets(&self) -> serde_json::Value {
        let r = self
            .http
            .get(&self.admin_url("/targets"))
            .await
            .expect("GET /targets");
        assert_eq!(r.status, 200, "GET /targets: {}", r.body);
        r.json()
    }

    /// Address → state of the targets of `group`, from `/targets` (empty if the group is absent).
    pub async fn target_states(&self, group: &str) -> BTreeMap<String, String> {
        let t = self.targets().await;
        let mut out = BTreeMap::new();
        for g in t["target_groups"].as_array().into_iter().flatten() {
            if g["name"] == group {
                for t in g["targets"].as_array().into_iter().flatten() {
                    out.insert(
                        t["address"].as_str().unwrap_or_default().to_string(),
                        t["state"].as_str().unwrap_or_default().to_string(),
                    );
                }
            }
        }
        out
    }

    /// Waits until target `addr` of `group` is in `state` (`None`: absent).
    pub async fn wait_target(
        &self,
        group: &str,
        addr: SocketAddr,
        state: Option<&str>,
        timeout: Duration,
    ) {
        let addr = addr.to_string();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let states = self.target_states(group).await;
            if states.get(&addr).map(String::as_str) == state {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for target {addr} of {group} to be \
                     {state:?}; last /targets of {group}: {states:?}"
                );
            }
            tokio::time::sleep(crate::wait::POLL).await;
        }
    }

    /// Waits until every one of `addrs` in `group` is healthy.
    pub async fn wait_healthy(&self, group: &str, addrs: &[SocketAddr], timeout: Duration) {
        for a in addrs {
            self.wait_target(group, *a, Some("healthy"), timeout).await;
        }
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(&self.admin_url("/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics");
        r.body
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        crate::metrics::value(&self.metrics().await, name, labels)
    }

    /// Waits until metric `name{labels}` is at least `min`, returning it.
    pub async fn wait_metric_at_least(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        min: f64,
        timeout: Duration,
    ) -> f64 {
        let what = format!("{name}{labels:?} >= {min}");
        wait_for(timeout, &what, || async {
            self.metric(name, labels).await.filter(|v| *v >= min)
        })
        .await
    }

    /// The berth-proxy process id, for signals and /proc (0 when it never started).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Resident memory of the process in KiB (from /proc), 0 if unknown.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        assert!(pid > 0, "berth-proxy not running");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// SIGHUP: reload the config.
    pub fn reload(&self) {
        self.signal(libc::SIGHUP);
    }

    /// SIGTERM: graceful shutdown.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGINT: fast shutdown.
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- berth-proxy config ({}):\n{}\n---- berth-proxy log tail ({}):\n{}\n----",
                self.config_path().display(),
                std::fs::read_to_string(self.config_path()).unwrap_or_default(),
                self.log_path().display(),
                self.log_tail(80)
            );
        }
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Output of `berth-proxy --check`.
#[derive(Debug)]
pub struct CheckOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// What `--check` printed on stdout (lossy UTF-8).
    pub stdout: String,
    /// What `--check` printed on stderr: the validation errors, each with its key path.
    pub stderr: String,
}

/// Runs `berth-proxy --config <file> --check` on `config` written to a temporary folder with
/// `files` beside it.
pub fn check(config: &str, files: &[(&str, &str)]) -> CheckOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(proxy_bin())
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .current_dir(dir.path())
        .output()
        .expect("run berth-proxy --check");
    CheckOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}
