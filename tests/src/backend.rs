//! An in-process HTTP/1.1 target.
//!
//! Answers `200` with its name as the body and `x-backend: <name>`; `/health` answers 200 (503
//! once [`Backend::set_healthy`]`(false)`); `/echo-headers` answers the request headers as a JSON
//! object (repeated headers joined with `", "`); `/slow?ms=N` waits N ms first; `/status/N`
//! answers status N; `/set-cookie/NAME` answers with `Set-Cookie: NAME=<name>; Path=/` (an
//! application's session cookie). Every response carries `x-backend`, `x-seen-uri` (the request
//! target as received) and `x-seen-host` (the `Host` header as received), and each request header
//! `x-respond-with: <name>: <value>` becomes a response header `<name>: <value>`.
//! [`Backend::set_hang`] makes it accept requests and never answer;
//! [`Backend::kill`] closes the listener and drops every connection, as a killed process would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Default)]
struct State {
    name: String,
    unhealthy: AtomicBool,
    hang: AtomicBool,
    delay_ms: AtomicU64,
    requests: AtomicU64,
    health_checks: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    connections: AtomicU64,
}

/// A running backend; stopped (killed) on drop.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    kill: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend named `name` on `ip` with a kernel-chosen port.
    pub async fn start(name: &str, ip: IpAddr) -> Backend {
        Self::start_on(name, SocketAddr::new(ip, 0)).await
    }

    /// Starts a backend on a fresh target address from [`crate::net::target_ip`].
    pub async fn spawn(name: &str) -> Backend {
        Self::start(name, crate::net::target_ip()).await
    }

    /// Starts a backend on exactly `addr` (port 0 = any).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        Self::try_start_on(name, addr)
            .await
            .unwrap_or_else(|e| panic!("backend {name} cannot bind {addr}: {e}"))
    }

    /// Like [`Backend::start_on`], returning the bind error.
    pub async fn try_start_on(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            ..State::default()
        });
        let (kill, kill_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state.clone(), kill_rx));
        Ok(Backend {
            addr,
            state,
            kill,
            task: Some(task),
        })
    }

    /// `ip:port` it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (the response body).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests received, health checks (`/health`) excluded.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Health checks (`/health`) received.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Requests (health checks excluded) being answered right now.
    pub fn in_flight(&self) -> i64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests in flight at once so far.
    pub fn max_in_flight(&self) -> i64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Makes `/health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// In hang mode every request (health checks included) is read and never answered.
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Delays every answer (health checks excepted) by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes the listener and drops every connection at once.
    pub async fn kill(&mut self) {
        let _ = self.kill.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.kill.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut kill: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = kill.wait_for(|k| *k) => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Dropping the set aborts every connection task, which drops (closes) their sockets.
    conns.shutdown().await;
}

struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: &Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let uri = req.uri().to_string();
    let seen_host = req.headers().get("host").cloned();
    let respond_with: Vec<(String, String)> = req
        .headers()
        .get_all("x-respond-with")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    if state.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let is_health = path == "/health";
    let _guard = if is_health {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        None
    } else {
        state.requests.fetch_add(1, Ordering::SeqCst);
        Some(InFlight::new(&state))
    };
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if !is_health && delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (status, body) = if is_health {
        if state.unhealthy.load(Ordering::SeqCst) {
            (503, "unhealthy".to_string())
        } else {
            (200, "ok".to_string())
        }
    } else if path == "/echo-headers" {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).to_string();
            map.entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v)
                })
                .or_insert(v);
        }
        (200, serde_json::to_string(&map).unwrap_or_default())
    } else if path == "/slow" {
        let ms = query_param(req.uri().query(), "ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (200, state.name.clone())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse::<u16>().unwrap_or(500);
        (code, state.name.clone())
    } else {
        (200, state.name.clone())
    };
    // Read (and discard) any request body so keep-alive works.
    let _ = req.into_body().collect().await;
    let mut resp = Response::builder();
    if let Some(cookie) = path.strip_prefix("/set-cookie/") {
        resp = resp.header("set-cookie", format!("{cookie}={}; Path=/", state.name));
    }
    let mut resp = resp
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("x-backend", state.name.as_str())
        .header("x-seen-uri", uri.as_str())
        .header("content-type", "text/plain");
    if let Some(h) = seen_host {
        resp = resp.header("x-seen-host", h);
    }
    for (k, v) in &respond_with {
        resp = resp.header(k.as_str(), v.as_str());
    }
    let resp = resp
        .body(Full::new(Bytes::from(body)))
        .expect("valid response");
    Ok(resp)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
