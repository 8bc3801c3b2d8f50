//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (200 once the
//! configuration is loaded and every listener accepts connections), `GET /targets` (JSON) and
//! `GET /sd/prometheus` (Prometheus HTTP service discovery of every discovered ECS task).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::runtime::Shared;
use crate::target::TargetState;

/// `/targets` body.
#[derive(Debug, Serialize)]
pub struct TargetsView {
    /// Every target group.
    pub target_groups: Vec<GroupView>,
}

/// One target group in `/targets`.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// Name.
    pub name: String,
    /// Targets.
    pub targets: Vec<TargetView>,
}

/// One target in `/targets`.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// `ip:port`.
    pub address: String,
    /// `initial`, `healthy`, `unhealthy` or `draining`.
    pub state: TargetState,
    /// Weight.
    pub weight: u32,
}

/// The current targets of every group, in configuration order.
pub fn targets_view(shared: &Shared) -> TargetsView {
    let snap = shared.snapshot.load();
    let target_groups = snap
        .config
        .target_groups
        .iter()
        .filter_map(|tg| snap.groups.get(&tg.name))
        .map(|g| GroupView {
            name: g.name.clone(),
            targets: g
                .targets
                .load()
                .list
                .iter()
                .map(|t| TargetView {
                    address: t.label.clone(),
                    state: t.state(),
                    weight: t.weight(),
                })
                .collect(),
        })
        .collect();
    TargetsView { target_groups }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    prom: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n",
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            for g in shared.snapshot.load().groups.values() {
                g.publish_gauges();
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", prom.render())
        }
        "/healthz" => {
            if shared.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ok\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        "/sd/prometheus" => {
            let snap = shared.snapshot.load();
            let sources: Vec<(String, berth_config::model::EcsSource)> = snap
                .config
                .target_groups
                .iter()
                .filter_map(|tg| match &tg.source {
                    berth_config::model::Source::Ecs(e) => Some((tg.name.clone(), e.clone())),
                    _ => None,
                })
                .collect();
            match serde_json::to_vec(&crate::discovery::ecs::sd_entries(&sources)) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        "/targets" => match serde_json::to_vec(&targets_view(&shared)) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /targets, /sd/prometheus\n",
        ),
    })
}

/// Serves the admin endpoints on an already-bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, prom: PrometheusHandle) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let prom = prom.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(req, Arc::clone(&shared), prom.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Binds the admin address (an error names it).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
