//! Every metric name the shipped alert/recording rules and the Grafana dashboard read exists in
//! a live `/metrics` scrape of berth-proxy, so the names cannot drift apart.
//!
//! berth runs a config that touches every family: requests of every class, fixed responses,
//! retries and a spent retry budget (targets on closed ports), passive ejections, a target
//! group failing open, a file source, an ECS source polled from moto (AWS call counters, ECS
//! task gauges), a rejected then accepted reload, and a TCP listener taking PROXY headers
//! (flows relayed and reset by their target, connects refused, a malformed header rejected).
//!
//! Only berth-scaler's own metrics ([`NOT_FROM_PROXY`]; it serves them on its admin port) are
//! exempt from the live check, and they must still be string constants in
//! scaler/src/metrics.rs; any other name used by the rules or dashboard must be in the scrape.

mod deploy_common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::wait::try_wait_for;
use berth_tests::{bounded, net, static_group, targets_toml, Backend, Berth, Http};
use deploy_common::*;

/// Metric names the rules/dashboard use that only berth-scaler's scrape shows.
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

/// How [`closing_target`] ends each connection.
#[derive(Clone, Copy)]
enum Close {
    /// A FIN: for HTTP, the request may have been seen, so only the retry policy (idempotent
    /// methods, budget) sends it again (a refused connect would be re-sent outside the policy
    /// and count no retry).
    HangUp,
    /// An RST (zero linger): a TCP listener's flow ends by a reset.
    Reset,
}

/// A target that reads each connection's first bytes and closes it without an answer, as
/// `close` says.
async fn closing_target(close: Close) -> SocketAddr {
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
                if let Close::Reset = close {
                    let _ = s.set_zero_linger();
                }
            });
        }
    });
    addr
}

/// Traffic for the TCP listener at `listen` (PROXY headers required, targets: a refused port
/// and a [`Close::Reset`] target): flows with a v1 header whose target resets them (some after
/// a refused connect), and one connection whose header is malformed.
async fn tcp_flows(listen: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let header = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\n";
    // Round robin over two targets: half of the flows try the refused port first.
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(listen)
            .await
            .expect("connect to the TCP listener");
        s.write_all(header).await.expect("send the PROXY header");
        s.write_all(b"ping").await.expect("send a payload");
        // Half-closed: berth relays the payload and the end, then sees the target's reset.
        s.shutdown().await.expect("half-close");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "the target answers nothing: {answer:?}");
    }
    let mut s = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect to the TCP listener");
    s.write_all(b"hello\r\n")
        .await
        .expect("send a malformed header");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty(),
        "a malformed header is refused: {answer:?}"
    );
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
                n.starts_with("berth_scaler_"),
                "the allow-list is only for the scaler's names: {n}"
            );
            assert!(used.iter().any(|(u, _)| u == n), "allow-listed {n} is used nowhere: drop it");
        }

        // The exempt names must still be defined in the code (scaler/src/metrics.rs), so
        // renaming one there fails here too.
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
        let task_backend = Backend::spawn("task").await;
        let moto = moto_with_one_task(&task_backend).await;

        let app = Backend::spawn("app").await;
        let live = Backend::spawn("live").await;
        let live2 = Backend::spawn("live2").await;
        let sick = Backend::spawn("sick").await;
        sick.set_healthy(false);
        let (dead, dead2) = (
            closing_target(Close::HangUp).await,
            closing_target(Close::HangUp).await,
        );
        let resetting = closing_target(Close::Reset).await;
        // Bound and released at once: connections are refused (connect errors, re-sends).
        let refused = net::free_port(net::target_ip());
        let (listen, tcp_listen, tls_listen) =
            (net::listen_addr(), net::listen_addr(), net::listen_addr());
        // A tls listener, so the certificate gauges (expiry alert) are in the scrape.
        let cert = berth_tests::tls::TestCa::new().issue(&["tls.test"]);
        // Priority 1: a fixed response; then one path prefix per target group.
        let mut rules = String::from(
            "[[listeners.rules]]\npriority = 1\nconditions = [{ path_prefix = [\"/fixed\"] }]\n\
             action = { fixed_response = { status = 200, body = \"fixed\" } }\n\n",
        );
        let prefixes = [
            ("/retry", "flaky"),
            ("/nobudget", "nobudget"),
            ("/sick", "sick"),
            ("/file", "files"),
            ("/ecs", "ecs"),
        ];
        for (priority, (prefix, group)) in (2..).zip(prefixes) {
            rules.push_str(&format!(
                "[[listeners.rules]]\npriority = {priority}\n\
                 conditions = [{{ path_prefix = [\"{prefix}\"] }}]\n\
                 action = {{ forward = [{{ target_group = \"{group}\" }}] }}\n\n"
            ));
        }
        let config = format!(
            r#"
[[listeners]]
name = "web"
bind = "{listen}"

{rules}
[listeners.default_action]
forward = [{{ target_group = "app" }}]

[[listeners]]
name = "tcp"
bind = "{tcp_listen}"
protocol = "tcp"
[listeners.proxy_protocol]
trusted_cidrs = ["127.0.0.1/32"]
[listeners.default_action]
forward = [{{ target_group = "tcp" }}]

[[listeners]]
name = "tls"
bind = "{tls_listen}"
protocol = "tls"
[[listeners.certificates]]
cert = "tls.crt"
key = "tls.key"
[listeners.default_action]
forward = [{{ target_group = "tcp" }}]

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
name = "tcp"
outlier = {{ enabled = false }}
health_check = {{ enabled = false }}
source = {{ kind = "static", targets = [{{ address = "{refused}" }}, {{ address = "{resetting}" }}] }}

[[target_groups]]
name = "files"
health_check = {{ enabled = false }}
source = {{ kind = "file", path = "file-targets.toml" }}

{ECS_API_GROUP}"#,
            app_group = static_group("app", &[&app], ""),
            sick_group = static_group("sick", &[&sick], ""),
            live = live.addr(),
            live2 = live2.addr(),
        );
        let file_targets = format!("targets = {}\n", targets_toml(&[&app]));
        let files = [
            ("file-targets.toml", file_targets.as_str()),
            ("tls.crt", cert.cert_pem.as_str()),
            ("tls.key", cert.key_pem.as_str()),
        ];
        let berth = Berth::start_with_files(&config, &files).await;
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
        tcp_flows(tcp_listen).await;
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
