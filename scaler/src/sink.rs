//! Publishing to CloudWatch: [`encode`] turns figures into ALB-like datapoints (pure, tested
//! by equality), [`batches`] splits them within the PutMetricData limits, and [`Publisher`]
//! sends them from a bounded buffer in the background through a [`MetricSink`], retrying with
//! backoff and dropping the oldest datapoints (counted) when full. Pushing never waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_common::aws_error::AwsError;

use crate::metrics as m;
use crate::source::Figures;

/// Most datapoints PutMetricData accepts in one call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;

/// The CloudWatch units berth publishes in (CloudWatch's `StandardUnit` of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The variants are CloudWatch's unit names.
pub enum Unit {
    Count,
    Seconds,
}

/// One datapoint of PutMetricData.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// The metric name, ALB's where ALB has one (`RequestCount`, `TargetResponseTime`, ...).
    pub name: &'static str,
    /// (dimension name, value) pairs, from [`dimensions`].
    pub dimensions: Vec<(&'static str, String)>,
    /// The figure over the scrape period, in `unit`.
    pub value: f64,
    /// The CloudWatch unit of `value`.
    pub unit: Unit,
    /// The end of the scrape period the value covers.
    pub timestamp: SystemTime,
    /// Seconds: 1 (high resolution) or 60 (standard), from `[scaler] storage_resolution`.
    pub storage_resolution: u32,
}

/// The series one scaled service publishes: its dimensions and how they are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSeries {
    /// Target group name (`TargetGroup` dimension).
    pub target_group: String,
    /// ECS cluster (`ClusterName`).
    pub cluster: String,
    /// ECS service (`ServiceName`).
    pub service: String,
    /// Proxy replica (`Replica`).
    pub replica: String,
    /// Seconds: 1 (high resolution) or 60 (standard), copied into every [`Datum`].
    pub storage_resolution: u32,
    /// Also publish the additive metrics without the `Replica` dimension, so CloudWatch sums
    /// them across replicas (for `aggregate = "cloudwatch"`).
    pub aggregate: bool,
}

/// Metrics summed across replicas (published without `Replica` too when aggregating).
pub const ADDITIVE: [&str; 4] = [
    "RequestCount",
    "HTTPCode_Target_5XX_Count",
    "HTTPCode_ELB_5XX_Count",
    "ActiveConnectionCount",
];

/// The dimensions of `series`, with or without `Replica`.
pub fn dimensions(series: &ServiceSeries, with_replica: bool) -> Vec<(&'static str, String)> {
    let mut d = vec![
        ("TargetGroup", series.target_group.clone()),
        ("ClusterName", series.cluster.clone()),
        ("ServiceName", series.service.clone()),
    ];
    if with_replica {
        d.push(("Replica", series.replica.clone()));
    }
    d
}

/// The datapoints of one target group's figures, ALB names:
/// `RequestCount`, `RequestCountPerTarget`, `TargetResponseTime` (average, seconds; only with
/// requests), `HTTPCode_Target_5XX_Count`, `HTTPCode_ELB_5XX_Count`, `HealthyHostCount`,
/// `UnHealthyHostCount`, `ActiveConnectionCount`.
pub fn encode(f: &Figures, series: &ServiceSeries, timestamp: SystemTime) -> Vec<Datum> {
    let per_target = if f.healthy > 0.0 {
        f.requests / f.healthy
    } else {
        f.requests
    };
    let mut values: Vec<(&'static str, f64, Unit)> = vec![
        ("RequestCount", f.requests, Unit::Count),
        ("RequestCountPerTarget", per_target, Unit::Count),
    ];
    if let Some(avg) = f.average_latency() {
        values.push(("TargetResponseTime", avg, Unit::Seconds));
    }
    values.extend([
        ("HTTPCode_Target_5XX_Count", f.target_5xx, Unit::Count),
        ("HTTPCode_ELB_5XX_Count", f.elb_5xx, Unit::Count),
        ("HealthyHostCount", f.healthy, Unit::Count),
        ("UnHealthyHostCount", f.unhealthy, Unit::Count),
        ("ActiveConnectionCount", f.active_connections, Unit::Count),
    ]);
    let mut out = Vec::with_capacity(values.len() + ADDITIVE.len());
    for (name, value, unit) in &values {
        out.push(Datum {
            name,
            dimensions: dimensions(series, true),
            value: *value,
            unit: *unit,
            timestamp,
            storage_resolution: series.storage_resolution,
        });
    }
    if series.aggregate {
        for (name, value, unit) in values.iter().filter(|(n, _, _)| ADDITIVE.contains(n)) {
            out.push(Datum {
                name,
                dimensions: dimensions(series, false),
                value: *value,
                unit: *unit,
                timestamp,
                storage_resolution: series.storage_resolution,
            });
        }
    }
    out
}

/// A heartbeat every scaler that publishes sends each tick: `ScalerReplica` = 1 with and
/// without the `Replica` dimension. Over a window, the sum without `Replica` divided by this
/// replica's own sum is the number of replicas publishing for the service (see
/// [`other_replicas`]).
pub const HEARTBEAT: &str = "ScalerReplica";

/// The two heartbeat datapoints of one tick.
pub fn heartbeat(series: &ServiceSeries, timestamp: SystemTime) -> Vec<Datum> {
    [true, false]
        .into_iter()
        .map(|with_replica| Datum {
            name: HEARTBEAT,
            dimensions: dimensions(series, with_replica),
            value: 1.0,
            unit: Unit::Count,
            timestamp,
            storage_resolution: series.storage_resolution,
        })
        .collect()
}

/// How many *other* replicas published heartbeats over a window, from the sum of all
/// replicas' heartbeats (`total`) and this replica's (`own`); `None` before this replica's own
/// heartbeats are visible.
pub fn other_replicas(total: Option<f64>, own: Option<f64>) -> Option<u32> {
    let own = own.filter(|o| *o > 0.0)?;
    let ratio = total.unwrap_or(own) / own;
    Some(((ratio.round().max(1.0)) as u32).saturating_sub(1))
}

/// Splits datapoints into PutMetricData calls of at most [`MAX_DATUMS_PER_CALL`].
pub fn batches(datums: &[Datum]) -> Vec<&[Datum]> {
    datums.chunks(MAX_DATUMS_PER_CALL).collect()
}

/// One sum to read back with GetMetricData (statistic Sum over a window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumQuery {
    /// The published metric to sum, e.g. [`HEARTBEAT`] or one of [`ADDITIVE`].
    pub name: &'static str,
    /// Exactly these (name, value) dimensions; without `Replica`, the sum across replicas.
    pub dimensions: Vec<(&'static str, String)>,
}

/// Where datapoints go, and where sums across replicas come back from.
#[async_trait]
pub trait MetricSink: Send + Sync + std::fmt::Debug {
    /// One PutMetricData call (at most [`MAX_DATUMS_PER_CALL`] datapoints).
    async fn put(&self, namespace: &str, datums: &[Datum]) -> Result<(), AwsError>;
    /// The Sum of each query over `[start, end)` (`None` when CloudWatch has no datapoint).
    async fn sums(
        &self,
        namespace: &str,
        queries: &[SumQuery],
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Vec<Option<f64>>, AwsError>;
}

/// A bounded queue of datapoints that drops the oldest when full.
#[derive(Debug)]
pub struct Buffer {
    queue: Mutex<VecDeque<Datum>>,
    capacity: usize,
    notify: tokio::sync::Notify,
}

impl Buffer {
    /// An empty buffer holding at most `capacity` datapoints.
    pub fn new(capacity: usize) -> Buffer {
        Buffer {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Datum>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends; returns how many of the oldest were dropped (also counted in
    /// `berth_scaler_metrics_dropped_total`). Never waits.
    pub fn push(&self, datums: Vec<Datum>) -> usize {
        let dropped = {
            let mut q = self.lock();
            q.extend(datums);
            let over = q.len().saturating_sub(self.capacity);
            q.drain(..over);
            over
        };
        if dropped > 0 {
            metrics::counter!(m::METRICS_DROPPED).increment(dropped as u64);
        }
        self.notify.notify_one();
        dropped
    }

    /// Takes up to `n` of the oldest.
    pub fn take(&self, n: usize) -> Vec<Datum> {
        let mut q = self.lock();
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts a failed batch back at the front, dropping the oldest beyond capacity.
    pub fn put_back(&self, batch: Vec<Datum>) -> usize {
        let mut q = self.lock();
        for d in batch.into_iter().rev() {
            q.push_front(d);
        }
        let over = q.len().saturating_sub(self.capacity);
        q.drain(..over);
        drop(q);
        if over > 0 {
            metrics::counter!(m::METRICS_DROPPED).increment(over as u64);
        }
        over
    }

    /// Datapoints waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Backoff after `failures` consecutive failures: 200 ms doubling to 30 s, with jitter.
pub fn backoff(failures: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1u64 << failures.min(8).saturating_sub(1))
        .min(30_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// Sends the buffer's datapoints through a sink in the background.
#[derive(Debug, Clone)]
pub struct Publisher {
    buffer: Arc<Buffer>,
}

impl Publisher {
    /// Starts the sending task; it stops when `shutdown` fires (after one last flush attempt).
    pub fn spawn(
        sink: Arc<dyn MetricSink>,
        namespace: String,
        capacity: usize,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> (Publisher, tokio::task::JoinHandle<()>) {
        let buffer = Arc::new(Buffer::new(capacity));
        let b = Arc::clone(&buffer);
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                if *shutdown.borrow() {
                    let batch = b.take(MAX_DATUMS_PER_CALL);
                    if !batch.is_empty() {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            sink.put(&namespace, &batch),
                        )
                        .await;
                    }
                    return;
                }
                let batch = b.take(MAX_DATUMS_PER_CALL);
                if batch.is_empty() {
                    tokio::select! {
                        _ = b.notify.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                match sink.put(&namespace, &batch).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let n = batch.len();
                        let dropped = b.put_back(batch);
                        let wait = backoff(failures);
                        tracing::warn!(error = %e, datapoints = n, dropped, retry_in = ?wait, "publishing to CloudWatch failed");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
        });
        (Publisher { buffer }, task)
    }

    /// Queues datapoints; never waits.
    pub fn publish(&self, datums: Vec<Datum>) {
        self.buffer.push(datums);
    }

    /// Datapoints waiting.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn series(aggregate: bool) -> ServiceSeries {
        ServiceSeries {
            target_group: "api".into(),
            cluster: "prod".into(),
            service: "web".into(),
            replica: "r1".into(),
            storage_resolution: 1,
            aggregate,
        }
    }

    fn ts() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn d(name: &'static str, value: f64, unit: Unit, replica: bool) -> Datum {
        Datum {
            name,
            dimensions: dimensions(&series(true), replica),
            value,
            unit,
            timestamp: ts(),
            storage_resolution: 1,
        }
    }

    #[test]
    fn encodes_alb_names_by_equality() {
        let f = Figures {
            period: 5.0,
            requests: 100.0,
            target_5xx: 3.0,
            elb_5xx: 1.0,
            healthy: 4.0,
            unhealthy: 1.0,
            active_connections: 7.0,
            latency_buckets: vec![],
            latency_sum: 5.0,
            latency_count: 100.0,
            partial: false,
        };
        assert_eq!(
            encode(&f, &series(true), ts()),
            vec![
                d("RequestCount", 100.0, Unit::Count, true),
                d("RequestCountPerTarget", 25.0, Unit::Count, true),
                d("TargetResponseTime", 0.05, Unit::Seconds, true),
                d("HTTPCode_Target_5XX_Count", 3.0, Unit::Count, true),
                d("HTTPCode_ELB_5XX_Count", 1.0, Unit::Count, true),
                d("HealthyHostCount", 4.0, Unit::Count, true),
                d("UnHealthyHostCount", 1.0, Unit::Count, true),
                d("ActiveConnectionCount", 7.0, Unit::Count, true),
                d("RequestCount", 100.0, Unit::Count, false),
                d("HTTPCode_Target_5XX_Count", 3.0, Unit::Count, false),
                d("HTTPCode_ELB_5XX_Count", 1.0, Unit::Count, false),
                d("ActiveConnectionCount", 7.0, Unit::Count, false),
            ]
        );
    }

    #[test]
    fn no_requests_means_no_response_time_and_local_has_no_aggregate_copies() {
        let f = Figures {
            period: 5.0,
            ..Figures::default()
        };
        let out = encode(&f, &series(false), ts());
        assert_eq!(out.len(), 7);
        assert!(out.iter().all(|d| d.name != "TargetResponseTime"));
        assert!(out
            .iter()
            .all(|d| d.dimensions.len() == 4 && d.dimensions[3] == ("Replica", "r1".to_string())));
        assert_eq!(
            out[0].dimensions,
            vec![
                ("TargetGroup", "api".to_string()),
                ("ClusterName", "prod".to_string()),
                ("ServiceName", "web".to_string()),
                ("Replica", "r1".to_string()),
            ]
        );
    }

    #[test]
    fn heartbeats_count_replicas() {
        let h = heartbeat(&series(false), ts());
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|d| d.name == HEARTBEAT && d.value == 1.0));
        assert_eq!(h[0].dimensions.len(), 4, "with Replica");
        assert_eq!(h[1].dimensions, dimensions(&series(false), false));
        assert_eq!(other_replicas(Some(60.0), Some(60.0)), Some(0), "alone");
        assert_eq!(
            other_replicas(Some(170.0), Some(60.0)),
            Some(2),
            "about three"
        );
        assert_eq!(
            other_replicas(Some(80.0), Some(60.0)),
            Some(0),
            "1.33: a late datapoint"
        );
        assert_eq!(other_replicas(None, Some(60.0)), Some(0));
        assert_eq!(
            other_replicas(Some(60.0), None),
            None,
            "own not visible yet"
        );
    }

    #[test]
    fn batches_respect_the_limit() {
        let many: Vec<Datum> = (0..2501)
            .map(|i| d("RequestCount", f64::from(i), Unit::Count, true))
            .collect();
        let b = batches(&many);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 501]
        );
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn buffer_drops_oldest() {
        let b = Buffer::new(3);
        assert_eq!(
            b.push(
                (0..5)
                    .map(|i| d("RequestCount", f64::from(i), Unit::Count, true))
                    .collect()
            ),
            2
        );
        let got: Vec<f64> = b.take(10).iter().map(|d| d.value).collect();
        assert_eq!(got, vec![2.0, 3.0, 4.0]);
        b.push(vec![d("RequestCount", 9.0, Unit::Count, true)]);
        let dropped = b.put_back(
            (5..8)
                .map(|i| d("RequestCount", f64::from(i), Unit::Count, true))
                .collect(),
        );
        assert_eq!(dropped, 1);
        let got: Vec<f64> = b.take(10).iter().map(|d| d.value).collect();
        assert_eq!(got, vec![6.0, 7.0, 9.0]);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        for f in 1..20 {
            let b = backoff(f);
            assert!(b <= Duration::from_secs(30), "{b:?}");
            assert!(b >= Duration::from_millis(100), "{b:?}");
        }
        assert!(backoff(1) <= Duration::from_millis(200));
    }

    #[derive(Debug, Default)]
    struct Flaky {
        fail_first: usize,
        calls: AtomicUsize,
        got: Mutex<Vec<f64>>,
    }

    #[async_trait]
    impl MetricSink for Flaky {
        async fn put(&self, _ns: &str, datums: &[Datum]) -> Result<(), AwsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err(AwsError {
                    operation: "PutMetricData",
                    code: None,
                    message: "down".into(),
                });
            }
            self.got
                .lock()
                .unwrap()
                .extend(datums.iter().map(|d| d.value));
            Ok(())
        }
        async fn sums(
            &self,
            _: &str,
            _: &[SumQuery],
            _: SystemTime,
            _: SystemTime,
        ) -> Result<Vec<Option<f64>>, AwsError> {
            Ok(vec![])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn publisher_retries_with_backoff_and_never_blocks() {
        let sink = Arc::new(Flaky {
            fail_first: 3,
            ..Flaky::default()
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (p, task) = Publisher::spawn(sink.clone(), "ns".into(), 100, rx);
        p.publish(
            (0..5)
                .map(|i| d("RequestCount", f64::from(i), Unit::Count, true))
                .collect(),
        );
        // publish returns at once; time only advances while the task waits on its backoff.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while sink.got.lock().unwrap().len() < 5 {
            assert!(tokio::time::Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*sink.got.lock().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(sink.calls.load(Ordering::SeqCst), 4);
        assert_eq!(p.pending(), 0);
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
