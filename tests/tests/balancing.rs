//! How each algorithm spreads requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::config::{weighted_targets_toml, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, web_to_static_group, Backend, Berth, Http, Load};

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// Starts berth on `cfg` (a listener `web` on `web` in front of group `g`) and waits for the
/// group's targets `addrs` to be healthy; returns berth and the listener's base URL.
async fn start_config(web: SocketAddr, cfg: &str, addrs: &[SocketAddr]) -> (Berth, String) {
    let berth = Berth::start(cfg).await;
    berth.wait_healthy("g", addrs, HEALTHY).await;
    (berth, format!("http://{web}"))
}

/// Starts berth with one listener forwarding to group "g" of `backends` with `extra` group lines.
async fn start(backends: &[&Backend], extra: &str) -> (Berth, String) {
    let web = listen_addr();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    start_config(web, &web_to_static_group(web, backends, extra), &addrs).await
}

/// Like [`start`] with per-target weights and `algorithm`, and berth's default deregistration
/// delay.
async fn start_weighted(backends: &[(&Backend, u32)], algorithm: &str) -> (Berth, String) {
    let web = listen_addr();
    let group = Group::new("g")
        .key(&format!("algorithm = \"{algorithm}\""))
        .fast_health_check()
        .targets(&weighted_targets_toml(backends));
    let cfg = format!("{}{group}", Listener::web(web, "g"));
    let addrs: Vec<_> = backends.iter().map(|(b, _)| b.addr()).collect();
    start_config(web, &cfg, &addrs).await
}

/// Sends `n` requests to `base` one after another; counts the answers by backend.
async fn send(base: &str, n: usize) -> BTreeMap<String, u64> {
    let http = Http::new();
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = http.get(&format!("{base}/")).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        *out.entry(r.backend().to_string()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even() {
    bounded(LIMIT, async {
        let (a, b, c) = (
            Backend::spawn("a").await,
            Backend::spawn("b").await,
            Backend::spawn("c").await,
        );
        let (_berth, base) = start(&[&a, &b, &c], "algorithm = \"round_robin\"").await;
        let counts = send(&base, 300).await;
        for name in ["a", "b", "c"] {
            let n = counts.get(name).copied().unwrap_or(0);
            assert!(
                (90..=110).contains(&n),
                "round robin over 3: {name} got {n} of 300: {counts:?}"
            );
        }
    })
    .await
}

/// Sends 400 requests through group `g` of targets a (weight 1) and b (weight 3) balanced by
/// `algorithm`; counts the answers by backend.
async fn send_to_weights_1_3(algorithm: &str) -> BTreeMap<String, u64> {
    let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let (_berth, base) = start_weighted(&[(&a, 1), (&b, 3)], algorithm).await;
    send(&base, 400).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_weights() {
    bounded(LIMIT, async {
        let counts = send_to_weights_1_3("round_robin").await;
        let nb = counts.get("b").copied().unwrap_or(0);
        assert!(
            (280..=320).contains(&nb),
            "weights 1:3 → ~300 of 400 to b: {counts:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_random_honours_weights() {
    bounded(LIMIT, async {
        let counts = send_to_weights_1_3("weighted_random").await;
        let na = counts.get("a").copied().unwrap_or(0);
        // Binomial(400, 0.25): mean 100, sd ~8.7; ±4.5 sd.
        assert!(
            (60..=140).contains(&na),
            "weights 1:3 → ~100 of 400 to a: {counts:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_prefers_the_idle_target() {
    bounded(LIMIT, async {
        let (slow, fast) = (Backend::spawn("slow").await, Backend::spawn("fast").await);
        let (_berth, base) = start(
            &[&slow, &fast],
            "algorithm = \"least_outstanding_requests\"",
        )
        .await;
        slow.set_delay(Duration::from_millis(500));
        let load = Load::start(&format!("{base}/"), 8);
        load.wait_ok(400, Duration::from_secs(30)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let total = stats.ok as f64;
        let share_fast = *stats.by_backend.get("fast").unwrap_or(&0) as f64 / total;
        assert!(
            share_fast >= 0.9,
            "least outstanding: the fast target should take most requests while the slow one \
             has requests in flight; fast share {:.1}% ({:?})",
            share_fast * 100.0,
            stats.by_backend
        );
        // The slow one is not starved entirely either: it gets a request when it is idle.
        assert!(slow.requests() >= 1, "slow target got no request at all");
    })
    .await
}

/// Sends `rounds` rounds of one request per value of `keys` in `header`, asserting that each
/// value is answered by one backend every time; returns that backend for each value.
async fn owners(
    base: &str,
    rounds: usize,
    header: &str,
    keys: &[String],
) -> BTreeMap<String, String> {
    let http = Http::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..rounds {
        for key in keys {
            let r = http
                .get_with(&format!("{base}/"), &[(header, key)])
                .await
                .expect("request");
            assert_eq!(r.status, 200);
            let owner = owners
                .entry(key.clone())
                .or_insert_with(|| r.backend().to_string());
            assert_eq!(owner, r.backend(), "round {round}: {key} moved");
        }
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_header() {
    bounded(LIMIT, async {
        let (a, b, c) = (
            Backend::spawn("a").await,
            Backend::spawn("b").await,
            Backend::spawn("c").await,
        );
        let (_berth, base) = start(
            &[&a, &b, &c],
            "algorithm = \"consistent_hash\"\nhash_on = { header = \"x-user\" }",
        )
        .await;
        let users: Vec<String> = (0..60).map(|u| format!("user-{u}")).collect();
        let owners = owners(&base, 4, "x-user", &users).await;
        let used: BTreeSet<&String> = owners.values().collect();
        assert_eq!(
            used.len(),
            3,
            "60 keys over 3 targets should use all three: {owners:?}"
        );
        let mut per: BTreeMap<&String, usize> = BTreeMap::new();
        for o in owners.values() {
            *per.entry(o).or_default() += 1;
        }
        assert!(
            per.values().all(|n| *n >= 5),
            "keys spread very unevenly: {per:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_cookie() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let (_berth, base) = start(
            &[&a, &b],
            "algorithm = \"consistent_hash\"\nhash_on = { cookie = \"session\" }",
        )
        .await;
        let cookies: Vec<String> = (0..30).map(|u| format!("other=1; session=s{u}")).collect();
        let owners = owners(&base, 3, "cookie", &cookies).await;
        let used: BTreeSet<&String> = owners.values().collect();
        assert_eq!(used.len(), 2, "30 keys over 2 targets: {owners:?}");
    })
    .await
}
