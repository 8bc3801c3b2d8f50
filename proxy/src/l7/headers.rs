//! The header work of the L7 proxy: what a client's request becomes on its way to a target
//! (hop-by-hop fields removed, forwarding headers, request id, the VPC endpoint and client
//! certificate headers only berth sets), redirect locations, and the cookie and size lookups
//! the proxy makes on a request's head.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

use berth_config::model::Redirect;

use super::conn::ClientConn;
use super::rules;
use crate::runtime::Generation;

/// The header carrying the PrivateLink VPC endpoint ID to targets.
pub const VPCE_HEADER: &str = "x-berth-vpce-id";

/// Headers that belong to one connection (RFC 9110 section 7.6.1), never forwarded.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the `Connection` header names. One pass over the
/// fields finds which are there (usually none, or `Connection: keep-alive`); only those are
/// removed.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = [false; 7];
    let mut any = false;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        // `Connection` may name other fields of this hop; `close` and `keep-alive` name none
        // beyond the hop-by-hop set.
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
    }
    for (n, there) in HOP_BY_HOP.iter().zip(present) {
        if there {
            h.remove(n);
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const VPCE: HeaderName = HeaderName::from_static(VPCE_HEADER);

/// Turns a client's request into the one sent to a target: HTTP/1.1 in origin form, no
/// hop-by-hop headers, forwarding headers (kept from trusted peers only), a request id, and the
/// VPC endpoint ID only from a verified PROXY header.
pub(super) fn prepare_upstream(
    parts: &mut http::request::Parts,
    conn: &ClientConn,
    snap: &Generation,
) {
    let trusted = conn.client_ip.is_some_and(|ip| {
        snap.config
            .proxy
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
    });
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    if parts.version == Version::HTTP_2 {
        if !h.contains_key(header::HOST) {
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                h.insert(header::HOST, v);
            }
        }
        join_cookies(h);
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(u) = Uri::try_from(pq) {
            parts.uri = u;
        }
    }
    parts.version = Version::HTTP_11;

    let xff = match (trusted, h.get(&X_FORWARDED_FOR)) {
        (true, Some(prev)) if !prev.is_empty() => {
            let client = conn.client_value.as_bytes();
            let mut v = BytesMut::with_capacity(prev.len() + 2 + client.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client);
            HeaderValue::from_maybe_shared(v.freeze()).unwrap_or_else(|_| conn.client_value.clone())
        }
        _ => conn.client_value.clone(),
    };
    h.insert(X_FORWARDED_FOR, xff);
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_PORT)) {
        h.insert(X_FORWARDED_PORT, conn.server_port.clone());
    }
    let configured = snap.config.proxy.request_id_header.as_str();
    let id_name = if configured == X_REQUEST_ID.as_str() {
        Some(X_REQUEST_ID)
    } else {
        HeaderName::from_bytes(configured.as_bytes()).ok()
    };
    if let Some(name) = id_name {
        if !(trusted && h.contains_key(&name)) {
            if let Ok(v) = HeaderValue::from_bytes(&request_id()) {
                h.insert(name, v);
            }
        }
    }
    // Only berth sets the client certificate headers, from the handshake.
    crate::tls::mtls::apply(h, conn.client_cert.as_deref());
    // Only berth sets the VPC endpoint header, from the PROXY header it verified.
    if h.contains_key(&VPCE) {
        h.remove(&VPCE);
    }
    if let Some(v) = conn
        .vpce_id
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(VPCE, v);
    }
}

/// HTTP/2 may split `cookie` into several fields; HTTP/1.1 wants one (RFC 9113 section 8.2.3).
pub(super) fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut v = BytesMut::from(first.as_bytes());
    for c in h.get_all(header::COOKIE).iter().skip(1) {
        v.extend_from_slice(b"; ");
        v.extend_from_slice(c.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_maybe_shared(v.freeze()) {
        h.insert(header::COOKIE, joined);
    }
}

/// The `Location` of a redirect: configured parts replace the request's.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host_header: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> String {
    let proto = r.protocol.as_deref().unwrap_or(scheme);
    let (req_host, req_port) = match host_header {
        Some(h) => {
            let bare = rules::host_without_port(h);
            let port = h
                .strip_prefix(bare)
                .and_then(|p| p.strip_prefix(':'))
                .filter(|p| !p.is_empty());
            (bare.to_string(), port.map(str::to_string))
        }
        None => ("localhost".to_string(), None),
    };
    let host = r.host.clone().unwrap_or(req_host);
    let port = match (r.port, r.protocol.is_some()) {
        (Some(p), _) => Some(p.to_string()),
        // A protocol change drops the request's port: it belonged to the other protocol.
        (None, true) => None,
        (None, false) => req_port,
    };
    let port = port
        .filter(|p| !((proto == "http" && p == "80") || (proto == "https" && p == "443")))
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let path = r.path.as_deref().unwrap_or(path);
    let query = match (&r.query, query) {
        (Some(q), _) if !q.is_empty() => format!("?{q}"),
        (Some(_), _) => String::new(),
        (None, Some(q)) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    };
    format!("{proto}://{host}{port}{path}{query}")
}

/// A random 128-bit request id as 32 lowercase hex digits.
pub(super) fn request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The size of a request's head as the client sent it (approximately: request line and
/// header fields).
pub(super) fn header_bytes(parts: &http::request::Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    let line = parts.method.as_str().len() + target + 12;
    line + parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

/// The value of cookie `name`.
pub(super) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn r() -> Redirect {
        Redirect {
            status: 301,
            protocol: None,
            host: None,
            port: None,
            path: None,
            query: None,
        }
    }

    #[test]
    fn redirect_keeps_unset_parts() {
        assert_eq!(
            redirect_location(&r(), "http", Some("a.test:8080"), "/x", Some("q=1")),
            "http://a.test:8080/x?q=1"
        );
    }

    #[test]
    fn redirect_to_https_drops_the_http_port() {
        let mut red = r();
        red.protocol = Some("https".into());
        assert_eq!(
            redirect_location(&red, "http", Some("a.test:8080"), "/x", None),
            "https://a.test/x"
        );
        red.port = Some(8443);
        red.host = Some("b.test".into());
        red.path = Some("/new".into());
        red.query = Some("z=2".into());
        assert_eq!(
            redirect_location(&red, "http", Some("a.test"), "/x", Some("q=1")),
            "https://b.test:8443/new?z=2"
        );
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = request_id();
        let b = request_id();
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; BERTHSTICKY=abc; b=2"),
        );
        assert_eq!(cookie(&h, "BERTHSTICKY"), Some("abc"));
        assert_eq!(cookie(&h, "zz"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn http2_cookie_fields_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn header_size_counts_line_and_fields() {
        let (parts, _) = Request::get("/abc?x=1")
            .header("x-a", "12345")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(header_bytes(&parts), 3 + 8 + 12 + 3 + 5 + 4);
    }
}
