//! Stickiness cookies as a client sees them: `Set-Cookie` parsing, and the forged and
//! tampered values the stickiness tests send. berth's value is base64url (no padding) of a
//! kind byte, a 4-byte expiry, an 8-byte id and a 16-byte tag; only the tests that forge
//! cookies rely on that layout.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::Resp;

/// The `Set-Cookie` values of `resp`, by cookie name.
pub fn set_cookies(resp: &Resp) -> BTreeMap<String, String> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let name = v.split('=').next()?.trim();
            Some((name.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The `Set-Cookie` of `resp` whose name starts with `prefix`; panics when there is none.
pub fn set_cookie_starting(resp: &Resp, prefix: &str) -> String {
    set_cookies(resp)
        .into_iter()
        .find(|(n, _)| n.starts_with(prefix))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no Set-Cookie {prefix}*: {:?}", resp.headers))
}

/// `name=value`, the part of a `Set-Cookie` a client sends back.
pub fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").trim().to_owned()
}

/// The value of a `name=value` pair.
pub fn value(pair: &str) -> &str {
    pair.split_once('=').map_or("", |(_, v)| v)
}

/// Attribute `name` of a `Set-Cookie` (case-insensitive), e.g. `Max-Age`.
pub fn attribute<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie.split(';').skip(1).find_map(|a| {
        let (k, v) = a.trim().split_once('=').unwrap_or((a.trim(), ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// base64url without padding, decoded; `None` when it is not.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A forgery: `genuine`'s value (signed for one target) with the target id of `other` (a
/// value signed for another target) written over its own, the tag left as it was.
pub fn forge(genuine: &str, other: &str) -> String {
    let mut g = decode(genuine).expect("berth's cookie is base64url");
    let o = decode(other).expect("berth's cookie is base64url");
    g[5..13].copy_from_slice(&o[5..13]);
    encode(&g)
}

/// `genuine` with one bit of its last byte (the tag's) flipped.
pub fn tamper(genuine: &str) -> String {
    let mut g = decode(genuine).expect("berth's cookie is base64url");
    if let Some(last) = g.last_mut() {
        *last ^= 0x01;
    }
    encode(&g)
}
