//! How each algorithm spreads requests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, Backend, Berth, Http, Load};

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// Starts berth with one listener forwarding to group "g" of `backends` with `extra` group lines.
async fn start(backends: &[&Backend], extra: &str) -> (Berth, String) {
    let web = listen_addr();
    let cfg = format!(
        r#"
[[listeners]]
name = "web"
bind = "{web}"
[listeners.default_action]
forward = [{{ target_group = "g" }}]

{}"#,
        static_group("g", backends, extra)
    );
    let berth = Berth::start(&cfg).await;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    berth.wait_healthy("g", &addrs, HEALTHY).await;
    (berth, format!("http://{web}"))
}

fn weighted(backends: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Like [`start`] with per-target weights.
async fn start_weighted(backends: &[(&Backend, u32)], algorithm: &str) -> (Berth, String) {
    let web = listen_addr();
    let cfg = format!(
        r#"
[[listeners]]
name = "web"
bind = "{web}"
[listeners.default_action]
forward = [{{ target_group = "g" }}]

[[target_groups]]
name = "g"
algorithm = "{algorithm}"
[target_groups.health_check]
{hc}
[target_groups.source]
kind = "static"
targets = {targets}
"#,
        hc = berth_tests::FAST_HEALTH_CHECK,
        targets = weighted(backends)
    );
    let berth = Berth::start(&cfg).await;
    let addrs: Vec<_> = backends.iter().map(|(b, _)| b.addr()).collect();
    berth.wait_healthy("g", &addrs, HEALTHY).await;
    (berth, format!("http://{web}"))
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_weights() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let (_berth, base) = start_weighted(&[(&a, 1), (&b, 3)], "round_robin").await;
        let counts = send(&base, 400).await;
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
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let (_berth, base) = start_weighted(&[(&a, 1), (&b, 3)], "weighted_random").await;
        let counts = send(&base, 400).await;
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
        let http = Http::new();
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for round in 0..4 {
            for u in 0..60 {
                let user = format!("user-{u}");
                let r = http
                    .get_with(&format!("{base}/"), &[("x-user", &user)])
                    .await
                    .expect("request");
                assert_eq!(r.status, 200);
                let owner = owners
                    .entry(user.clone())
                    .or_insert_with(|| r.backend().to_string());
                assert_eq!(owner, r.backend(), "round {round}: {user} moved");
            }
        }
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
        let http = Http::new();
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..3 {
            for u in 0..30 {
                let cookie = format!("other=1; session=s{u}");
                let r = http
                    .get_with(&format!("{base}/"), &[("cookie", &cookie)])
                    .await
                    .expect("request");
                let owner = owners
                    .entry(cookie.clone())
                    .or_insert_with(|| r.backend().to_string());
                assert_eq!(owner, r.backend(), "{cookie} moved");
            }
        }
        let used: BTreeSet<&String> = owners.values().collect();
        assert_eq!(used.len(), 2, "30 keys over 2 targets: {owners:?}");
    })
    .await
}
