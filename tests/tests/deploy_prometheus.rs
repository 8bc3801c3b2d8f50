//! A real Prometheus server (Debian package `prometheus`) scrapes a running berth through the
//! shipped deploy/prometheus/prometheus.yml and rules, rendered by
//! deploy/tools/render_prometheus.py with loopback addresses instead of the Cloud Map name and
//! 1 s intervals (alert `for` shortened to 2 s; expressions as shipped):
//! the berth target is up, berth metrics and recording rules are queryable through the HTTP
//! API, berth's /sd/prometheus feeds the ecs-tasks job with the relabelled ECS labels, and
//! BerthTargetGroupNoHealthyTargets fires once the backends are stopped.

mod deploy_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_tests::wait::try_wait_for;
use berth_tests::{bounded, net, static_group, Backend, Berth, Http};
use deploy_common::*;
use serde_json::Value;

/// A Prometheus process, stopped on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path) -> Prometheus {
        let addr = net::listen_addr();
        let log = dir.join("prometheus.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect(
                "start /usr/bin/prometheus (Debian package prometheus; deploy/setup installs it)",
            );
        Prometheus { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log tail:\n{}\n----", self.log_tail());
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn api(http: &Http, url: &str) -> Option<Value> {
    let r = http.get(url).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&r.body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

async fn query(http: &Http, prom: &Prometheus, q: &str) -> Vec<Value> {
    api(
        http,
        &prom.url(&format!("/api/v1/query?query={}", encode(q))),
    )
    .await
    .and_then(|d| d["result"].as_array().cloned())
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_berth_and_fires_no_healthy_targets() {
    bounded(Duration::from_secs(180), async {
        setup();
        // ECS in moto, so that /sd/prometheus has a task to offer.
        let task = Backend::spawn("task").await;
        let moto = moto_with_one_task(&task).await;

        let mut b1 = Backend::spawn("b1").await;
        let mut b2 = Backend::spawn("b2").await;
        let listen = net::listen_addr();
        let config = format!(
            r#"
[[listeners]]
name = "web"
bind = "{listen}"
[listeners.default_action]
forward = [{{ target_group = "app" }}]

{app}
{ECS_API_GROUP}"#,
            app = static_group("app", &[&b1, &b2], ""),
        );
        let berth = Berth::start(&config).await;
        berth
            .wait_healthy("app", &[b1.addr(), b2.addr()], Duration::from_secs(15))
            .await;

        // The shipped config, berth's addresses on loopback.
        let dir = tempfile::Builder::new()
            .prefix("berth-prom-")
            .tempdir()
            .unwrap();
        run_ok(
            python()
                .arg("tools/render_prometheus.py")
                .arg("--out")
                .arg(dir.path())
                .args(["--berth", &berth.admin().to_string()])
                .args(["--interval", "1s", "--alert-for", "2s"]),
            "render_prometheus.py",
        );
        run_ok(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(dir.path().join("prometheus.yml")),
            "promtool check config (rendered)",
        );
        let prom = Prometheus::start(dir.path());
        let http = Http::no_pool().with_timeout(Duration::from_secs(5));

        let ready = try_wait_for(Duration::from_secs(30), || async {
            let r = http.get(&prom.url("/-/ready")).await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "prometheus not ready; log:\n{}",
            prom.log_tail()
        );

        // 1. The berth target is up; the ECS task is discovered through /sd/prometheus.
        let targets = try_wait_for(Duration::from_secs(30), || async {
            let d = api(&http, &prom.url("/api/v1/targets")).await?;
            let active = d["activeTargets"].as_array()?.clone();
            let berth_up = active
                .iter()
                .any(|t| t["labels"]["job"] == "berth" && t["health"] == "up");
            let task_found = active.iter().any(|t| t["labels"]["job"] == "ecs-tasks");
            (berth_up && task_found).then_some(active)
        })
        .await;
        let Some(targets) = targets else {
            let d = api(&http, &prom.url("/api/v1/targets")).await;
            panic!("berth target not up / ECS task not discovered; /api/v1/targets: {d:#?}");
        };
        let task_target = targets
            .iter()
            .find(|t| t["labels"]["job"] == "ecs-tasks")
            .unwrap();
        let l = &task_target["labels"];
        assert_eq!(l["instance"], task.addr().to_string(), "{task_target:#}");
        assert_eq!(l["ecs_cluster"], "prod", "{task_target:#}");
        assert_eq!(l["ecs_service"], "api", "{task_target:#}");
        assert_eq!(l["ecs_task_family"], "api", "{task_target:#}");
        assert_eq!(l["target_group"], "ecs", "{task_target:#}");
        assert!(l["ecs_task_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && !s.contains('/')));

        // 2. A berth metric through the query API: both app targets healthy.
        let healthy = try_wait_for(Duration::from_secs(20), || async {
            let r = query(
                &http,
                &prom,
                r#"berth_targets{job="berth",target_group="app",state="healthy"}"#,
            )
            .await;
            let v = r.first()?["value"][1].as_str()?.to_string();
            (v == "2").then_some(v)
        })
        .await;
        assert!(healthy.is_some(), "berth_targets healthy=2 never queryable");

        // And a recording rule over live traffic (requests keep coming while we wait, so the
        // counter grows between scrapes).
        let recorded = try_wait_for(Duration::from_secs(30), || async {
            for _ in 0..5 {
                let _ = http.get(&format!("http://{listen}/")).await;
            }
            let r = query(
                &http,
                &prom,
                r#"target_group:berth_requests:rate5m{target_group="app"}"#,
            )
            .await;
            let v: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
            (v > 0.0).then_some(v)
        })
        .await;
        assert!(
            recorded.is_some(),
            "recording rule target_group:berth_requests:rate5m never > 0"
        );

        // 3. Stop the backends: no healthy targets, the alert fires.
        b1.kill().await;
        b2.kill().await;
        berth
            .wait_target("app", b1.addr(), Some("unhealthy"), Duration::from_secs(15))
            .await;
        berth
            .wait_target("app", b2.addr(), Some("unhealthy"), Duration::from_secs(15))
            .await;
        let firing = try_wait_for(Duration::from_secs(45), || async {
            let d = api(&http, &prom.url("/api/v1/alerts")).await?;
            d["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "BerthTargetGroupNoHealthyTargets"
                        && a["labels"]["target_group"] == "app"
                        && a["state"] == "firing"
                })
                .cloned()
        })
        .await;
        let Some(alert) = firing else {
            let d = api(&http, &prom.url("/api/v1/alerts")).await;
            panic!("BerthTargetGroupNoHealthyTargets never fired; /api/v1/alerts: {d:#?}");
        };
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["labels"]["job"], "berth");
        drop(prom);
        drop(moto);
    })
    .await;
}
