//! Stickiness that cannot be forged: signed target cookies (held, refreshed on every response,
//! forged / tampered / another group's / expired ones ignored and counted), `Secure;
//! SameSite=None` on https, `app_cookie` mode, group stickiness of a weighted forward
//! (blue/green), a key shared by replicas, and `--check` on a bad key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_tests::berth::check;
use berth_tests::certs::get_once;
use berth_tests::config::{forward, Listener};
use berth_tests::net::listen_addr;
use berth_tests::sticky::{
    attribute, forge, pair, set_cookie_starting, set_cookies, tamper, value,
};
use berth_tests::tls::TestCa;
use berth_tests::{bounded, static_group, web_to_static_group, Backend, Berth, Http};

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);
const REJECTED: &str = "berth_sticky_cookie_rejected_total";
const GROUP_REJECTED: &str = "berth_group_sticky_cookie_rejected_total";
/// 32 bytes of 0x2a, base64.
const KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut out = Vec::new();
    for n in names {
        out.push(Backend::spawn(n).await);
    }
    out
}

fn refs(b: &[Backend]) -> Vec<&Backend> {
    b.iter().collect()
}

/// Sends `n` requests to `url` with `cookie` and returns how many each backend answered.
async fn spread(http: &Http, url: &str, cookie: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = http.get_with(url, &[("cookie", cookie)]).await.unwrap();
        assert_eq!(r.status, 200);
        *seen.entry(r.backend().to_owned()).or_default() += 1;
    }
    seen
}

async fn rejected(berth: &Berth, group: &str, reason: &str) -> f64 {
    let labels = [("target_group", group), ("reason", reason)];
    berth.metric(REJECTED, &labels).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_cookie_holds_and_forged_tampered_or_foreign_ones_are_ignored() {
    bounded(LIMIT, async {
        let g = backends(&["g1", "g2", "g3"]).await;
        let h = backends(&["h1", "h2"]).await;
        let web = listen_addr();
        let sticky = "stickiness = { enabled = true, duration = \"1h\" }";
        let cfg = Listener::web(web, "g")
            .rule(10, r#"{ path_prefix = ["/h"] }"#, &forward("h"))
            .to_string()
            + &static_group("g", &refs(&g), sticky)
            + &static_group("h", &refs(&h), sticky);
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy(
                "g",
                &g.iter().map(Backend::addr).collect::<Vec<_>>(),
                HEALTHY,
            )
            .await;
        berth
            .wait_healthy(
                "h",
                &h.iter().map(Backend::addr).collect::<Vec<_>>(),
                HEALTHY,
            )
            .await;
        let http = Http::new();
        let url = format!("http://{web}/");

        // One genuine cookie per target of g.
        let mut genuine: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..200 {
            let r = http.get(&url).await.unwrap();
            genuine
                .entry(r.backend().to_owned())
                .or_insert_with(|| pair(&set_cookie_starting(&r, "BERTHSTICKY")));
            if genuine.len() == 3 {
                break;
            }
        }
        assert_eq!(
            genuine.len(),
            3,
            "round robin reaches every target: {genuine:?}"
        );
        let (owner, cookie) = genuine
            .iter()
            .next()
            .map(|(o, c)| (o.clone(), c.clone()))
            .unwrap();

        // Held over 50 requests; every response refreshes the cookie (Max-Age, Expires, Secure
        // only on https), and a later response carries a later expiry.
        let mut first_expires = None;
        for i in 0..50 {
            if i == 49 {
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            let r = http.get_with(&url, &[("cookie", &cookie)]).await.unwrap();
            assert_eq!(
                r.backend(),
                owner,
                "request {i} with {cookie} went elsewhere"
            );
            let sc = set_cookie_starting(&r, "BERTHSTICKY");
            assert_eq!(attribute(&sc, "Max-Age"), Some("3600"), "{sc}");
            assert!(
                sc.contains("; Path=/; HttpOnly") && !sc.contains("Secure"),
                "{sc}"
            );
            let expires = attribute(&sc, "Expires").map(str::to_owned).unwrap();
            match &first_expires {
                None => first_expires = Some(expires),
                Some(f) if i == 49 => assert_ne!(f, &expires, "the expiry moves on: {sc}"),
                Some(_) => {}
            }
        }
        assert_eq!(rejected(&berth, "g", "invalid").await, 0.0);

        // Forged: another target's id under this cookie's tag. Tampered: one bit of the tag.
        let other = genuine.values().nth(1).unwrap();
        let forged = format!("BERTHSTICKY={}", forge(value(&cookie), value(other)));
        let tampered = format!("BERTHSTICKY={}", tamper(value(&cookie)));
        // Another group's genuine cookie.
        let r = http.get(&format!("http://{web}/h")).await.unwrap();
        let foreign = pair(&set_cookie_starting(&r, "BERTHSTICKY"));
        for (what, bad) in [
            ("forged", &forged),
            ("tampered", &tampered),
            ("group h's", &foreign),
        ] {
            let seen = spread(&http, &url, bad, 30).await;
            assert!(
                seen.len() >= 2,
                "a {what} cookie is balanced normally: {seen:?}"
            );
            assert!(seen.keys().all(|b| b.starts_with('g')), "{seen:?}");
            // A fresh, genuine cookie replaces it.
            let r = http.get_with(&url, &[("cookie", bad)]).await.unwrap();
            let fresh = pair(&set_cookie_starting(&r, "BERTHSTICKY"));
            assert_ne!(&fresh, bad);
            let again = spread(&http, &url, &fresh, 5).await;
            assert_eq!(again.len(), 1, "the fresh cookie holds: {again:?}");
        }
        assert_eq!(
            rejected(&berth, "g", "invalid").await,
            93.0,
            "3 × (30 + 1) rejections"
        );
        assert_eq!(rejected(&berth, "g", "expired").await, 0.0);

        // A genuine cookie whose target turned unhealthy: balanced elsewhere, unknown_target.
        let sick = g.iter().find(|b| b.name() == owner).unwrap();
        sick.set_healthy(false);
        berth
            .wait_target("g", sick.addr(), Some("unhealthy"), HEALTHY)
            .await;
        let seen = spread(&http, &url, &cookie, 10).await;
        assert!(!seen.contains_key(&owner), "{seen:?}");
        assert_eq!(rejected(&berth, "g", "unknown_target").await, 10.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cookie_is_rebalanced_and_counted() {
    bounded(LIMIT, async {
        let bs = backends(&["e1", "e2", "e3"]).await;
        let web = listen_addr();
        let cfg = web_to_static_group(web, &refs(&bs), "stickiness = { duration = \"2s\" }");
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy(
                "g",
                &bs.iter().map(Backend::addr).collect::<Vec<_>>(),
                HEALTHY,
            )
            .await;
        let http = Http::new();
        let url = format!("http://{web}/");
        let r = http.get(&url).await.unwrap();
        let cookie = pair(&set_cookie_starting(&r, "BERTHSTICKY"));
        assert_eq!(
            spread(&http, &url, &cookie, 10).await.len(),
            1,
            "held while valid"
        );
        // The signed expiry passes (the cookie's Max-Age is 2 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let seen = spread(&http, &url, &cookie, 30).await;
        assert!(
            seen.len() >= 2,
            "an expired cookie is balanced normally: {seen:?}"
        );
        assert_eq!(rejected(&berth, "g", "expired").await, 30.0);
        assert_eq!(rejected(&berth, "g", "invalid").await, 0.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_cookies_are_secure_and_samesite_none() {
    bounded(LIMIT, async {
        let bs = backends(&["s1", "s2"]).await;
        let ca = TestCa::new();
        let cert = ca.issue(&["web.test"]);
        let web = listen_addr();
        let listener = Listener::new("tls", web)
            .key("protocol = \"https\"")
            .tables("\n[[listeners.certificates]]\ncert = \"web.crt\"\nkey = \"web.key\"\n")
            .forward_to("g");
        let cfg = listener.to_string() + &static_group("g", &refs(&bs), "stickiness = {}");
        let files = [
            ("web.crt", cert.cert_pem.as_str()),
            ("web.key", cert.key_pem.as_str()),
        ];
        let berth = Berth::start_with_files(&cfg, &files).await;
        berth
            .wait_healthy(
                "g",
                &bs.iter().map(Backend::addr).collect::<Vec<_>>(),
                HEALTHY,
            )
            .await;
        let tls = ca.client_config(&[b"http/1.1"]);
        let (_, r) = get_once(tls.clone(), web, "/", &[]).await.unwrap();
        let sc = set_cookie_starting(&r, "BERTHSTICKY");
        assert!(
            sc.ends_with("; Path=/; HttpOnly; Secure; SameSite=None"),
            "{sc}"
        );
        assert_eq!(attribute(&sc, "Max-Age"), Some("86400"), "{sc}");
        let cookie = pair(&sc);
        for _ in 0..10 {
            let (_, again) = get_once(tls.clone(), web, "/", &[("cookie", &cookie)])
                .await
                .unwrap();
            assert_eq!(again.backend(), r.backend());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_cookie_stickiness_starts_when_the_application_sets_its_cookie() {
    bounded(LIMIT, async {
        let bs = backends(&["a1", "a2", "a3"]).await;
        let web = listen_addr();
        let sticky =
            "stickiness = { type = \"app_cookie\", cookie_name = \"SESSION\", duration = \"1h\" }";
        let berth = Berth::start(&web_to_static_group(web, &refs(&bs), sticky)).await;
        berth
            .wait_healthy(
                "g",
                &bs.iter().map(Backend::addr).collect::<Vec<_>>(),
                HEALTHY,
            )
            .await;
        let http = Http::new();
        let url = format!("http://{web}/");
        let mut seen = BTreeSet::new();
        for _ in 0..15 {
            let r = http.get(&url).await.unwrap();
            assert!(
                set_cookies(&r).is_empty(),
                "no cookie before the application's: {:?}",
                r.headers
            );
            seen.insert(r.backend().to_owned());
        }
        assert!(seen.len() >= 2, "balanced normally: {seen:?}");
        // The application logs the client in: its cookie passes through untouched, and
        // berth's own comes with it.
        let r = http
            .get(&format!("http://{web}/set-cookie/SESSION"))
            .await
            .unwrap();
        let cookies = set_cookies(&r);
        let owner = r.backend().to_owned();
        assert_eq!(cookies["SESSION"], format!("SESSION={owner}; Path=/"));
        let berth_cookie = pair(&cookies["BERTHAPP"]);
        assert_eq!(attribute(&cookies["BERTHAPP"], "Max-Age"), Some("3600"));
        let both = format!("SESSION={owner}; {berth_cookie}");
        let held = spread(&http, &url, &both, 20).await;
        assert_eq!(
            held.keys().collect::<Vec<_>>(),
            [&owner],
            "sticky on BERTHAPP: {held:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_group_stickiness_keeps_each_client_on_its_colour() {
    bounded(LIMIT, async {
        let blue = backends(&["blue1", "blue2"]).await;
        let green = backends(&["green1"]).await;
        let web = listen_addr();
        let cfg = Listener::new("web", web)
            .rule(
                5,
                r#"{ path_prefix = ["/other"] }"#,
                r#"{ forward = [{ target_group = "blue" }, { target_group = "green" }], stickiness = {} }"#,
            )
            .default_action(
                "forward = [{ target_group = \"blue\", weight = 90 }, { target_group = \"green\", weight = 10 }]\nstickiness = { enabled = true, duration = \"1h\" }",
            )
            .to_string()
            + &static_group("blue", &refs(&blue), "stickiness = {}")
            + &static_group("green", &refs(&green), "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("blue", &blue.iter().map(Backend::addr).collect::<Vec<_>>(), HEALTHY).await;
        berth.wait_healthy("green", &[green[0].addr()], HEALTHY).await;
        let http = Http::new();
        let url = format!("http://{web}/");
        let mut on_blue = 0;
        let mut tg_cookie = String::new();
        for client in 0..200 {
            let r = http.get(&url).await.unwrap();
            let first = r.backend().to_owned();
            let colour = if r.backend().starts_with("blue") { "blue" } else { "green" };
            on_blue += usize::from(colour == "blue");
            let sc = set_cookie_starting(&r, "BERTHTG");
            assert_eq!(attribute(&sc, "Max-Age"), Some("3600"), "{sc}");
            tg_cookie = pair(&sc);
            let mut cookies = vec![tg_cookie.clone()];
            if colour == "blue" {
                cookies.push(pair(&set_cookie_starting(&r, "BERTHSTICKY")));
            }
            let jar = cookies.join("; ");
            for i in 0..10 {
                let r = http.get_with(&url, &[("cookie", &jar)]).await.unwrap();
                assert!(r.backend().starts_with(colour), "client {client} request {i} left {colour} for {}", r.backend());
                if colour == "blue" {
                    // Target stickiness inside the chosen group holds too.
                    assert_eq!(r.backend(), first, "client {client} request {i}");
                }
            }
        }
        eprintln!("blue/green 90/10 with group stickiness: {on_blue} of 200 fresh clients on blue");
        assert!((150..=195).contains(&on_blue), "200 fresh clients at 90/10: {on_blue} on blue");
        assert_eq!(berth.metric(GROUP_REJECTED, &[]).await.unwrap_or(0.0), 0.0);

        // This action's cookie, renamed to the other rule's cookie, is refused there.
        let r = http.get(&format!("http://{web}/other")).await.unwrap();
        let other_name = pair(&set_cookie_starting(&r, "BERTHTG"));
        let other_name = other_name.split('=').next().unwrap();
        let replayed = format!("{other_name}={}", value(&tg_cookie));
        http.get_with(&format!("http://{web}/other"), &[("cookie", &replayed)]).await.unwrap();
        let labels = [("listener", "web"), ("reason", "invalid")];
        assert_eq!(berth.metric(GROUP_REJECTED, &labels).await, Some(1.0));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_the_key_honour_each_others_cookies() {
    bounded(LIMIT, async {
        let bs = backends(&["r1", "r2", "r3"]).await;
        let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
        let (web1, web2, web3) = (listen_addr(), listen_addr(), listen_addr());
        let keyed = |web| {
            format!("[proxy]\nstickiness_key = \"{KEY}\"\n")
                + &web_to_static_group(web, &refs(&bs), "stickiness = {}")
        };
        let one = Berth::start(&keyed(web1)).await;
        let two = Berth::start(&keyed(web2)).await;
        let unkeyed = Berth::start(&web_to_static_group(web3, &refs(&bs), "stickiness = {}")).await;
        for b in [&one, &two, &unkeyed] {
            b.wait_healthy("g", &addrs, HEALTHY).await;
        }
        let http = Http::new();
        let r = http.get(&format!("http://{web1}/")).await.unwrap();
        let cookie = pair(&set_cookie_starting(&r, "BERTHSTICKY"));
        let held = spread(&http, &format!("http://{web2}/"), &cookie, 20).await;
        assert_eq!(
            held.keys().collect::<Vec<_>>(),
            [r.backend()],
            "replica two honours it: {held:?}"
        );
        assert_eq!(rejected(&two, "g", "invalid").await, 0.0);
        // A process with its own random key does not.
        let seen = spread(&http, &format!("http://{web3}/"), &cookie, 20).await;
        assert!(seen.len() >= 2, "{seen:?}");
        assert_eq!(rejected(&unkeyed, "g", "invalid").await, 20.0);
        assert!(
            unkeyed.log().contains("stickiness_key is not set"),
            "the unkeyed process warns"
        );
    })
    .await
}

#[test]
fn check_names_a_signing_key_of_the_wrong_length() {
    let web = listen_addr();
    let cfg = format!(
        "[proxy]\nstickiness_key = \"c2hvcnQ=\"\n{}",
        Listener::web(web, "g").to_string()
            + "\n[[target_groups]]\nname = \"g\"\nsource = { kind = \"static\", targets = [] }\n"
    );
    let out = check(&cfg, &[]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("proxy.stickiness_key")
            && out.stderr.contains("(line 2)")
            && out.stderr.contains("must be exactly 32 bytes"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_still_accepts_cookies_of_the_previous_one() {
    bounded(LIMIT, async {
        let bs = backends(&["k1", "k2", "k3"]).await;
        let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
        let web = listen_addr();
        let with_key = |key: &str| {
            format!("[proxy]\nstickiness_key = \"{key}\"\n")
                + &web_to_static_group(web, &refs(&bs), "stickiness = {}")
        };
        let berth = Berth::start(&with_key(KEY)).await;
        berth.wait_healthy("g", &addrs, HEALTHY).await;
        let http = Http::new();
        let url = format!("http://{web}/");
        let r = http.get(&url).await.unwrap();
        let old = pair(&set_cookie_starting(&r, "BERTHSTICKY"));
        // 32 bytes of 0x2b.
        berth.write_config(&with_key("KysrKysrKysrKysrKysrKysrKysrKysrKysrKysrKys="));
        berth.reload();
        let labels = [("result", "success")];
        berth
            .wait_metric_at_least("berth_config_reloads_total", &labels, 1.0, HEALTHY)
            .await;
        assert!(
            berth.log().contains("stickiness key changed"),
            "the reload rotated the key"
        );
        let r2 = http.get_with(&url, &[("cookie", &old)]).await.unwrap();
        assert_eq!(r2.backend(), r.backend(), "the previous key's cookie holds");
        let new = pair(&set_cookie_starting(&r2, "BERTHSTICKY"));
        assert_ne!(new, old, "re-signed with the new key");
        let held = spread(&http, &url, &new, 10).await;
        assert_eq!(held.keys().collect::<Vec<_>>(), [r.backend()], "{held:?}");
        assert_eq!(rejected(&berth, "g", "invalid").await, 0.0);
    })
    .await
}
