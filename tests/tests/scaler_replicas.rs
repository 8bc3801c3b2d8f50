//! Several proxy replicas, one scaler beside each (issue 13): with `aggregate = "cloudwatch"`
//! the decision of N scalers equals the decision one proxy carrying all the load would make,
//! and their UpdateService calls never fight; with `aggregate = "local"` a scaler that sees the
//! other replicas' heartbeats warns. Real proxies and scalers, moto as ECS and CloudWatch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::config::ScalerToml;
use berth_tests::moto::Moto;
use berth_tests::scaler::Scaler;
use berth_tests::{api_service, bounded, wait_until, Backend, Berth, Http};

const PORT: u16 = 18091;
/// Requests per target per second the policy holds.
const TARGET: f64 = 10.0;
/// Requests per second sent to each proxy: unequal shares, 55 in all.
const SHARES: [u32; 3] = [25, 20, 10];
const MAX: u32 = 8;

/// Replica `i`'s config: the proxy's (for target groups), then `[scaler]` with `settings`,
/// holding [`TARGET`] requests per target per second with 1 to [`MAX`] tasks.
fn scaler_config(listen: SocketAddr, proxy_admin: SocketAddr, i: usize, settings: &str) -> String {
    let replica = format!("replica-{i}");
    let scaler = ScalerToml {
        proxy_admin,
        namespace: "berth-replicas",
        replica: &replica,
        settings,
        max_capacity: MAX,
        target: TARGET,
        policy_extra: "",
    };
    format!("{}{scaler}", berth_tests::ecs_api_config(listen))
}

/// moto as ECS and CloudWatch with service `prod/api`, the proxies discovering it (each with
/// its listener address) and the task backends.
struct World {
    moto: Moto,
    proxies: Vec<(Berth, SocketAddr)>,
    _backends: Vec<Backend>,
}

impl World {
    /// One scaler beside each proxy, with `settings` in its `[scaler]` table.
    async fn start_scalers(&self, settings: &str) -> Vec<Scaler> {
        let mut scalers = Vec::new();
        for (i, (b, listen)) in self.proxies.iter().enumerate() {
            let config = scaler_config(*listen, b.admin(), i, settings);
            scalers.push(Scaler::start(&config, &self.moto.aws_env()).await);
        }
        scalers
    }
}

/// Service `prod/api` with [`MAX`] task backends, and `replicas` proxies in front of it.
async fn world(replicas: usize) -> World {
    let (moto, backends) = api_service::launch(PORT, MAX)
        .await
        .expect("moto with prod/api");
    let mut proxies = Vec::new();
    for _ in 0..replicas {
        proxies.push(api_service::start_proxy(&moto, &backends[0]).await);
    }
    World {
        moto,
        proxies,
        _backends: backends,
    }
}

/// `rps` GET requests per second to `url` (each on its own task), until dropped.
struct Paced {
    task: tokio::task::JoinHandle<()>,
    ok: Arc<AtomicU64>,
}

impl Paced {
    fn start(url: String, rps: u32) -> Paced {
        let ok = Arc::new(AtomicU64::new(0));
        let counted = ok.clone();
        let task = tokio::spawn(async move {
            let http = Http::new().with_timeout(Duration::from_secs(5));
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
            loop {
                every.tick().await;
                let (http, url, ok) = (http.clone(), url.clone(), counted.clone());
                tokio::spawn(async move {
                    if http.get(&url).await.is_ok_and(|r| r.status == 200) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Paced { task, ok }
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests the proxies answered for group `api`, summed over the replicas.
async fn total_requests(proxies: &[(Berth, SocketAddr)]) -> f64 {
    let mut sum = 0.0;
    for (b, _) in proxies {
        sum += b
            .metric("berth_requests_total", &[("target_group", "api")])
            .await
            .unwrap_or(0.0);
    }
    sum
}

/// Appends `v` unless it repeats the last value.
fn note(v: u64, seen: &mut Vec<u64>) {
    if seen.last() != Some(&v) {
        seen.push(v);
    }
}

/// The targets of every "out"/"in" decision line of a scaler log: `prod/api: out 1 → 3 ...`.
fn changes(log: &str) -> Vec<(String, u32, u32)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("prod/api: ")? + "prod/api: ".len()..];
            let mut w = rest.split_whitespace();
            let dir = w.next()?.to_owned();
            let from = w.next()?.parse().ok()?;
            let _arrow = w.next()?;
            let to = w.next()?.parse().ok()?;
            (dir == "out" || dir == "in").then_some((dir, from, to))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scalers_decide_as_one_proxy_with_all_the_load() {
    berth_tests::moto::require();
    bounded(Duration::from_secs(240), async {
        let w = world(3).await;
        let scalers = w.start_scalers("dry_run = false\npublish = true\naggregate = \"cloudwatch\"\naggregate_window = \"20s\"").await;
        let total_rps: u32 = SHARES.iter().sum();
        let single = (f64::from(total_rps) / TARGET).ceil() as u64;
        let local: Vec<u32> = SHARES
            .iter()
            .map(|&s| (f64::from(s) / TARGET).ceil() as u32)
            .collect();
        println!(
            "load: {SHARES:?} rps on the three proxies ({total_rps} in all); target {TARGET}/target: \
             one proxy with all the load decides {single}; each alone would decide {local:?}"
        );
        let _loads: Vec<Paced> = w
            .proxies
            .iter()
            .zip(SHARES)
            .map(|((_, l), rps)| Paced::start(format!("http://{l}/"), rps))
            .collect();
        let step = Instant::now();
        // Every desired count ECS holds, in order (polled).
        let mut seen: Vec<u64> = Vec::new();
        let seen_cell = std::cell::RefCell::new(Vec::new());
        wait_until(
            Duration::from_secs(120),
            "ECS and every scaler at the single-proxy decision",
            || async {
                let Ok(svc) = w.moto.service("prod", "api").await else {
                    return false;
                };
                note(svc.desired_count, &mut seen_cell.borrow_mut());
                if svc.desired_count != single {
                    return false;
                }
                for s in &scalers {
                    let d = s
                        .metric("berth_scaler_desired_count", &[("service", "api")])
                        .await;
                    if d != Some(single as f64) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        let reached = step.elapsed();
        seen.extend(seen_cell.take());
        // Hold: the count stays there while the load goes on; measure the load meanwhile.
        let r0 = total_requests(&w.proxies).await;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            let svc = w.moto.service("prod", "api").await.unwrap();
            note(svc.desired_count, &mut seen);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let measured = (total_requests(&w.proxies).await - r0) / t0.elapsed().as_secs_f64();
        let measured_single = (measured / TARGET).ceil() as u64;
        let calls = w.moto.call_count("UpdateService").await.unwrap();
        println!(
            "figure: 3 proxies + 3 scalers: desired {seen:?} (ECS, in order); {single} reached {reached:?} \
             after the load started; measured {measured:.1} rps in all -> one proxy would decide \
             {measured_single}; UpdateService calls {calls}"
        );
        for (i, s) in scalers.iter().enumerate() {
            println!("scaler {i} changes: {:?}", changes(&s.log()));
        }

        assert_eq!(seen.last(), Some(&single), "{seen:?}");
        assert_eq!(
            measured_single, single,
            "the load the proxies served gives the same single-proxy decision"
        );
        // Never fight: ECS's desired count only went up, no scaler ever scaled in, no scaler
        // asked for more than the single-proxy decision.
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "monotone: {seen:?}");
        for (i, s) in scalers.iter().enumerate() {
            let ins = s
                .metric(
                    "berth_scaler_decisions_total",
                    &[("service", "api"), ("direction", "in")],
                )
                .await
                .unwrap_or(0.0);
            assert_eq!(ins, 0.0, "scaler {i} scaled in");
            let ch = changes(&s.log());
            assert!(
                ch.iter().all(|(d, _, to)| d == "out" && u64::from(*to) <= single),
                "scaler {i}: {ch:?}"
            );
            assert_eq!(
                s.metric("berth_scaler_desired_count", &[("service", "api")])
                    .await,
                Some(single as f64)
            );
        }
        assert!(
            calls <= 3 * single,
            "UpdateService called {calls} times"
        );
        let ok: u64 = _loads.iter().map(|p| p.ok.load(Ordering::Relaxed)).sum();
        assert!(ok > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_aggregate_warns_when_other_replicas_publish() {
    berth_tests::moto::require();
    bounded(Duration::from_secs(150), async {
        let w = world(2).await;
        let scalers = w
            .start_scalers(
                "dry_run = true\npublish = true\naggregate = \"local\"\naggregate_window = \"10s\"",
            )
            .await;
        for (i, s) in scalers.iter().enumerate() {
            wait_until(
                Duration::from_secs(90),
                &format!("scaler {i} sees the other replica"),
                || async {
                    s.metric("berth_scaler_other_replicas", &[("service", "api")])
                        .await
                        == Some(1.0)
                },
            )
            .await;
            assert!(
                s.log()
                    .contains("other scaler replicas publish for this service"),
                "warning logged"
            );
        }
        assert_eq!(w.moto.call_count("UpdateService").await.unwrap(), 0);
    })
    .await;
}

#[test]
fn shipped_config_aggregates_across_its_replicas() {
    let root = berth_tests::moto::repo_root();
    let config = berth_config::load(&root.join("deploy/ecs/berth.toml"))
        .unwrap_or_else(|e| panic!("deploy/ecs/berth.toml: {e}"));
    let service: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/ecs/service.json")).unwrap(),
    )
    .unwrap();
    let replicas = service["desiredCount"].as_u64().unwrap_or(0);
    assert!(replicas >= 2, "the template runs several replicas");
    assert_eq!(
        config.scaler.aggregate,
        berth_config::model::Aggregate::CloudWatch
    );
    assert!(config.scaler.publish);
    // PutMetricData is allowed only into the IAM stack's MetricNamespace.
    let iam = std::fs::read_to_string(root.join("deploy/cloudformation/berth-iam.yaml")).unwrap();
    let ns = iam
        .split("MetricNamespace:")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("Default:")))
        .map(str::trim)
        .unwrap_or_default();
    assert_eq!(config.scaler.namespace, ns);
    let cfn =
        std::fs::read_to_string(root.join("deploy/cloudformation/berth-service.yaml")).unwrap();
    assert!(cfn.contains("DesiredCount:") && cfn.contains("aggregate = \"cloudwatch\""));
}
