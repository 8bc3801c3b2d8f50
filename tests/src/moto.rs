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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

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

/// A task's or container's health as ECS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHY`.
    Healthy,
    /// `UNHEALTHY`.
    Unhealthy,
    /// `UNKNOWN` (no container health check, or not yet evaluated).
    Unknown,
}

impl Health {
    /// The ECS API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// A task definition's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// `awsvpc`: one ENI (here: one loopback address) per task; FARGATE by default.
    Awsvpc,
    /// `bridge`: the container instance's address and a dynamic host port; EC2.
    Bridge,
    /// `host`: the container instance's address and the container port; EC2.
    Host,
}

impl NetworkMode {
    /// The ECS API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
        }
    }
}

/// A fault the launcher injects in front of moto for the next `count` calls of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// ECS: HTTP 400 `ThrottlingException`; EC2: HTTP 503 `RequestLimitExceeded`;
    /// CloudWatch (CBOR): HTTP 400 `Throttling`.
    Throttle,
    /// ECS: HTTP 500 `ServerException`; EC2: HTTP 500 `InternalError`; CloudWatch (CBOR):
    /// HTTP 500 `InternalServiceFault`.
    Error500,
    /// Answer normally after this delay.
    Delay(Duration),
}

/// One container of a task definition made by [`Moto::register_task_definition`].
#[derive(Debug, Clone, Default)]
pub struct ContainerDef {
    /// Container name.
    pub name: String,
    /// Container port (none: the container exposes nothing).
    pub port: Option<u16>,
    /// The port mapping's name (Service Connect style), e.g. `http`.
    pub port_name: Option<String>,
    /// Host port for bridge/host mode; `None` or `Some(0)` in bridge mode means dynamic.
    pub host_port: Option<u16>,
    /// Whether the container has a (dummy) health check, which makes task health
    /// `HEALTHY`/`UNHEALTHY` instead of `UNKNOWN`.
    pub health_check: bool,
}

impl ContainerDef {
    /// A container `name` listening on `port`, port mapping named `http`, no health check.
    pub fn new(name: &str, port: u16) -> ContainerDef {
        ContainerDef {
            name: name.to_string(),
            port: Some(port),
            port_name: Some("http".to_string()),
            host_port: None,
            health_check: false,
        }
    }

    /// With a container health check.
    pub fn with_health_check(mut self) -> ContainerDef {
        self.health_check = true;
        self
    }

    /// With a fixed host port (bridge/host mode).
    pub fn with_host_port(mut self, port: u16) -> ContainerDef {
        self.host_port = Some(port);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "port": self.port,
            "port_name": self.port_name,
            "host_port": self.host_port,
            "health_check": self.health_check,
        })
    }
}

/// A task definition for [`Moto::register_task_definition`].
#[derive(Debug, Clone)]
pub struct TaskDefinition {
    /// Family; each registration adds a revision.
    pub family: String,
    /// Network mode.
    pub network_mode: NetworkMode,
    /// Containers, the first one being the one a load balancer targets.
    pub containers: Vec<ContainerDef>,
}

impl TaskDefinition {
    /// `family` with one container `app` on `port` (mapping named `http`) in `network_mode`.
    pub fn single(family: &str, network_mode: NetworkMode, port: u16) -> TaskDefinition {
        TaskDefinition {
            family: family.to_string(),
            network_mode,
            containers: vec![ContainerDef::new("app", port)],
        }
    }
}

/// Tasks to create with [`Moto::create_tasks`].
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service the tasks belong to (their group becomes `service:<name>`), or none
    /// (group `family:<family>`).
    pub service: Option<String>,
    /// Task definition: `family`, `family:revision` or ARN.
    pub task_definition: String,
    /// Number of tasks.
    pub count: usize,
    /// awsvpc: one loopback address per task.
    pub ips: Vec<IpAddr>,
    /// `FARGATE` or `EC2`; default from the network mode.
    pub launch_type: Option<String>,
    /// Overrides the task definition's network mode.
    pub network_mode: Option<NetworkMode>,
    /// bridge: one host port per task (for the first dynamic port mapping); empty: allocated.
    pub host_ports: Vec<u16>,
    /// bridge/host: the container instance ARN; default: the cluster's first one.
    pub container_instance: Option<String>,
    /// Availability zone; default: the instance's, or rotating through a, b, c.
    pub availability_zone: Option<String>,
    /// Task health; default `HEALTHY` with a container health check, else `UNKNOWN`.
    pub health: Option<Health>,
    /// `lastStatus` (`PROVISIONING`, `PENDING`, `ACTIVATING`, `RUNNING`); default `RUNNING`.
    pub last_status: Option<String>,
}

impl TaskSpec {
    /// awsvpc tasks, one per address in `ips`.
    pub fn awsvpc(cluster: &str, task_definition: &str, ips: &[IpAddr]) -> TaskSpec {
        TaskSpec {
            cluster: cluster.to_string(),
            service: None,
            task_definition: task_definition.to_string(),
            count: ips.len(),
            ips: ips.to_vec(),
            launch_type: None,
            network_mode: None,
            host_ports: Vec::new(),
            container_instance: None,
            availability_zone: None,
            health: None,
            last_status: None,
        }
    }

    /// bridge tasks on `container_instance`, one per host port in `host_ports`.
    pub fn bridge(
        cluster: &str,
        task_definition: &str,
        container_instance: &str,
        host_ports: &[u16],
    ) -> TaskSpec {
        TaskSpec {
            count: host_ports.len(),
            ips: Vec::new(),
            network_mode: Some(NetworkMode::Bridge),
            launch_type: Some("EC2".to_string()),
            host_ports: host_ports.to_vec(),
            container_instance: Some(container_instance.to_string()),
            ..TaskSpec::awsvpc(cluster, task_definition, &[])
        }
    }

    /// Makes the tasks members of `service`.
    pub fn service(mut self, service: &str) -> TaskSpec {
        self.service = Some(service.to_string());
        self
    }

    /// Sets the tasks' health.
    pub fn health(mut self, health: Health) -> TaskSpec {
        self.health = Some(health);
        self
    }

    /// Sets the tasks' availability zone.
    pub fn availability_zone(mut self, az: &str) -> TaskSpec {
        self.availability_zone = Some(az.to_string());
        self
    }

    /// Sets the tasks' `lastStatus`.
    pub fn last_status(mut self, status: &str) -> TaskSpec {
        self.last_status = Some(status.to_string());
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "cluster": self.cluster,
            "service": self.service,
            "task_definition": self.task_definition,
            "count": self.count,
        });
        let o = v.as_object_mut().expect("object");
        if !self.ips.is_empty() {
            o.insert(
                "ips".into(),
                json!(self.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>()),
            );
        }
        if let Some(l) = &self.launch_type {
            o.insert("launch_type".into(), json!(l));
        }
        if let Some(m) = self.network_mode {
            o.insert("network_mode".into(), json!(m.as_str()));
        }
        if !self.host_ports.is_empty() {
            o.insert("host_ports".into(), json!(self.host_ports));
        }
        if let Some(c) = &self.container_instance {
            o.insert("container_instance".into(), json!(c));
        }
        if let Some(az) = &self.availability_zone {
            o.insert("availability_zone".into(), json!(az));
        }
        if let Some(h) = self.health {
            o.insert("health_status".into(), json!(h.as_str()));
        }
        if let Some(s) = &self.last_status {
            o.insert("last_status".into(), json!(s));
        }
        v
    }
}

/// A change to one task for [`Moto::update_task`]; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TaskUpdate {
    /// New `lastStatus` (e.g. `RUNNING`, `DEACTIVATING`, `STOPPED`).
    pub last_status: Option<String>,
    /// New `desiredStatus` (`RUNNING` or `STOPPED`).
    pub desired_status: Option<String>,
    /// New health (task and containers with a health check).
    pub health: Option<Health>,
}

/// A container instance made by [`Moto::add_container_instance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    /// ECS container instance ARN.
    pub container_instance_arn: String,
    /// The EC2 instance behind it, whose `PrivateIpAddress` is the loopback address given.
    pub ec2_instance_id: String,
}

/// What one [`Moto::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// ARNs of tasks started.
    pub created: Vec<String>,
    /// ARNs of tasks stopped.
    pub stopped: Vec<String>,
    /// The service's desired count.
    pub desired_count: u64,
    /// RUNNING tasks of the service afterwards.
    pub running_count: u64,
    /// Tasks that could not be started because the IP pool was exhausted.
    pub missing_ips: u64,
}

/// A service's counts as moto holds them (see [`Moto::service`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Service ARN.
    pub service_arn: String,
    /// `desiredCount` (what `UpdateService` changed last).
    pub desired_count: u64,
    /// RUNNING tasks.
    pub running_count: u64,
    /// Tasks wanted RUNNING but not yet RUNNING.
    pub pending_count: u64,
    /// The service's task definition ARN.
    pub task_definition: String,
}

/// One task as [`Moto::tasks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Task ARN.
    pub task_arn: String,
    /// `service:<name>` or `family:<family>`.
    pub group: String,
    /// `lastStatus`.
    pub last_status: String,
    /// `desiredStatus`.
    pub desired_status: String,
    /// `healthStatus`, if any.
    pub health_status: Option<String>,
    /// awsvpc: the task's address.
    pub private_ip: Option<IpAddr>,
    /// bridge/host: the host ports of its network bindings.
    pub host_ports: Vec<u16>,
    /// bridge/host: its container instance.
    pub container_instance_arn: Option<String>,
    /// Its task definition ARN.
    pub task_definition: Option<String>,
    /// Whether its task app process (if it has one) is still running.
    pub app_alive: Option<bool>,
}

/// What a task app does when ECS stops its task (SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMode {
    /// Stops accepting, closes idle keep-alive connections, finishes requests in flight within
    /// the grace period, exits.
    Graceful,
    /// Exits at once, dropping connections and requests in flight.
    Abrupt,
}

impl AppMode {
    /// The launcher's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Graceful => "graceful",
            AppMode::Abrupt => "abrupt",
        }
    }
}

/// The application inside each task of a service: the `task-app` binary
/// (`cargo build --release -p berth-tests --bin task-app`), started by the launcher on the
/// task's address and container port when the task is created (the task is `RUNNING` once it
/// accepts), sent SIGTERM at the moment ECS stops the task (`lastStatus` `STOPPING` while it
/// lives, `STOPPED` when it exits, SIGKILL after `stop_timeout`). awsvpc tasks only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The `task-app` binary.
    pub binary: PathBuf,
    /// Behaviour on SIGTERM.
    pub mode: AppMode,
    /// Graceful mode: how long requests in flight may take after SIGTERM.
    pub grace: Duration,
    /// ECS `stopTimeout`: SIGKILL this long after SIGTERM (ECS's default is 30 s).
    pub stop_timeout: Duration,
    /// Rolling replacement: how long a new task must have been RUNNING (and HEALTHY with a
    /// container health check) before an old one is stopped for it.
    pub ready_delay: Duration,
}

impl AppSpec {
    /// `mode` with `binary`, a 3 s grace, a 10 s stop timeout and no ready delay.
    pub fn new(binary: impl Into<PathBuf>, mode: AppMode) -> AppSpec {
        AppSpec {
            binary: binary.into(),
            mode,
            grace: Duration::from_secs(3),
            stop_timeout: Duration::from_secs(10),
            ready_delay: Duration::ZERO,
        }
    }

    /// [`task_app_bin`] in `mode`; panics with the build command when it is missing.
    pub fn find(mode: AppMode) -> AppSpec {
        match task_app_bin() {
            Ok(bin) => AppSpec::new(bin, mode),
            Err(e) => panic!("{e:#}"),
        }
    }

    /// With a ready delay for rolling replacements.
    pub fn ready_delay(mut self, d: Duration) -> AppSpec {
        self.ready_delay = d;
        self
    }

    fn to_json(&self) -> Value {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        json!({
            "binary": self.binary.to_string_lossy(),
            "mode": self.mode.as_str(),
            "grace_ms": ms(self.grace),
            "stop_timeout_ms": ms(self.stop_timeout),
            "ready_delay_ms": ms(self.ready_delay),
        })
    }
}

/// The `task-app` binary: `$BERTH_TASK_APP_BIN`, else next to the running test's target folder
/// (`target/release/task-app`), else `$CARGO_TARGET_DIR/release`, else the workspace's
/// `target/release`; an error naming the build command when none exists.
pub fn task_app_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_TASK_APP_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/deps/<test> -> target/release
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join("task-app"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release").join("task-app"));
    }
    candidates.push(repo_root().join("target").join("release").join("task-app"));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "task-app not found (looked in {candidates:?}); build it: \
                 cargo build --release -p berth-tests --bin task-app"
            )
        })
}

/// An ECS `UpdateService` call made by [`Moto::update_service`]; `None` fields are left out.
#[derive(Debug, Clone, Default)]
pub struct ServiceUpdate {
    /// `desiredCount`.
    pub desired_count: Option<u32>,
    /// `taskDefinition` (family, family:revision or ARN): a new one starts a new deployment.
    pub task_definition: Option<String>,
    /// `deploymentConfiguration.maximumPercent`.
    pub maximum_percent: Option<u32>,
    /// `deploymentConfiguration.minimumHealthyPercent`.
    pub minimum_healthy_percent: Option<u32>,
    /// `forceNewDeployment`.
    pub force_new_deployment: bool,
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
        let stdout = child.stdout.take().expect("piped stdout");
        let mut moto = Moto {
            child: Some(child),
            stdin,
            port,
            control_port,
            region: region.to_string(),
            dir,
        };

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

    /// moto's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_port)
    }

    /// The region moto serves.
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

    /// The launcher's process id.
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

    // -- control API ---------------------------------------------------------------------

    /// Calls the control API: `method path` with a JSON `body`; the JSON answer on 2xx, an
    /// error carrying the launcher's message otherwise.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!("moto control {method} {path}");
        tokio::time::timeout(CONTROL_TIMEOUT, self.control_inner(method, path, body))
            .await
            .map_err(|_| anyhow!("{what}: no answer within {CONTROL_TIMEOUT:?}"))?
            .with_context(|| what)
    }

    async fn control_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.control_port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = match body {
            Some(b) => serde_json::to_vec(&b)?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                http::header::HOST,
                format!("127.0.0.1:{}", self.control_port),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let raw = resp.into_body().collect().await?.to_bytes();
        let value: Value = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&raw)))?
        };
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("HTTP {status}: {msg}");
        }
        Ok(value)
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.control(Method::POST, path, Some(body)).await
    }

    /// Creates cluster `name` (idempotent); returns its ARN.
    pub async fn create_cluster(&self, name: &str) -> Result<String> {
        let v = self.post("/setup/cluster", json!({ "name": name })).await?;
        str_field(&v, "cluster_arn")
    }

    /// Registers a new revision of `td`; returns its ARN (`...:task-definition/family:rev`).
    pub async fn register_task_definition(&self, td: &TaskDefinition) -> Result<String> {
        let body = json!({
            "family": td.family,
            "network_mode": td.network_mode.as_str(),
            "containers": td.containers.iter().map(ContainerDef::to_json).collect::<Vec<_>>(),
        });
        let v = self.post("/setup/task-definition", body).await?;
        str_field(&v, "task_definition_arn")
    }

    /// Creates service `name` in `cluster` on `task_definition` with `desired_count` (FARGATE
    /// for awsvpc, else EC2). moto starts no tasks: see [`Moto::reconcile`]. Returns its ARN.
    pub async fn create_service(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired_count: u32,
    ) -> Result<String> {
        let body = json!({
            "cluster": cluster,
            "name": name,
            "task_definition": task_definition,
            "desired_count": desired_count,
        });
        let v = self.post("/setup/service", body).await?;
        str_field(&v, "service_arn")
    }

    /// [`Moto::create_service`] whose tasks run `app`, with `deploymentConfiguration`
    /// `maximum_percent` / `minimum_healthy_percent` for rolling replacements.
    pub async fn create_service_with(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired_count: u32,
        app: &AppSpec,
        (maximum_percent, minimum_healthy_percent): (u32, u32),
    ) -> Result<String> {
        let body = json!({
            "cluster": cluster,
            "name": name,
            "task_definition": task_definition,
            "desired_count": desired_count,
            "app": app.to_json(),
            "deployment_configuration": {
                "maximumPercent": maximum_percent,
                "minimumHealthyPercent": minimum_healthy_percent,
            },
        });
        let v = self.post("/setup/service", body).await?;
        str_field(&v, "service_arn")
    }

    /// Makes the tasks `service` starts from now on run `app` (`None`: no app).
    pub async fn set_service_app(
        &self,
        cluster: &str,
        service: &str,
        app: Option<&AppSpec>,
    ) -> Result<()> {
        let body = json!({
            "cluster": cluster,
            "service": service,
            "app": app.map(AppSpec::to_json),
        });
        self.post("/services/app", body).await.map(drop)
    }

    /// Calls ECS operation `operation` (e.g. `UpdateService`) on moto with the AWS JSON 1.1
    /// protocol, as an SDK would (unsigned: moto does not check signatures); the answer's JSON.
    pub async fn ecs_api(&self, operation: &str, body: Value) -> Result<Value> {
        let what = format!("ECS {operation}");
        let fut = async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::builder()
                .method(Method::POST)
                .uri("/")
                .header(http::header::HOST, format!("127.0.0.1:{}", self.port))
                .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
                .header(
                    "x-amz-target",
                    format!("AmazonEC2ContainerServiceV20141113.{operation}"),
                )
                .header(
                    http::header::AUTHORIZATION,
                    format!(
                        "AWS4-HMAC-SHA256 Credential=testing/20240101/{}/ecs/aws4_request,                          SignedHeaders=host, Signature=0",
                        self.region
                    ),
                )
                .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let raw = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("HTTP {status}: {}", String::from_utf8_lossy(&raw));
            }
            serde_json::from_slice::<Value>(&raw)
                .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&raw)))
        };
        tokio::time::timeout(CONTROL_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("{what}: no answer within {CONTROL_TIMEOUT:?}"))?
            .with_context(|| what)
    }

    /// ECS `UpdateService` through moto's API.
    pub async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        update: &ServiceUpdate,
    ) -> Result<()> {
        let mut body = json!({ "cluster": cluster, "service": service });
        let o = body.as_object_mut().expect("object");
        if let Some(n) = update.desired_count {
            o.insert("desiredCount".into(), json!(n));
        }
        if let Some(td) = &update.task_definition {
            o.insert("taskDefinition".into(), json!(td));
        }
        let mut dc = serde_json::Map::new();
        if let Some(p) = update.maximum_percent {
            dc.insert("maximumPercent".into(), json!(p));
        }
        if let Some(p) = update.minimum_healthy_percent {
            dc.insert("minimumHealthyPercent".into(), json!(p));
        }
        if !dc.is_empty() {
            o.insert("deploymentConfiguration".into(), Value::Object(dc));
        }
        if update.force_new_deployment {
            o.insert("forceNewDeployment".into(), json!(true));
        }
        self.ecs_api("UpdateService", body).await.map(drop)
    }

    /// ECS `StopTask` through moto's API (a harness task's app gets SIGTERM at once).
    pub async fn ecs_stop_task(&self, cluster: &str, task_arn: &str, reason: &str) -> Result<()> {
        let body = json!({ "cluster": cluster, "task": task_arn, "reason": reason });
        self.ecs_api("StopTask", body).await.map(drop)
    }

    /// Creates tasks straight in moto's backend, visible to ListTasks / DescribeTasks; returns
    /// their ARNs.
    pub async fn create_tasks(&self, spec: &TaskSpec) -> Result<Vec<String>> {
        let v = self.post("/tasks", spec.to_json()).await?;
        str_list(&v, "task_arns")
    }

    /// Changes a task's statuses or health.
    pub async fn update_task(
        &self,
        cluster: &str,
        task_arn: &str,
        update: &TaskUpdate,
    ) -> Result<()> {
        let mut body = json!({ "cluster": cluster, "task_arn": task_arn });
        let o = body.as_object_mut().expect("object");
        if let Some(s) = &update.last_status {
            o.insert("last_status".into(), json!(s));
        }
        if let Some(s) = &update.desired_status {
            o.insert("desired_status".into(), json!(s));
        }
        if let Some(h) = update.health {
            o.insert("health_status".into(), json!(h.as_str()));
        }
        self.post("/tasks/update", body).await.map(drop)
    }

    /// Sets a task's health (task and containers with a health check).
    pub async fn set_task_health(
        &self,
        cluster: &str,
        task_arn: &str,
        health: Health,
    ) -> Result<()> {
        let update = TaskUpdate {
            health: Some(health),
            ..TaskUpdate::default()
        };
        self.update_task(cluster, task_arn, &update).await
    }

    /// Stops a task: desiredStatus then lastStatus `STOPPED`; it leaves the (default, RUNNING)
    /// ListTasks answer.
    pub async fn stop_task(&self, cluster: &str, task_arn: &str) -> Result<()> {
        self.post(
            "/tasks/stop",
            json!({ "cluster": cluster, "task_arn": task_arn }),
        )
        .await
        .map(drop)
    }

    /// All tasks of `cluster` (any status), as the launcher holds them.
    pub async fn tasks(&self, cluster: &str) -> Result<Vec<TaskInfo>> {
        let v = self
            .control(Method::GET, &format!("/tasks?cluster={cluster}"), None)
            .await?;
        let items = v
            .get("tasks")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no 'tasks' in {v}"))?;
        items
            .iter()
            .map(|t| {
                Ok(TaskInfo {
                    task_arn: str_field(t, "task_arn")?,
                    group: str_field(t, "group")?,
                    last_status: str_field(t, "last_status")?,
                    desired_status: str_field(t, "desired_status")?,
                    health_status: t
                        .get("health_status")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    private_ip: t
                        .get("private_ip")
                        .and_then(Value::as_str)
                        .map(str::parse)
                        .transpose()
                        .context("private_ip")?,
                    host_ports: t
                        .get("host_ports")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_u64)
                                .filter_map(|p| u16::try_from(p).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                    container_instance_arn: t
                        .get("container_instance_arn")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    task_definition: t
                        .get("task_definition")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    app_alive: t
                        .get("app")
                        .and_then(|a| a.get("alive"))
                        .and_then(Value::as_bool),
                })
            })
            .collect()
    }

    /// Runs an EC2 instance whose `PrivateIpAddress` is `private_ip` (a loopback address) and
    /// registers it as a container instance of `cluster`.
    pub async fn add_container_instance(
        &self,
        cluster: &str,
        private_ip: IpAddr,
    ) -> Result<ContainerInstance> {
        let v = self
            .post(
                "/container-instances",
                json!({ "cluster": cluster, "private_ip": private_ip.to_string() }),
            )
            .await?;
        Ok(ContainerInstance {
            container_instance_arn: str_field(&v, "container_instance_arn")?,
            ec2_instance_id: str_field(&v, "ec2_instance_id")?,
        })
    }

    /// Once: starts or stops tasks of `service` until its RUNNING tasks equal its desiredCount
    /// (awsvpc tasks take free addresses from `ip_pool`; newest tasks are stopped first).
    pub async fn reconcile(
        &self,
        cluster: &str,
        service: &str,
        ip_pool: &[IpAddr],
    ) -> Result<Reconciled> {
        let v = self
            .post(
                "/services/reconcile",
                pool_body(cluster, service, ip_pool, None),
            )
            .await?;
        reconciled(&v)
    }

    /// Reconciles now, then every `interval` in the background (until [`Moto::stop_auto_reconcile`]
    /// or drop), so the service follows `UpdateService` like ECS would.
    pub async fn auto_reconcile(
        &self,
        cluster: &str,
        service: &str,
        ip_pool: &[IpAddr],
        interval: Duration,
    ) -> Result<Reconciled> {
        let v = self
            .post(
                "/services/autoreconcile",
                pool_body(cluster, service, ip_pool, Some(interval)),
            )
            .await?;
        reconciled(&v)
    }

    /// Stops background reconciliation of one service, or of all with `None`.
    pub async fn stop_auto_reconcile(&self, service: Option<(&str, &str)>) -> Result<()> {
        let body = match service {
            Some((cluster, service)) => json!({ "cluster": cluster, "service": service }),
            None => json!({}),
        };
        self.control(Method::DELETE, "/services/autoreconcile", Some(body))
            .await
            .map(drop)
    }

    /// A service's desired/running/pending counts.
    pub async fn service(&self, cluster: &str, service: &str) -> Result<ServiceState> {
        let v = self
            .control(
                Method::GET,
                &format!("/services?cluster={cluster}&service={service}"),
                None,
            )
            .await?;
        Ok(ServiceState {
            service_arn: str_field(&v, "service_arn")?,
            desired_count: u64_field(&v, "desired_count")?,
            running_count: u64_field(&v, "running_count")?,
            pending_count: u64_field(&v, "pending_count")?,
            task_definition: str_field(&v, "task_definition").unwrap_or_default(),
        })
    }

    /// Makes the next `count` calls of `operation` (e.g. `ListTasks`, `DescribeInstances`, or
    /// `*` for any) suffer `kind`. Faults queue up in order.
    pub async fn inject_fault(&self, operation: &str, kind: FaultKind, count: u32) -> Result<()> {
        let (kind, delay_ms) = match kind {
            FaultKind::Throttle => ("throttle", 0),
            FaultKind::Error500 => ("error500", 0),
            FaultKind::Delay(d) => (
                "delay",
                u64::try_from(d.as_millis().max(1)).unwrap_or(u64::MAX),
            ),
        };
        let body =
            json!({ "operation": operation, "kind": kind, "count": count, "delay_ms": delay_ms });
        self.post("/faults", body).await.map(drop)
    }

    /// Drops every pending fault.
    pub async fn clear_faults(&self) -> Result<()> {
        self.control(Method::DELETE, "/faults", None)
            .await
            .map(drop)
    }

    /// Calls received per operation since start or [`Moto::reset_calls`], faulted ones included.
    pub async fn calls(&self) -> Result<BTreeMap<String, u64>> {
        let v = self.control(Method::GET, "/calls", None).await?;
        let o = v
            .as_object()
            .ok_or_else(|| anyhow!("calls: not an object: {v}"))?;
        Ok(o.iter()
            .filter_map(|(k, n)| n.as_u64().map(|n| (k.clone(), n)))
            .collect())
    }

    /// Calls of one operation (0 if none).
    pub async fn call_count(&self, operation: &str) -> Result<u64> {
        Ok(self.calls().await?.get(operation).copied().unwrap_or(0))
    }

    /// Zeroes the call counts.
    pub async fn reset_calls(&self) -> Result<()> {
        self.control(Method::DELETE, "/calls", None).await.map(drop)
    }

    /// Empties moto's ECS, EC2 and CloudWatch state, faults, call counts and background
    /// reconcilers.
    pub async fn reset(&self) -> Result<()> {
        self.post("/reset", json!({})).await.map(drop)
    }

    /// The datapoints moto's CloudWatch stored (through the launcher's CBOR translation of
    /// `PutMetricData`), optionally only those of `namespace` and metric `name`.
    pub async fn cloudwatch_datapoints(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<CloudWatchDatapoint>> {
        let mut query = Vec::new();
        if let Some(ns) = namespace {
            query.push(format!("namespace={ns}"));
        }
        if let Some(n) = name {
            query.push(format!("name={n}"));
        }
        let path = if query.is_empty() {
            "/cloudwatch/metrics".to_string()
        } else {
            format!("/cloudwatch/metrics?{}", query.join("&"))
        };
        let v = self.control(Method::GET, &path, None).await?;
        let list = v
            .get("datapoints")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no 'datapoints' in {v}"))?;
        list.iter()
            .map(|d| {
                Ok(CloudWatchDatapoint {
                    namespace: str_field(d, "namespace")?,
                    name: str_field(d, "name")?,
                    dimensions: d
                        .get("dimensions")
                        .and_then(Value::as_object)
                        .map(|o| {
                            o.iter()
                                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                                .collect()
                        })
                        .unwrap_or_default(),
                    value: d.get("value").and_then(Value::as_f64).unwrap_or(0.0),
                    unit: d.get("unit").and_then(Value::as_str).map(str::to_string),
                    timestamp: str_field(d, "timestamp").unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// A datapoint held by moto's CloudWatch ([`Moto::cloudwatch_datapoints`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchDatapoint {
    /// Namespace.
    pub namespace: String,
    /// Metric name.
    pub name: String,
    /// Dimensions by name.
    pub dimensions: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
    /// Unit, e.g. `Count`.
    pub unit: Option<String>,
    /// ISO 8601 time.
    pub timestamp: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- moto launcher log (tail) ---\n{}", self.log_tail(30));
        }
        self.kill();
    }
}

fn pool_body(
    cluster: &str,
    service: &str,
    ip_pool: &[IpAddr],
    interval: Option<Duration>,
) -> Value {
    let mut v = json!({
        "cluster": cluster,
        "service": service,
        "ip_pool": ip_pool.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
    });
    if let Some(i) = interval {
        v["interval_ms"] = json!(u64::try_from(i.as_millis().max(10)).unwrap_or(u64::MAX));
    }
    v
}

fn reconciled(v: &Value) -> Result<Reconciled> {
    Ok(Reconciled {
        created: str_list(v, "created")?,
        stopped: str_list(v, "stopped")?,
        desired_count: u64_field(v, "desired_count")?,
        running_count: u64_field(v, "running_count")?,
        missing_ips: u64_field(v, "missing_ips")?,
    })
}

fn str_field(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string '{key}' in {v}"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("no integer '{key}' in {v}"))
}

fn str_list(v: &Value, key: &str) -> Result<Vec<String>> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| anyhow!("no list '{key}' in {v}"))
}
