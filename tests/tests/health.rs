//! Active health checks, fail-open, passive ejection and retries.

use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::config::{Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, wait_until, Backend, Berth, Http, Load};

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// Group `g` of `backends`: a 1 s deregistration delay and checks of `/health` every second,
/// healthy after `healthy_threshold` successes, unhealthy after 2 failures.
fn group(backends: &[&Backend], healthy_threshold: u32) -> Group {
    let check = format!(
        "interval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = {healthy_threshold}\n\
         unhealthy_threshold = 2\npath = \"/health\"\nmatcher = \"200-399\""
    );
    Group::new("g")
        .deregistration_delay("1s")
        .table("health_check", &check)
        .backends(backends)
}

/// Listener `web` on `web` in front of `group`.
fn config(web: SocketAddr, group: Group) -> String {
    format!("{}{group}", Listener::web(web, "g"))
}

/// Berth in front of [`group`] of `backends` (healthy after 2 checks), once all are healthy;
/// returns it and its listener's address.
async fn start_healthy(backends: &[&Backend]) -> (Berth, SocketAddr) {
    let web = listen_addr();
    let berth = Berth::start(&config(web, group(backends, 2))).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    berth.wait_healthy("g", &addrs, HEALTHY).await;
    (berth, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_then_healthy() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        // Five successes at 1 s intervals: about 4 s in `initial`.
        let berth = Berth::start(&config(web, group(&[&a], 5))).await;
        let states = berth.target_states("g").await;
        assert_eq!(
            states.get(&a.addr().to_string()).map(String::as_str),
            Some("initial"),
            "a new target starts initial: {states:?}"
        );
        let m = berth
            .metric(
                "berth_targets",
                &[("target_group", "g"), ("state", "initial")],
            )
            .await;
        assert_eq!(m, Some(1.0), "berth_targets{{state=initial}}");
        berth
            .wait_target("g", a.addr(), Some("healthy"), HEALTHY)
            .await;
        assert!(
            a.health_checks() >= 5,
            "healthy after {} checks",
            a.health_checks()
        );
        let m = berth
            .metric(
                "berth_targets",
                &[("target_group", "g"), ("state", "healthy")],
            )
            .await;
        assert_eq!(m, Some(1.0), "berth_targets{{state=healthy}}");
        let r = Http::new().get(&format!("http://{web}/")).await.unwrap();
        assert_eq!((r.status.as_u16(), r.backend()), (200, "a"));
        let checks = berth
            .metric(
                "berth_health_checks_total",
                &[("target_group", "g"), ("result", "success")],
            )
            .await
            .unwrap_or(0.0);
        assert!(
            checks >= 5.0,
            "berth_health_checks_total{{result=success}} = {checks}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_target_gets_no_traffic() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let (berth, web) = start_healthy(&[&a, &b]).await;
        b.set_healthy(false);
        berth
            .wait_target("g", b.addr(), Some("unhealthy"), HEALTHY)
            .await;
        let before = b.requests();
        let http = Http::new();
        for _ in 0..50 {
            let r = http.get(&format!("http://{web}/")).await.unwrap();
            assert_eq!((r.status.as_u16(), r.backend()), (200, "a"));
        }
        assert_eq!(
            b.requests(),
            before,
            "the unhealthy target received requests"
        );
        let m = berth
            .metric(
                "berth_targets",
                &[("target_group", "g"), ("state", "unhealthy")],
            )
            .await;
        assert_eq!(m, Some(1.0));
        let fo = berth
            .metric("berth_target_group_fail_open", &[("target_group", "g")])
            .await;
        assert_ne!(fo, Some(1.0), "one healthy target left: not failing open");
        // And back.
        b.set_healthy(true);
        berth
            .wait_target("g", b.addr(), Some("healthy"), HEALTHY)
            .await;
        wait_until(
            Duration::from_secs(10),
            "b to get traffic again",
            || async {
                let _ = http.get(&format!("http://{web}/")).await;
                b.requests() > before
            },
        )
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unhealthy_fails_open() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let (berth, web) = start_healthy(&[&a, &b]).await;
        a.set_healthy(false);
        b.set_healthy(false);
        berth
            .wait_target("g", a.addr(), Some("unhealthy"), HEALTHY)
            .await;
        berth
            .wait_target("g", b.addr(), Some("unhealthy"), HEALTHY)
            .await;
        let http = Http::new();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let r = http.get(&format!("http://{web}/")).await.unwrap();
            assert_eq!(
                r.status, 200,
                "fail open: requests still go to targets: {}",
                r.body
            );
            seen.insert(r.backend().to_string());
        }
        assert_eq!(seen.len(), 2, "fail open routes to all targets: {seen:?}");
        let fo = berth
            .metric("berth_target_group_fail_open", &[("target_group", "g")])
            .await;
        assert_eq!(
            fo,
            Some(1.0),
            "berth_target_group_fail_open{{target_group=g}}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_under_load_loses_no_request() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let mut c = Backend::spawn("c").await;
        let (berth, web) = start_healthy(&[&a, &b, &c]).await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(300, Duration::from_secs(20)).await;
        assert!(c.requests() > 0, "c got traffic before the kill");
        c.kill().await;
        let killed_at = load.stats().ok;
        load.wait_ok(killed_at + 1500, Duration::from_secs(30))
            .await;
        berth
            .wait_target("g", c.addr(), Some("unhealthy"), Duration::from_secs(10))
            .await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let m = berth.metrics().await;
        let value = |name: &str, labels: &[(&str, &str)]| {
            berth_tests::metrics::value(&m, name, labels).unwrap_or(0.0)
        };
        let g = ("target_group", "g");
        let ejections = value("berth_ejections_total", &[g, ("reason", "connect")]);
        let connect_errors = value("berth_target_connect_errors_total", &[g]);
        let connect_resends = value("berth_unsent_resends_total", &[g, ("reason", "connect")]);
        let resends = value("berth_unsent_resends_total", &[g]);
        let retries = value("berth_retries_total", &[g]);
        eprintln!(
            "kill under load: {} ok, ejections {ejections}, connect errors {connect_errors}, \
             connect resends {connect_resends}, all resends {resends}, retries {retries}",
            stats.ok,
        );
        // Passive health took c out before the active checker could (2 failed checks, >= 1 s):
        // under load its failures (requests cut at the kill, refused connects) reach
        // consecutive_connect_failures (3) within milliseconds. One of three targets is under
        // max_ejection_percent (50).
        assert!(
            ejections >= 1.0,
            "the killed target was passively ejected (reason connect): {ejections}"
        );
        // No request failed because each one that met c went again: a refused connect is
        // re-sent to another target (never more connect errors than connect re-sends), a
        // closed pooled connection is re-sent, a request cut mid-flight is retried.
        assert!(
            connect_resends >= connect_errors,
            "every failed connect was re-sent: {connect_errors} errors, {connect_resends} re-sends"
        );
        assert!(
            resends + retries >= 1.0,
            "requests that met the killed target went again: re-sends {resends}, retries {retries}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_eject_passively() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let mut b = Backend::spawn("b").await;
        let web = listen_addr();
        // Active checks every 5 s (two failures to go unhealthy): within the ~2 s this test
        // takes after the kill, only passive ejection can notice the dead target.
        let group = Group::new("g")
            .table(
                "health_check",
                "interval = \"5s\"\ntimeout = \"2s\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n\
                 path = \"/health\"",
            )
            .table(
                "outlier",
                "consecutive_connect_failures = 2\nbase_ejection_time = \"60s\"",
            )
            .backends(&[&a, &b]);
        let cfg = config(web, group);
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr()], Duration::from_secs(20))
            .await;
        b.kill().await;
        let http = Http::new();
        for i in 0..30 {
            let r = http.get(&format!("http://{web}/")).await.unwrap();
            assert_eq!(
                r.status, 200,
                "request {i} after the kill failed: {}",
                r.body
            );
            assert_eq!(r.backend(), "a");
        }
        berth
            .wait_metric_at_least(
                "berth_ejections_total",
                &[("target_group", "g"), ("reason", "connect")],
                1.0,
                Duration::from_secs(2),
            )
            .await;
        // Operators must see the ejection in /targets: state `unhealthy`, or an `ejected` flag.
        let targets = berth.targets().await;
        let entry = targets["target_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["name"] == "g")
            .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
            .find(|t| t["address"] == b.addr().to_string())
            .unwrap_or_else(|| panic!("{} missing from /targets: {targets}", b.addr()));
        assert!(
            entry["state"] == "unhealthy" || entry["ejected"] == true,
            "passively ejected target is reported as {entry} in /targets \
             (expected state \"unhealthy\" or \"ejected\": true)"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_target_times_out_and_fails_its_checks() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = config(web, group(&[&a], 2).table("timeouts", "read = \"1s\""));
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        a.set_hang(true);
        let started = std::time::Instant::now();
        let r = Http::no_pool()
            .get(&format!("http://{web}/"))
            .await
            .unwrap();
        assert_eq!(r.status, 504, "read timeout of a hung target: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "answered after {:?} with read = 1s",
            started.elapsed()
        );
        let t = berth
            .metric(
                "berth_proxy_responses_total",
                &[("listener", "web"), ("reason", "upstream_timeout")],
            )
            .await;
        assert!(
            t.unwrap_or(0.0) >= 1.0,
            "berth_proxy_responses_total{{reason=upstream_timeout}} = {t:?}"
        );
        // Health checks time out too (timeout 500 ms): the target becomes unhealthy.
        berth
            .wait_target("g", a.addr(), Some("unhealthy"), HEALTHY)
            .await;
    })
    .await
}
