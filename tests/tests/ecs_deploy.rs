//! ECS deployments under load, end to end (issue 13): berth in front of a 4-task service whose
//! tasks run `task-app` (started and stopped by tests/moto/launcher.py the way ECS does it:
//! SIGTERM at the moment the task is marked to stop, without waiting for berth).
//!
//! For graceful and abrupt apps, each under steady mixed load (GET and POST with a 10 KB body,
//! keep-alive and one connection per request): (a) a rolling replacement of every task one at a
//! time (maximumPercent 125, minimumHealthyPercent 100), (b) all at once (200/100), (c) a
//! scale-in 4 -> 1. Graceful apps: no request of any method may fail. Abrupt apps: no GET may
//! fail; failed POSTs are counted and printed. And (d) stop-to-drain latency: from ECS StopTask
//! returning to berth's `/targets` showing the task as draining or gone, over 20 stops.
//!
//! The tests in this file run one at a time (they share two cores).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use berth_tests::load::{MixedLoad, MixedLoadSpec, MixedStats};
use berth_tests::moto::{
    AppMode, AppSpec, ContainerDef, Health, Moto, NetworkMode, ServiceUpdate, TaskDefinition,
    TaskInfo,
};
use berth_tests::{bounded, net, wait_until, Berth};

/// One scenario at a time: each runs moto, berth, up to 8 task apps and 8 load workers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CLUSTER: &str = "deploy";
const SERVICE: &str = "web";
const FAMILY: &str = "web";

/// How long a new task must have been RUNNING before ECS stops an old one for it: none, the
/// hardest case. berth learns of both changes only at its next poll, and with every known
/// target refusing (all stopped at once) a request asks for a fresh poll and waits for the new
/// tasks (`berth_unsent_resends_total{reason="rediscovered"}`).
const READY_DELAY: Duration = Duration::from_secs(0);

/// `n` loopback addresses for tasks, and a port free on all of them (the container port).
fn task_addresses(n: usize) -> (Vec<IpAddr>, u16) {
    let ips: Vec<IpAddr> = (0..n).map(|_| net::target_ip()).collect();
    for _ in 0..50 {
        let port = net::free_port(ips[0]).port();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
        {
            return (ips, port);
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// berth in front of the service, at the default ECS poll interval.
fn config(listen: SocketAddr) -> String {
    let selector = format!("service = \"{SERVICE}\"");
    berth_tests::ecs_proxy_config(listen, "web", CLUSTER, &selector, "3s", "")
}

/// moto with a 4-task service running `app`, reconciled every 100 ms, and berth in front.
struct Env {
    moto: Moto,
    berth: Berth,
    url: String,
    port: u16,
}

impl Env {
    async fn start(app: &AppSpec, desired: u32, deployment: (u32, u32)) -> (Env, String) {
        Env::start_with(app, desired, deployment, false).await
    }

    /// As [`Env::start`]; with `health_check` the app container has an ECS health check.
    async fn start_with(
        app: &AppSpec,
        desired: u32,
        deployment: (u32, u32),
        health_check: bool,
    ) -> (Env, String) {
        let moto = Moto::launch()
            .await
            .unwrap_or_else(|e| panic!("moto: {e:#} (the venv comes from scripts/setup-python)"));
        let (pool, port) = task_addresses(14);
        moto.create_cluster(CLUSTER).await.expect("cluster");
        let mut container = ContainerDef::new("app", port);
        if health_check {
            container = container.with_health_check();
        }
        let td = moto
            .register_task_definition(&TaskDefinition {
                family: FAMILY.into(),
                network_mode: NetworkMode::Awsvpc,
                containers: vec![container],
            })
            .await
            .expect("task definition");
        moto.create_service_with(CLUSTER, SERVICE, &td, desired, app, deployment)
            .await
            .expect("service");
        moto.auto_reconcile(CLUSTER, SERVICE, &pool, Duration::from_millis(100))
            .await
            .expect("auto reconcile");
        let listen = net::listen_addr();
        let berth = Berth::start_with_env(&config(listen), &[], &moto.aws_env()).await;
        let env = Env {
            moto,
            berth,
            url: format!("http://{listen}/"),
            port,
        };
        env.wait_settled(&td, desired as usize, Duration::from_secs(30))
            .await;
        (env, td)
    }

    async fn service_tasks(&self) -> Vec<TaskInfo> {
        let group = format!("service:{SERVICE}");
        self.moto
            .tasks(CLUSTER)
            .await
            .expect("GET /tasks")
            .into_iter()
            .filter(|t| t.group == group)
            .collect()
    }

    fn addr(&self, t: &TaskInfo) -> String {
        let ip = t.private_ip.expect("awsvpc task has an address");
        SocketAddr::new(ip, self.port).to_string()
    }

    /// Waits until the service has `want` RUNNING tasks of `td`, every other task's app has
    /// exited, and berth has exactly those tasks healthy.
    async fn wait_settled(&self, td: &str, want: usize, timeout: Duration) {
        let what = format!("{want} tasks of {td} RUNNING and healthy in berth, old apps exited");
        wait_until(timeout, &what, || async {
            let tasks = self.service_tasks().await;
            let live: Vec<&TaskInfo> = tasks
                .iter()
                .filter(|t| t.desired_status == "RUNNING")
                .collect();
            let settled = live.len() == want
                && live.iter().all(|t| {
                    t.last_status == "RUNNING" && t.task_definition.as_deref() == Some(td)
                })
                && tasks
                    .iter()
                    .filter(|t| t.desired_status != "RUNNING")
                    .all(|t| t.app_alive != Some(true));
            if !settled {
                return false;
            }
            let states = self.berth.target_states("web").await;
            let mut healthy: Vec<&String> = states
                .iter()
                .filter(|(_, s)| s.as_str() == "healthy")
                .map(|(a, _)| a)
                .collect();
            healthy.sort();
            let mut expected: Vec<String> = live.iter().map(|t| self.addr(t)).collect();
            expected.sort();
            healthy.len() == expected.len() && healthy.iter().zip(&expected).all(|(a, b)| *a == b)
        })
        .await;
    }

    /// Runs `change` under mixed load, waits for the service to settle on `want` tasks of
    /// `td`, keeps the load on for a while longer, and returns what the load saw.
    async fn under_load(
        &self,
        scenario: &str,
        change: ServiceUpdate,
        td: &str,
        want: usize,
    ) -> MixedStats {
        let load = MixedLoad::start(MixedLoadSpec::new(&self.url, 8));
        load.wait_ok(100, Duration::from_secs(20)).await;
        let started = Instant::now();
        self.moto
            .update_service(CLUSTER, SERVICE, &change)
            .await
            .expect("UpdateService");
        self.wait_settled(td, want, Duration::from_secs(60)).await;
        let took = started.elapsed();
        // The new task set serves a while under load (stale targets would show here).
        let ok = load.stats().total().ok;
        load.wait_ok(ok + 200, Duration::from_secs(20)).await;
        let stats = load.stop().await;
        println!(
            "figure: {scenario}: settled in {took:?}; {}",
            stats.summary()
        );
        let mut counts = Vec::new();
        for reason in ["connect", "pooled_closed", "reset_unread", "rediscovered"] {
            let n = self
                .berth
                .metric(
                    "berth_unsent_resends_total",
                    &[("target_group", "web"), ("reason", reason)],
                )
                .await
                .unwrap_or(0.0);
            counts.push(format!("{reason} {n}"));
        }
        let retries = self
            .berth
            .metric("berth_retries_total", &[("target_group", "web")])
            .await
            .unwrap_or(0.0);
        println!(
            "figure: {scenario}: berth so far: re-sent unsent ({}), retried {retries}",
            counts.join(", ")
        );
        stats
    }
}

/// The three deployment scenarios with `mode` apps; returns (scenario, stats) of each.
async fn scenarios(mode: AppMode) -> Vec<(String, MixedStats)> {
    let app = AppSpec::find(mode).ready_delay(READY_DELAY);
    let (env, _td1) = Env::start(&app, 4, (125, 100)).await;
    let m = mode.as_str();
    let mut out = Vec::new();

    // Rolling deployments to a new revision: one task at a time (125 %), then all at once (200 %).
    let mut revision = String::new();
    for (kind, maximum_percent) in [("one-at-a-time", 125), ("all-at-once", 200)] {
        let td = env
            .moto
            .register_task_definition(&TaskDefinition::single(
                FAMILY,
                NetworkMode::Awsvpc,
                env.port,
            ))
            .await
            .expect("a new task definition revision");
        let change = ServiceUpdate {
            task_definition: Some(td.clone()),
            maximum_percent: Some(maximum_percent),
            minimum_healthy_percent: Some(100),
            ..ServiceUpdate::default()
        };
        let name = format!("rolling {kind} {m}");
        out.push((name.clone(), env.under_load(&name, change, &td, 4).await));
        revision = td;
    }

    let change = ServiceUpdate {
        desired_count: Some(1),
        ..ServiceUpdate::default()
    };
    let name = format!("scale-in 4->1 {m}");
    // The scale-in keeps the last deployed revision.
    out.push((
        name.clone(),
        env.under_load(&name, change, &revision, 1).await,
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_apps_lose_no_request_in_deployments_and_scale_in() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(170), async {
        let results = scenarios(AppMode::Graceful).await;
        let mut failed = Vec::new();
        for (name, s) in &results {
            for method in ["GET", "POST"] {
                let c = s.method(method);
                println!(
                    "figure: {name} failed {method} = {} of {}",
                    c.failed,
                    c.ok + c.failed
                );
                assert!(c.ok > 0, "{name}: no {method} succeeded");
            }
            if s.total().failed > 0 {
                failed.push(format!("{name}: {} — {:#?}", s.summary(), s.failures));
            }
        }
        assert!(
            failed.is_empty(),
            "graceful apps: failed requests:\n{}",
            failed.join("\n")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_apps_lose_no_idempotent_request_in_deployments_and_scale_in() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(170), async {
        let results = scenarios(AppMode::Abrupt).await;
        let mut failed = Vec::new();
        for (name, s) in &results {
            let (get, post) = (s.method("GET"), s.method("POST"));
            println!(
                "figure: {name} failed GET = {} of {}",
                get.failed,
                get.ok + get.failed
            );
            println!(
                "figure: {} abrupt failed POST = {} of {}",
                name.trim_end_matches(" abrupt"),
                post.failed,
                post.ok + post.failed
            );
            for f in s.failures.iter().filter(|f| f.starts_with("POST")).take(3) {
                println!("  {name}: failed {f}");
            }
            assert!(get.ok > 0 && post.ok > 0, "{name}: {}", s.summary());
            if get.failed > 0 {
                let gets: Vec<&String> =
                    s.failures.iter().filter(|f| f.starts_with("GET")).collect();
                failed.push(format!("{name}: {} — {gets:#?}", s.summary()));
            }
        }
        assert!(
            failed.is_empty(),
            "abrupt apps: failed GETs:\n{}",
            failed.join("\n")
        );
    })
    .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_to_drain_latency_over_20_stops() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(150), async {
        let app = AppSpec::find(AppMode::Graceful);
        let (env, _td) = Env::start(&app, 3, (200, 100)).await;
        let mut latencies = Vec::new();
        let mut stuck = Vec::new();
        for i in 0..20 {
            // A task berth holds as healthy.
            let (arn, addr) = berth_tests::wait_for(
                Duration::from_secs(20),
                "a RUNNING task healthy in berth",
                || async {
                    let states = env.berth.target_states("web").await;
                    env.service_tasks()
                        .await
                        .into_iter()
                        .filter(|t| t.desired_status == "RUNNING" && t.last_status == "RUNNING")
                        .map(|t| (t.task_arn.clone(), env.addr(&t)))
                        .find(|(_, a)| states.get(a).map(String::as_str) == Some("healthy"))
                },
            )
            .await;
            // Stops land at 20 phases spread over berth's poll interval (each stop comes right
            // after the previous drain was seen, i.e. right after a poll, without this).
            tokio::time::sleep(Duration::from_millis(i * 50)).await;
            env.moto
                .ecs_stop_task(CLUSTER, &arn, &format!("stop-to-drain {i}"))
                .await
                .expect("StopTask");
            let stopped = Instant::now();
            let drained = loop {
                let states = env.berth.target_states("web").await;
                match states.get(&addr).map(String::as_str) {
                    None | Some("draining") => break Some(stopped.elapsed()),
                    _ => {}
                }
                if stopped.elapsed() > Duration::from_secs(10) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            match drained {
                Some(d) => latencies.push(d),
                None => stuck.push(addr),
            }
        }
        assert!(
            stuck.is_empty(),
            "targets never drained after StopTask: {stuck:?}"
        );
        latencies.sort();
        let (p50, max) = (percentile(&latencies, 0.5), latencies[latencies.len() - 1]);
        println!(
            "figure: stop-to-drain p50 = {} ms, max = {} ms (over {} stops; all: {:?})",
            p50.as_millis(),
            max.as_millis(),
            latencies.len(),
            latencies
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>()
        );
        assert!(
            p50 <= Duration::from_millis(1000),
            "stop-to-drain p50 {p50:?} > 1 s"
        );
        assert!(
            max <= Duration::from_millis(2000),
            "stop-to-drain max {max:?} > 2 s"
        );
    })
    .await;
}

/// A container that ECS reports UNHEALTHY leaves berth's targets at the next poll, as a
/// stopped task does (its health is not in `ListTasks`: berth re-describes health-checked
/// tasks every cycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_container_leaves_within_a_poll() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(120), async {
        let app = AppSpec::find(AppMode::Graceful);
        let (env, _td) = Env::start_with(&app, 6, (200, 100), true).await;
        let mut latencies = Vec::new();
        for i in 0..6u64 {
            let states = env.berth.target_states("web").await;
            let (arn, addr) = env
                .service_tasks()
                .await
                .into_iter()
                .filter(|t| {
                    t.desired_status == "RUNNING" && t.health_status.as_deref() == Some("HEALTHY")
                })
                .map(|t| (t.task_arn.clone(), env.addr(&t)))
                .find(|(_, a)| states.get(a).map(String::as_str) == Some("healthy"))
                .expect("a task HEALTHY in ECS and healthy in berth");
            // Spread over the poll interval, as in the stop-to-drain test.
            tokio::time::sleep(Duration::from_millis(i * 130)).await;
            env.moto
                .set_task_health(CLUSTER, &arn, Health::Unhealthy)
                .await
                .expect("set UNHEALTHY");
            let marked = Instant::now();
            let left = berth_tests::wait_for(
                Duration::from_secs(10),
                "the UNHEALTHY task leaves berth's healthy targets",
                || async {
                    let states = env.berth.target_states("web").await;
                    matches!(
                        states.get(&addr).map(String::as_str),
                        None | Some("draining")
                    )
                    .then(|| marked.elapsed())
                },
            )
            .await;
            latencies.push(left);
        }
        latencies.sort();
        let max = latencies[latencies.len() - 1];
        println!(
            "figure: UNHEALTHY-to-drain over {} containers: p50 = {} ms, max = {} ms ({:?})",
            latencies.len(),
            percentile(&latencies, 0.5).as_millis(),
            max.as_millis(),
            latencies
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>()
        );
        assert!(
            max <= Duration::from_millis(2000),
            "UNHEALTHY-to-drain max {max:?} > 2 s"
        );
    })
    .await;
}

/// tests/moto/selftest.py (the launcher through boto3, task apps included) passes.
#[test]
fn moto_launcher_selftest_passes() {
    let py = berth_tests::moto::python();
    assert!(
        py.is_file(),
        "{} not found: run scripts/setup-python first (it creates .venv with moto[server])",
        py.display()
    );
    let script = berth_tests::moto::repo_root()
        .join("tests")
        .join("moto")
        .join("selftest.py");
    let out = std::process::Command::new(&py)
        .arg(&script)
        .env("BERTH_TASK_APP_BIN", env!("CARGO_BIN_EXE_task-app"))
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", py.display(), script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    println!("{}", stdout.lines().last().unwrap_or_default());
    assert!(
        out.status.success() && failed.is_empty(),
        "selftest failed ({}):\n{}\n{}",
        out.status,
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS scale-in 4 -> 1 stops three tasks and their apps"));
}
