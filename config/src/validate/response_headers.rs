//! `[listeners.response_headers]`: ALB's response header modification, each value checked as
//! ALB checks it and built into a header value once, here.

use http::{HeaderName, HeaderValue, Method};

use super::Checker;
use crate::model::{ListenerProtocol, ResponseHeaders};
use crate::raw::RawResponseHeaders;

/// Longest header value accepted, in bytes (ALB's limit for these attributes: 1024).
const MAX_VALUE_LEN: usize = 1024;

/// The methods `access_control_allow_methods` may list (ALB's set).
const CORS_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// How one key's value is checked; `Err` holds the message.
type Check = fn(&str) -> Result<(), String>;

impl Checker<'_> {
    /// `[listeners.response_headers]` at `p` of a listener speaking `protocol`.
    pub(super) fn response_headers(
        &mut self,
        p: &str,
        r: &RawResponseHeaders,
        protocol: Option<ListenerProtocol>,
    ) -> ResponseHeaders {
        if protocol.is_some_and(ListenerProtocol::is_l4) {
            self.error(p, "only http and https listeners have response headers");
            return ResponseHeaders::default();
        }
        let max_age = r.access_control_max_age.map(|n| n.to_string());
        let keys: [(&str, &Option<String>, &str, Check); 10] = [
            (
                "strict_transport_security",
                &r.strict_transport_security,
                "strict-transport-security",
                hsts,
            ),
            (
                "access_control_allow_origin",
                &r.access_control_allow_origin,
                "access-control-allow-origin",
                origin_or_star,
            ),
            (
                "access_control_allow_methods",
                &r.access_control_allow_methods,
                "access-control-allow-methods",
                methods,
            ),
            (
                "access_control_allow_headers",
                &r.access_control_allow_headers,
                "access-control-allow-headers",
                header_names,
            ),
            (
                "access_control_allow_credentials",
                &r.access_control_allow_credentials,
                "access-control-allow-credentials",
                |v| exactly(v, "true"),
            ),
            (
                "access_control_expose_headers",
                &r.access_control_expose_headers,
                "access-control-expose-headers",
                header_names,
            ),
            (
                "access_control_max_age",
                &max_age,
                "access-control-max-age",
                max_age_seconds,
            ),
            (
                "content_security_policy",
                &r.content_security_policy,
                "content-security-policy",
                |_| Ok(()),
            ),
            (
                "x_content_type_options",
                &r.x_content_type_options,
                "x-content-type-options",
                |v| exactly(v, "nosniff"),
            ),
            (
                "x_frame_options",
                &r.x_frame_options,
                "x-frame-options",
                frame_options,
            ),
        ];
        let mut out = ResponseHeaders {
            set: Vec::new(),
            remove_server: r.server == Some(false),
        };
        for (key, value, header, check) in keys {
            let Some(v) = value else { continue };
            let kp = format!("{p}.{key}");
            let v = v.trim_matches(' ');
            let built = if v.is_empty() {
                Err("must not be empty (leave the key out to keep the target's header)".into())
            } else if v.len() > MAX_VALUE_LEN {
                Err(format!("longer than {MAX_VALUE_LEN} bytes"))
            } else if let Some(c) = v.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
                Err(format!(
                    "{c:?} is not allowed in a header value (printable ASCII only)"
                ))
            } else {
                check(v).and_then(|()| {
                    HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"))
                })
            };
            match built {
                Ok(hv) => out.set.push((HeaderName::from_static(header), hv)),
                Err(m) => self.error(&kp, m),
            }
        }
        if r.access_control_allow_credentials.is_some()
            && r.access_control_allow_origin.as_deref().map(str::trim) == Some("*")
        {
            self.error(
                &format!("{p}.access_control_allow_credentials"),
                "browsers refuse credentials with access_control_allow_origin = \"*\"; name the origin",
            );
        }
        out
    }
}

/// Only `want` (ASCII case ignored).
fn exactly(v: &str, want: &str) -> Result<(), String> {
    if v.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!("must be \"{want}\", found {v:?}"))
    }
}

/// `max-age=<seconds>` once, optionally `includeSubDomains` and `preload`, separated by `;`.
fn hsts(v: &str) -> Result<(), String> {
    let mut max_age = false;
    let mut seen: Vec<String> = Vec::new();
    for d in v.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let lower = d.to_ascii_lowercase();
        let name = lower.split('=').next().unwrap_or("").trim().to_owned();
        if seen.contains(&name) {
            return Err(format!("directive {name:?} appears twice"));
        }
        match name.as_str() {
            "max-age" => {
                let secs = lower
                    .split_once('=')
                    .map(|(_, s)| s.trim().trim_matches('"'));
                if !secs.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
                    return Err(format!(
                        "invalid max-age in {v:?} (expected max-age=<seconds>)"
                    ));
                }
                max_age = true;
            }
            "includesubdomains" | "preload" if !lower.contains('=') => {}
            _ => {
                return Err(format!(
                "unknown directive {d:?} (expected max-age=<seconds>, includeSubDomains, preload)"
            ))
            }
        }
        seen.push(name);
    }
    if max_age {
        Ok(())
    } else {
        Err(format!("{v:?} has no max-age=<seconds>"))
    }
}

/// `*`, `null`, or one origin: `http://` or `https://`, a host, an optional port, no path.
fn origin_or_star(v: &str) -> Result<(), String> {
    if v == "*" || v == "null" || is_origin(v) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not \"*\" or one origin such as \"https://example.com\" (scheme, host and optional port, no path)"
        ))
    }
}

/// Whether `v` is `http(s)://host[:port]`.
fn is_origin(v: &str) -> bool {
    let Some(rest) = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// `*` or a comma-separated list of ALB's methods.
fn methods(v: &str) -> Result<(), String> {
    if v == "*" {
        return Ok(());
    }
    for m in v.split(',').map(str::trim) {
        let upper = m.to_ascii_uppercase();
        if !CORS_METHODS.contains(&upper.as_str()) || Method::from_bytes(m.as_bytes()).is_err() {
            return Err(format!(
                "invalid method {m:?} (expected \"*\" or a list of {})",
                CORS_METHODS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `*` or a comma-separated list of header names.
fn header_names(v: &str) -> Result<(), String> {
    if v == "*" {
        return Ok(());
    }
    for n in v.split(',').map(str::trim) {
        if n.is_empty() || HeaderName::from_bytes(n.as_bytes()).is_err() {
            return Err(format!(
                "invalid header name {n:?} (expected \"*\" or a comma-separated list of names)"
            ));
        }
    }
    Ok(())
}

/// Seconds, 0..=86400 (browsers cap the value at 86400 or less).
fn max_age_seconds(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (0..=86_400).contains(&n) => Ok(()),
        _ => Err("must be between 0 and 86400".into()),
    }
}

/// `DENY`, `SAMEORIGIN`, or `ALLOW-FROM` and one origin.
fn frame_options(v: &str) -> Result<(), String> {
    let upper = v.to_ascii_uppercase();
    if upper == "DENY" || upper == "SAMEORIGIN" {
        return Ok(());
    }
    match v.split_once(' ') {
        Some((kw, uri)) if kw.eq_ignore_ascii_case("ALLOW-FROM") && is_origin(uri.trim()) => Ok(()),
        _ => Err(format!(
            "{v:?} is not \"DENY\", \"SAMEORIGIN\" or \"ALLOW-FROM <origin>\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_values() {
        assert!(hsts("max-age=31536000").is_ok());
        assert!(hsts("max-age=31536000; includeSubDomains; preload").is_ok());
        assert!(hsts("includeSubDomains")
            .unwrap_err()
            .contains("no max-age"));
        assert!(hsts("max-age=abc").unwrap_err().contains("invalid max-age"));
        assert!(hsts("max-age=1; max-age=2").unwrap_err().contains("twice"));
        assert!(hsts("max-age=1; always").unwrap_err().contains("unknown"));
    }

    #[test]
    fn origins_methods_names() {
        assert!(origin_or_star("*").is_ok());
        assert!(origin_or_star("https://example.com:8443").is_ok());
        assert!(origin_or_star("https://example.com/path").is_err());
        assert!(origin_or_star("example.com").is_err());
        assert!(origin_or_star("https://a.test, https://b.test").is_err());
        assert!(methods("GET, post,OPTIONS").is_ok());
        assert!(methods("GET, FETCH").is_err());
        assert!(header_names("Content-Type, X-Api-Key").is_ok());
        assert!(header_names("a b").is_err());
        assert!(header_names("a,,b").is_err());
    }

    #[test]
    fn frame_options_and_max_age() {
        assert!(frame_options("DENY").is_ok());
        assert!(frame_options("sameorigin").is_ok());
        assert!(frame_options("ALLOW-FROM https://example.com").is_ok());
        assert!(frame_options("ALLOW-FROM").is_err());
        assert!(frame_options("ALLOWALL").is_err());
        assert!(max_age_seconds("600").is_ok());
        assert!(max_age_seconds("-1").is_err());
        assert!(max_age_seconds("86401").is_err());
    }
}
