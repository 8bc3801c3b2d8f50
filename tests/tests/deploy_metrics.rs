//! Every metric name the shipped alert/recording rules and the Grafana dashboard read exists in
//! a live `/metrics` scrape of berth-proxy, so the names cannot drift apart.
//!
//! berth runs a config that touches every family: requests of every class, fixed responses,
//! retries and a spent retry budget (targets on closed ports), passive ejections, a target
//! group failing open, a file source, an ECS source polled from moto (AWS call counters, ECS
//! task gauges), and a rejected then accepted reload.
//!
//! Names a berth-proxy scrape of this config cannot show are in [`NOT_FROM_PROXY`]: berth-scaler's
//! own metrics (it serves them on its admin port) and the L4 metrics (TCP listeners are being
//! built). Only those are exempt from the live check, and they must still be string constants in
//! proxy/src/metrics.rs or scaler/src/metrics.rs; any other name used by the rules or dashboard
//! must be in the scrape.

mod deploy_common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::wait::try_wait_for;
use berth_tests::{bounded, net, static_group, targets_toml, Backend, Berth, Http};
use deploy_common::moto::{Moto, NetworkMode, TaskDefinition, TaskSpec};
use deploy_common::*;

/// Metric names the rules/dashboard use that a berth-proxy scrape cannot show today.
const NOT_FROM_PROXY: &[&str] = &[
    // berth-scaler's /metrics (port 9902), scraped by the `berth-scaler` job.
    "berth_scaler_desired_count",
    "berth_scaler_running_count",
    "berth_scaler_min_capacity",
    "berth_scaler_max_capacity",
    "berth_scaler_decisions_total",
    "berth_scaler_last_decision_age_seconds",
    "berth_scaler_metrics_dropped_total",
    "berth_scaler_scrape_errors_total",
    // L4 (TCP listeners, PROXY protocol): being built.
    "berth_l4_active_flows",
    "berth_l4_new_flows_total",
    "berth_l4_bytes_total",
    "berth_l4_target_connect_errors_total",
    "berth_l4_resets_total",
    "berth_l4_refused_total",
    "berth_proxy_protocol_rejected_total",
];

fn used_names() -> Vec<(String, String)> {
    let (rules, _) = rule_exprs();
    let mut out = Vec::new();
    for (where_, e) in rules.into_iter().chain(dashboard_exprs()) {
        for n in metric_names(&e).0 {
            out.push((n, where_.clone()));
        }
    }
    out
}

/// A target that takes each request and closes the connection without an answer: the
/// request may have been seen, so only the retry policy (idempotent methods, budget) sends it
/// again (a refused connect would be re-sent outside the policy and count no retry).
async fn hang_up_target() -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind(SocketAddr::new(net::target_ip(), 0))
        .await
        .expect("bind a loopback port");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_and_dashboard_metric_names_exist_in_a_live_scrape() {
    bounded(Duration::from_secs(120), async {
        setup(); // the venv with moto
        let used = used_names();
        assert!(used.len() > 20, "expected many metric names, got {used:?}");
        let allow: BTreeSet<&str> = NOT_FROM_PROXY.iter().copied().collect();
        for n in &allow {
            assert!(
                n.starts_with("berth_scaler_") || n.starts_with("berth_l4_") || n.starts_with("berth_proxy_protocol_"),
                "the allow-list is only for scaler and L4 names: {n}"
            );
            assert!(used.iter().any(|(u, _)| u == n), "allow-listed {n} is used nowhere: drop it");
        }

        // The exempt names must still be defined in the code (proxy/src/metrics.rs for L4,
        // scaler/src/metrics.rs for the scaler), so renaming one there fails here too.
        let mut defined = BTreeSet::new();
        for f in ["proxy/src/metrics.rs", "scaler/src/metrics.rs"] {
            let text = std::fs::read_to_string(repo().join(f)).unwrap_or_default();
            for lit in text.split('"').skip(1).step_by(2) {
                if lit.starts_with("berth_") {
                    defined.insert(lit.to_string());
                }
            }
        }
        let undefined: Vec<&&str> = allow.iter().filter(|n| !defined.contains(**n)).collect();
        assert!(
            undefined.is_empty(),
            "allow-listed metric names defined in neither proxy/src/metrics.rs nor \
             scaler/src/metrics.rs (renamed? fix deploy/prometheus and deploy/grafana): {undefined:?}"
        );

        // ECS in moto: one service task on a loopback backend.
        let moto = Moto::launch().await.expect("moto");
        for (k, v) in moto.aws_env() {
            // Inherited by the berth-proxy child; this binary has one test.
            std::env::set_var(k, v);
        }
        let task_backend = Backend::spawn("task").await;
        moto.create_cluster("prod").await.unwrap();
        moto.register_task_definition(&TaskDefinition::single(
            "api",
            NetworkMode::Awsvpc,
            task_backend.addr().port(),
        ))
        .await
        .unwrap();
        moto.create_service("prod", "api", "api", 1).await.unwrap();
        moto.create_tasks(&TaskSpec::awsvpc("prod", "api", &[task_backend.addr().ip()]).service("api"))
            .await
            .unwrap();

        let app = Backend::spawn("app").await;
        let live = Backend::spawn("live").await;
        let live2 = Backend::spawn("live2").await;
        let sick = Backend::spawn("sick").await;
        sick.set_healthy(false);
        let (dead, dead2) = (hang_up_target().await, hang_up_target().await);
        // Bound and released at once: connections are refused (connect errors, re-sends).
        let refused = net::free_port(net::target_ip());
        let listen = net::listen_addr();
        let config = format!(
            r#"
[[listeners]]
name = "web"
bind = "{listen}"

[[listeners.rules]]
priority = 1
conditions = [{{ path_prefix = ["/fixed"] }}]
action = {{ fixed_response = {{ status = 200, body = "fixed" }} }}

[[listeners.rules]]
priority = 2
conditions = [{{ path_prefix = ["/retry"] }}]
action = {{ forward = [{{ target_group = "flaky" }}] }}

[[listeners.rules]]
priority = 3
conditions = [{{ path_prefix = ["/nobudget"] }}]
action = {{ forward = [{{ target_group = "nobudget" }}] }}

[[listeners.rules]]
priority = 4
conditions = [{{ path_prefix = ["/sick"] }}]
action = {{ forward = [{{ target_group = "sick" }}] }}

[[listeners.rules]]
priority = 5
conditions = [{{ path_prefix = ["/file"] }}]
action = {{ forward = [{{ target_group = "files" }}] }}

[[listeners.rules]]
priority = 6
conditions = [{{ path_prefix = ["/ecs"] }}]
action = {{ forward = [{{ target_group = "ecs" }}] }}

[listeners.default_action]
forward = [{{ target_group = "app" }}]

{app_group}
{sick_group}
[[target_groups]]
name = "flaky"
retry = {{ attempts = 2 }}
outlier = {{ consecutive_connect_failures = 2 }}
health_check = {{ enabled = false }}
source = {{ kind = "static", targets = [{{ address = "{dead}" }}, {{ address = "{refused}" }}, {{ address = "{live}" }}] }}

[[target_groups]]
name = "nobudget"
retry = {{ attempts = 1, budget_percent = 0, min_per_second = 0 }}
outlier = {{ enabled = false }}
health_check = {{ enabled = false }}
source = {{ kind = "static", targets = [{{ address = "{dead2}" }}, {{ address = "{live2}" }}] }}

[[target_groups]]
name = "files"
health_check = {{ enabled = false }}
source = {{ kind = "file", path = "file-targets.toml" }}

[[target_groups]]
name = "ecs"
health_check = {{ enabled = false }}
[target_groups.source]
kind = "ecs"
cluster = "prod"
service = "api"
container = "app"
port = "http"
poll_interval = "500ms"
"#,
            app_group = static_group("app", &[&app], ""),
            sick_group = static_group("sick", &[&sick], ""),
            live = live.addr(),
            live2 = live2.addr(),
        );
        let file_targets = format!("targets = {}\n", targets_toml(&[&app]));
        let berth =
            Berth::start_with_files(&config, &[("file-targets.toml", &file_targets)]).await;
        berth.wait_healthy("app", &[app.addr()], Duration::from_secs(15)).await;
        berth
            .wait_target("sick", sick.addr(), Some("unhealthy"), Duration::from_secs(15))
            .await;
        berth
            .wait_target("ecs", task_backend.addr(), Some("healthy"), Duration::from_secs(15))
            .await;

        let http = Http::no_pool().with_timeout(Duration::from_secs(5));
        let base = format!("http://{listen}");
        for path in ["/", "/fixed", "/status/503", "/status/404", "/status/302", "/sick", "/file", "/ecs"] {
            let r = http.get(&format!("{base}{path}")).await.expect(path);
            assert!(r.status.as_u16() > 0);
        }
        for _ in 0..8 {
            let _ = http.get(&format!("{base}/retry")).await;
            let _ = http.get(&format!("{base}/nobudget")).await;
        }
        // A rejected reload, then the good config again.
        berth.write_config("this is [not toml");
        berth.reload();
        berth
            .wait_metric_at_least("berth_config_reloads_total", &[("result", "failure")], 1.0, Duration::from_secs(10))
            .await;
        berth.write_config(&config);
        berth.reload();

        let missing = |scrape: &str| -> Vec<(String, String)> {
            let have: BTreeSet<String> = berth_tests::metrics::parse(scrape)
                .into_iter()
                .map(|s| s.name)
                .collect();
            used.iter()
                .filter(|(n, _)| !have.contains(n) && !allow.contains(n.as_str()))
                .cloned()
                .collect()
        };
        let ok = try_wait_for(Duration::from_secs(20), || async {
            missing(&berth.metrics().await).is_empty().then_some(())
        })
        .await;
        if ok.is_none() {
            let scrape = berth.metrics().await;
            let m = missing(&scrape);
            let names: BTreeSet<String> = berth_tests::metrics::parse(&scrape).into_iter().map(|s| s.name).collect();
            panic!(
                "metric names used by deploy/prometheus/rules or deploy/grafana but absent from \
                 berth-proxy's /metrics (renamed in proxy/src/metrics.rs? fix the rules/dashboard):\n{}\n\
                 names in the scrape: {names:?}",
                m.iter().map(|(n, w)| format!("  {n}  ({w})")).collect::<Vec<_>>().join("\n")
            );
        }
        drop(moto);
    })
    .await;
}
