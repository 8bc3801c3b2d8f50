//! Unit tests of the value parsers, serde message rewording, defaults and pattern matching;
//! whole-file error messages are in the golden tests (`config/tests/golden.rs`).

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::parse_and_validate;
use super::serde_errors::clean_serde_message;
use super::values::{compile, escape_wildcard, parse_cidr, parse_duration, parse_matcher, secs};
use crate::model::*;

#[test]
fn matcher_single_range_list() {
    assert_eq!(parse_matcher("200").unwrap(), Matcher(vec![(200, 200)]));
    assert_eq!(parse_matcher("200-399").unwrap(), Matcher(vec![(200, 399)]));
    let m = parse_matcher("200, 204,300-399").unwrap();
    assert_eq!(m, Matcher(vec![(200, 200), (204, 204), (300, 399)]));
    assert!(m.matches(204) && m.matches(301) && !m.matches(201) && !m.matches(400));
}

#[test]
fn matcher_errors() {
    assert_eq!(
        parse_matcher("600").unwrap_err(),
        "invalid matcher \"600\": status code 600 is outside 100..=599"
    );
    assert_eq!(
        parse_matcher("399-200").unwrap_err(),
        "invalid matcher \"399-200\": range 399-200 is reversed"
    );
    assert_eq!(
        parse_matcher("200,").unwrap_err(),
        "invalid matcher \"200,\": empty entry"
    );
    assert_eq!(
        parse_matcher("2xx").unwrap_err(),
        "invalid matcher \"2xx\": \"2xx\" is not a status code"
    );
    assert!(parse_matcher("").is_err());
    assert!(parse_matcher("99").is_err());
    assert!(parse_matcher("200-").is_err());
    assert!(parse_matcher("-").is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), secs(30));
    assert_eq!(parse_duration("1m30s").unwrap(), secs(90));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1d").unwrap(), secs(86_400));
    assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    let e = parse_duration("3x").unwrap_err();
    assert!(e.starts_with("invalid duration \"3x\": "), "{e}");
    assert!(parse_duration("").is_err());
    assert!(parse_duration("30").is_err());
}

#[test]
fn cidrs() {
    assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
    assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
    assert!(parse_cidr("10.0.0.0/33").is_none());
    assert!(parse_cidr("nope").is_none());
}

#[test]
fn serde_messages() {
    assert_eq!(
        clean_serde_message("unknown field `intervl`, expected one of `a`, `b`"),
        (
            "unknown key \"intervl\" (expected one of: a, b)".to_owned(),
            Some("intervl".to_owned())
        )
    );
    assert_eq!(
        clean_serde_message("invalid type: integer `5`, expected a string").0,
        "expected a string, found integer `5`"
    );
    assert_eq!(
        clean_serde_message("invalid type: string \"x\", expected i64").0,
        "expected an integer, found string \"x\""
    );
}

const MINIMAL: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = { forward = [{ target_group = "app" }] }

[[target_groups]]
name = "app"
source = { kind = "static", targets = [{ address = "127.0.0.1:9000" }] }
"#;

#[test]
fn defaults() {
    let c = parse_and_validate(MINIMAL, Path::new("/base")).unwrap();
    assert_eq!(c.proxy.threads, 1);
    assert_eq!(c.proxy.grace_period, secs(30));
    assert_eq!(c.proxy.upstream_keepalive_pool, 128);
    assert!(c.proxy.trusted_proxies.is_empty());
    assert_eq!(c.proxy.request_id_header, "x-request-id");
    assert_eq!(c.proxy.watch_interval, secs(1));
    assert_eq!(c.proxy.certificate_poll_interval, secs(5));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.admin.bind, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.scaler.metrics_url, "http://127.0.0.1:9901/metrics");
    assert_eq!(c.scaler.interval, secs(5));
    assert!(c.scaler.dry_run);
    assert_eq!(c.scaler.admin_bind, "127.0.0.1:9902".parse().unwrap());

    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Http);
    assert!(!l.http2);
    assert_eq!(l.header_timeout, secs(60));
    assert_eq!(l.idle_timeout, secs(60));
    assert_eq!(l.max_header_bytes, 65536);
    assert_eq!(l.mtls, Mtls::Off);
    assert!(l.rules.is_empty());
    match &l.default_action {
        Action::Forward(g) => {
            assert_eq!(g.len(), 1);
            assert_eq!(g[0].target_group, "app");
            assert_eq!(g[0].weight, 1);
        }
        other => panic!("unexpected {other:?}"),
    }

    let t = &c.target_groups[0];
    assert_eq!(t.algorithm, Algorithm::RoundRobin);
    assert!(t.stickiness.is_none());
    assert_eq!(t.deregistration_delay, secs(300));
    assert_eq!(t.slow_start, Duration::ZERO);
    assert_eq!(t.timeouts.connect, secs(5));
    assert_eq!(t.timeouts.read, secs(60));
    assert_eq!(t.timeouts.idle, secs(60));
    assert_eq!(t.timeouts.total, None);
    assert_eq!(t.retry.attempts, 2);
    assert_eq!(t.retry.budget_percent, 20);
    assert_eq!(t.retry.min_per_second, 10);
    let h = &t.health_check;
    assert!(h.enabled);
    assert_eq!(h.protocol, HealthProtocol::Http);
    assert_eq!(h.path, "/");
    assert_eq!(h.matcher, Matcher(vec![(200, 200)]));
    assert_eq!(h.interval, secs(30));
    assert_eq!(h.timeout, secs(5));
    assert_eq!(h.healthy_threshold, 5);
    assert_eq!(h.unhealthy_threshold, 2);
    let o = &t.outlier;
    assert!(o.enabled);
    assert_eq!(o.consecutive_5xx, 5);
    assert_eq!(o.consecutive_connect_failures, 3);
    assert_eq!(o.base_ejection_time, secs(30));
    assert_eq!(o.max_ejection_time, secs(300));
    assert_eq!(o.max_ejection_percent, 50);
    match &t.source {
        Source::Static(ts) => assert_eq!(
            ts,
            &vec![TargetSpec {
                address: "127.0.0.1:9000".parse().unwrap(),
                weight: 1,
                zone: None,
            }]
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn admin_proxy_protocol_is_optional_and_checked() {
    let c = parse_and_validate(MINIMAL, Path::new("/base")).unwrap();
    assert!(c.admin.proxy_protocol.is_none());

    let text = format!(
            "[admin]\nbind = \"0.0.0.0:9901\"\n[admin.proxy_protocol]\ntrusted_cidrs = [\"10.0.0.0/16\"]\n{MINIMAL}"
        );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let pp = c.admin.proxy_protocol.as_ref().unwrap();
    assert_eq!(
        pp.trusted_cidrs,
        vec!["10.0.0.0/16".parse::<IpNet>().unwrap()]
    );
    assert_eq!(pp.header_timeout, secs(3));
    assert!(pp.allowed_vpc_endpoints.is_empty());

    let text = format!(
            "[admin.proxy_protocol]\nheader_timeout = \"1h\"\nallowed_vpc_endpoints = [\"vpce-1\"]\n{MINIMAL}"
        );
    let e = parse_and_validate(&text, Path::new("/base")).unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "admin.proxy_protocol.trusted_cidrs",
            "admin.proxy_protocol.header_timeout",
            "admin.proxy_protocol.allowed_vpc_endpoints",
        ],
        "{e}"
    );
}

#[test]
fn https_defaults_http2_and_stickiness_defaults() {
    let text = MINIMAL.replace(
            "name = \"app\"",
            "name = \"app\"\nstickiness = {}\nhash_on = { source_ip = true }\nalgorithm = \"consistent_hash\"",
        );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let s = c.target_groups[0].stickiness.as_ref().unwrap();
    assert_eq!(s.duration, secs(86_400));
    assert_eq!(s.cookie_name, "BERTHSTICKY");
    assert_eq!(
        c.target_groups[0].algorithm,
        Algorithm::ConsistentHash(HashOn::SourceIp)
    );
}

#[test]
fn rules_sorted_and_wildcards() {
    let text = MINIMAL.replace(
            "default_action",
            r#"rules = [
  { priority = 20, conditions = [{ host = ["*.Example.com"] }], action = { fixed_response = { status = 200 } } },
  { priority = 10, conditions = [{ path_glob = ["/api/*/x", "/static/**"] }], action = { redirect = { path = "/new" } } },
]
default_action"#,
        );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let rules = &c.listeners[0].rules;
    assert_eq!(rules[0].priority, 10);
    assert_eq!(rules[1].priority, 20);
    let Condition::Host(h) = &rules[1].conditions[0] else {
        panic!()
    };
    assert!(h[0].is_match("a.b.example.com"));
    assert!(h[0].is_match("www.example.com"));
    assert!(!h[0].is_match("example.com"));
    let Condition::PathGlob(g) = &rules[0].conditions[0] else {
        panic!()
    };
    assert!(g[0].is_match("/api/v1/x"));
    assert!(!g[0].is_match("/api/v1/v2/x"));
    assert!(g[1].is_match("/static/a/b/c.css"));
    let Action::Redirect(r) = &rules[0].action else {
        panic!()
    };
    assert_eq!(r.status, 301);
}

#[test]
fn patterns_without_wildcards_match_by_equality() {
    let host = compile("api.example.com", "api.example.com", true, false).unwrap();
    assert!(host.matcher.is_none());
    assert!(host.is_match("api.example.com") && host.is_match("API.example.COM"));
    assert!(!host.is_match("api.example.com.evil") && !host.is_match("xapi.example.com"));
    let path = compile("/static/app.css", "/static/app.css", false, true).unwrap();
    assert!(path.matcher.is_none());
    assert!(path.is_match("/static/app.css") && !path.is_match("/STATIC/app.css"));
    let wild = compile("*.example.com", "*.example.com", true, false).unwrap();
    assert!(wild.matcher.is_some() && wild.is_match("a.example.com"));
    // Non-ASCII keeps the glob matcher and its own notion of case.
    let uni = compile("Ä", "Ä", true, false).unwrap();
    assert!(uni.matcher.is_some() && uni.is_match("Ä"));
}

#[test]
fn wildcard_escapes_other_glob_syntax() {
    let w = compile("a[b]{c}", &escape_wildcard("a[b]{c}*"), true, false).unwrap();
    assert!(w.is_match("A[B]{C}anything"));
    assert!(!w.is_match("ab{c}"));
}

/// `[listeners.mtls]` in each mode, and `proxy.certificate_poll_interval` (files resolve against
/// the crate folder: validation only checks that they exist).
#[test]
fn mtls_modes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = |mtls: &str| {
        format!(
            r#"
[proxy]
certificate_poll_interval = "250ms"

[[listeners]]
name = "web"
bind = "127.0.0.1:8443"
protocol = "https"
certificates = [{{ cert = "Cargo.toml", key = "Cargo.toml" }}]
mtls = {mtls}
default_action = {{ fixed_response = {{ status = 200 }} }}
"#
        )
    };
    let c = parse_and_validate(&config(r#"{ mode = "passthrough" }"#), dir).unwrap();
    assert_eq!(
        c.proxy.certificate_poll_interval,
        Duration::from_millis(250)
    );
    assert_eq!(c.listeners[0].mtls, Mtls::Passthrough);
    let c = parse_and_validate(&config(r#"{ mode = "off" }"#), dir).unwrap();
    assert_eq!(c.listeners[0].mtls, Mtls::Off);
    let c = parse_and_validate(
        &config(r#"{ mode = "verify", ca_bundle = "Cargo.toml", crls = ["src/lib.rs"] }"#),
        dir,
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].mtls,
        Mtls::Verify {
            ca_bundle: dir.join("Cargo.toml"),
            crls: vec![dir.join("src/lib.rs")],
        }
    );
    let e = parse_and_validate(&config(r#"{ mode = "verify" }"#), dir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "listeners[0].mtls.ca_bundle: required (line 10)"
    );
}

/// The zones of a static group's targets.
fn static_zones(tg: &TargetGroup) -> Vec<Option<String>> {
    match &tg.source {
        Source::Static(list) => list.iter().map(|t| t.zone.clone()).collect(),
        other => panic!("not static: {other:?}"),
    }
}

#[test]
fn zone_aware_defaults_off_and_parses() {
    let c = parse_and_validate(MINIMAL, Path::new("/base")).unwrap();
    assert_eq!(c.proxy.availability_zone, None);
    let z = &c.target_groups[0].zone_aware;
    assert!(!z.enabled);
    assert_eq!(z.min_targets, 6);
    assert!(z.proxy_zones.is_empty());
    assert_eq!(static_zones(&c.target_groups[0]), vec![None::<String>]);

    let text = r#"
[proxy]
availability_zone = "us-east-1a"

[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = { forward = [{ target_group = "app" }] }

[[target_groups]]
name = "app"
zone_aware = { min_targets = 2, proxy_zones = { "us-east-1b" = 1, "us-east-1a" = 2 } }
source = { kind = "static", targets = [{ address = "127.0.0.1:9000", zone = "us-east-1a" }, { address = "127.0.0.2:9000" }] }
"#;
    let c = parse_and_validate(text, Path::new("/base")).unwrap();
    assert_eq!(c.proxy.availability_zone.as_deref(), Some("us-east-1a"));
    let z = &c.target_groups[0].zone_aware;
    assert!(z.enabled);
    assert_eq!(z.min_targets, 2);
    assert_eq!(
        z.proxy_zones,
        vec![("us-east-1a".to_owned(), 2), ("us-east-1b".to_owned(), 1)]
    );
    assert_eq!(
        static_zones(&c.target_groups[0]),
        vec![Some("us-east-1a".to_owned()), None]
    );
}

#[test]
fn zone_errors_name_key_and_line() {
    let text = r#"[proxy]
availability_zone = "us east"

[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = { forward = [{ target_group = "app" }] }

[[target_groups]]
name = "app"
source = { kind = "static", targets = [{ address = "127.0.0.1:9000", zone = "" }] }

[target_groups.zone_aware]
min_targets = 0
proxy_zones = { "a" = 0, "b/c" = 1 }
"#;
    let e = parse_and_validate(text, Path::new("/base")).unwrap_err();
    let got: Vec<(String, Option<usize>)> = e.0.iter().map(|e| (e.path.clone(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("proxy.availability_zone".to_owned(), Some(2)),
            (
                "target_groups[0].source.targets[0].zone".to_owned(),
                Some(11)
            ),
            (
                "target_groups[0].zone_aware.min_targets".to_owned(),
                Some(14)
            ),
            (
                "target_groups[0].zone_aware.proxy_zones.a".to_owned(),
                Some(15)
            ),
            (
                "target_groups[0].zone_aware.proxy_zones.b/c".to_owned(),
                Some(15)
            ),
        ]
    );
    assert!(
        e.0[0].message.contains("invalid zone name \"us east\""),
        "{e}"
    );
}

#[test]
fn targets_file_carries_zones() {
    let toml = "targets = [{ address = \"127.0.0.2:80\", zone = \"b\" }]";
    let json = r#"{"targets": [{"address": "127.0.0.2:80", "zone": "b"}]}"#;
    for text in [toml, json] {
        let t = super::parse_targets_file(text).unwrap();
        assert_eq!(t[0].zone.as_deref(), Some("b"));
    }
    let e =
        super::parse_targets_file("targets = [{ address = \"127.0.0.2:80\", zone = \"-x y\" }]")
            .unwrap_err();
    assert_eq!(e.0[0].path, "targets[0].zone");
}

const ACCESS_LOG_BASE: &str = r#"
[[listeners]]
name = "a"
bind = "127.0.0.1:8080"
[listeners.default_action]
fixed_response = { status = 200 }
[[listeners]]
name = "b"
bind = "127.0.0.1:8081"
[listeners.default_action]
fixed_response = { status = 200 }
"#;

#[test]
fn access_log_defaults_are_off_json_everything() {
    let c = parse_and_validate(ACCESS_LOG_BASE, Path::new(".")).unwrap();
    assert_eq!(c.access_log.buffer_lines, DEFAULT_BUFFER_LINES);
    let a = c.access_log.for_listener("a");
    assert!(!a.enabled);
    assert_eq!(a.format, AccessLogFormat::Json);
    assert_eq!(a.sampling, 1.0);
    assert!(c.proxy.trace_id);
}

#[test]
fn listener_access_log_overrides_the_top_level_key_by_key() {
    let text = format!(
        "[proxy]\ntrace_id = false\n[access_log]\nenabled = true\nformat = \"alb\"\nsampling = 0.5\nbuffer_lines = 10\n{ACCESS_LOG_BASE}[listeners.access_log]\nsampling = 1\n"
    );
    let c = parse_and_validate(&text, Path::new(".")).unwrap();
    assert!(!c.proxy.trace_id);
    assert_eq!(c.access_log.buffer_lines, 10);
    let a = c.access_log.for_listener("a");
    assert_eq!(
        (a.enabled, a.format, a.sampling),
        (true, AccessLogFormat::Alb, 0.5)
    );
    let b = c.access_log.for_listener("b");
    assert_eq!(
        (b.enabled, b.format, b.sampling),
        (true, AccessLogFormat::Alb, 1.0)
    );
}

#[test]
fn access_log_errors_name_key_and_line() {
    let text = format!(
        "[access_log]\nformat = \"clf\"\nsampling = 1.5\n{ACCESS_LOG_BASE}[listeners.access_log]\nbuffer_lines = 5\nsampling = -0.1\n"
    );
    let e = parse_and_validate(&text, Path::new(".")).unwrap_err();
    let got: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
    let want = [
        ("access_log.format", 2),
        ("access_log.sampling", 3),
        ("listeners[1].access_log.buffer_lines", 16),
        ("listeners[1].access_log.sampling", 17),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((path, line), e) in want.iter().zip(&e.0) {
        assert_eq!((e.path.as_str(), e.line), (*path, Some(*line)), "{got:#?}");
    }
    assert!(got[0].contains("\"json\" or \"alb\""), "{got:#?}");
}
