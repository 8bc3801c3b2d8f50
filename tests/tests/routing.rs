//! Listener rules, actions, request/response handling and forwarded headers.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::client::{raw_request, raw_status};
use berth_tests::config::{forward, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, web_to_static_group, Backend, Berth, Http};
use http::Method;

/// (description, path, request headers, expected backend)
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_matrix() {
    bounded(LIMIT, async {
        let names = [
            "host", "exact", "prefix", "glob", "header", "method", "query", "cidr", "prio",
            "default",
        ];
        let mut backends = BTreeMap::new();
        for n in names {
            backends.insert(n, Backend::spawn(n).await);
        }
        let web = listen_addr();
        // Written out of priority order on purpose: the proxy must sort by priority.
        let rules: &[(u32, &str, &str)] = &[
            (100, r#"{ path_prefix = ["/prio"] }"#, r#"{ fixed_response = { status = 200, body = "p100" } }"#),
            (6, r#"{ path_prefix = ["/prio"] }"#, &forward("prio")),
            (5, r#"{ path_prefix = ["/prio"] }, { method = ["GET"] }"#, r#"{ fixed_response = { status = 200, content_type = "text/plain", body = "p5" } }"#),
            (10, r#"{ host = ["*.wild.test"] }"#, &forward("host")),
            (15, r#"{ path_prefix = ["/and"] }, { method = ["PUT"] }"#, r#"{ fixed_response = { status = 202, body = "and" } }"#),
            (20, r#"{ path_exact = ["/exact"] }"#, &forward("exact")),
            (30, r#"{ path_prefix = ["/prefix/"] }"#, &forward("prefix")),
            (40, r#"{ path_glob = ["/glob/*/end"] }"#, &forward("glob")),
            (50, r#"{ header = "x-route", values = ["blue*"] }"#, &forward("header")),
            (60, r#"{ method = ["DELETE"] }"#, &forward("method")),
            (70, r#"{ query = "v", values = ["2"] }"#, &forward("query")),
            (80, r#"{ source_cidr = ["127.0.0.99/32"] }"#, &forward("cidr")),
            (90, r#"{ path_prefix = ["/fixed"] }"#, r#"{ fixed_response = { status = 418, content_type = "text/plain", body = "teapot" } }"#),
            (91, r#"{ path_prefix = ["/redir"] }"#, r#"{ redirect = { status = 302, protocol = "https", host = "new.test", port = 8443 } }"#),
            (92, r#"{ path_exact = ["/moved"] }"#, r#"{ redirect = { path = "/new", query = "q=1" } }"#),
        ];
        let listener = rules
            .iter()
            .fold(Listener::web(web, "default"), |l, (priority, conditions, action)| {
                l.rule(*priority, conditions, action)
            });
        let mut cfg = listener.to_string();
        for (n, b) in &backends {
            cfg.push_str(&static_group(n, &[b], ""));
        }
        let berth = Berth::start(&cfg).await;
        for (n, b) in &backends {
            berth.wait_healthy(n, &[b.addr()], HEALTHY).await;
        }
        let http = Http::new();
        let base = format!("http://{web}");
        let get = |path: &str, headers: &[(&str, &str)]| {
            let url = format!("{base}{path}");
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let http = http.clone();
            async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                http.get_with(&url, &h).await.expect("request")
            }
        };
        // (description, path, headers, expected backend)
        let cases: &[Case] = &[
            ("host wildcard", "/", &[("host", "api.wild.test")], "host"),
            (
                "host wildcard, case-insensitive",
                "/",
                &[("host", "API.Wild.TEST")],
                "host",
            ),
            (
                "host wildcard with port",
                "/",
                &[("host", "a.b.wild.test:8080")],
                "host",
            ),
            (
                "host wildcard needs a label",
                "/",
                &[("host", "wild.test")],
                "default",
            ),
            ("path exact", "/exact", &[], "exact"),
            ("path exact is exact", "/exact/more", &[], "default"),
            ("path prefix", "/prefix/a/b", &[], "prefix"),
            ("path prefix mismatch", "/prefixed", &[], "default"),
            ("path glob", "/glob/x/end", &[], "glob"),
            (
                "path glob: * stays in a segment",
                "/glob/x/y/end",
                &[],
                "default",
            ),
            ("header", "/", &[("x-route", "blue-green")], "header"),
            ("header mismatch", "/", &[("x-route", "red")], "default"),
            ("query", "/?a=1&v=2", &[], "query"),
            ("query mismatch", "/?v=3", &[], "default"),
            ("default action", "/nothing-matches", &[], "default"),
        ];
        for (what, path, headers, want) in cases {
            let r = get(path, headers).await;
            assert_eq!(
                r.status, 200,
                "{what}: GET {path} {headers:?} → {} {}",
                r.status, r.body
            );
            assert_eq!(r.backend(), *want, "{what}: GET {path} {headers:?}");
        }
        // Priority: GET /prio matches rules 5, 6 and 100 (written in the order 100, 6, 5); the
        // lowest number wins.
        let r = get("/prio", &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, "p5"),
            "priority 5 wins"
        );
        // Method conditions.
        let r = http
            .request(Method::DELETE, &format!("{base}/x"), &[])
            .await
            .unwrap();
        assert_eq!(r.backend(), "method", "DELETE → method group");
        let r = http
            .request(Method::POST, &format!("{base}/prio"), &[])
            .await
            .unwrap();
        assert_eq!(
            r.backend(),
            "prio",
            "POST /prio: priority 5 needs GET, so 6 wins"
        );
        let r = http
            .request(Method::PUT, &format!("{base}/and/1"), &[])
            .await
            .unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (202, "and"),
            "both conditions match"
        );
        let r = http
            .request(Method::POST, &format!("{base}/and/1"), &[])
            .await
            .unwrap();
        assert_eq!(r.backend(), "default", "only one of two conditions matches");

        // Source CIDR: a client connecting from 127.0.0.99.
        let from99 = Http::from_source("127.0.0.99".parse().unwrap());
        let r = from99
            .get(&format!("{base}/"))
            .await
            .expect("request from 127.0.0.99");
        assert_eq!(r.backend(), "cidr", "source_cidr 127.0.0.99/32");
        let r = Http::from_source("127.0.0.98".parse().unwrap())
            .get(&format!("{base}/"))
            .await
            .unwrap();
        assert_eq!(
            r.backend(),
            "default",
            "source 127.0.0.98 is outside the CIDR"
        );

        // Fixed response.
        let r = get("/fixed/x", &[]).await;
        assert_eq!(r.status, 418);
        assert_eq!(r.body, "teapot");
        assert!(
            r.header("content-type").starts_with("text/plain"),
            "{:?}",
            r.headers
        );

        // Redirects.
        let r = get("/redir/x?a=1", &[("host", "old.test")]).await;
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), "https://new.test:8443/redir/x?a=1");
        let r = get("/moved?old=1", &[("host", "old.test")]).await;
        assert_eq!(r.status, 301, "default redirect status");
        let loc = r.header("location").to_string();
        assert!(
            loc == "http://old.test/new?q=1"
                || loc == format!("http://old.test:{}/new?q=1", web.port()),
            "redirect keeps protocol and host, replaces path and query: got {loc:?}"
        );

        // No request reached a group it should not have.
        assert_eq!(backends["prio"].requests(), 1);
        assert_eq!(backends["method"].requests(), 1);
        assert_eq!(backends["cidr"].requests(), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_forward_across_two_groups() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let web = listen_addr();
        let listener = Listener::new("web", web).default_action(
            r#"forward = [{ target_group = "ga", weight = 1 }, { target_group = "gb", weight = 3 }]"#,
        );
        let cfg = listener.to_string()
            + &static_group("ga", &[&a], "")
            + &static_group("gb", &[&b], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("ga", &[a.addr()], HEALTHY).await;
        berth.wait_healthy("gb", &[b.addr()], HEALTHY).await;
        let http = Http::new();
        let n = 400;
        for _ in 0..n {
            let r = http.get(&format!("http://{web}/")).await.unwrap();
            assert_eq!(r.status, 200);
        }
        let share_b = b.requests() as f64 / n as f64;
        assert_eq!(a.requests() + b.requests(), n);
        assert!(
            (0.65..=0.85).contains(&share_b),
            "weights 1:3 → expected ~75% to gb, got {:.1}% (a={}, b={})",
            share_b * 100.0,
            a.requests(),
            b.requests()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_generated_errors() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let listener = Listener::web(web, "a").key("max_header_bytes = 4096").rule(
            1,
            r#"{ path_prefix = ["/empty"] }"#,
            &forward("empty"),
        );
        let empty = Group::new("empty").source("kind = \"file\"\npath = \"empty-targets.toml\"");
        let cfg = format!("{listener}{}{empty}", static_group("a", &[&a], ""));
        let berth =
            Berth::start_with_files(&cfg, &[("empty-targets.toml", "targets = []\n")]).await;
        berth.wait_healthy("a", &[a.addr()], HEALTHY).await;
        let http = Http::no_pool();

        // Sanity: a normal request passes.
        let r = http.get(&format!("http://{web}/")).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"));

        // Header above max_header_bytes → 431.
        let big = "x".repeat(8192);
        let text = raw_request(
            web,
            format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await
        .expect("raw request");
        assert_eq!(raw_status(&text), Some(431), "huge header: got {text:?}");

        // Malformed request line → 400.
        let text = raw_request(web, b"THIS IS NOT HTTP\r\n\r\n")
            .await
            .expect("raw request");
        assert_eq!(
            raw_status(&text),
            Some(400),
            "malformed request line: got {text:?}"
        );
        // No target → 503.
        let r = http.get(&format!("http://{web}/empty")).await.unwrap();
        assert_eq!(r.status, 503, "group without targets: {}", r.body);

        // Counted by reason, the malformed request line included.
        for reason in ["header_too_large", "bad_request", "no_healthy_target"] {
            berth
                .wait_metric_at_least(
                    "berth_proxy_responses_total",
                    &[("listener", "web"), ("reason", reason)],
                    1.0,
                    Duration::from_secs(5),
                )
                .await;
        }

        // The backend saw only the sanity request.
        assert_eq!(a.requests(), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = format!(
            "[proxy]\ntrusted_proxies = [\"127.0.0.200/32\"]\n{}{}",
            Listener::web(web, "a"),
            static_group("a", &[&a], "")
        );
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("a", &[a.addr()], HEALTHY).await;
        let url = format!("http://{web}/echo-headers");

        // Untrusted peer (127.0.0.1): spoofed X-Forwarded-* are replaced; a request id is made.
        let r = Http::no_pool()
            .get_with(
                &url,
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-port", "1"),
                    ("x-request-id", "spoofed-id"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let h = r.json();
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "XFF from untrusted peer replaced: {h}"
        );
        assert_eq!(h["x-forwarded-proto"], "http", "{h}");
        assert_eq!(h["x-forwarded-port"], web.port().to_string(), "{h}");
        let id = h["x-request-id"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && id != "spoofed-id",
            "request id generated, got {id:?}"
        );

        // Two requests get different ids.
        let r2 = Http::no_pool().get(&url).await.unwrap().json();
        let id2 = r2["x-request-id"].as_str().unwrap_or_default();
        assert!(!id2.is_empty() && id2 != id, "ids differ: {id} vs {id2}");

        // Trusted peer (127.0.0.200): XFF extended, request id kept.
        let r = Http::from_source("127.0.0.200".parse().unwrap())
            .get_with(
                &url,
                &[
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-request-id", "abc-123"),
                ],
            )
            .await
            .unwrap();
        let h = r.json();
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.200", "{h}");
        assert_eq!(h["x-request-id"], "abc-123", "{h}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stickiness_cookie() {
    bounded(LIMIT, async {
        let bs = [
            Backend::spawn("s1").await,
            Backend::spawn("s2").await,
            Backend::spawn("s3").await,
        ];
        let web = listen_addr();
        let cfg = web_to_static_group(
            web,
            &[&bs[0], &bs[1], &bs[2]],
            "stickiness = { enabled = true, duration = \"1h\" }",
        );
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[bs[0].addr(), bs[1].addr(), bs[2].addr()], HEALTHY)
            .await;
        let http = Http::new();
        let url = format!("http://{web}/");
        let first = http.get(&url).await.unwrap();
        assert_eq!(first.status, 200);
        let set_cookie = first.header("set-cookie").to_string();
        assert!(
            set_cookie.starts_with("BERTHSTICKY="),
            "first response sets BERTHSTICKY, got set-cookie {set_cookie:?}"
        );
        let lower = set_cookie.to_ascii_lowercase();
        assert!(
            lower.contains("max-age=3600") || lower.contains("expires="),
            "cookie carries its 1h lifetime: {set_cookie:?}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let owner = first.backend().to_string();
        for i in 0..30 {
            let r = http.get_with(&url, &[("cookie", &cookie)]).await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(
                r.backend(),
                owner,
                "request {i} with {cookie} went elsewhere"
            );
        }
        // Without the cookie, traffic still spreads.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            seen.insert(http.get(&url).await.unwrap().backend().to_string());
        }
        assert!(
            seen.len() >= 2,
            "without the cookie requests spread, saw {seen:?}"
        );
    })
    .await
}
