//! Rule transforms (ALB's `host-header-rewrite` and `url-rewrite`): once a rule matched, its
//! rewrites change the request's `Host` and request target before it is forwarded. The
//! routing decision stands; the target groups, stickiness and hashing see the rewritten
//! request. No match leaves the request as it was; a match whose result is not a valid host
//! or origin-form target fails the request (berth answers 500, reason `transform_failed`, as
//! ALB does).

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::Uri;

use berth_config::model::Transforms;

/// Why a transform could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The host rewrite produced something that is not a host name.
    #[error("host header rewrite produced an invalid host {0:?}")]
    Host(String),
    /// The URL rewrite produced something that is not an origin-form request target.
    #[error("url rewrite produced an invalid request target {0:?}")]
    Url(String),
}

/// Applies `t` to the request head. `host_header` is the request's host as routing saw it
/// (lower case, with its port if it had one): the host rewrite's expression sees it without
/// the port, and the port is kept. Returns whether anything changed.
pub fn apply(
    t: &Transforms,
    parts: &mut http::request::Parts,
    host_header: Option<&str>,
) -> Result<bool, TransformError> {
    let mut changed = false;
    if let (Some(rw), Some(full)) = (&t.host, host_header) {
        let bare = super::rules::host_without_port(full);
        if let Some(new) = rw.apply(bare) {
            let value = format!("{new}{}", port_suffix(full));
            if !valid_host(&new) || value.parse::<Authority>().is_err() {
                return Err(TransformError::Host(value));
            }
            let v =
                HeaderValue::try_from(value.as_str()).map_err(|_| TransformError::Host(value))?;
            parts.headers.insert(header::HOST, v);
            changed = true;
        }
    }
    if let Some(rw) = &t.url {
        let current = parts
            .uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        if let Some(new) = rw.apply(current) {
            parts.uri = with_target(&parts.uri, &new).ok_or(TransformError::Url(new))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// `:port` of a host header value (`a.test:8080`, `[::1]:80`), or `""`.
fn port_suffix(host: &str) -> &str {
    let Some(i) = host.rfind(':') else { return "" };
    let (before, port) = (&host[..i], &host[i + 1..]);
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let separates = if host.starts_with('[') {
        before.ends_with(']')
    } else {
        !before.contains(':')
    };
    if is_port && separates {
        &host[i..]
    } else {
        ""
    }
}

/// A host name of letters, digits, `-`, `.` and `_` (no user info, port or path).
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `uri` with its path and query replaced by `target`, keeping any scheme and authority
/// (an HTTP/2 request's `:authority`); `None` unless `target` is origin-form (starts with
/// `/`, no spaces or control characters, no fragment).
fn with_target(uri: &Uri, target: &str) -> Option<Uri> {
    let ok = target.starts_with('/') && !target.bytes().any(|b| b < 0x21 || b == 0x7f || b == b'#');
    if !ok {
        return None;
    }
    let pq = target.parse::<PathAndQuery>().ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::Rewrite;

    fn rw(re: &str, replace: &str) -> Option<Rewrite> {
        Some(Rewrite {
            regex: regex::Regex::new(re).unwrap(),
            replace: replace.into(),
        })
    }

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rewrite_keeps_the_port() {
        let t = Transforms {
            host: rw(r"^(.+)\.example\.com$", "$1.internal"),
            url: None,
        };
        let mut p = parts("/x", Some("API.example.com:8080"));
        assert_eq!(apply(&t, &mut p, Some("api.example.com:8080")), Ok(true));
        assert_eq!(p.headers[header::HOST], "api.internal:8080");
        let mut p = parts("/x", Some("other.test"));
        assert_eq!(apply(&t, &mut p, Some("other.test")), Ok(false));
        assert_eq!(p.headers[header::HOST], "other.test");
    }

    #[test]
    fn url_rewrite_sees_path_and_query() {
        let t = Transforms {
            host: None,
            url: rw(r"^/api/v1/(.*)$", "/v2/$1"),
        };
        let mut p = parts("/api/v1/users?id=7", None);
        assert_eq!(apply(&t, &mut p, None), Ok(true));
        assert_eq!(p.uri, "/v2/users?id=7");
        // An HTTP/2 request keeps its scheme and authority.
        let mut p = parts("https://h.test/api/v1/a", None);
        apply(&t, &mut p, None).unwrap();
        assert_eq!(p.uri.to_string(), "https://h.test/v2/a");
        let t = Transforms {
            host: None,
            url: rw(r"^/dp/([A-Za-z0-9]+)/?$", "/product.php?id=$1"),
        };
        let mut p = parts("/dp/B09G3HRMW", None);
        apply(&t, &mut p, None).unwrap();
        assert_eq!(p.uri, "/product.php?id=B09G3HRMW");
    }

    #[test]
    fn invalid_results_fail() {
        let t = Transforms {
            host: None,
            url: rw(r"^/(.*)$", "$1"),
        };
        let mut p = parts("/no-slash", None);
        assert_eq!(
            apply(&t, &mut p, None),
            Err(TransformError::Url("no-slash".into()))
        );
        let t = Transforms {
            host: rw(r"^(.*)$", "${1}_"),
            url: None,
        };
        let mut p = parts("/", Some("a.test"));
        assert_eq!(apply(&t, &mut p, Some("a.test")), Ok(true));
        let t = Transforms {
            host: rw(r"^a(.*)$", "$1"),
            url: None,
        };
        let mut p = parts("/", Some("a"));
        assert!(matches!(
            apply(&t, &mut p, Some("a")),
            Err(TransformError::Host(_))
        ));
    }

    #[test]
    fn ports_of_host_values() {
        assert_eq!(port_suffix("a.test:8080"), ":8080");
        assert_eq!(port_suffix("a.test"), "");
        assert_eq!(port_suffix("[::1]:80"), ":80");
        assert_eq!(port_suffix("::1"), "");
        assert_eq!(port_suffix("a.test:"), "");
    }
}
