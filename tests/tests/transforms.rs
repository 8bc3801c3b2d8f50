//! Rule transforms (host header and URL rewrites with captures) and listener response header
//! policies, end to end: what the target receives, what the client receives from the target
//! and from berth itself, reloads, and `--check` on bad values.

use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::berth::check;
use berth_tests::config::{forward, static_group, Group, Listener};
use berth_tests::h2_backend::{H2Backend, Speaks};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, Backend, Berth, Http};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// The rules of the transform tests: `/api/` rewrites host and URL, `/dp/` maps a path to a
/// query, `/search` rewrites the query, `/bad/` produces an invalid target.
fn transform_rules(l: Listener) -> Listener {
    l.rule(
        10,
        r#"{ path_prefix = ["/api/"] }"#,
        &format!(
            r#"{}
transforms = [
  {{ type = "host_header_rewrite", regex = '^(.+)\.example\.com$', replace = "$1.internal" }},
  {{ type = "url_rewrite", regex = "^/api/v1/(.*)$", replace = "/v2/$1" }},
]"#,
            forward("g")
        ),
    )
    .rule(
        20,
        r#"{ path_prefix = ["/dp/"] }"#,
        &format!(
            r#"{}
transforms = [{{ type = "url_rewrite", regex = "^/dp/([A-Za-z0-9]+)/?$", replace = "/product?id=$1" }}]"#,
            forward("g")
        ),
    )
    .rule(
        30,
        r#"{ path_exact = ["/search"] }"#,
        &format!(
            r#"{}
transforms = [{{ type = "url_rewrite", regex = '^/search\?q=(?P<term>\w+)$', replace = "/find?term=${{term}}&src=lb" }}]"#,
            forward("g")
        ),
    )
    .rule(
        40,
        r#"{ path_prefix = ["/bad/"] }"#,
        &format!(
            r#"{}
transforms = [{{ type = "url_rewrite", regex = "^/bad/(.*)$", replace = "$1" }}]"#,
            forward("g")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_url_rewrites_reach_the_target() {
    bounded(LIMIT, async {
        let b = Backend::spawn("b").await;
        let web = listen_addr();
        let cfg =
            transform_rules(Listener::web(web, "g")).to_string() + &static_group("g", &[&b], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[b.addr()], HEALTHY).await;
        let http = Http::new();
        // (path and query sent, Host sent, target's request target, target's Host)
        let cases = [
            (
                "/api/v1/users?id=7",
                "api.example.com:8080",
                "/v2/users?id=7",
                "api.internal:8080",
            ),
            ("/api/v1/users", "other.test", "/v2/users", "other.test"),
            (
                "/api/v2/x",
                "shop.example.com",
                "/api/v2/x",
                "shop.internal",
            ),
            ("/dp/B09G3HRMW", "a.test", "/product?id=B09G3HRMW", "a.test"),
            // The URL expression sees the query too: `$` does not match before `?`.
            (
                "/dp/B09G3HRMW?ref=home",
                "a.test",
                "/dp/B09G3HRMW?ref=home",
                "a.test",
            ),
            (
                "/search?q=boots",
                "a.test",
                "/find?term=boots&src=lb",
                "a.test",
            ),
            (
                "/search?q=two+words",
                "a.test",
                "/search?q=two+words",
                "a.test",
            ),
            // The default action has no transforms.
            ("/api", "api.example.com", "/api", "api.example.com"),
        ];
        for (path, host, want_uri, want_host) in cases {
            let r = http
                .get_with(&format!("http://{web}{path}"), &[("host", host)])
                .await
                .expect("request");
            assert_eq!(r.status, 200, "{path} {host}: {r:?}");
            assert_eq!(r.header("x-seen-uri"), want_uri, "{path} {host}");
            assert_eq!(r.header("x-seen-host"), want_host, "{path} {host}");
        }
        assert_eq!(b.requests(), cases.len() as u64);

        // A match whose result is not an origin-form target: 500, counted, not forwarded.
        let r = http
            .get(&format!("http://{web}/bad/x"))
            .await
            .expect("request");
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(
            b.requests(),
            cases.len() as u64,
            "the failed request reached the target"
        );
        let failed = berth
            .metric(
                "berth_proxy_responses_total",
                &[("reason", "transform_failed")],
            )
            .await;
        assert_eq!(failed, Some(1.0));
        assert!(
            berth.log().contains("rule transform failed"),
            "{}",
            berth.log_tail(20)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_target_sees_the_rewritten_authority() {
    bounded(LIMIT, async {
        let b = H2Backend::start("b", Speaks::Http2, None).await;
        let web = listen_addr();
        let group = Group::new("g")
            .key("protocol_version = \"http2\"")
            .key("health_check = { enabled = false }")
            .targets(&format!("[{{ address = \"{}\" }}]", b.addr()));
        let listener = Listener::web(web, "g").key("http2 = true");
        let cfg = transform_rules(listener).to_string() + &group.to_string();
        let _berth = Berth::start(&cfg).await;
        let http = Http::new();
        let r = http
            .get_with(
                &format!("http://{web}/api/v1/a?b=1"),
                &[("host", "api.example.com")],
            )
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-version"), "HTTP/2.0");
        assert_eq!(r.header("x-seen-uri"), "http://api.internal/v2/a?b=1");
        // An HTTP/2 client's :authority is rewritten the same way.
        let mut client = h2c(web).await;
        let req = Request::get("http://shop.example.com/api/v1/cart")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let r = client.send_request(req).await.expect("h2 request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-seen-uri"], "http://shop.internal/v2/cart");
        assert_eq!(
            b.stats().http2.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    })
    .await
}

/// An h2c (prior knowledge) client connection.
async fn h2c(web: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    send
}

/// Every header `[listeners.response_headers]` can set, as (key, header, value).
const POLICY: [(&str, &str, &str); 10] = [
    (
        "strict_transport_security",
        "strict-transport-security",
        "max-age=31536000; includeSubDomains; preload",
    ),
    (
        "access_control_allow_origin",
        "access-control-allow-origin",
        "https://app.example.com",
    ),
    (
        "access_control_allow_methods",
        "access-control-allow-methods",
        "GET, POST, OPTIONS",
    ),
    (
        "access_control_allow_headers",
        "access-control-allow-headers",
        "Content-Type, X-Api-Key",
    ),
    (
        "access_control_allow_credentials",
        "access-control-allow-credentials",
        "true",
    ),
    (
        "access_control_expose_headers",
        "access-control-expose-headers",
        "X-Request-Id",
    ),
    ("access_control_max_age", "access-control-max-age", "600"),
    (
        "content_security_policy",
        "content-security-policy",
        "default-src 'self'",
    ),
    (
        "x_content_type_options",
        "x-content-type-options",
        "nosniff",
    ),
    ("x_frame_options", "x-frame-options", "DENY"),
];

/// The `[listeners.response_headers]` table of [`POLICY`], with `x_frame_options = frame`.
fn policy_table(frame: &str) -> String {
    let mut t = String::from("\n[listeners.response_headers]\nserver = false\n");
    for (key, _, value) in POLICY {
        match key {
            "access_control_max_age" => t.push_str(&format!("{key} = {value}\n")),
            "x_frame_options" => t.push_str(&format!("{key} = \"{frame}\"\n")),
            _ => t.push_str(&format!("{key} = \"{value}\"\n")),
        }
    }
    t
}

/// A listener `web` with the policy: `/fixed` answers itself, `/redir` redirects, `/down`
/// forwards to a group whose one target refuses connections (berth answers an error), the
/// rest goes to `g`; a listener `plain` without a policy.
fn policy_config(web: SocketAddr, plain: SocketAddr, b: &Backend, frame: &str) -> String {
    Listener::web(web, "g")
        .rule(
            1,
            r#"{ path_exact = ["/fixed"] }"#,
            r#"{ fixed_response = { status = 418, body = "teapot" } }"#,
        )
        .rule(
            2,
            r#"{ path_exact = ["/redir"] }"#,
            r#"{ redirect = { status = 302, path = "/new" } }"#,
        )
        .rule(3, r#"{ path_exact = ["/down"] }"#, &forward("empty"))
        .tables(&policy_table(frame))
        .to_string()
        + &Listener::new("plain", plain).forward_to("g").to_string()
        + &static_group("g", &[b], "")
        + &Group::new("empty")
            .key("health_check = { enabled = false }")
            .targets(&format!("[{{ address = \"{}\" }}]", listen_addr()))
            .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_on_target_and_berth_responses() {
    bounded(LIMIT, async {
        let b = Backend::spawn("b").await;
        let (web, plain) = (listen_addr(), listen_addr());
        let mut berth = Berth::start(&policy_config(web, plain, &b, "DENY")).await;
        berth.wait_healthy("g", &[b.addr()], HEALTHY).await;
        let http = Http::new();
        // The target sends its own Server and X-Frame-Options: berth's policy wins.
        let target_headers = [
            ("x-respond-with", "server: backend/1.0"),
            ("x-respond-with", "x-frame-options: ALLOWALL"),
            ("x-respond-with", "access-control-allow-origin: *"),
        ];
        let cases = [("/", 200), ("/fixed", 418), ("/redir", 302), ("/down", 502)];
        for (path, status) in cases {
            let r = http
                .get_with(&format!("http://{web}{path}"), &target_headers)
                .await
                .expect("request");
            // A refused connect is 502 or 503 depending on how it failed: an error either way.
            let ok = r.status.as_u16() == status || (status == 502 && r.status == 503);
            assert!(ok, "{path}: {r:?}");
            for (_, header, value) in POLICY {
                let got: Vec<_> = r.headers.get_all(header).iter().collect();
                assert_eq!(got, [value], "{path}: {header}");
            }
            assert!(r.headers.get("server").is_none(), "{path}: {:?}", r.headers);
        }
        assert_eq!(b.requests(), 1);
        // Without a policy, the target's headers pass as they are.
        let r = http
            .get_with(&format!("http://{plain}/"), &target_headers)
            .await
            .expect("request");
        assert_eq!(r.header("server"), "backend/1.0");
        assert_eq!(r.header("x-frame-options"), "ALLOWALL");
        assert!(r.headers.get("strict-transport-security").is_none());

        // A reload changes the policy of new requests.
        berth.write_config(&policy_config(web, plain, &b, "SAMEORIGIN"));
        berth.reload();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get(&format!("http://{web}/fixed"))
                .await
                .expect("request");
            if r.header("x-frame-options") == "SAMEORIGIN" {
                break;
            }
            assert_eq!(r.header("x-frame-options"), "DENY");
            assert!(tokio::time::Instant::now() < deadline, "reload not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(berth.exited().is_none());
    })
    .await
}

#[test]
fn check_names_key_and_line_of_bad_transforms_and_headers() {
    let web = listen_addr();
    let bad = format!(
        r#"[[listeners]]
name = "web"
bind = "{web}"
default_action = {{ forward = [{{ target_group = "g" }}] }}
[listeners.response_headers]
x_content_type_options = "sniff"
strict_transport_security = "max-age=forever"
access_control_allow_origin = "https://a.test/path"

[[listeners.rules]]
priority = 1
conditions = [{{ path_prefix = ["/"] }}]
action = {{ forward = [{{ target_group = "g" }}] }}
transforms = [
  {{ type = "url_rewrite", regex = "^/(v1", replace = "/v2" }},
  {{ type = "host_header_rewrite", regex = "^(.+)$", replace = "$2.internal" }},
]

[[target_groups]]
name = "g"
source = {{ kind = "static", targets = [{{ address = "127.0.0.2:9000" }}] }}
"#
    );
    let out = check(&bad, &[]);
    assert_eq!(out.code, 1, "bad config exits 1: {out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let want = [
        (
            "listeners[0].response_headers.x_content_type_options: must be \"nosniff\"",
            6,
        ),
        (
            "listeners[0].response_headers.strict_transport_security: invalid max-age",
            7,
        ),
        (
            "listeners[0].response_headers.access_control_allow_origin: ",
            8,
        ),
        (
            "listeners[0].rules[0].transforms[0].regex: invalid regular expression",
            15,
        ),
        (
            "listeners[0].rules[0].transforms[1].replace: refers to capture group \"2\"",
            16,
        ),
    ];
    for (prefix, line) in want {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(prefix) && l.ends_with(&format!("(line {line})"))),
            "{prefix} on line {line}: {lines:#?}"
        );
    }
    let good = bad
        .replace("\"sniff\"", "\"nosniff\"")
        .replace("max-age=forever", "max-age=300")
        .replace("https://a.test/path", "https://a.test")
        .replace("^/(v1", "^/(v1)")
        .replace("$2.internal", "$1.internal");
    let out = check(&good, &[]);
    assert_eq!(out.code, 0, "fixed config passes: {out:?}");
}
