//! The scaler's admin listener: `/metrics` (Prometheus) and `/healthz`, served by
//! [`berth_common::admin_server`].

use std::time::Instant;

use berth_common::admin_server::{self, reply, AdminResponse};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use berth_common::admin_server::bind;

use crate::metrics as m;
use crate::runner::LastDecisions;

fn handle(req: &Request<Incoming>, prom: &PrometheusHandle, last: &LastDecisions) -> AdminResponse {
    match req.uri().path() {
        "/metrics" => {
            if let Ok(last) = last.lock() {
                let now = Instant::now();
                for ((cluster, service), at) in last.iter() {
                    metrics::gauge!(m::LAST_DECISION_AGE, "cluster" => cluster.clone(), "service" => service.clone())
                        .set(now.duration_since(*at).as_secs_f64());
                }
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", prom.render())
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serves until `shutdown` becomes true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    prom: PrometheusHandle,
    last: LastDecisions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = shutdown.changed().await;
    };
    admin_server::serve(listener, stopped, move |req| {
        std::future::ready(handle(&req, &prom, &last))
    })
    .await;
}
