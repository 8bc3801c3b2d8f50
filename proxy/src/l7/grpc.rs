//! What berth knows about gRPC (a protocol on HTTP/2: a request is a `POST` with
//! `content-type: application/grpc`, and the outcome of a call is the `grpc-status` of its
//! trailers, or of its headers when the answer is "trailers-only"):
//!
//! - whether a request is a gRPC call ([`is_grpc`]), and whether it may go to a target group
//!   at all ([`incompatible`]: ALB's HTTP 464 cases);
//! - the status of a call as it passes ([`Call`]), for `berth_grpc_responses_total`, and the
//!   call's `grpc-timeout` ([`parse_timeout`]), which bounds berth's wait for the target;
//! - berth's own answers in gRPC form: its errors as trailers-only answers ([`answer_headers`],
//!   [`code_for`]), and the trailers that end a call whose target failed mid-stream
//!   ([`failure_trailers`]), so that a client sees `UNAVAILABLE` instead of a reset stream.
//!
//! Why trailers-only answers (HTTP 200 with `grpc-status`) rather than a plain 502/503: the gRPC
//! spec has clients map HTTP 502/503/504 to `UNAVAILABLE` on their own, but then the client sees
//! only "unexpected HTTP status"; a trailers-only answer carries berth's reason in
//! `grpc-message`, and a timeout becomes `DEADLINE_EXCEEDED` (which clients do not retry as
//! they may `UNAVAILABLE`). gRPC-Web (`application/grpc-web*`) is not gRPC here: it runs on
//! HTTP/1.1 with its trailers in the body, so it is proxied as any HTTP request.

use std::time::Duration;

use berth_config::model::ProtocolVersion;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

/// The `grpc-status` field: the call's outcome, a decimal code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` field: a percent-encoded text saying why.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The `grpc-timeout` field of a request: the client's deadline for the call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `UNKNOWN`: the code for HTTP statuses the spec's table does not name.
pub const UNKNOWN: u8 = 2;
/// `DEADLINE_EXCEEDED`: the target did not answer in time.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// `INTERNAL`: a malformed exchange (HTTP 400 in the spec's table).
pub const INTERNAL: u8 = 13;
/// `UNAVAILABLE`: no target, or the target failed; safe for a client to retry.
pub const UNAVAILABLE: u8 = 14;

/// The `grpc_status` label of each code, `0` to `16`.
const CODE_LABELS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];
/// Label of a `grpc-status` that is not a code of the spec (not 0 to 16).
pub const LABEL_INVALID: &str = "invalid";
/// Label of a call whose response ended whole without any `grpc-status` (a target that is not
/// a gRPC server, or a broken one).
pub const LABEL_MISSING: &str = "missing";
/// Label of a call that ended before its response did, without a status: the client went
/// away (cancelled the call or closed its connection).
pub const LABEL_CANCELLED: &str = "cancelled";

/// Whether a request is a gRPC call: `content-type` `application/grpc`, alone, with a `+`
/// subtype (`application/grpc+proto`) or parameters. Not gRPC-Web.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let prefix = b"application/grpc";
    if ct.len() < prefix.len() || !ct[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    match ct.get(prefix.len()) {
        // `application/grpc-web...` is another protocol.
        Some(b) => matches!(b, b'+' | b';' | b' '),
        None => true,
    }
}

/// Why a request cannot go to a group speaking `speaks`, in ALB's terms (its HTTP 464,
/// "incompatible protocol"): a request over HTTP/1.1 to a `grpc` group (gRPC needs HTTP/2
/// end to end); a gRPC call to an `http1` group (HTTP/1.1 targets cannot answer one); a
/// request other than `POST` to a `grpc` group (every gRPC call is a `POST`). `None`: it may go.
pub fn incompatible(
    version: Version,
    method: &Method,
    grpc: bool,
    speaks: ProtocolVersion,
) -> Option<&'static str> {
    let h2 = version == Version::HTTP_2;
    match speaks {
        ProtocolVersion::Grpc if !h2 => Some(
            "incompatible protocol: this target group speaks gRPC, which needs HTTP/2; \
             the request came over HTTP/1.1\n",
        ),
        ProtocolVersion::Grpc if method != Method::POST => Some(
            "incompatible protocol: this target group speaks gRPC, whose calls are POST \
             requests\n",
        ),
        ProtocolVersion::Http1 if grpc => Some(
            "incompatible protocol: a gRPC call, but this target group speaks HTTP/1.1 \
             (protocol_version = \"grpc\" or \"http2\" sends it over HTTP/2)\n",
        ),
        _ => None,
    }
}

/// A gRPC call through berth: its deadline, and its status once seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call {
    /// The client's `grpc-timeout`, if it sent a valid one.
    pub deadline: Option<Duration>,
    /// The `grpc_status` label of the status seen so far (headers or trailers).
    status: Option<&'static str>,
}

impl Call {
    /// The call a request makes, if it is a gRPC call.
    pub fn of(headers: &HeaderMap) -> Option<Call> {
        is_grpc(headers).then(|| Call {
            deadline: headers.get(GRPC_TIMEOUT).and_then(parse_timeout),
            status: None,
        })
    }

    /// Notes the `grpc-status` of a header or trailer section, if it has one.
    pub fn observe(&mut self, fields: &HeaderMap) {
        if let Some(v) = fields.get(GRPC_STATUS) {
            self.status = Some(status_label(v.as_bytes()));
        }
    }

    /// Notes a status berth itself answered with.
    pub fn answered(&mut self, code: u8) {
        self.status = Some(code_label(code));
    }

    /// The `grpc_status` label of the call as it ended (`complete`: its response was sent
    /// whole).
    pub fn label(&self, complete: bool) -> &'static str {
        match (self.status, complete) {
            (Some(s), _) => s,
            (None, true) => LABEL_MISSING,
            (None, false) => LABEL_CANCELLED,
        }
    }
}

/// The `grpc_status` label of a code.
pub fn code_label(code: u8) -> &'static str {
    CODE_LABELS
        .get(usize::from(code))
        .copied()
        .unwrap_or(LABEL_INVALID)
}

/// The `grpc_status` label of a `grpc-status` value: its code, or [`LABEL_INVALID`].
pub fn status_label(value: &[u8]) -> &'static str {
    let code = std::str::from_utf8(value)
        .ok()
        .filter(|s| (1..=2).contains(&s.len()))
        .and_then(|s| s.parse::<u8>().ok());
    code.map_or(LABEL_INVALID, code_label)
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `left` (at least 1 ms): milliseconds while they fit the spec's 8
/// digits, else seconds, else hours.
pub fn timeout_value(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let ms = left.as_millis().max(1);
    let text = if ms <= MAX {
        format!("{ms}m")
    } else if left.as_secs() as u128 <= MAX {
        format!("{}S", left.as_secs())
    } else {
        format!("{}H", (left.as_secs() / 3600).min(MAX as u64))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("1m"))
}

/// The gRPC code of an error berth answers with HTTP `status` and `reason`: the spec's table
/// for HTTP statuses (400 → `INTERNAL`; 429, 502, 503, 504 → `UNAVAILABLE`; others `UNKNOWN`),
/// except a target that did not answer in time (`upstream_timeout`): `DEADLINE_EXCEEDED`.
pub fn code_for(status: u16, reason: &str) -> u8 {
    if reason == "upstream_timeout" {
        return DEADLINE_EXCEEDED;
    }
    match status {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// The header fields of a trailers-only answer with `code` and `message` (sent with HTTP 200
/// and no body).
pub fn answer_headers(code: u8, message: &str) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        ),
        (GRPC_STATUS, HeaderValue::from(u16::from(code))),
        (GRPC_MESSAGE, encode_message(message)),
    ]
}

/// The trailers that end a call whose target's response failed part way: `UNAVAILABLE`, and
/// what berth saw in `grpc-message`.
pub fn failure_trailers(message: &str) -> HeaderMap {
    let mut t = HeaderMap::with_capacity(2);
    t.insert(GRPC_STATUS, HeaderValue::from(u16::from(UNAVAILABLE)));
    t.insert(GRPC_MESSAGE, encode_message(message));
    t
}

/// `message` percent-encoded as `grpc-message` wants it: bytes outside printable ASCII, and
/// `%`, as `%XX`.
pub fn encode_message(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    // Every byte is printable ASCII now.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_values_fit_eight_digits_and_parse_back() {
        for (left, want) in [
            (Duration::from_millis(1500), "1500m"),
            (Duration::ZERO, "1m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(400_000_000 * 3600), "99999999H"),
        ] {
            let v = timeout_value(left);
            assert_eq!(v, want);
            assert!(parse_timeout(&v).is_some(), "{want} parses");
        }
    }

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn grpc_content_types_and_not_grpc_web() {
        for v in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(is_grpc(&ct(v)), "{v}");
        }
        for v in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&ct(v)), "{v}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn incompatible_as_alb_says() {
        use ProtocolVersion::*;
        let (h1, h2) = (Version::HTTP_11, Version::HTTP_2);
        let post = Method::POST;
        let cases = [
            (h1, &post, true, Grpc, true),
            (h1, &Method::GET, false, Grpc, true),
            (h2, &post, true, Grpc, false),
            (h2, &Method::GET, false, Grpc, true),
            (h2, &post, true, Http1, true),
            (h1, &post, true, Http1, true),
            (h2, &post, false, Http1, false),
            (h1, &post, true, Http2, false),
            (h2, &post, true, Http2, false),
            (h1, &Method::GET, false, Http2, false),
        ];
        for (v, m, grpc, speaks, refused) in cases {
            assert_eq!(
                incompatible(v, m, grpc, speaks).is_some(),
                refused,
                "{v:?} {m} grpc={grpc} {speaks:?}"
            );
        }
    }

    #[test]
    fn timeouts_in_every_unit() {
        let t = |s: &'static str| parse_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "10"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(b"0"), "0");
        assert_eq!(status_label(b"14"), "14");
        assert_eq!(status_label(b"16"), "16");
        for bad in [&b"17"[..], b"255", b"", b"x", b"014", b"-1"] {
            assert_eq!(status_label(bad), LABEL_INVALID, "{bad:?}");
        }
    }

    #[test]
    fn a_call_counts_what_it_saw_last() {
        let mut h = ct("application/grpc");
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
        let mut c = Call::of(&h).expect("a gRPC call");
        assert_eq!(c.deadline, Some(Duration::from_millis(100)));
        assert_eq!(c.label(true), LABEL_MISSING);
        assert_eq!(c.label(false), LABEL_CANCELLED);
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        c.observe(&trailers);
        assert_eq!(c.label(true), "14");
        c.answered(DEADLINE_EXCEEDED);
        assert_eq!(c.label(false), "4");
        assert!(Call::of(&ct("text/plain")).is_none());
    }

    #[test]
    fn berth_errors_map_to_grpc_codes() {
        assert_eq!(code_for(504, "upstream_timeout"), DEADLINE_EXCEEDED);
        assert_eq!(code_for(504, "upstream_connect"), UNAVAILABLE);
        assert_eq!(code_for(503, "no_healthy_target"), UNAVAILABLE);
        assert_eq!(code_for(502, "upstream_error"), UNAVAILABLE);
        assert_eq!(code_for(400, "bad_request"), INTERNAL);
        assert_eq!(code_for(500, "internal"), UNKNOWN);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no healthy target"), "no healthy target");
        assert_eq!(encode_message("100% é\n"), "100%25 %C3%A9%0A");
        let [(_, ct), (_, code), (_, msg)] = answer_headers(UNAVAILABLE, "x");
        assert_eq!(
            (ct.as_bytes(), code.as_bytes(), msg.as_bytes()),
            (&b"application/grpc"[..], &b"14"[..], &b"x"[..])
        );
        let t = failure_trailers("target reset");
        assert_eq!(t[GRPC_STATUS], "14");
        assert_eq!(t[GRPC_MESSAGE], "target reset");
    }
}
