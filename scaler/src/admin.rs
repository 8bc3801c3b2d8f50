//! The scaler's admin listener: `/metrics` (Prometheus) and `/healthz`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::metrics as m;
use crate::runner::LastDecisions;

fn handle(
    req: &Request<Incoming>,
    prom: &PrometheusHandle,
    last: &LastDecisions,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => {
            if let Ok(last) = last.lock() {
                let now = Instant::now();
                for ((cluster, service), at) in last.iter() {
                    metrics::gauge!(m::LAST_DECISION_AGE, "cluster" => cluster.clone(), "service" => service.clone())
                        .set(now.duration_since(*at).as_secs_f64());
                }
            }
            (StatusCode::OK, "text/plain; version=0.0.4", prom.render())
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    prom: PrometheusHandle,
    last: LastDecisions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let prom = prom.clone();
        let last = last.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let r = handle(&req, &prom, &last);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
