//! Task apps: the `task-app` process the launcher runs inside each task of a service, so a
//! stopped task behaves like a real application receiving SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::{Serialize, Serializer};

use super::spec::millis;

/// What a task app does when ECS stops its task (SIGTERM); serializes to the launcher's
/// spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppMode {
    /// Stops accepting, closes idle keep-alive connections, finishes requests in flight within
    /// the grace period, exits.
    Graceful,
    /// Exits at once, dropping connections and requests in flight.
    Abrupt,
}

impl AppMode {
    /// The launcher's spelling (`graceful`, `abrupt`).
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
///
/// Serializes to the launcher's `app` object (durations as `*_ms` integers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSpec {
    /// The `task-app` binary.
    #[serde(serialize_with = "lossy_path")]
    pub binary: PathBuf,
    /// Behaviour on SIGTERM.
    pub mode: AppMode,
    /// Graceful mode: how long requests in flight may take after SIGTERM.
    #[serde(rename = "grace_ms", serialize_with = "as_millis")]
    pub grace: Duration,
    /// ECS `stopTimeout`: SIGKILL this long after SIGTERM (ECS's default is 30 s).
    #[serde(rename = "stop_timeout_ms", serialize_with = "as_millis")]
    pub stop_timeout: Duration,
    /// Rolling replacement: how long a new task must have been RUNNING (and HEALTHY with a
    /// container health check) before an old one is stopped for it.
    #[serde(rename = "ready_delay_ms", serialize_with = "as_millis")]
    pub ready_delay: Duration,
}

fn lossy_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(millis(*d))
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
    candidates.push(
        super::repo_root()
            .join("target")
            .join("release")
            .join("task-app"),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_spec_is_the_launchers_app_object() {
        let app = AppSpec::new("/bin/task-app", AppMode::Graceful)
            .ready_delay(Duration::from_millis(2500));
        assert_eq!(
            serde_json::to_value(&app).expect("serializes"),
            json!({
                "binary": "/bin/task-app", "mode": "graceful", "grace_ms": 3000,
                "stop_timeout_ms": 10000, "ready_delay_ms": 2500,
            })
        );
    }
}
