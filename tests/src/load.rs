//! Load generators. [`Load`]: N tasks sending GETs in a loop until stopped. [`MixedLoad`]: GET
//! and POST (10 KB body) over keep-alive connections and one connection per request, counted
//! per method and connection kind. Any transport error or non-2xx status is a failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::Http;

/// Results of a load run.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    /// 2xx responses.
    pub ok: u64,
    /// Transport errors and non-2xx responses.
    pub failed: u64,
    /// The first few failures, described.
    pub errors: Vec<String>,
    /// 2xx responses by `x-backend`.
    pub by_backend: BTreeMap<String, u64>,
}

impl LoadStats {
    /// Panics with the failures when there are any, or when nothing succeeded.
    pub fn assert_no_failures(&self) {
        assert!(
            self.failed == 0,
            "{} of {} requests failed; first failures: {:#?}",
            self.failed,
            self.failed + self.ok,
            self.errors
        );
        assert!(self.ok > 0, "no request succeeded");
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `concurrency` tasks each sending `GET url` back to back over keep-alive
    /// connections (10 s timeout per request).
    pub fn start(url: &str, concurrency: usize) -> Load {
        Self::start_with(Http::new(), url, concurrency)
    }

    /// Like [`Load::start`] with a given client.
    pub fn start_with(http: Http, url: &str, concurrency: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, stats, http, url) =
                    (stop.clone(), stats.clone(), http.clone(), url.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = http.get(&url).await;
                        let mut s = stats.lock().expect("stats lock");
                        match r {
                            Ok(r) if r.status.is_success() => {
                                s.ok += 1;
                                *s.by_backend.entry(r.backend().to_string()).or_default() += 1;
                            }
                            Ok(r) => {
                                s.failed += 1;
                                if s.errors.len() < 10 {
                                    s.errors.push(format!(
                                        "status {} from {:?}: {}",
                                        r.status,
                                        r.backend(),
                                        r.body.chars().take(200).collect::<String>()
                                    ));
                                }
                            }
                            Err(e) => {
                                s.failed += 1;
                                if s.errors.len() < 10 {
                                    s.errors.push(format!("{e:#}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, stats, tasks }
    }

    /// Results so far.
    pub fn stats(&self) -> LoadStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Waits until at least `n` requests succeeded (panics after `timeout`).
    pub async fn wait_ok(&self, n: u64, timeout: Duration) {
        crate::wait::wait_until(timeout, &format!("{n} successful requests"), || async {
            self.stats().ok >= n
        })
        .await
    }

    /// Stops the tasks (letting requests in flight finish) and returns the results.
    pub async fn stop(self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let s = self.stats.lock().expect("stats lock").clone();
        s
    }
}

/// How a [`MixedLoad`] worker connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnKind {
    /// Pooled keep-alive connections.
    KeepAlive,
    /// A new connection per request, `Connection: close`.
    Close,
}

impl ConnKind {
    /// `keep-alive` or `close`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::KeepAlive => "keep-alive",
            ConnKind::Close => "close",
        }
    }
}

/// Successes and failures of one kind of request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// 2xx with the whole body acknowledged.
    pub ok: u64,
    /// Transport errors, timeouts, non-2xx statuses, POST bodies not fully received.
    pub failed: u64,
}

/// Results of a [`MixedLoad`] run.
#[derive(Debug, Default, Clone)]
pub struct MixedStats {
    /// Counts by (method, connection kind).
    pub counts: BTreeMap<(String, ConnKind), Counts>,
    /// The first failures, described (method, connection kind, error or status and body).
    pub failures: Vec<String>,
    /// 2xx responses by the answering task (`x-task`).
    pub by_task: BTreeMap<String, u64>,
}

impl MixedStats {
    /// Counts of `method` over both connection kinds.
    pub fn method(&self, method: &str) -> Counts {
        self.counts
            .iter()
            .filter(|((m, _), _)| m == method)
            .fold(Counts::default(), |a, (_, c)| Counts {
                ok: a.ok + c.ok,
                failed: a.failed + c.failed,
            })
    }

    /// All requests.
    pub fn total(&self) -> Counts {
        self.counts.values().fold(Counts::default(), |a, c| Counts {
            ok: a.ok + c.ok,
            failed: a.failed + c.failed,
        })
    }

    /// One line per (method, connection kind): `GET keep-alive ok=.. failed=..`.
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|((m, k), c)| format!("{m} {} ok={} failed={}", k.as_str(), c.ok, c.failed))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn record(&mut self, method: &str, kind: ConnKind, outcome: Result<String, String>) {
        let c = self.counts.entry((method.to_string(), kind)).or_default();
        match outcome {
            Ok(task) => {
                c.ok += 1;
                *self.by_task.entry(task).or_default() += 1;
            }
            Err(e) => {
                c.failed += 1;
                if self.failures.len() < 30 {
                    self.failures
                        .push(format!("{method} {}: {e}", kind.as_str()));
                }
            }
        }
    }
}

/// Settings of a [`MixedLoad`].
#[derive(Debug, Clone)]
pub struct MixedLoadSpec {
    /// Target, e.g. `http://127.0.1.1:20000/`.
    pub url: String,
    /// Workers; even ones use keep-alive connections, odd ones one connection per request.
    /// Each alternates GET and POST.
    pub workers: usize,
    /// POST body size (10 KB by default).
    pub post_bytes: usize,
    /// Added as `?delay_ms=N` (the task app waits that long before answering), so that
    /// requests are in flight when a task stops.
    pub app_delay: Duration,
    /// Pause between a worker's requests (keeps a 2-core machine responsive).
    pub pause: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl MixedLoadSpec {
    /// `workers` workers on `url`, 10 KB POST bodies, 20 ms app delay, 5 ms pause, 10 s timeout.
    pub fn new(url: &str, workers: usize) -> MixedLoadSpec {
        MixedLoadSpec {
            url: url.to_string(),
            workers,
            post_bytes: 10 * 1024,
            app_delay: Duration::from_millis(20),
            pause: Duration::from_millis(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A running mixed load: GET and POST (10 KB body), over keep-alive connections and over one
/// connection per request, counted per method and connection kind. A failure is a transport
/// error, a timeout, a non-2xx status, or a POST whose answer does not acknowledge every body
/// byte (`received=<n>` from `task-app`).
pub struct MixedLoad {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<MixedStats>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type LoadClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn load_client(pool: bool) -> LoadClient {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    if pool {
        b.pool_idle_timeout(Duration::from_secs(30));
    } else {
        b.pool_max_idle_per_host(0);
    }
    b.build(conn)
}

async fn one_request(
    client: &LoadClient,
    spec: &MixedLoadSpec,
    url: &str,
    method: &http::Method,
    kind: ConnKind,
    body: &bytes::Bytes,
) -> Result<String, String> {
    use http_body_util::BodyExt;
    let mut b = http::Request::builder().method(method.clone()).uri(url);
    if kind == ConnKind::Close {
        b = b.header(http::header::CONNECTION, "close");
    }
    let payload = if method == http::Method::POST {
        body.clone()
    } else {
        bytes::Bytes::new()
    };
    let req = b
        .body(http_body_util::Full::new(payload.clone()))
        .map_err(|e| format!("build request: {e}"))?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| {
            let mut msg = format!("{e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
        let status = resp.status();
        let task = resp
            .headers()
            .get("x-task")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("status {status}, body cut: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!(
                "status {status} from {task:?}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        if method == http::Method::POST && !text.contains(&format!("received={}", payload.len())) {
            return Err(format!(
                "POST body not fully received by {task:?}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        Ok(task)
    };
    match tokio::time::timeout(spec.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", spec.timeout)),
    }
}

impl MixedLoad {
    /// Starts the workers.
    pub fn start(spec: MixedLoadSpec) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(MixedStats::default()));
        let pooled = load_client(true);
        let body = bytes::Bytes::from(vec![b'x'; spec.post_bytes]);
        let sep = if spec.url.contains('?') { '&' } else { '?' };
        let url = if spec.app_delay.is_zero() {
            spec.url.clone()
        } else {
            format!("{}{sep}delay_ms={}", spec.url, spec.app_delay.as_millis())
        };
        let tasks = (0..spec.workers)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    ConnKind::KeepAlive
                } else {
                    ConnKind::Close
                };
                let client = match kind {
                    ConnKind::KeepAlive => pooled.clone(),
                    ConnKind::Close => load_client(false),
                };
                let (stop, stats, spec, url, body) = (
                    stop.clone(),
                    stats.clone(),
                    spec.clone(),
                    url.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let mut n = i / 2;
                    while !stop.load(Ordering::SeqCst) {
                        let method = if n % 2 == 0 {
                            http::Method::GET
                        } else {
                            http::Method::POST
                        };
                        n += 1;
                        let r = one_request(&client, &spec, &url, &method, kind, &body).await;
                        if let Ok(mut s) = stats.lock() {
                            s.record(method.as_str(), kind, r);
                        }
                        if !spec.pause.is_zero() {
                            tokio::time::sleep(spec.pause).await;
                        }
                    }
                })
            })
            .collect();
        MixedLoad { stop, stats, tasks }
    }

    /// Results so far.
    pub fn stats(&self) -> MixedStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` requests succeeded (panics after `timeout`).
    pub async fn wait_ok(&self, n: u64, timeout: Duration) {
        crate::wait::wait_until(timeout, &format!("{n} successful requests"), || async {
            self.stats().total().ok >= n
        })
        .await
    }

    /// Stops the workers (requests in flight finish) and returns the results.
    pub async fn stop(self) -> MixedStats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
