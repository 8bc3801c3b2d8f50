//! Unit tests of rule `transforms` and `[listeners.response_headers]` as whole documents: the
//! model they build, and each error's key path and line.

use std::path::Path;

use super::parse_and_validate;

/// A listener with one forward rule carrying `transforms` (inline array body) and `extra`
/// lines at the end of the listener table.
fn doc(transforms: &str, extra: &str) -> String {
    format!(
        r#"[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
default_action = {{ forward = [{{ target_group = "app" }}] }}
{extra}

[[listeners.rules]]
priority = 1
conditions = [{{ path_prefix = ["/"] }}]
action = {{ forward = [{{ target_group = "app" }}] }}
transforms = [
{transforms}
]

[[target_groups]]
name = "app"
source = {{ kind = "static", targets = [{{ address = "127.0.0.1:9000" }}] }}
"#
    )
}

/// The errors of `text` as `"path: message (line n)"` strings.
fn errors(text: &str) -> Vec<String> {
    match parse_and_validate(text, Path::new("/base")) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn transforms_compile_and_rewrite() {
    let text = doc(
        r#"  { type = "host_header_rewrite", regex = '^(.+)\.example\.com$', replace = "$1.internal" },
  { type = "url_rewrite", regex = "^/api/v1/(?P<rest>.*)$", replace = "/v2/${rest}" },"#,
        "",
    );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let t = &c.listeners[0].rules[0].transforms;
    let host = t.host.as_ref().unwrap();
    assert_eq!(
        host.apply("api.example.com").as_deref(),
        Some("api.internal")
    );
    assert_eq!(host.apply("api.other.test"), None);
    let url = t.url.as_ref().unwrap();
    assert_eq!(url.apply("/api/v1/a?b=1").as_deref(), Some("/v2/a?b=1"));
    // No transforms: nothing to do.
    assert!(parse_and_validate(&doc("", ""), Path::new("/base"))
        .unwrap()
        .listeners[0]
        .rules[0]
        .transforms
        .is_empty());
}

#[test]
fn transform_errors_name_key_and_line() {
    let text = doc(
        r#"  { type = "url_rewrite", regex = "^/(abc", replace = "/x" },
  { type = "host_header_rewrite", regex = "^(.+)$", replace = "$2.internal" },
  { type = "url_rewrite", regex = "^/(.*)$", replace = "/$1" },
  { type = "path_rewrite", regex = "x", replace = "/y" },"#,
        "",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("listeners[0].rules[0].transforms[0].regex: invalid regular expression \"^/(abc\": unclosed group")
            && e[0].ends_with("(line 12)"),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with(
            "listeners[0].rules[0].transforms[1].replace: refers to capture group \"2\""
        ) && e[1].ends_with("(line 13)"),
        "{}",
        e[1]
    );
    // A valid second url_rewrite is still one too many (the first was invalid but present).
    assert!(
        e[2].starts_with("listeners[0].rules[0].transforms[2].type: at most one")
            && e[2].ends_with("(line 14)"),
        "{e:#?}"
    );
    assert!(
        e[3].contains("unknown transform type \"path_rewrite\""),
        "{e:#?}"
    );
}

#[test]
fn transform_replacements_and_limits() {
    let cases = [
        (
            r#"{ type = "url_rewrite", regex = "", replace = "/x" }"#,
            "transforms[0].regex: must not be empty",
        ),
        (
            r#"{ type = "url_rewrite", regex = "^/(.*)$", replace = "v2/$1" }"#,
            "must start with \"/\"",
        ),
        (
            r#"{ type = "url_rewrite", regex = "^/(.*)$", replace = "/$1x" }"#,
            "write ${1}x",
        ),
        (
            r#"{ type = "host_header_rewrite", regex = "^(.+)$", replace = "$1/x" }"#,
            "'/' cannot appear in a host name",
        ),
        (
            r#"{ type = "host_header_rewrite", regex = "^(.+)$" }"#,
            "transforms[0].replace: required",
        ),
        (
            r#"{ type = "url_rewrite", regex = '\w{1000}\w{1000}', replace = "/" }"#,
            "too large",
        ),
        (
            r#"{ regex = "x", replace = "/" }"#,
            "transforms[0].type: required",
        ),
    ];
    for (t, want) in cases {
        let e = errors(&doc(t, ""));
        assert!(e.len() == 1 && e[0].contains(want), "{t}: {e:#?}");
        assert!(e[0].ends_with("(line 12)"), "{t}: {e:#?}");
    }
    let long = format!(
        r#"{{ type = "url_rewrite", regex = "{}", replace = "/" }}"#,
        "a".repeat(1025)
    );
    assert!(errors(&doc(&long, ""))[0].contains("longer than 1024"));
}

#[test]
fn transforms_only_on_forward_actions() {
    let text = doc(
        r#"{ type = "url_rewrite", regex = "x", replace = "/y" }"#,
        "",
    )
    .replace(
        "action = { forward = [{ target_group = \"app\" }] }\ntransforms",
        "action = { fixed_response = { status = 200 } }\ntransforms",
    );
    let e = errors(&text);
    assert_eq!(
        e,
        ["listeners[0].rules[0].transforms: transforms only apply to forward actions (they rewrite the request sent to targets) (line 11)"]
    );
}

#[test]
fn response_headers_build_values() {
    let text = doc(
        "",
        r#"response_headers = { strict_transport_security = "max-age=31536000; includeSubDomains", access_control_allow_origin = "https://app.example.com", access_control_allow_methods = "GET, POST", access_control_allow_headers = "Content-Type", access_control_allow_credentials = "true", access_control_expose_headers = "*", access_control_max_age = 600, content_security_policy = "default-src 'self'", x_content_type_options = "nosniff", x_frame_options = "DENY", server = false }"#,
    );
    let c = parse_and_validate(&text, Path::new("/base")).unwrap();
    let rh = &c.listeners[0].response_headers;
    assert!(rh.remove_server);
    let got: Vec<(&str, &str)> = rh
        .set
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains"
            ),
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-methods", "GET, POST"),
            ("access-control-allow-headers", "Content-Type"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "*"),
            ("access-control-max-age", "600"),
            ("content-security-policy", "default-src 'self'"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
        ]
    );
    let c = parse_and_validate(&doc("", ""), Path::new("/base")).unwrap();
    assert!(c.listeners[0].response_headers.is_empty());
}

#[test]
fn response_header_errors_name_key_and_line() {
    let text = doc(
        "",
        r#"[listeners.response_headers]
strict_transport_security = "includeSubDomains"
x_content_type_options = "sniff"
x_frame_options = "ALLOWALL"
access_control_allow_credentials = "yes"
access_control_max_age = 100000
content_security_policy = "default-src 'self'\n"
access_control_allow_origin = "https://a.test/path"
colour = "blue""#,
    );
    let e = errors(&text);
    let want = [
        (
            "listeners[0].response_headers.strict_transport_security: ",
            6,
        ),
        (
            "listeners[0].response_headers.x_content_type_options: must be \"nosniff\"",
            7,
        ),
        ("listeners[0].response_headers.x_frame_options: ", 8),
        (
            "listeners[0].response_headers.access_control_allow_credentials: must be \"true\"",
            9,
        ),
        (
            "listeners[0].response_headers.access_control_max_age: must be between 0 and 86400",
            10,
        ),
        (
            "listeners[0].response_headers.content_security_policy: ",
            11,
        ),
        (
            "listeners[0].response_headers.access_control_allow_origin: ",
            12,
        ),
    ];
    // The unknown key stops deserialization of the whole listener: it is reported alone.
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains("unknown key \"colour\""), "{e:#?}");
    let e = errors(&text.replace("colour = \"blue\"", ""));
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, (prefix, line)) in e.iter().zip(want) {
        assert!(
            got.starts_with(prefix) && got.ends_with(&format!("(line {line})")),
            "{got} (want {prefix} on line {line})"
        );
    }
}

#[test]
fn response_headers_only_on_http_listeners() {
    let text = doc("", "protocol = \"tcp\"\nresponse_headers = { server = false }")
        .replace(
            "\n[[listeners.rules]]\npriority = 1\nconditions = [{ path_prefix = [\"/\"] }]\naction = { forward = [{ target_group = \"app\" }] }\ntransforms = [\n\n]\n",
            "",
        );
    let e = errors(&text);
    assert_eq!(
        e,
        ["listeners[0].response_headers: only http and https listeners have response headers (line 6)"]
    );
    let text = doc(
        "",
        r#"response_headers = { access_control_allow_origin = "*", access_control_allow_credentials = "true" }"#,
    );
    assert!(errors(&text)[0].contains("browsers refuse credentials"));
}
