//! The launcher's control API over HTTP/1.1 on loopback (JSON in, JSON out), the ECS API as an
//! SDK would call it, and the launcher-wide operations: faults, call counts, reset and the
//! CloudWatch datapoints it stored.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::FaultRequest;
use super::{CloudWatchDatapoint, FaultKind, Moto, CONTROL_TIMEOUT};

/// An error answer of the control API: `{"error": "..."}`.
#[derive(Deserialize)]
struct ControlError {
    error: String,
}

impl Moto {
    /// Calls the control API: `method path` with a JSON `body`; the JSON answer on 2xx (`null`
    /// for an empty one), an error carrying the launcher's message otherwise.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!("moto control {method} {path}");
        let exchange = async {
            let bytes = match body {
                Some(b) => serde_json::to_vec(&b)?,
                None => Vec::new(),
            };
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes)))?;
            let (status, raw) = self.send(self.control_port, req).await?;
            let value: Value = if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&raw).with_context(|| {
                    format!("answer is not JSON: {}", String::from_utf8_lossy(&raw))
                })?
            };
            if !status.is_success() {
                let msg = serde_json::from_value::<ControlError>(value.clone())
                    .map(|e| e.error)
                    .unwrap_or_else(|_| value.to_string());
                bail!("HTTP {status}: {msg}");
            }
            Ok(value)
        };
        bounded(&what, exchange).await
    }

    /// Calls ECS operation `operation` (e.g. `UpdateService`) on moto with the AWS JSON 1.1
    /// protocol, as an SDK would (unsigned: moto does not check signatures); the answer's JSON.
    pub async fn ecs_api(&self, operation: &str, body: Value) -> Result<Value> {
        let what = format!("ECS {operation}");
        let exchange = async {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=testing/20240101/{}/ecs/aws4_request, \
                 SignedHeaders=host, Signature=0",
                self.region()
            );
            let req = Request::builder()
                .method(Method::POST)
                .uri("/")
                .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
                .header(
                    "x-amz-target",
                    format!("AmazonEC2ContainerServiceV20141113.{operation}"),
                )
                .header(http::header::AUTHORIZATION, authorization)
                .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
            let (status, raw) = self.send(self.port(), req).await?;
            if !status.is_success() {
                bail!("HTTP {status}: {}", String::from_utf8_lossy(&raw));
            }
            serde_json::from_slice::<Value>(&raw)
                .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&raw)))
        };
        bounded(&what, exchange).await
    }

    /// Sends `req` (a `Host` header added) to `127.0.0.1:port` on a new connection; the status
    /// and the whole body.
    async fn send(&self, port: u16, mut req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        let host = http::HeaderValue::from_str(&format!("127.0.0.1:{port}"))?;
        req.headers_mut().insert(http::header::HOST, host);
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// `POST path` with `body` serialized; the answer deserialized into `R`.
    pub(crate) async fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<R> {
        let body = serde_json::to_value(body).with_context(|| format!("body of POST {path}"))?;
        let answer = self.control(Method::POST, path, Some(body)).await?;
        decode(answer, path)
    }

    /// `POST path` with `body` serialized, for a call whose answer says nothing more than
    /// success.
    pub(crate) async fn post_command(&self, path: &str, body: &impl Serialize) -> Result<()> {
        self.post::<IgnoredAny>(path, body).await.map(drop)
    }

    /// `GET path`; the answer deserialized into `R`.
    pub(crate) async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        decode(self.control(Method::GET, path, None).await?, path)
    }

    /// `DELETE path` with an optional body; the answer dropped.
    pub(crate) async fn delete(&self, path: &str, body: Option<Value>) -> Result<()> {
        self.control(Method::DELETE, path, body).await.map(drop)
    }

    /// Makes the next `count` calls of `operation` (e.g. `ListTasks`, `DescribeInstances`, or
    /// `*` for any) suffer `kind`. Faults queue up in order.
    pub async fn inject_fault(&self, operation: &str, kind: FaultKind, count: u32) -> Result<()> {
        let fault = FaultRequest::new(operation, kind, count);
        self.post_command("/faults", &fault).await
    }

    /// Drops every pending fault.
    pub async fn clear_faults(&self) -> Result<()> {
        self.delete("/faults", None).await
    }

    /// Calls received per operation since start or [`Moto::reset_calls`], faulted ones included.
    pub async fn calls(&self) -> Result<BTreeMap<String, u64>> {
        self.get("/calls").await
    }

    /// Calls of one operation (0 if none).
    pub async fn call_count(&self, operation: &str) -> Result<u64> {
        Ok(self.calls().await?.get(operation).copied().unwrap_or(0))
    }

    /// Zeroes the call counts.
    pub async fn reset_calls(&self) -> Result<()> {
        self.delete("/calls", None).await
    }

    /// Empties moto's ECS, EC2 and CloudWatch state, faults, call counts and background
    /// reconcilers.
    pub async fn reset(&self) -> Result<()> {
        self.post_command("/reset", &serde_json::json!({})).await
    }

    /// The datapoints moto's CloudWatch stored (through the launcher's CBOR translation of
    /// `PutMetricData`), optionally only those of `namespace` and metric `name`.
    pub async fn cloudwatch_datapoints(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<CloudWatchDatapoint>> {
        #[derive(Deserialize)]
        struct Stored {
            datapoints: Vec<CloudWatchDatapoint>,
        }
        let query: Vec<String> = [("namespace", namespace), ("name", name)]
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
            .collect();
        let path = if query.is_empty() {
            "/cloudwatch/metrics".to_string()
        } else {
            format!("/cloudwatch/metrics?{}", query.join("&"))
        };
        Ok(self.get::<Stored>(&path).await?.datapoints)
    }
}

/// `fut`, failing with `what` when it errs or takes longer than [`CONTROL_TIMEOUT`].
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CONTROL_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {CONTROL_TIMEOUT:?}"))?
        .with_context(|| what.to_string())
}

/// The answer to `path` as `R`, or an error showing the JSON that did not fit.
fn decode<R: DeserializeOwned>(answer: Value, path: &str) -> Result<R> {
    serde_json::from_value(answer.clone())
        .with_context(|| format!("unexpected answer to {path}: {answer}"))
}
