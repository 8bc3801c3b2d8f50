//! Configuration reloads and restarts under load: a reload every second for 30 s (two of them
//! broken) and a graceful restart on the same port lose no request.
//!
//! Every test is bounded in time and talks to loopback only. Measured times are printed as
//! `figure: ...` lines; only the functional bounds are asserted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::config::{json_logged, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, wait_until, Backend, Berth, Http, Load};

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_every_second_for_30s_under_load() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let web = listen_addr();
        let group = static_group("g", &[&a, &b], "");
        let cfg = |version: &str| {
            let version_rule =
                format!("{{ fixed_response = {{ status = 200, body = \"{version}\" }} }}");
            let listener =
                Listener::web(web, "g").rule(1, r#"{ path_exact = ["/version"] }"#, &version_rule);
            json_logged(&listener) + &group
        };
        let berth = Berth::start(&cfg("v0")).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr()], HEALTHY)
            .await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(100, Duration::from_secs(20)).await;
        let http = Http::new();
        let version_url = format!("http://{web}/version");
        let failures = || async {
            berth
                .metric("berth_config_reloads_total", &[("result", "failure")])
                .await
                .unwrap_or(0.0)
        };

        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut current = "v0".to_string();
        let (mut good, mut slowest) = (0, Duration::ZERO);
        for i in 1..=31 {
            tick.tick().await;
            let broken = match i {
                10 => Some(cfg("broken") + "\n[[listeners]\nname = "), // not TOML
                20 => {
                    Some(cfg("broken").replace("grace_period = \"3s\"", "grace_period = \"soon\""))
                }
                _ => None,
            };
            if let Some(text) = broken {
                let before = failures().await;
                berth.write_config(&text);
                berth.reload();
                berth
                    .wait_metric_at_least(
                        "berth_config_reloads_total",
                        &[("result", "failure")],
                        before + 1.0,
                        Duration::from_secs(5),
                    )
                    .await;
                for _ in 0..5 {
                    let r = http.get(&version_url).await.unwrap();
                    assert_eq!(
                        (r.status.as_u16(), r.body.as_str()),
                        (200, current.as_str()),
                        "after the broken config of second {i}, the last good one serves"
                    );
                }
                continue;
            }
            let version = format!("v{i}");
            berth.write_config(&cfg(&version));
            let sent = Instant::now();
            berth.reload();
            wait_until(
                Duration::from_secs(5),
                &format!("{version} to answer"),
                || async {
                    http.get(&version_url)
                        .await
                        .is_ok_and(|r| r.status == 200 && r.body == version)
                },
            )
            .await;
            slowest = slowest.max(sent.elapsed());
            good += 1;
            current = version;
        }
        assert!(
            started.elapsed() >= Duration::from_secs(30),
            "the reloads spanned {:?}",
            started.elapsed()
        );
        let before = load.stats().ok;
        load.wait_ok(before + 100, Duration::from_secs(10)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let ok = berth
            .metric("berth_config_reloads_total", &[("result", "success")])
            .await
            .unwrap_or(0.0);
        assert!(
            ok >= f64::from(good),
            "{ok} successful reloads counted, {good} applied"
        );
        let failed = failures().await;
        // Each broken config fails once per trigger (SIGHUP, maybe also the file watch).
        assert!(
            (2.0..=4.0).contains(&failed),
            "berth_config_reloads_total{{result=failure}} = {failed} for 2 broken configs"
        );
        let states = berth.target_states("g").await;
        assert!(states.values().all(|s| s == "healthy"), "{states:?}");
        eprintln!(
            "figure: reload every second for {:?}: {} requests, 0 failed; {good} good reloads \
             (slowest signal-to-effect {slowest:?}), {failed} failed reloads counted",
            started.elapsed(),
            stats.ok
        );
    })
    .await
}

/// Whether a failed request never reached berth's proxy logic: the connection was refused, or
/// a pooled keep-alive connection turned out closed. Such an idempotent request is retried.
fn connection_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(h) = c.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return true;
            }
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        })
    })
}

/// What the keep-alive clients of the restart test saw: answered requests, re-sends after a
/// closed or refused connection, and every other failure.
#[derive(Default)]
struct RestartStats {
    ok: AtomicU64,
    retries: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// SIGTERM to a berth serving keep-alive clients and slow requests, then a new berth on the
/// same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_on_the_same_port_loses_no_request() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let group = static_group("g", &[&a], "");
        let cfg = json_logged(&Listener::web(web, "g")) + &group;
        let mut old = Berth::start(&cfg).await;
        old.wait_healthy("g", &[a.addr()], HEALTHY).await;

        // Keep-alive clients that retry a GET only when its connection was refused or found
        // closed; any status other than 200, or giving up, is an error.
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RestartStats::default());
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (stop, stats) = (stop.clone(), stats.clone());
                let url = format!("http://{web}/");
                tokio::spawn(async move {
                    let http = Http::new();
                    while !stop.load(Ordering::SeqCst) {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        loop {
                            match http.get(&url).await {
                                Ok(r) if r.status == 200 => {
                                    stats.ok.fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(r) => stats
                                    .errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("status {}: {}", r.status, r.body)),
                                Err(e) if connection_gone(&e) && Instant::now() < deadline => {
                                    stats.retries.fetch_add(1, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(10)).await; // pacing
                                    continue;
                                }
                                Err(e) => stats.errors.lock().unwrap().push(format!("{e:#}")),
                            }
                            break;
                        }
                    }
                })
            })
            .collect();
        let ok = || stats.ok.load(Ordering::SeqCst);
        wait_until(HEALTHY, "200 requests through the old berth", || async {
            ok() >= 200
        })
        .await;

        // Requests in flight at SIGTERM, on their own connections, never retried.
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let url = format!("http://{web}/slow?ms=1500");
                tokio::spawn(async move {
                    Http::no_pool()
                        .with_timeout(Duration::from_secs(20))
                        .get(&url)
                        .await
                })
            })
            .collect();
        wait_until(
            Duration::from_secs(5),
            "3 slow requests in flight",
            || async { a.in_flight() >= 3 },
        )
        .await;
        let at_sigterm = ok();
        old.terminate();
        let t0 = Instant::now();

        // berth sets no SO_REUSEPORT: the new process can bind once the old one has closed
        // its listening socket (pingora does so at SIGTERM, before the grace period).
        wait_until(
            Duration::from_secs(10),
            "the old berth to close its listener",
            || async { std::net::TcpListener::bind(web).is_ok() },
        )
        .await;
        let closed = t0.elapsed();
        let new = Berth::start(&cfg).await;
        let up = t0.elapsed();
        for s in slow {
            let r = s.await.unwrap().expect("in-flight request across SIGTERM");
            assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"));
        }
        let at_new = ok();
        wait_until(HEALTHY, "200 requests through the new berth", || async {
            ok() >= at_new + 200
        })
        .await;
        let status = old
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("the old berth still runs 15 s after SIGTERM (grace 3 s)");
        assert!(status.success(), "old berth exit status: {status}");
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
        let errors = stats.errors.lock().unwrap().clone();
        let mut kinds = std::collections::BTreeMap::new();
        for e in &errors {
            *kinds.entry(e.as_str()).or_insert(0) += 1;
        }
        assert!(
            errors.is_empty(),
            "{} requests failed across the restart, by error: {kinds:#?}",
            errors.len()
        );
        let served = new
            .metric(
                "berth_requests_total",
                &[("listener", "web"), ("class", "2xx")],
            )
            .await
            .unwrap_or(0.0);
        assert!(served >= 200.0, "the new berth served {served} requests");
        eprintln!(
            "figure: graceful restart: listener closed {closed:?} after SIGTERM, new berth ready \
             {up:?} after; {} requests ok ({} before SIGTERM), {} retried on closed/refused \
             connections, 0 errors",
            ok(),
            at_sigterm,
            stats.retries.load(Ordering::SeqCst)
        );
    })
    .await
}
