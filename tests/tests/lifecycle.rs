//! Reloads, file-sourced targets coming and going, signals, `--check` and the metrics format.

use std::time::Duration;

use berth_tests::berth::check;
use berth_tests::config::{rule, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{
    bounded, static_group, targets_toml, wait_until, which, Backend, Berth, Http, Load,
};

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// `[proxy]` with a 5 s grace period, then listener `web` on `web` with `extra_rules`,
/// forwarding everything else to group `g`.
fn listener(web: std::net::SocketAddr, extra_rules: &str) -> String {
    format!(
        "\n[proxy]\ngrace_period = \"5s\"\n{}",
        Listener::web(web, "g").tables(extra_rules)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let web = listen_addr();
        let cfg = listener(web, "") + &static_group("g", &[&a, &b], "");
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr()], HEALTHY)
            .await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(100, Duration::from_secs(20)).await;
        let reloads = 15;
        for _ in 0..reloads {
            berth.reload();
            tokio::time::sleep(Duration::from_millis(200)).await; // pacing, not synchronisation
        }
        berth
            .wait_metric_at_least(
                "berth_config_reloads_total",
                &[("result", "success")],
                // Signals sent close together may coalesce; most must have been handled.
                (reloads / 2) as f64,
                Duration::from_secs(10),
            )
            .await;
        let before = load.stats().ok;
        load.wait_ok(before + 100, Duration::from_secs(10)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        assert_eq!(
            berth
                .metric("berth_config_reloads_total", &[("result", "failure")])
                .await
                .unwrap_or(0.0),
            0.0
        );
        // Targets kept their health across reloads of an unchanged config.
        let states = berth.target_states("g").await;
        assert!(states.values().all(|s| s == "healthy"), "{states:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_applies_and_bad_reload_keeps_old_config() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let group = static_group("g", &[&a], "");
        let berth = Berth::start(&(listener(web, "") + &group)).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        let http = Http::no_pool();
        let url = format!("http://{web}/new");
        assert_eq!(http.get(&url).await.unwrap().backend(), "a");

        // A valid change, picked up by the file watch (no signal).
        let rule = &rule(
            1,
            r#"{ path_exact = ["/new"] }"#,
            r#"{ fixed_response = { status = 200, body = "v2" } }"#,
        );
        berth.write_config(&(listener(web, rule) + &group));
        wait_until(
            Duration::from_secs(10),
            "the new rule to apply (file watch)",
            || async {
                http.get(&url)
                    .await
                    .map(|r| r.body == "v2")
                    .unwrap_or(false)
            },
        )
        .await;
        let ok = berth
            .metric("berth_config_reloads_total", &[("result", "success")])
            .await;
        assert!(ok.unwrap_or(0.0) >= 1.0, "reload success counted: {ok:?}");

        // An invalid change: unknown key and a bad duration. Signal too.
        berth.write_config(&(listener(web, rule) + &group).replace(
            "grace_period = \"5s\"",
            "grace_period = \"soon\"\nno_such_key = 1",
        ));
        berth.reload();
        berth
            .wait_metric_at_least(
                "berth_config_reloads_total",
                &[("result", "failure")],
                1.0,
                Duration::from_secs(10),
            )
            .await;
        // Still serving the last good config.
        for _ in 0..10 {
            let r = http.get(&url).await.unwrap();
            assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "v2"));
            let r = http.get(&format!("http://{web}/other")).await.unwrap();
            assert_eq!((r.status.as_u16(), r.backend()), (200, "a"));
        }
        let h = http.get(&berth.admin_url("/healthz")).await.unwrap();
        assert_eq!(h.status, 200, "still healthy after a bad reload");
        assert!(
            berth.log().contains("grace_period"),
            "the rejected reload's error is logged with its key path"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_add_and_drain() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let web = listen_addr();
        let cfg = listener(web, "").replace(
            "grace_period = \"5s\"\n",
            "grace_period = \"5s\"\nwatch_interval = \"200ms\"\n",
        ) + &Group::new("g")
            .deregistration_delay("10s")
            .fast_health_check()
            .source("kind = \"file\"\npath = \"targets.toml\"")
            .to_string();
        let targets = |bs: &[&Backend]| format!("targets = {}\n", targets_toml(bs));
        let berth = Berth::start_with_files(&cfg, &[("targets.toml", &targets(&[&a]))]).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        let http = Http::new();
        let url = format!("http://{web}/");

        // Add b while its health check fails: it shows up but gets nothing.
        b.set_healthy(false);
        berth.write_file("targets.toml", &targets(&[&a, &b]));
        wait_until(
            Duration::from_secs(10),
            "b to appear in /targets",
            || async {
                berth
                    .target_states("g")
                    .await
                    .contains_key(&b.addr().to_string())
            },
        )
        .await;
        let state = berth.target_states("g").await[&b.addr().to_string()].clone();
        assert!(
            state == "initial" || state == "unhealthy",
            "new failing target is {state}"
        );
        for _ in 0..20 {
            assert_eq!(http.get(&url).await.unwrap().backend(), "a");
        }
        assert_eq!(
            b.requests(),
            0,
            "a target that never passed a check got traffic"
        );

        // Healthy now: it gets traffic.
        b.set_healthy(true);
        berth
            .wait_target("g", b.addr(), Some("healthy"), HEALTHY)
            .await;
        wait_until(Duration::from_secs(5), "b to receive traffic", || async {
            let _ = http.get(&url).await;
            b.requests() > 0
        })
        .await;

        // Slow requests in flight on both; remove b from the file.
        let slow: Vec<_> = (0..4)
            .map(|_| {
                let http = Http::no_pool().with_timeout(Duration::from_secs(20));
                let url = format!("http://{web}/slow?ms=3000");
                tokio::spawn(async move { http.get(&url).await })
            })
            .collect();
        // All four on their targets before counting b's requests: one still on its way to b
        // would otherwise count as a new request to the draining target.
        wait_until(
            Duration::from_secs(5),
            "every slow request in flight, at least one on b",
            || async { b.in_flight() >= 1 && a.in_flight() + b.in_flight() >= 4 },
        )
        .await;
        let b_before = b.requests();
        berth.write_file("targets.toml", &targets(&[&a]));
        berth
            .wait_target("g", b.addr(), Some("draining"), Duration::from_secs(5))
            .await;
        assert!(
            b.in_flight() >= 1,
            "the slow request on b is still running while draining"
        );
        for _ in 0..10 {
            let r = http.get(&url).await.unwrap();
            assert_eq!(
                (r.status.as_u16(), r.backend()),
                (200, "a"),
                "no new request to a draining target"
            );
        }
        assert_eq!(
            b.requests(),
            b_before,
            "a draining target received a new request"
        );
        for s in slow {
            let r = s.await.unwrap().expect("slow request through the drain");
            assert_eq!(
                r.status, 200,
                "in-flight request on the draining target: {}",
                r.body
            );
        }
        berth
            .wait_target("g", b.addr(), None, Duration::from_secs(15))
            .await;
        let draining = berth
            .metric(
                "berth_targets",
                &[("target_group", "g"), ("state", "draining")],
            )
            .await;
        assert!(
            draining.unwrap_or(0.0) == 0.0,
            "berth_targets{{state=draining}} = {draining:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = listener(web, "") + &static_group("g", &[&a], "");
        let mut berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        let slow = {
            let http = Http::no_pool().with_timeout(Duration::from_secs(20));
            let url = format!("http://{web}/slow?ms=2000");
            tokio::spawn(async move { http.get(&url).await })
        };
        wait_until(
            Duration::from_secs(5),
            "the slow request to reach the backend",
            || async { a.in_flight() == 1 },
        )
        .await;
        berth.terminate();
        let r = slow
            .await
            .unwrap()
            .expect("in-flight request survives SIGTERM");
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"));
        // grace_period is 5 s.
        let status = berth.wait_exit(Duration::from_secs(15)).await;
        let status = status.expect("berth-proxy still running 15 s after SIGTERM (grace 5 s)");
        assert!(status.success(), "exit status after SIGTERM: {status}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_fast() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = listener(web, "").replace("\"5s\"", "\"60s\"") + &static_group("g", &[&a], "");
        let mut berth = Berth::start(&cfg).await;
        berth.interrupt();
        let status = berth.wait_exit(Duration::from_secs(5)).await;
        assert!(
            status.is_some(),
            "SIGINT did not stop berth-proxy within 5 s"
        );
    })
    .await
}

#[test]
fn check_good_and_bad_configs() {
    let web = listen_addr();
    let good = Listener::web(web, "g").to_string()
        + &Group::new("g")
            .targets(r#"[{ address = "127.0.0.2:9000" }]"#)
            .to_string();
    let out = check(&good, &[]);
    assert_eq!(out.code, 0, "good config: {out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.lines().any(|l| l.starts_with("config ok: ")),
        "summary line: {out:?}"
    );
    assert_eq!(text.trim().lines().count(), 1, "one line: {out:?}");

    // Three independent errors on known lines.
    let bad = format!(
        r#"[proxy]
grace_period = "soon"

[[listeners]]
name = "web"
bind = "{web}"
[listeners.default_action]
forward = [{{ target_group = "missing" }}]

[[target_groups]]
name = "g"
colour = "blue"
[target_groups.source]
kind = "static"
targets = [{{ address = "127.0.0.2:9000" }}]
"#
    );
    let out = check(&bad, &[]);
    assert_eq!(out.code, 1, "bad config exits 1: {out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    let errors: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let find = |key: &str, line: u32| {
        errors.iter().any(|l| {
            l.starts_with(key) && l.contains(": ") && l.ends_with(&format!("(line {line})"))
        })
    };
    assert!(
        find("proxy.grace_period", 2),
        "grace_period error on line 2: {errors:#?}"
    );
    assert!(
        find("listeners[0].default_action", 8),
        "unknown target group on line 8: {errors:#?}"
    );
    assert!(
        find("target_groups[0]", 12),
        "unknown key on line 12: {errors:#?}"
    );
    assert!(!text.contains("config ok"), "{text}");

    // Unparseable TOML.
    let out = check("[[listeners]\nname = ", &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!format!("{}{}", out.stdout, out.stderr).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    bounded(LIMIT, async {
        let promtool = which("promtool").unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH: install Debian package `prometheus` \
                 (scripts/test does this)"
            )
        });
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = listener(web, "") + &static_group("g", &[&a], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        let http = Http::new();
        for path in ["/", "/status/500", "/status/404", "/status/302"] {
            let _ = http.get(&format!("http://{web}{path}")).await.unwrap();
        }
        let _ = berth_tests::client::raw_request(web, b"NOT HTTP\r\n\r\n").await;
        berth.reload();
        berth
            .wait_metric_at_least(
                "berth_config_reloads_total",
                &[],
                1.0,
                Duration::from_secs(10),
            )
            .await;
        let text = berth.metrics().await;
        for name in [
            "berth_requests_total",
            "berth_targets",
            "berth_target_requests_total",
            "berth_request_duration_seconds_bucket",
            "berth_target_response_seconds_bucket",
            "berth_health_checks_total",
        ] {
            assert!(
                berth_tests::metrics::parse(&text)
                    .iter()
                    .any(|s| s.name == name),
                "{name} missing from /metrics:\n{text}"
            );
        }
        let r = berth
            .metric(
                "berth_requests_total",
                &[
                    ("listener", "web"),
                    ("target_group", "g"),
                    ("class", "5xx"),
                    ("origin", "target"),
                ],
            )
            .await;
        assert_eq!(
            r,
            Some(1.0),
            "the /status/500 request counted as a target 5xx"
        );
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n--- metrics:\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
}
