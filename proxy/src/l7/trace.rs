//! `X-Amzn-Trace-Id`, as ALB sets it: a request without a valid one gets
//! `Root=1-<8 hex digits of unix seconds>-<24 random hex digits>`; a request whose header has a
//! valid `Root` keeps it and every other field (`Parent`, `Sampled`, ...), and gets
//! `Self=1-<8 hex>-<24 hex>` appended (an existing `Self` is replaced). A W3C `traceparent` or
//! `tracestate` is never touched. The value sent to the target is the access log's `trace_id`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header name.
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// A client's header longer than this is replaced rather than extended.
const MAX_INCOMING: usize = 1024;

/// `1-<8 hex seconds>-<24 hex random>`: 35 bytes.
fn new_id(now_secs: u32, random: u128, out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_slice(b"1-");
    for i in (0..8).rev() {
        out.put_u8(HEX[((now_secs >> (4 * i)) & 0xf) as usize]);
    }
    out.put_u8(b'-');
    for i in (0..24).rev() {
        out.put_u8(HEX[((random >> (4 * i)) & 0xf) as usize]);
    }
}

/// Whether `v` is `1-<8 hex>-<24 hex>` (either case, as clients send it).
fn valid_id(v: &[u8]) -> bool {
    v.len() == 35
        && v.starts_with(b"1-")
        && v[10] == b'-'
        && v[2..10].iter().all(u8::is_ascii_hexdigit)
        && v[11..].iter().all(u8::is_ascii_hexdigit)
}

/// The value sent to the target for a request whose client sent `incoming` (its first
/// `X-Amzn-Trace-Id`), at `now_secs`, with `random` bits for the new id.
pub fn value_for(incoming: Option<&[u8]>, now_secs: u32, random: u128) -> HeaderValue {
    let kept = incoming.filter(|v| {
        v.len() <= MAX_INCOMING
            && v.iter().all(|&b| (0x21..0x7f).contains(&b))
            && v.split(|&b| b == b';')
                .any(|f| f.strip_prefix(b"Root=").is_some_and(valid_id))
    });
    let mut out = BytesMut::with_capacity(kept.map_or(0, <[u8]>::len) + 48);
    match kept {
        Some(v) => {
            for f in v.split(|&b| b == b';') {
                if f.is_empty() || f.starts_with(b"Self=") {
                    continue;
                }
                out.put_slice(f);
                out.put_u8(b';');
            }
            out.put_slice(b"Self=");
        }
        None => out.put_slice(b"Root="),
    }
    new_id(now_secs, random, &mut out);
    // Only visible ASCII went in.
    HeaderValue::from_maybe_shared(out.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Sets the trace id of a request on its way to a target, from the client's; returns the value
/// sent.
pub fn apply(headers: &mut HeaderMap) -> HeaderValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let v = value_for(
        headers.get(&TRACE_ID).map(HeaderValue::as_bytes),
        now,
        fastrand::u128(..),
    );
    headers.insert(TRACE_ID, v.clone());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u128 = 0x0123456789abcdef01234567;

    fn s(v: HeaderValue) -> String {
        v.to_str().unwrap().to_string()
    }

    #[test]
    fn a_request_without_one_gets_a_new_root() {
        assert_eq!(
            s(value_for(None, 0x5f0a1b2c, R)),
            "Root=1-5f0a1b2c-0123456789abcdef01234567"
        );
    }

    #[test]
    fn a_valid_root_is_kept_with_its_fields_and_self_is_appended_or_replaced() {
        let root = "Root=1-67891233-abcdef012345678912345678";
        assert_eq!(
            s(value_for(Some(root.as_bytes()), 1, R)),
            format!("{root};Self=1-00000001-0123456789abcdef01234567")
        );
        let with = format!(
            "Self=1-00000000-000000000000000000000000;{root};Parent=53995c3f42cd8ad8;Sampled=1"
        );
        assert_eq!(
            s(value_for(Some(with.as_bytes()), 1, R)),
            format!(
                "{root};Parent=53995c3f42cd8ad8;Sampled=1;Self=1-00000001-0123456789abcdef01234567"
            )
        );
    }

    #[test]
    fn an_invalid_header_is_replaced() {
        for bad in [
            &b"Root=1-xyz-abc"[..],
            b"Root=2-67891233-abcdef012345678912345678",
            b"Parent=53995c3f42cd8ad8",
            b"Root=1-67891233-abcdef012345678912345678 x",
            b"",
        ] {
            assert_eq!(
                s(value_for(Some(bad), 1, R)),
                "Root=1-00000001-0123456789abcdef01234567",
                "{bad:?}"
            );
        }
        let long = format!(
            "Root=1-67891233-abcdef012345678912345678;X={}",
            "a".repeat(2000)
        );
        assert!(s(value_for(Some(long.as_bytes()), 1, R)).starts_with("Root=1-00000001-"));
    }

    #[test]
    fn apply_sets_the_header_and_leaves_traceparent_alone() {
        let mut h = HeaderMap::new();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        h.insert("traceparent", HeaderValue::from_static(tp));
        let v = apply(&mut h);
        assert_eq!(h[&TRACE_ID], v);
        assert_eq!(h["traceparent"], tp);
        assert!(valid_id(&v.as_bytes()[5..]));
    }
}
