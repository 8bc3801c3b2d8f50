//! gRPC health checks: one unary `grpc.health.v1.Health/Check` call over HTTP/2, encoded with
//! prost (the two messages are declared here; no code generation).
//!
//! A target is healthy when the call answers OK with `SERVING`, or when the call's gRPC status
//! is in the matcher (ALB's default `12`, UNIMPLEMENTED: a server without the health service
//! is up). OK with any other serving status (`NOT_SERVING`, `SERVICE_UNKNOWN`), or a status
//! outside the matcher, is unhealthy.

use berth_config::model::Matcher;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::BodyExt;
use prost::Message;

use crate::upstream::{Sender, UpBody};

/// The path of the health service's `Check` method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; empty for the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// `ServingStatus`: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// The name of a `ServingStatus`, for failure reasons.
fn status_name(s: i32) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown serving status",
    }
}

/// One length-prefixed gRPC message (not compressed).
pub fn frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    msg.encode_raw(&mut b);
    b.freeze()
}

/// The first message of a gRPC response body.
fn unframe(mut body: Bytes) -> Result<HealthCheckResponse, String> {
    if body.len() < 5 {
        return Err("the OK answer has no message".into());
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err("the answer is compressed (not asked for)".into());
    }
    if body.len() < len {
        return Err("the answer's message is cut short".into());
    }
    HealthCheckResponse::decode(body.split_to(len)).map_err(|e| format!("bad answer: {e}"))
}

/// The `grpc-status` of an answer, from its trailers or, for a trailers-only answer, its head.
fn grpc_status(h: &HeaderMap) -> Option<Result<u16, String>> {
    let v = h.get("grpc-status")?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("bad grpc-status {v:?}")),
    )
}

/// Calls `Health/Check` for `service` on `sender` (an HTTP/2 stream) and judges the answer.
pub async fn check(
    sender: &mut Sender,
    authority: &str,
    service: &str,
    matcher: &Matcher,
) -> Result<(), String> {
    let body = frame(&HealthCheckRequest {
        service: service.to_owned(),
    });
    let mut req = Request::new(UpBody::Full(Some(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static(CHECK_PATH);
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(authority) {
        h.insert(header::HOST, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("berth-health-check"),
    );
    let resp = sender
        .send(req)
        .await
        .map_err(|e| format!("gRPC call: {}", super::active::describe(e.error())))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {} to a gRPC call", resp.status()));
    }
    let (code, data) = match grpc_status(resp.headers()) {
        Some(code) => (code?, Bytes::new()),
        None => {
            let collected = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            let code = collected
                .trailers()
                .and_then(grpc_status)
                .ok_or("the answer has no grpc-status")??;
            (code, collected.to_bytes())
        }
    };
    judge(code, data, matcher)
}

/// Healthy on OK with SERVING, or a code in the matcher.
fn judge(code: u16, data: Bytes, matcher: &Matcher) -> Result<(), String> {
    if code != 0 {
        return if matcher.matches(code) {
            Ok(())
        } else {
            Err(format!("gRPC status {code} does not match"))
        };
    }
    let answer = unframe(data)?;
    if answer.status == SERVING {
        Ok(())
    } else {
        Err(format!("serving status {}", status_name(answer.status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_is_length_prefixed_protobuf() {
        let f = frame(&HealthCheckRequest {
            service: "a".into(),
        });
        // flag 0, length 3, field 1 (string) "a"
        assert_eq!(&f[..], &[0, 0, 0, 0, 3, 0x0a, 1, b'a']);
    }

    #[test]
    fn judged_by_serving_status_and_matcher() {
        let m12 = Matcher(vec![(12, 12)]);
        let serving = frame(&HealthCheckResponse { status: SERVING });
        let not_serving = frame(&HealthCheckResponse { status: 2 });
        assert!(judge(0, serving.clone(), &m12).is_ok());
        assert!(judge(0, not_serving, &m12)
            .unwrap_err()
            .contains("NOT_SERVING"));
        assert!(judge(12, Bytes::new(), &m12).is_ok());
        assert!(judge(14, Bytes::new(), &m12).is_err());
        assert!(judge(12, Bytes::new(), &Matcher(vec![(0, 0)])).is_err());
        assert!(judge(0, Bytes::new(), &m12).is_err());
    }
}
