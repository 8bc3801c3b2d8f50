//! Stickiness settings: the signing key, `lb_cookie` / `app_cookie`, and a forward action's
//! group-level stickiness, with the key path and line of each error.

use std::path::Path;

use super::parse_and_validate;
use super::values::secs;
use crate::model::*;

const GROUPS: &str = r#"
[[target_groups]]
name = "blue"
source = { kind = "static", targets = [{ address = "127.0.0.1:9000" }] }

[[target_groups]]
name = "green"
source = { kind = "static", targets = [{ address = "127.0.0.1:9001" }] }
"#;

/// `(path, line, message)` of every error of `text`.
fn errors(text: &str) -> Vec<(String, Option<usize>, String)> {
    parse_and_validate(text, Path::new("/base"))
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| (e.path, e.line, e.message))
        .collect()
}

fn listener(action: &str) -> String {
    format!("[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\ndefault_action = {action}\n{GROUPS}")
}

#[test]
fn key_from_config_is_32_bytes_of_base64() {
    // 32 bytes of 0x01.
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let text = format!(
        "[proxy]\nstickiness_key = \"{key}\"\n{}",
        listener(r#"{ forward = [{ target_group = "blue" }] }"#)
    );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    assert_eq!(c.proxy.stickiness_key, Some(StickinessKey([1; 32])));
    assert_eq!(
        format!("{:?}", c.proxy.stickiness_key),
        "Some(StickinessKey(<redacted>))"
    );
    let c = parse_and_validate(
        &listener(r#"{ forward = [{ target_group = "blue" }] }"#),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(c.proxy.stickiness_key, None);
}

#[test]
fn key_of_the_wrong_length_or_not_base64_is_refused_with_its_line() {
    let fwd = listener(r#"{ forward = [{ target_group = "blue" }] }"#);
    let e = errors(&format!(
        "[proxy]\nthreads = 1\nstickiness_key = \"c2hvcnQ=\"\n{fwd}"
    ));
    assert_eq!(
        e,
        [(
            "proxy.stickiness_key".to_owned(),
            Some(3),
            "must be exactly 32 bytes once base64-decoded, is 5 bytes".to_owned()
        )]
    );
    let e = errors(&format!("[proxy]\nstickiness_key = \"not base64!\"\n{fwd}"));
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0.as_str(), e[0].1), ("proxy.stickiness_key", Some(2)));
    assert!(e[0].2.starts_with("not valid base64"), "{}", e[0].2);
}

#[test]
fn key_file_is_read_and_checked() {
    let dir = std::env::temp_dir().join(format!("berth-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("key"),
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n",
    )
    .unwrap();
    std::fs::write(dir.join("short"), "AgIC\n").unwrap();
    let fwd = listener(r#"{ forward = [{ target_group = "blue" }] }"#);
    let c = parse_and_validate(
        &format!("[proxy]\nstickiness_key_file = \"key\"\n{fwd}"),
        &dir,
    )
    .unwrap();
    assert_eq!(c.proxy.stickiness_key, Some(StickinessKey([2; 32])));
    let e = parse_and_validate(
        &format!("[proxy]\nstickiness_key_file = \"short\"\n{fwd}"),
        &dir,
    )
    .unwrap_err();
    assert_eq!(e.0[0].path, "proxy.stickiness_key_file");
    assert_eq!(e.0[0].line, Some(2));
    let e = parse_and_validate(
        &format!("[proxy]\nstickiness_key_file = \"missing\"\n{fwd}"),
        &dir,
    )
    .unwrap_err();
    assert!(e.0[0].message.starts_with("cannot read"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lb_cookie_is_the_default_and_app_cookie_names_the_applications_cookie() {
    let fwd = listener(r#"{ forward = [{ target_group = "blue" }] }"#);
    let text = fwd.replace(
        "name = \"blue\"",
        "name = \"blue\"\nstickiness = { type = \"app_cookie\", cookie_name = \"SESSION\", duration = \"1h\" }",
    );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let s = c.target_groups[0].stickiness.as_ref().unwrap();
    assert_eq!(s.cookie_name, APP_STICKY_COOKIE);
    assert_eq!(s.app_cookie.as_deref(), Some("SESSION"));
    assert_eq!(s.duration, secs(3600));

    let text = fwd.replace("name = \"blue\"", "name = \"blue\"\nstickiness = {}");
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let s = c.target_groups[0].stickiness.as_ref().unwrap();
    assert_eq!(
        (s.cookie_name.as_str(), s.app_cookie.as_deref()),
        ("BERTHSTICKY", None)
    );
}

#[test]
fn app_cookie_needs_a_name_that_is_not_reserved() {
    let fwd = listener(r#"{ forward = [{ target_group = "blue" }] }"#);
    for (stickiness, message) in [
        (
            r#"{ type = "app_cookie" }"#,
            "required with type = \"app_cookie\": the application's cookie name",
        ),
        (
            r#"{ type = "app_cookie", cookie_name = "AWSALBAPP-0" }"#,
            "\"AWSALBAPP-0\" is reserved: names starting with AWSALB are the load balancer's own",
        ),
        (
            r#"{ type = "app_cookie", cookie_name = "berthsticky" }"#,
            "\"berthsticky\" is reserved: names starting with BERTH are the load balancer's own",
        ),
    ] {
        let text = fwd.replace(
            "name = \"blue\"",
            &format!("name = \"blue\"\nstickiness = {stickiness}"),
        );
        let e = errors(&text);
        assert_eq!(
            e,
            [(
                "target_groups[0].stickiness.cookie_name".to_owned(),
                Some(8),
                message.to_owned()
            )],
            "{stickiness}"
        );
    }
    let text = fwd.replace(
        "name = \"blue\"",
        "name = \"blue\"\nstickiness = { type = \"sticky\" }",
    );
    assert_eq!(errors(&text)[0].0, "target_groups[0].stickiness.type");
}

#[test]
fn forward_stickiness_is_scoped_to_its_rule() {
    let text = listener(
        r#"{ forward = [{ target_group = "blue", weight = 90 }, { target_group = "green", weight = 10 }], stickiness = { enabled = true, duration = "10m" } }
rules = [{ priority = 7, action = { forward = [{ target_group = "blue" }], stickiness = {} } }]"#,
    );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let l = &c.listeners[0];
    let Action::Forward(f) = &l.default_action else {
        panic!("{:?}", l.default_action)
    };
    assert_eq!(f.len(), 2);
    let s = f.stickiness.as_ref().unwrap();
    assert_eq!((s.duration, s.scope.as_str()), (secs(600), "web/default"));
    let Action::Forward(f) = &l.rules[0].action else {
        panic!()
    };
    let s = f.stickiness.as_ref().unwrap();
    assert_eq!((s.duration, s.scope.as_str()), (secs(3600), "web/7"));
    assert!(s.cookie_name.starts_with("BERTHTG") && s.cookie_name.len() == 15);
    let Action::Forward(d) = &l.default_action else {
        panic!()
    };
    assert_ne!(s.cookie_name, d.stickiness.as_ref().unwrap().cookie_name);

    let text =
        listener(r#"{ forward = [{ target_group = "blue" }], stickiness = { enabled = false } }"#);
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let Action::Forward(f) = &c.listeners[0].default_action else {
        panic!()
    };
    assert!(f.stickiness.is_none());
}

#[test]
fn forward_stickiness_errors_name_their_key() {
    let e = errors(&listener(
        r#"{ fixed_response = { status = 200 }, stickiness = {} }"#,
    ));
    assert_eq!(e[0].0, "listeners[0].default_action.stickiness");
    let e = errors(&listener(
        r#"{ forward = [{ target_group = "blue" }], stickiness = { duration = "8d" } }"#,
    ));
    assert_eq!(
        (e[0].0.as_str(), e[0].1),
        ("listeners[0].default_action.stickiness.duration", Some(4))
    );
    let text = listener(r#"{ forward = [{ target_group = "blue" }], stickiness = {} }"#)
        .replace("bind = ", "protocol = \"tcp\"\nbind = ");
    let e = errors(&text);
    assert_eq!(e[0].0, "listeners[0].default_action.stickiness");
}
