//! Scale: 1,000 target groups of 10 targets each behind 1,000 rules. Every target becomes
//! healthy, sampled rules route to their own group, a reload applies quickly, and the start-up
//! time, memory, idle CPU and reload time are printed as `figure: ...` lines.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::config::{forward, json_logged, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, log, targets_toml, Backend, Berth, Http};

/// User + system CPU time of process `pid` (all threads), from /proc/<pid>/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name start at field 3; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((f[11] + f[12]) as f64 / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1000_groups_10000_targets_1000_rules() {
    bounded(Duration::from_secs(240), async {
        berth_tests::net::raise_nofile_limit();
        const GROUPS: usize = 1000;
        const PER_GROUP: usize = 10;
        // 1,000 backends; group i has backends i..i+9 (mod 1,000), so every group's set of
        // answering backends is its own and a misrouted request shows.
        let mut backends = Vec::new();
        for i in 0..GROUPS {
            backends.push(Backend::spawn(&format!("b{i}")).await);
        }
        let members = |g: usize| -> BTreeSet<String> {
            (0..PER_GROUP).map(|k| format!("b{}", (g + k) % GROUPS)).collect()
        };
        let web = listen_addr();
        let condition = |i: usize| {
            if i.is_multiple_of(2) {
                format!("{{ host = [\"h{i}.scale.test\"] }}")
            } else {
                format!("{{ path_prefix = [\"/r{i}/\"] }}")
            }
        };
        let config = |changed: Option<usize>| {
            let mut listener = Listener::new("web", web)
                .default_action(r#"fixed_response = { status = 404, body = "no rule" }"#);
            for i in 0..GROUPS {
                let action = if changed == Some(i) {
                    r#"{ fixed_response = { status = 200, body = "changed" } }"#.to_string()
                } else {
                    forward(&format!("g{i}"))
                };
                listener = listener.rule(i as u32 + 1, &condition(i), &action);
            }
            let mut cfg = json_logged(&listener);
            for i in 0..GROUPS {
                let group = Group::new(&format!("g{i}"))
                    .key(
                        r#"health_check = { interval = "5s", timeout = "2s", healthy_threshold = 2, unhealthy_threshold = 2, path = "/health" }"#,
                    )
                    .source(&format!("kind = \"file\"\npath = \"g{i}.toml\""));
                cfg.push_str(&group.to_string());
            }
            cfg
        };
        let files: Vec<(String, String)> = (0..GROUPS)
            .map(|g| {
                let bs: Vec<&Backend> = (0..PER_GROUP).map(|k| &backends[(g + k) % GROUPS]).collect();
                (format!("g{g}.toml"), format!("targets = {}\n", targets_toml(&bs)))
            })
            .collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        let text = config(None);
        let started = Instant::now();
        let berth = Berth::start_with_files(&text, &files).await;
        let ready = started.elapsed();
        let all = (GROUPS * PER_GROUP) as f64;
        berth
            .wait_metric_at_least("berth_targets", &[("state", "healthy")], all, Duration::from_secs(90))
            .await;
        let healthy = started.elapsed();
        let rss = berth.rss_kib();
        let cpu0 = cpu_time(berth.pid());
        let idle = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await; // the measurement window itself
        let cpu = cpu_time(berth.pid()) - cpu0;
        let window = idle.elapsed();
        eprintln!(
            "figure: scale: config {} KiB, {GROUPS} groups, {} targets, {GROUPS} rules: ready \
             {ready:?}, all targets healthy {healthy:?} after start; RSS {} MiB",
            text.len() / 1024,
            GROUPS * PER_GROUP,
            rss / 1024
        );
        eprintln!(
            "figure: scale: idle CPU with health checks every 5 s: {cpu:?} over {window:?} \
             ({:.1} % of one core)",
            100.0 * cpu.as_secs_f64() / window.as_secs_f64()
        );

        let http = Http::new();
        let get = |i: usize| {
            let http = http.clone();
            async move {
                let (url, host) = if i.is_multiple_of(2) {
                    (format!("http://{web}/x"), format!("h{i}.scale.test"))
                } else {
                    (format!("http://{web}/r{i}/x"), "other.test".to_string())
                };
                http.get_with(&url, &[("host", host.as_str())]).await.unwrap()
            }
        };
        // 50 rules spread over the list, host and path rules alike.
        let sample: Vec<usize> = (0..50).map(|k| (k * 20 + k % 2 + 3) % GROUPS).collect();
        let check_routing = || async {
            for &i in &sample {
                let mut seen = BTreeSet::new();
                for _ in 0..2 * PER_GROUP {
                    let r = get(i).await;
                    assert_eq!(r.status, 200, "rule {i}: {}", r.body);
                    seen.insert(r.backend().to_string());
                }
                assert_eq!(seen, members(i), "rule {i} must route to group g{i}");
            }
        };
        check_routing().await;
        let r = http
            .get_with(&format!("http://{web}/nothing"), &[("host", "none.test")])
            .await
            .unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (404, "no rule"));

        // Reload: rule 0 becomes a fixed response. Time from SIGHUP until it answers so.
        berth.write_config(&config(Some(0)));
        let sent = Instant::now();
        berth.reload();
        let deadline = sent + Duration::from_secs(20);
        loop {
            if get(0).await.body == "changed" {
                break;
            }
            assert!(Instant::now() < deadline, "the reloaded rule did not apply within 20 s");
            tokio::time::sleep(Duration::from_millis(2)).await; // pacing
        }
        let took = sent.elapsed();
        let internal: Vec<f64> = log::events(&berth, "configuration reloaded")
            .iter()
            .filter_map(|f| f["elapsed_ms"].as_f64())
            .collect();
        eprintln!(
            "figure: scale: reload (SIGHUP to the changed rule answering) {took:?} (goal 100 ms); \
             berth's own reload durations in ms: {internal:?}"
        );
        check_routing().await;
        assert_eq!(
            berth.metric("berth_config_reloads_total", &[("result", "failure")]).await.unwrap_or(0.0),
            0.0
        );
        let healthy_after = berth.metric("berth_targets", &[("state", "healthy")]).await;
        assert_eq!(healthy_after, Some(all), "targets keep their health across the reload");
    })
    .await
}
