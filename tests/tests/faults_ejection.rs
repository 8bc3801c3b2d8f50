//! Faulty targets under load: a killed target is ejected passively within 1 s and marked
//! unhealthy by active checks within 3 s; a hung one times out (504) and leaves rotation while
//! the others keep answering.
//!
//! Every test is bounded in time and talks to loopback only. Measured times are printed as
//! `figure: ...` lines; only the functional bounds are asserted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::config::{json_logged, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, log, static_group, Backend, Berth, Http, Load};

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_ejected_within_1s_and_unhealthy_within_3s() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let mut c = Backend::spawn("c").await;
        let web = listen_addr();
        let outlier = "outlier = { enabled = true, consecutive_connect_failures = 3, \
                       base_ejection_time = \"30s\" }";
        let cfg =
            json_logged(&Listener::web(web, "g")) + &static_group("g", &[&a, &b, &c], outlier);
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr(), c.addr()], HEALTHY)
            .await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(300, Duration::from_secs(20)).await;
        assert!(c.requests() > 0, "c got traffic before the kill");

        c.kill().await;
        let killed = Instant::now();
        let c_addr = c.addr().to_string();
        let (mut passive, mut active) = (None, None);
        while passive.is_none() || active.is_none() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "10 s after the kill: passive ejection {passive:?}, active unhealthy {active:?}"
            );
            if passive.is_none() {
                let ejections = berth
                    .metric(
                        "berth_ejections_total",
                        &[("target_group", "g"), ("reason", "connect")],
                    )
                    .await
                    .unwrap_or(0.0);
                if ejections >= 1.0 {
                    passive = Some(killed.elapsed());
                    let states = berth.target_states("g").await;
                    assert_eq!(
                        states.get(&c_addr).map(String::as_str),
                        Some("unhealthy"),
                        "an ejected target reports unhealthy in /targets: {states:?}"
                    );
                }
            }
            if active.is_none()
                && log::events(&berth, "health changed")
                    .iter()
                    .any(|f| f["target"] == c_addr.as_str() && f["to"] == "Unhealthy")
            {
                active = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // pacing the poll
        }
        let (passive, active) = (passive.unwrap(), active.unwrap());
        eprintln!(
            "figure: killed backend: passively ejected {passive:?} after SIGKILL, \
             unhealthy by active checks (1 s interval, 2 failures) {active:?} after"
        );
        assert!(
            passive <= Duration::from_secs(1),
            "passive ejection took {passive:?} (bound 1 s)"
        );
        assert!(
            active <= Duration::from_secs(3),
            "active checks took {active:?} to mark the target unhealthy (bound 3 s)"
        );
        let after = load.stats().ok;
        load.wait_ok(after + 500, Duration::from_secs(20)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        eprintln!(
            "figure: killed backend: {} requests, 0 failed, by backend {:?}, retries {:?}",
            stats.ok,
            stats.by_backend,
            berth.metric("berth_retries_total", &[]).await
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_backend_times_out_and_is_ejected_others_unaffected() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let c = Backend::spawn("c").await;
        let web = listen_addr();
        // Checks every 2 s with a 1 s timeout: the hung target stays in rotation for at least
        // 3 s, long enough to see requests time out on it.
        let group = Group::new("g")
            .key("outlier = { enabled = true }")
            .key(r#"timeouts = { read = "1s" }"#)
            .key(
                r#"health_check = { interval = "2s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2, path = "/health" }"#,
            )
            .backends(&[&a, &b, &c]);
        let cfg = json_logged(&Listener::web(web, "g")) + &group.to_string();
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr(), c.addr()], HEALTHY)
            .await;

        c.set_hang(true);
        let hung = Instant::now();
        // Nine requests at once: round robin gives the hung target its share.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..9 {
            let url = format!("http://{web}/");
            set.spawn(async move {
                let started = Instant::now();
                let r = Http::no_pool().get(&url).await.expect("a response");
                (r.status.as_u16(), r.backend().to_string(), started.elapsed())
            });
        }
        let mut timeouts = Vec::new();
        while let Some(r) = set.join_next().await {
            let (status, backend, took) = r.unwrap();
            match (status, backend.as_str()) {
                (200, "a" | "b") => {}
                (504, "") => {
                    assert!(
                        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
                        "a request to the hung target answered 504 after {took:?} (read = 1s)"
                    );
                    timeouts.push(took);
                }
                other => panic!("unexpected answer {other:?} after {took:?}"),
            }
        }
        assert!(
            !timeouts.is_empty(),
            "no request reached the hung target (round robin over 3 targets, 9 requests)"
        );
        eprintln!("figure: hung backend: {} of 9 requests timed out after {timeouts:?} (read = 1s)", timeouts.len());
        let t = berth
            .metric(
                "berth_proxy_responses_total",
                &[("listener", "web"), ("reason", "upstream_timeout")],
            )
            .await
            .unwrap_or(0.0);
        assert!(
            t >= timeouts.len() as f64,
            "berth_proxy_responses_total{{reason=upstream_timeout}} = {t}, {} seen",
            timeouts.len()
        );

        berth
            .wait_target("g", c.addr(), Some("unhealthy"), Duration::from_secs(15))
            .await;
        eprintln!(
            "figure: hung backend: out of rotation {:?} after it hung (checks every 2 s, timeout 1 s)",
            hung.elapsed()
        );
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(500, Duration::from_secs(20)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let backends: BTreeSet<&str> = stats.by_backend.keys().map(String::as_str).collect();
        assert_eq!(
            backends,
            BTreeSet::from(["a", "b"]),
            "after ejection only the healthy targets answer"
        );
    })
    .await
}
