//! Unit tests of a target group's `protocol`, `protocol_version`, `tls` and the health check
//! defaults that follow them.

use std::path::Path;

use super::parse_and_validate;
use crate::model::*;

fn group(extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = {{ forward = [{{ target_group = "app" }}] }}

[[target_groups]]
name = "app"
source = {{ kind = "static", targets = [{{ address = "127.0.0.1:9000" }}] }}
{extra}
"#
    )
}

/// The errors of `text` as `(path, line)`, with the first message.
fn errors(text: &str, base: &Path) -> (Vec<(String, Option<usize>)>, String) {
    let e = parse_and_validate(text, base).unwrap_err();
    let first = e.0[0].message.clone();
    (e.0.into_iter().map(|e| (e.path, e.line)).collect(), first)
}

#[test]
fn defaults_are_http1_plain_and_http_checks() {
    let c = parse_and_validate(&group(""), Path::new("/base")).unwrap();
    let tg = &c.target_groups[0];
    assert_eq!(tg.protocol_version, ProtocolVersion::Http1);
    assert!(tg.tls.is_none());
    assert_eq!(tg.health_check.protocol, HealthProtocol::Http);
    assert_eq!(tg.health_check.matcher, Matcher(vec![(200, 200)]));
    assert_eq!(tg.health_check.grpc_service, "");
}

#[test]
fn https_group_verifies_by_default_and_checks_over_https() {
    let c = parse_and_validate(&group("protocol = \"https\""), Path::new("/base")).unwrap();
    let tg = &c.target_groups[0];
    let tls = tg.tls.as_ref().unwrap();
    assert!(tls.verify);
    assert!(tls.server_name.is_none() && tls.ca_bundle.is_none());
    assert_eq!(tg.health_check.protocol, HealthProtocol::Https);
}

#[test]
fn grpc_group_checks_with_grpc_and_matcher_12() {
    let text =
        group("protocol_version = \"grpc\"\n[target_groups.health_check]\ngrpc_service = \"svc\"");
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let hc = &c.target_groups[0].health_check;
    assert_eq!(hc.protocol, HealthProtocol::Grpc);
    assert_eq!(hc.matcher, Matcher(vec![(12, 12)]));
    assert_eq!(hc.grpc_service, "svc");

    let text =
        group("protocol_version = \"grpc\"\n[target_groups.health_check]\nmatcher = \"0-99\"");
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    assert_eq!(
        c.target_groups[0].health_check.matcher,
        Matcher(vec![(0, 99)])
    );
}

#[test]
fn ca_bundle_is_read_and_server_name_kept() {
    let dir = tempdir();
    std::fs::write(
        dir.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = group(
        "protocol = \"https\"\n[target_groups.tls]\nserver_name = \"API.internal\"\nca_bundle = \"ca.pem\"",
    );
    let c = parse_and_validate(&text, &dir).unwrap();
    let tls = c.target_groups[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
    let ca = tls.ca_bundle.as_ref().unwrap();
    assert_eq!(ca.path, dir.join("ca.pem"));
    assert!(ca.pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
}

#[test]
fn bad_target_protocols_name_key_and_line() {
    let dir = tempdir();
    std::fs::write(dir.join("not.pem"), "hello").unwrap();
    // tls on an http group
    let (e, msg) = errors(&group("[target_groups.tls]\nverify = false"), &dir);
    assert_eq!(e, [("target_groups[0].tls".to_owned(), Some(10))]);
    assert!(msg.contains("protocol = \"https\""), "{msg}");
    // a gRPC matcher above 99
    let (e, msg) = errors(
        &group("protocol_version = \"grpc\"\n[target_groups.health_check]\nmatcher = \"100\""),
        &dir,
    );
    assert_eq!(
        e,
        [("target_groups[0].health_check.matcher".to_owned(), Some(12))]
    );
    assert!(msg.contains("outside 0..=99"), "{msg}");
    // a CA bundle that is missing, and one that is not PEM
    let (e, _) = errors(
        &group("protocol = \"https\"\n[target_groups.tls]\nca_bundle = \"missing.pem\""),
        &dir,
    );
    assert_eq!(e, [("target_groups[0].tls.ca_bundle".to_owned(), Some(12))]);
    let (e, msg) = errors(
        &group("protocol = \"https\"\n[target_groups.tls]\nca_bundle = \"not.pem\""),
        &dir,
    );
    assert_eq!(e, [("target_groups[0].tls.ca_bundle".to_owned(), Some(12))]);
    assert!(msg.contains("not a PEM"), "{msg}");
    // unknown values
    let (e, _) = errors(&group("protocol_version = \"http3\""), &dir);
    assert_eq!(
        e,
        [("target_groups[0].protocol_version".to_owned(), Some(10))]
    );
    let (e, _) = errors(&group("protocol = \"ftp\""), &dir);
    assert_eq!(e, [("target_groups[0].protocol".to_owned(), Some(10))]);
    // grpc checks on an http1 group
    let (e, _) = errors(
        &group("[target_groups.health_check]\nprotocol = \"grpc\""),
        &dir,
    );
    assert_eq!(
        e,
        [(
            "target_groups[0].health_check.protocol".to_owned(),
            Some(11)
        )]
    );
}

#[test]
fn tcp_listener_cannot_forward_to_a_grpc_group() {
    let text = r#"
[[listeners]]
name = "raw"
bind = "127.0.0.1:8080"
protocol = "tcp"
default_action = { forward = [{ target_group = "app" }] }

[[target_groups]]
name = "app"
protocol_version = "grpc"
source = { kind = "static", targets = [{ address = "127.0.0.1:9000" }] }
"#;
    let (e, msg) = errors(text, Path::new("/base"));
    assert_eq!(
        e,
        [("target_groups[0].protocol_version".to_owned(), Some(10))]
    );
    assert!(msg.contains("listeners[0]"), "{msg}");
}

/// A fresh folder under the system temp folder.
fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "berth-config-tls-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A value unique within this process (tests run in parallel).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
