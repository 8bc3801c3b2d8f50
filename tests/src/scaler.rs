//! [`Scaler`]: a `berth-scaler` process running a config written to a temporary folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::berth::find_bin;
use crate::{net, wait_until, Http};

/// A running berth-scaler; SIGINT then SIGKILL on drop.
pub struct Scaler {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The scaler's admin address (`/metrics`, `/healthz`).
    pub admin: SocketAddr,
}

impl Scaler {
    /// Starts `berth-scaler` on `config` (`@ADMIN@` replaced by a free admin address) with
    /// `env` added to a cleaned AWS environment, and waits for its `/healthz`.
    pub async fn start(config: &str, env: &[(String, String)]) -> Scaler {
        let dir = tempfile::Builder::new()
            .prefix("berth-scaler-test-")
            .tempdir()
            .expect("tempdir");
        let admin = net::listen_addr();
        let text = config.replace("@ADMIN@", &admin.to_string());
        std::fs::write(dir.path().join("berth.toml"), &text).expect("write config");
        let log = std::fs::File::create(dir.path().join("scaler.log")).expect("log");
        let mut cmd = Command::new(find_bin("berth-scaler", "BERTH_SCALER_BIN"));
        cmd.arg("--config")
            .arg(dir.path().join("berth.toml"))
            .env("RUST_LOG", "berth_scaler=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn berth-scaler");
        let s = Scaler {
            child: Some(child),
            dir,
            admin,
        };
        let http = Http::no_pool().with_timeout(Duration::from_secs(2));
        let url = format!("http://{}/healthz", s.admin);
        wait_until(Duration::from_secs(20), "berth-scaler /healthz", || async {
            http.get(&url).await.is_ok_and(|r| r.status == 200)
        })
        .await;
        s
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where its log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("scaler.log")
    }

    /// Its `/metrics` text (empty on error).
    pub async fn metrics(&self) -> String {
        let http = Http::no_pool().with_timeout(Duration::from_secs(2));
        http.get(&format!("http://{}/metrics", self.admin))
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// One sample of its `/metrics`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        crate::metrics::value(&self.metrics().await, name, labels)
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- berth-scaler log tail:\n{}\n----",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
