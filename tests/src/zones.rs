//! Zone-aware routing helpers: loopback targets tagged with an Availability Zone, and a fake
//! ECS task metadata endpoint v4 (a hyper server answering `<base>/task` with a zone).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::Backend;

/// Backends, each in a zone.
pub struct ZonedTargets {
    /// (backend, zone), in start order.
    pub backends: Vec<(Backend, String)>,
}

impl ZonedTargets {
    /// Starts `per_zone` backends in each of `zones`, named `<zone><n>` (e.g. `a0`, `b2`).
    pub async fn start(zones: &[&str], per_zone: usize) -> ZonedTargets {
        let mut backends = Vec::new();
        for z in zones {
            for n in 0..per_zone {
                backends.push((Backend::spawn(&format!("{z}{n}")).await, z.to_string()));
            }
        }
        ZonedTargets { backends }
    }

    /// The static targets array: `[{ address = "ip:port", zone = "a" }, ...]`.
    pub fn toml(&self) -> String {
        let items: Vec<String> = self
            .backends
            .iter()
            .map(|(b, z)| format!("{{ address = \"{}\", zone = \"{z}\" }}", b.addr()))
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// Every backend's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.backends.iter().map(|(b, _)| b.addr()).collect()
    }

    /// The backends of `zone`.
    pub fn in_zone(&self, zone: &str) -> Vec<&Backend> {
        self.backends
            .iter()
            .filter(|(_, z)| z == zone)
            .map(|(b, _)| b)
            .collect()
    }

    /// Requests served so far (health checks excluded), by zone.
    pub fn requests_by_zone(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (b, z) in &self.backends {
            *out.entry(z.clone()).or_default() += b.requests();
        }
        out
    }
}

/// The difference `after - before`, zone by zone.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(z, n)| (z.clone(), n - before.get(z).copied().unwrap_or(0)))
        .collect()
}

/// A fake ECS task metadata endpoint v4: `GET <base>/task` answers a task JSON naming its
/// zone; stopped on drop.
pub struct MetadataServer {
    addr: SocketAddr,
    asked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MetadataServer {
    /// Starts one on a loopback port whose `/v4/test-task/task` answers `zone`.
    pub async fn start(zone: &str) -> MetadataServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metadata server");
        let addr = listener.local_addr().expect("local addr");
        let asked = Arc::new(AtomicU64::new(0));
        let body = serde_json::json!({
            "Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/test",
            "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/test/abc",
            "Family": "berth",
            "Revision": "1",
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "AvailabilityZone": zone,
            "LaunchType": "FARGATE",
            "Containers": [],
        })
        .to_string();
        let counter = Arc::clone(&asked);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let found = req.uri().path() == "/v4/test-task/task";
                        if found {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        let body = body.clone();
                        async move {
                            let (status, body) = if found {
                                (StatusCode::OK, body)
                            } else {
                                (StatusCode::NOT_FOUND, String::new())
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        MetadataServer { addr, asked, task }
    }

    /// The value of `ECS_CONTAINER_METADATA_URI_V4` pointing at it.
    pub fn uri(&self) -> String {
        format!("http://{}/v4/test-task", self.addr)
    }

    /// How many `/task` requests it answered.
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
