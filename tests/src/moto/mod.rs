//! The real moto server (PyPI `moto[server]` 5.2.5) as an ECS + EC2 emulator, extended by
//! `tests/moto/launcher.py`.
//!
//! [`Moto::start`] runs `<repo>/.venv/bin/python tests/moto/launcher.py` on two free loopback
//! ports (create the venv once with `scripts/setup-python`), waits for its `READY` line and kills
//! it on drop. Point an AWS SDK at [`Moto::endpoint_url`] (see [`Moto::aws_env`]); drive state the
//! SDK cannot reach through the control API methods:
//!
//! - set-up without an SDK: [`Moto::create_cluster`], [`Moto::register_task_definition`],
//!   [`Moto::create_service`];
//! - tasks with loopback IPs: [`Moto::create_tasks`], [`Moto::update_task`], [`Moto::stop_task`],
//!   [`Moto::tasks`]; EC2 container instances: [`Moto::add_container_instance`];
//! - services: [`Moto::reconcile`], [`Moto::auto_reconcile`], [`Moto::service`];
//! - task apps (`task-app` processes that act like the application inside a task when ECS stops
//!   it, see [`AppSpec`]): [`Moto::set_service_app`], [`Moto::create_service_with`];
//! - the ECS API itself, as berth sees it: [`Moto::ecs_api`], [`Moto::update_service`] (a new
//!   task definition starts a rolling replacement under the reconcilers),
//!   [`Moto::ecs_stop_task`];
//! - the API itself: [`Moto::inject_fault`], [`Moto::clear_faults`], [`Moto::calls`];
//! - CloudWatch (the Rust SDK's RPC v2 CBOR protocol, translated by the launcher):
//!   [`Moto::cloudwatch_datapoints`]; faults apply to `PutMetricData` / `GetMetricData` too.
//!
//! Everything listens on 127.0.0.1; task and instance addresses must be in 127.0.0.0/8.
//!
//! The modules: [`spec`] (what is sent: task definitions, tasks, updates, faults), [`app`]
//! (task apps), [`state`] (what comes back), `control` (the HTTP exchange and launcher-wide
//! calls) and `ecs` (ECS and EC2 state); everything public is re-exported here.

pub mod app;
mod control;
mod ecs;
pub mod spec;
pub mod state;

pub use app::{task_app_bin, AppMode, AppSpec};
pub use spec::{
    ContainerDef, FaultKind, Health, NetworkMode, ServiceUpdate, TaskDefinition, TaskSpec,
    TaskUpdate,
};
pub use state::{CloudWatchDatapoint, ContainerInstance, Reconciled, ServiceState, TaskInfo};

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The account moto answers as.
pub const ACCOUNT_ID: &str = "123456789012";

/// The region [`Moto::start`] uses.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How long [`Moto::start`] waits for the launcher's `READY` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one control API call may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// The repository root: `$BERTH_REPO`, else the parent of this crate's manifest folder.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("BERTH_REPO") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// The Python that has moto: `$BERTH_MOTO_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn python() -> PathBuf {
    match std::env::var_os("BERTH_MOTO_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv").join("bin").join("python"),
    }
}

/// Fails the calling test, saying what to run, when [`python`] is missing (`scripts/setup-python`
/// has not run): a test that needs moto never passes without it.
pub fn require() {
    assert!(
        python().is_file(),
        "the moto virtualenv is missing ({}): run `bash scripts/setup-python` (scripts/test does)",
        python().display()
    );
}

/// A running launcher (moto + control API). Killed on drop.
pub struct Moto {
    child: Option<Child>,
    // Kept open: the launcher exits when its stdin closes, so it dies with this process.
    stdin: Option<ChildStdin>,
    port: u16,
    control_port: u16,
    region: String,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("port", &self.port)
            .field("control_port", &self.control_port)
            .field("region", &self.region)
            .finish()
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("bind a free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Moto {
    /// Starts the launcher in [`DEFAULT_REGION`] and waits (blocking, up to [`START_TIMEOUT`])
    /// for it to accept connections. Fails with instructions when the venv is missing.
    pub fn start() -> Result<Moto> {
        Self::start_in(DEFAULT_REGION)
    }

    /// [`Moto::start`] on a blocking thread, for async tests.
    pub async fn launch() -> Result<Moto> {
        tokio::task::spawn_blocking(Moto::start)
            .await
            .context("moto start thread")?
    }

    /// [`Moto::start`] in `region`. Retries twice if a port picked turned out taken.
    pub fn start_in(region: &str) -> Result<Moto> {
        let py = python();
        if !py.is_file() {
            bail!(
                "{} not found: run scripts/setup-python first (it creates .venv with moto[server])",
                py.display()
            );
        }
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&py, region) {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("moto did not start")))
    }

    fn try_start(py: &Path, region: &str) -> Result<Moto> {
        let (port, control_port) = (free_port()?, free_port()?);
        if port == control_port {
            bail!("picked the same port twice");
        }
        let dir = tempfile::Builder::new().prefix("berth-moto-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let launcher = repo_root().join("tests").join("moto").join("launcher.py");
        let mut child = Command::new(py)
            .arg(&launcher)
            .args(["--port", &port.to_string()])
            .args(["--control-port", &control_port.to_string()])
            .args(["--region", region, "--watch-stdin"])
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} {}", py.display(), launcher.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut moto = Moto {
            child: Some(child),
            stdin,
            port,
            control_port,
            region: region.to_string(),
            dir,
        };
        // Checked once `moto` owns the child, so that its drop kills the launcher.
        let stdout = stdout.context("the launcher's stdout is not piped")?;

        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("moto-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                // Reads to EOF, so the launcher never blocks on a full pipe after READY.
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let _ = tx.send(std::mem::take(&mut line));
                }
            })?;

        let deadline = Instant::now() + START_TIMEOUT;
        let expected = format!("READY {port} {control_port}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.trim() == expected => return Ok(moto),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "moto launcher exited before READY; log:\n{}",
                        moto.log_tail(40)
                    )
                }
            }
            if let Some(status) = moto
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "moto launcher exited with {status} before READY; log:\n{}",
                    moto.log_tail(40)
                );
            }
            if Instant::now() >= deadline {
                let tail = moto.log_tail(40);
                moto.kill();
                bail!("moto launcher not READY after {START_TIMEOUT:?}; log:\n{tail}");
            }
        }
    }

    /// `http://127.0.0.1:<port>`: the value for `AWS_ENDPOINT_URL` (ECS and EC2 alike).
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port moto (the AWS API: ECS, EC2, CloudWatch) listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<control port>`: the launcher's own API, which [`Moto::control`]
    /// calls.
    pub fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_port)
    }

    /// The region moto serves, which ARNs and [`Moto::aws_env`] carry.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Environment for a process (e.g. berth) that talks to this moto through the AWS SDK:
    /// endpoint, region, dummy static credentials, IMDS disabled.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// ARN of cluster `name`.
    pub fn cluster_arn(&self, name: &str) -> String {
        format!("arn:aws:ecs:{}:{ACCOUNT_ID}:cluster/{name}", self.region)
    }

    /// The launcher's log (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    /// The last `n` lines of the launcher's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The launcher's process id (`None` once it has been killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        drop(self.stdin.take());
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid; the child has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- moto launcher log (tail) ---\n{}", self.log_tail(30));
        }
        self.kill();
    }
}
