//! berth-scaler end to end: a real berth-proxy under load, moto as ECS (tasks follow the
//! desired count) and CloudWatch (the Rust SDK's CBOR protocol translated by the launcher), and
//! a real berth-scaler process deciding from the proxy's /metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_tests::config::ScalerToml;
use berth_tests::moto::{FaultKind, Moto};
use berth_tests::scaler::Scaler;
use berth_tests::{api_service, bounded, net, wait_until, Backend, Berth, Load};

const PORT: u16 = 18090;

/// The scaler's config: the proxy's (for target groups), then `[scaler]` with `settings`,
/// holding 5 requests per target per second with 1 to 3 tasks.
fn scaler_config(listen: SocketAddr, proxy_admin: SocketAddr, settings: &str) -> String {
    let scaler = ScalerToml {
        proxy_admin,
        namespace: "berth-e2e",
        replica: "replica-1",
        settings,
        max_capacity: 3,
        target: 5.0,
        policy_extra: r#"scale_in_stabilization = "300s""#,
    };
    format!("{}{scaler}", berth_tests::ecs_api_config(listen))
}

/// moto as ECS and CloudWatch with service `prod/api` (tasks follow its desired count, up to
/// three task backends), and a proxy discovering the service on `listen`.
struct World {
    moto: Moto,
    berth: Berth,
    backends: Vec<Backend>,
    url: String,
    listen: SocketAddr,
}

impl World {
    /// A scaler with [`scaler_config`] and `settings`, on this world's moto and proxy.
    async fn start_scaler(&self, settings: &str) -> Scaler {
        let config = scaler_config(self.listen, self.berth.admin(), settings);
        Scaler::start(&config, &self.moto.aws_env()).await
    }
}

/// Waits up to `timeout` (failing with `what`) for the scaler's metric `name{service}` (a
/// `(name, service)` pair) to reach `at_least`.
async fn wait_scaler_metric(
    scaler: &Scaler,
    (name, service): (&str, &str),
    at_least: f64,
    timeout: Duration,
    what: &str,
) {
    wait_until(timeout, what, || async {
        scaler
            .metric(name, &[("service", service)])
            .await
            .unwrap_or(0.0)
            >= at_least
    })
    .await;
}

/// Service `prod/api` with three task backends, and a proxy in front of it.
async fn world() -> World {
    let (moto, backends) = api_service::launch(PORT, 3)
        .await
        .expect("moto with prod/api");
    let (berth, listen) = api_service::start_proxy(&moto, &backends[0]).await;
    World {
        url: format!("http://{listen}/"),
        moto,
        berth,
        backends,
        listen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_step_raises_desired_count_and_publishes_alb_metrics() {
    berth_tests::moto::require();
    bounded(Duration::from_secs(150), async {
        let w = world().await;
        // ECS throttles the first two UpdateService calls: the SDK retries, nothing is lost.
        w.moto
            .inject_fault("UpdateService", FaultKind::Throttle, 2)
            .await
            .unwrap();
        let scaler = w.start_scaler("dry_run = false\npublish = true\naggregate = \"cloudwatch\"\naggregate_window = \"10s\"").await;
        // Two quiet ticks: no scale-out without load.
        wait_scaler_metric(
            &scaler,
            ("berth_scaler_decisions_total", "api"),
            2.0,
            Duration::from_secs(20),
            "scaler decided at least twice",
        )
        .await;
        assert_eq!(w.moto.call_count("UpdateService").await.unwrap(), 0);

        let step = Instant::now();
        let load = Load::start(&w.url, 4);
        wait_until(Duration::from_secs(30), "UpdateService called", || async {
            w.moto
                .service("prod", "api")
                .await
                .is_ok_and(|s| s.desired_count > 1)
        })
        .await;
        let reaction = step.elapsed();
        println!("figure: load step -> UpdateService accepted (desired > 1): {reaction:?}");
        assert!(reaction <= Duration::from_secs(15), "{reaction:?}");
        assert!(
            w.moto.call_count("UpdateService").await.unwrap() >= 3,
            "throttled calls retried"
        );

        // The full loop: the harness starts tasks, the proxy discovers them and routes to them.
        wait_until(
            Duration::from_secs(30),
            "new tasks receive traffic",
            || async { w.backends[1].requests() > 0 || w.backends[2].requests() > 0 },
        )
        .await;
        println!(
            "figure: load step -> a new task serves requests: {:?}",
            step.elapsed()
        );
        let stats = load.stop().await;
        assert!(stats.ok > 0);
        let svc = w.moto.service("prod", "api").await.unwrap();
        assert!(svc.desired_count <= 3, "never above max: {svc:?}");

        // Published to moto's CloudWatch with ALB names and the four dimensions.
        wait_until(
            Duration::from_secs(20),
            "RequestCount published",
            || async {
                w.moto
                    .cloudwatch_datapoints(Some("berth-e2e"), Some("RequestCount"))
                    .await
                    .is_ok_and(|d| d.iter().any(|p| p.value > 0.0))
            },
        )
        .await;
        let all = w
            .moto
            .cloudwatch_datapoints(Some("berth-e2e"), None)
            .await
            .unwrap();
        for name in [
            "RequestCount",
            "RequestCountPerTarget",
            "TargetResponseTime",
            "HTTPCode_Target_5XX_Count",
            "HTTPCode_ELB_5XX_Count",
            "HealthyHostCount",
            "UnHealthyHostCount",
            "ActiveConnectionCount",
        ] {
            let p = all
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("{name} not published"));
            assert_eq!(
                p.dimensions.get("TargetGroup").map(String::as_str),
                Some("api")
            );
            assert_eq!(
                p.dimensions.get("ClusterName").map(String::as_str),
                Some("prod")
            );
            assert_eq!(
                p.dimensions.get("ServiceName").map(String::as_str),
                Some("api")
            );
            assert_eq!(
                p.dimensions.get("Replica").map(String::as_str),
                Some("replica-1")
            );
        }
        let m = scaler.metrics().await;
        assert!(
            m.contains("berth_scaler_desired_count{cluster=\"prod\",service=\"api\"}"),
            "{m}"
        );
        assert!(m.contains("berth_scaler_last_decision_age_seconds"), "{m}");
        assert!(
            m.contains(
                "berth_aws_api_calls_total{operation=\"PutMetricData\",outcome=\"success\"}"
            ),
            "{m}"
        );
        assert!(
            m.contains(
                "berth_aws_api_calls_total{operation=\"UpdateService\",outcome=\"success\"}"
            ),
            "{m}"
        );
        assert!(
            scaler.log().contains("by rps"),
            "decision logged with the winning policy"
        );
        // The sum across replicas came back through GetMetricData (CBOR, translated by the
        // launcher).
        wait_until(Duration::from_secs(20), "GetMetricData read back", || async {
            berth_tests::metrics::value(
                &scaler.metrics().await,
                "berth_aws_api_calls_total",
                &[("operation", "GetMetricData"), ("outcome", "success")],
            )
            .unwrap_or(0.0)
                > 0.0
        })
        .await;
        assert!(
            all.iter()
                .any(|p| p.name == "RequestCount" && !p.dimensions.contains_key("Replica")),
            "RequestCount also published without Replica, for the sum across replicas"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_never_calls_update_service() {
    berth_tests::moto::require();
    bounded(Duration::from_secs(120), async {
        let w = world().await;
        let scaler = w.start_scaler("dry_run = true").await;
        let load = Load::start(&w.url, 4);
        wait_until(
            Duration::from_secs(30),
            "a dry-run scale-out decision",
            || async { scaler.log().contains("dry run: UpdateService not called") },
        )
        .await;
        let _ = load.stop().await;
        assert!(
            scaler
                .metric("berth_scaler_desired_count", &[("service", "api")])
                .await
                .unwrap_or(0.0)
                > 1.0
        );
        assert_eq!(w.moto.call_count("UpdateService").await.unwrap(), 0);
        assert!(w.moto.call_count("DescribeServices").await.unwrap() > 0);
        assert_eq!(
            w.moto.service("prod", "api").await.unwrap().desired_count,
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_down_does_not_block_decisions() {
    berth_tests::moto::require();
    bounded(Duration::from_secs(120), async {
        let w = world().await;
        w.moto
            .inject_fault("PutMetricData", FaultKind::Error500, 100_000)
            .await
            .unwrap();
        w.moto
            .inject_fault("GetMetricData", FaultKind::Error500, 100_000)
            .await
            .unwrap();
        let scaler = w
            .start_scaler(
                "dry_run = false\npublish = true\naggregate = \"cloudwatch\"\npublish_buffer = 50",
            )
            .await;
        let step = Instant::now();
        let load = Load::start(&w.url, 4);
        wait_until(
            Duration::from_secs(30),
            "scale-out despite CloudWatch errors",
            || async {
                w.moto
                    .service("prod", "api")
                    .await
                    .is_ok_and(|s| s.desired_count > 1)
            },
        )
        .await;
        println!(
            "figure: CloudWatch down, load step -> UpdateService: {:?}",
            step.elapsed()
        );
        let _ = load.stop().await;
        wait_until(
            Duration::from_secs(30),
            "errors and drops counted",
            || async {
                let m = scaler.metrics().await;
                berth_tests::metrics::value(
                    &m,
                    "berth_aws_api_calls_total",
                    &[("operation", "PutMetricData"), ("outcome", "error")],
                )
                .unwrap_or(0.0)
                    > 0.0
                    && berth_tests::metrics::value(&m, "berth_scaler_metrics_dropped_total", &[])
                        .unwrap_or(0.0)
                        > 0.0
            },
        )
        .await;
        let log = scaler.log();
        assert!(
            log.contains("aggregate unavailable") || log.contains("aggregate timed out"),
            "local figures used when GetMetricData fails"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_count_needs_no_aws() {
    bounded(Duration::from_secs(90), async {
        let b = Backend::start("task", net::target_ip()).await;
        let listen = net::listen_addr();
        let proxy = berth_tests::config::Listener::web(listen, "api").to_string()
            + &berth_tests::static_group("api", &[&b], "");
        let berth = Berth::start(&proxy).await;
        berth
            .wait_healthy("api", &[b.addr()], Duration::from_secs(10))
            .await;
        let config = format!(
            r#"{proxy}
[scaler]
metrics_url = "http://{}/metrics"
interval = "1s"
admin_bind = "@ADMIN@"
dry_run = true

[[scaler.services]]
cluster = "demo"
service = "demo"
target_group = "api"
min_capacity = 1
max_capacity = 5
dry_run_count = 1

[[scaler.services.target_tracking]]
metric = "requests_per_target"
per = "second"
target = 5
"#,
            berth.admin()
        );
        // No AWS environment at all (and metadata disabled): it must not matter.
        let scaler = Scaler::start(&config, &[]).await;
        let load = Load::start(&format!("http://{listen}/"), 2);
        wait_scaler_metric(
            &scaler,
            ("berth_scaler_desired_count", "demo"),
            5.0,
            Duration::from_secs(30),
            "simulated desired count rises",
        )
        .await;
        let _ = load.stop().await;
        let log = scaler.log();
        assert!(log.contains("no AWS call needed"), "{log}");
        assert!(!log.contains("berth_aws_api_calls_total"));
        let m = scaler.metrics().await;
        assert!(
            !m.contains("berth_aws_api_calls_total"),
            "no AWS call was made: {m}"
        );
    })
    .await;
}
