//! A load generator: N tasks sending GETs in a loop until stopped. Any transport error or
//! non-2xx status is a failure.

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
