//! Zone-aware routing end to end: nine loopback targets, three in each of zones a, b and c,
//! behind a berth in zone a (from the configuration, or from a fake ECS task metadata
//! endpoint). Requests stay in zone a while it is healthy, spill to b and c in proportion to
//! their spare capacity when a loses targets, and the metric counts match the targets' counts.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::config::{Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::zones::{delta, MetadataServer, ZonedTargets};
use berth_tests::{bounded, wait_for, Berth, Http};

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);
const ROUTED: &str = "berth_zone_routed_requests_total";
const MODE: &str = "berth_zone_aware_mode";

/// The config of a listener `web` on `web` forwarding to group `g` of `targets`, with the
/// group's `zone_aware` line (empty: off) and `proxy` table lines.
fn config(
    web: std::net::SocketAddr,
    targets: &ZonedTargets,
    zone_aware: &str,
    proxy: &str,
) -> String {
    let group = Group::new("g")
        .deregistration_delay("1s")
        .key(zone_aware)
        .fast_health_check()
        .targets(&targets.toml());
    format!("[proxy]\n{proxy}\n\n{}{group}", Listener::web(web, "g"))
}

/// Starts berth on `cfg` with `env`, and waits for all of `targets` to be healthy.
async fn start(cfg: &str, targets: &ZonedTargets, env: &[(String, String)]) -> Berth {
    let berth = Berth::start_with_env(cfg, &[], env).await;
    berth.wait_healthy("g", &targets.addrs(), HEALTHY).await;
    berth
}

/// Sends `n` requests one after another; returns the requests the targets saw, by zone.
async fn send(base: &str, targets: &ZonedTargets, n: usize) -> BTreeMap<String, u64> {
    let before = targets.requests_by_zone();
    let http = Http::new();
    for _ in 0..n {
        let r = http.get(&format!("{base}/")).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    delta(&before, &targets.requests_by_zone())
}

/// `berth_zone_routed_requests_total` of group g by locality (0 when absent).
async fn routed(berth: &Berth) -> [u64; 3] {
    let text = berth.metrics().await;
    ["same_zone", "cross_zone", "unknown"].map(|l| {
        berth_tests::metrics::value(&text, ROUTED, &[("target_group", "g"), ("locality", l)])
            .unwrap_or(0.0) as u64
    })
}

/// Waits until group g's zone-aware mode gauge says `mode`.
async fn wait_mode(berth: &Berth, mode: &str) {
    wait_for(HEALTHY, &format!("zone-aware mode {mode}"), || async {
        (berth
            .metric(MODE, &[("target_group", "g"), ("mode", mode)])
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
}

/// Percent of `n` in `total`.
fn pct(n: u64, total: u64) -> f64 {
    n as f64 * 100.0 / total.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_local_spills_by_capacity_and_counts_match() {
    bounded(LIMIT, async {
        let targets = ZonedTargets::start(&["a", "b", "c"], 3).await;
        let web = listen_addr();
        let cfg = config(web, &targets, "zone_aware = { enabled = true }", "availability_zone = \"a\"");
        let berth = start(&cfg, &targets, &[]).await;
        let base = format!("http://{web}");
        wait_mode(&berth, "local").await;

        // (a) every zone healthy: every request stays in zone a, spread over its 3 targets.
        let m0 = routed(&berth).await;
        let got = send(&base, &targets, 300).await;
        println!("all healthy: {got:?}");
        assert_eq!(got["a"], 300, "{got:?}");
        assert_eq!(got["b"] + got["c"], 0, "{got:?}");
        for b in targets.in_zone("a") {
            assert_eq!(b.requests(), 100, "round robin within zone a");
        }
        // (d) the metric counts what the targets saw.
        let m1 = routed(&berth).await;
        assert_eq!([m1[0] - m0[0], m1[1] - m0[1], m1[2] - m0[2]], [300, 0, 0]);

        // (b) zone a loses 2 of its 3 targets: 1/7 of the capacity against 1/3 of the
        // (assumed even) fleet, so 3/7 (42.9 %) stay local and b and c get 2/7 (28.6 %) each.
        let a = targets.in_zone("a");
        for b in &a[..2] {
            b.set_healthy(false);
        }
        for b in &a[..2] {
            berth.wait_target("g", b.addr(), Some("unhealthy"), HEALTHY).await;
        }
        wait_mode(&berth, "spill").await;
        let ratio = berth
            .metric("berth_zone_aware_local_ratio", &[("target_group", "g")])
            .await
            .expect("local ratio gauge");
        assert!((ratio - 3.0 / 7.0).abs() < 0.001, "local ratio {ratio}");
        let n = 1400;
        let got = send(&base, &targets, n).await;
        let (pa, pb, pc) = (pct(got["a"], n as u64), pct(got["b"], n as u64), pct(got["c"], n as u64));
        println!("zone a lost 2 of 3: same_zone {pa:.1} %, b {pb:.1} %, c {pc:.1} % (expected 42.9 / 28.6 / 28.6)");
        assert!((37.0..49.0).contains(&pa), "{got:?}");
        assert!((23.0..34.5).contains(&pb), "{got:?}");
        assert!((23.0..34.5).contains(&pc), "{got:?}");
        assert_eq!(a[0].requests() + a[1].requests(), 200, "unhealthy targets get nothing");
        let m2 = routed(&berth).await;
        assert_eq!(m2[0] - m1[0], got["a"], "same_zone metric = zone a's count");
        assert_eq!(m2[1] - m1[1], got["b"] + got["c"], "cross_zone metric = b + c");
        assert_eq!(m2[2], 0);

        // (c) zone a loses every target: b and c share evenly, neither starves.
        a[2].set_healthy(false);
        berth.wait_target("g", a[2].addr(), Some("unhealthy"), HEALTHY).await;
        wait_for(HEALTHY, "local ratio 0", || async {
            (berth
                .metric("berth_zone_aware_local_ratio", &[("target_group", "g")])
                .await
                == Some(0.0))
            .then_some(())
        })
        .await;
        let n = 600;
        let got = send(&base, &targets, n).await;
        let (pb, pc) = (pct(got["b"], n as u64), pct(got["c"], n as u64));
        println!("zone a lost all: same_zone 0 %, b {pb:.1} %, c {pc:.1} % (expected 50 / 50)");
        assert_eq!(got["a"], 0, "{got:?}");
        assert!((42.0..58.0).contains(&pb) && (42.0..58.0).contains(&pc), "{got:?}");
        for b in targets.in_zone("b").into_iter().chain(targets.in_zone("c")) {
            assert!(b.requests() > 0, "no target of b or c starves");
        }
        let m3 = routed(&berth).await;
        assert_eq!((m3[0] - m2[0], m3[1] - m2[1]), (0, n as u64));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_zone_from_the_ecs_task_metadata_endpoint() {
    bounded(LIMIT, async {
        let targets = ZonedTargets::start(&["a", "b", "c"], 3).await;
        let metadata = MetadataServer::start("b").await;
        let web = listen_addr();
        let cfg = config(web, &targets, "zone_aware = { enabled = true }", "");
        let env = [("ECS_CONTAINER_METADATA_URI_V4".to_string(), metadata.uri())];
        let berth = start(&cfg, &targets, &env).await;
        assert_eq!(metadata.asked(), 1, "asked once at start");
        let info = berth
            .metric(
                "berth_availability_zone_info",
                &[("availability_zone", "b"), ("source", "ecs_metadata")],
            )
            .await;
        assert_eq!(info, Some(1.0));
        let view = berth.targets().await;
        assert_eq!(view["availability_zone"], "b");
        let zones: Vec<&str> = view["target_groups"][0]["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter_map(|t| t["zone"].as_str())
            .collect();
        assert_eq!(zones.len(), 9, "{view}");
        wait_mode(&berth, "local").await;
        let got = send(&format!("http://{web}"), &targets, 150).await;
        println!("own zone b from metadata: {got:?}");
        assert_eq!(got["b"], 150, "{got:?}");
        assert_eq!(routed(&berth).await, [150, 0, 0]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_aware_off_or_zone_unknown_balances_over_every_zone() {
    bounded(LIMIT, async {
        let targets = ZonedTargets::start(&["a", "b", "c"], 3).await;

        // (e) zone_aware off, zone known: plain round robin; the metric still tells
        // same-zone from cross-zone.
        let web = listen_addr();
        let cfg = config(web, &targets, "", "availability_zone = \"a\"");
        let berth = start(&cfg, &targets, &[]).await;
        wait_mode(&berth, "disabled").await;
        let got = send(&format!("http://{web}"), &targets, 900).await;
        println!("zone-aware off: {got:?}");
        assert_eq!(got.values().copied().collect::<Vec<_>>(), [300, 300, 300]);
        assert_eq!(routed(&berth).await, [300, 600, 0]);
        drop(berth);

        // Zone-aware on, but berth does not know its zone: plain balancing, locality unknown.
        let before = targets.requests_by_zone();
        let web = listen_addr();
        let cfg = config(web, &targets, "zone_aware = { enabled = true }", "");
        let berth = start(&cfg, &targets, &[]).await;
        wait_mode(&berth, "own_zone_unknown").await;
        assert_eq!(
            berth
                .metric(
                    "berth_availability_zone_info",
                    &[("availability_zone", "unknown"), ("source", "none")]
                )
                .await,
            Some(1.0)
        );
        let got = send(&format!("http://{web}"), &targets, 900).await;
        println!(
            "own zone unknown: {:?}",
            delta(&before, &targets.requests_by_zone())
        );
        assert_eq!(got.values().copied().collect::<Vec<_>>(), [300, 300, 300]);
        assert_eq!(routed(&berth).await, [0, 0, 900]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_zone_aware_on() {
    bounded(LIMIT, async {
        let targets = ZonedTargets::start(&["a", "b", "c"], 3).await;
        let web = listen_addr();
        let zone = "availability_zone = \"a\"";
        let berth = start(&config(web, &targets, "", zone), &targets, &[]).await;
        wait_mode(&berth, "disabled").await;
        berth.write_config(&config(
            web,
            &targets,
            "zone_aware = { enabled = true }",
            zone,
        ));
        berth.reload();
        wait_mode(&berth, "local").await;
        let got = send(&format!("http://{web}"), &targets, 90).await;
        println!("after the reload: {got:?}");
        assert_eq!(got["a"], 90, "{got:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_tasks_carry_their_zone() {
    use berth_tests::moto::{Moto, NetworkMode, TaskDefinition, TaskSpec};
    use berth_tests::Backend;
    bounded(LIMIT, async {
        const PORT: u16 = 18081;
        let moto = Moto::launch().await.expect("moto");
        moto.create_cluster("prod").await.unwrap();
        let td = TaskDefinition::single("api", NetworkMode::Awsvpc, PORT);
        moto.register_task_definition(&td).await.unwrap();
        moto.create_service("prod", "api", "api", 6).await.unwrap();
        let mut tasks = Vec::new();
        for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let mut ips = Vec::new();
            for n in 0..3 {
                let ip = berth_tests::net::target_ip();
                let b = Backend::start_on(&format!("{zone}-{n}"), (ip, PORT).into()).await;
                ips.push(ip);
                tasks.push((b, i));
            }
            moto.create_tasks(
                &TaskSpec::awsvpc("prod", "api", &ips)
                    .service("api")
                    .availability_zone(zone),
            )
            .await
            .unwrap();
        }
        let web = listen_addr();
        let tail = "poll_interval = \"500ms\"\n[target_groups.zone_aware]\nenabled = true";
        let cfg = format!(
            "[proxy]\navailability_zone = \"us-east-1a\"\n\n{}",
            berth_tests::ecs_proxy_config(web, "api", "prod", "service = \"api\"", "1s", tail)
        );
        let berth = Berth::start_with_env(&cfg, &[], &moto.aws_env()).await;
        let addrs: Vec<_> = tasks.iter().map(|(b, _)| b.addr()).collect();
        berth.wait_healthy("api", &addrs, HEALTHY).await;
        let view = berth.targets().await;
        for t in view["target_groups"][0]["targets"]
            .as_array()
            .expect("targets")
        {
            assert!(
                t["zone"]
                    .as_str()
                    .is_some_and(|z| z.starts_with("us-east-1")),
                "{view}"
            );
        }
        wait_for(HEALTHY, "zone-aware local", || async {
            (berth
                .metric(MODE, &[("target_group", "api"), ("mode", "local")])
                .await
                == Some(1.0))
            .then_some(())
        })
        .await;
        let http = Http::new();
        for _ in 0..60 {
            let r = http.get(&format!("http://{web}/")).await.expect("request");
            assert_eq!(r.status, 200);
        }
        let per_zone = tasks.iter().fold([0u64; 2], |mut acc, (b, z)| {
            acc[*z] += b.requests();
            acc
        });
        println!("ECS tasks by zone (berth in us-east-1a): {per_zone:?}");
        assert_eq!(per_zone, [60, 0]);
    })
    .await
}
