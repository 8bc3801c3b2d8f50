//! Reading load: the local proxy's `/metrics` (Prometheus text, parsed with `prometheus-parse`)
//! turned into per-target-group [`Figures`] from the difference of two scrapes.
//!
//! Parsing ([`ProxySample::parse`]) and derivation ([`derive()`]) are pure; [`Scraper`] only fetches.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_common::proxy_metric_names as names;
use berth_config::model::ScalingMetric;
use http_body_util::{BodyExt, Empty};

/// A failed scrape.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request failed or timed out.
    #[error("GET {url}: {message}")]
    Fetch {
        /// `[scaler] metrics_url`.
        url: String,
        /// The connection or body error, the invalid URL, or the timeout.
        message: String,
    },
    /// The proxy answered with a non-200 status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// `[scaler] metrics_url`.
        url: String,
        /// The HTTP status code of the answer.
        status: u16,
    },
    /// The text could not be parsed.
    #[error("cannot parse metrics text: {0}")]
    Parse(String),
}

/// Raw cumulative values of one target group in one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSample {
    /// All requests answered for the group (any origin, any class).
    pub requests: f64,
    /// 5xx answers that came from targets.
    pub target_5xx: f64,
    /// 5xx answers the proxy generated.
    pub elb_5xx: f64,
    /// Healthy targets now.
    pub healthy: f64,
    /// Targets in any other state (initial, unhealthy, draining) now.
    pub unhealthy: f64,
    /// Latency histogram: (upper bound, cumulative count), ascending, `+Inf` last.
    pub latency_buckets: Vec<(f64, f64)>,
    /// Sum of latencies (seconds).
    pub latency_sum: f64,
    /// Number of latencies.
    pub latency_count: f64,
}

/// One scrape of the proxy's `/metrics`, reduced to what the scaler uses: cumulative counters
/// and current gauges, summed by target group and by listener.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxySample {
    /// Each target group's values, by its name (answers without a group are left out).
    pub groups: BTreeMap<String, GroupSample>,
    /// Open client connections by listener name.
    pub active_connections: BTreeMap<String, f64>,
}

impl ProxySample {
    /// Parses Prometheus text exposition format.
    pub fn parse(text: &str) -> Result<ProxySample, SourceError> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines)
            .map_err(|e| SourceError::Parse(e.to_string()))?;
        let mut sample = ProxySample::default();
        let sum_name = format!("{}_sum", names::TARGET_RESPONSE_SECONDS);
        let count_name = format!("{}_count", names::TARGET_RESPONSE_SECONDS);
        for s in &scrape.samples {
            let tg = s.labels.get("target_group").unwrap_or("");
            let scalar = match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(*v),
                _ => None,
            };
            let name = s.metric.as_str();
            if name == names::ACTIVE_CONNECTIONS {
                let listener = s.labels.get("listener").unwrap_or("").to_owned();
                *sample.active_connections.entry(listener).or_default() += scalar.unwrap_or(0.0);
                continue;
            }
            if tg.is_empty() {
                continue;
            }
            if name == names::REQUESTS {
                let v = scalar.unwrap_or(0.0);
                let g = sample.groups.entry(tg.to_owned()).or_default();
                g.requests += v;
                if s.labels.get("class") == Some("5xx") {
                    match s.labels.get("origin") {
                        Some("proxy") => g.elb_5xx += v,
                        _ => g.target_5xx += v,
                    }
                }
            } else if name == names::TARGETS {
                let v = scalar.unwrap_or(0.0);
                let g = sample.groups.entry(tg.to_owned()).or_default();
                if s.labels.get("state") == Some("healthy") {
                    g.healthy += v;
                } else {
                    g.unhealthy += v;
                }
            } else if name == names::TARGET_RESPONSE_SECONDS {
                if let prometheus_parse::Value::Histogram(h) = &s.value {
                    let g = sample.groups.entry(tg.to_owned()).or_default();
                    let mut b: Vec<(f64, f64)> = h.iter().map(|c| (c.less_than, c.count)).collect();
                    b.sort_by(|x, y| x.0.total_cmp(&y.0));
                    g.latency_buckets = b;
                }
            } else if name == sum_name {
                sample.groups.entry(tg.to_owned()).or_default().latency_sum = scalar.unwrap_or(0.0);
            } else if name == count_name {
                sample
                    .groups
                    .entry(tg.to_owned())
                    .or_default()
                    .latency_count = scalar.unwrap_or(0.0);
            }
        }
        Ok(sample)
    }
}

/// What one target group did between two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Seconds between the two scrapes.
    pub period: f64,
    /// Requests answered in the period.
    pub requests: f64,
    /// Target 5xx answers in the period.
    pub target_5xx: f64,
    /// Proxy 5xx answers in the period.
    pub elb_5xx: f64,
    /// Healthy targets now.
    pub healthy: f64,
    /// Other targets now.
    pub unhealthy: f64,
    /// Open client connections on the listeners that forward to the group.
    pub active_connections: f64,
    /// Latency bucket counts in the period: (upper bound, cumulative count).
    pub latency_buckets: Vec<(f64, f64)>,
    /// Latency sum in the period (seconds).
    pub latency_sum: f64,
    /// Latencies in the period.
    pub latency_count: f64,
    /// True when request figures are a lower bound of the truth (CloudWatch aggregate
    /// unavailable, only this replica's figures): such figures never scale in.
    pub partial: bool,
}

/// `cur - prev`, or `cur` when the counter went backwards (the proxy restarted).
fn delta(prev: f64, cur: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// The figures of every target group present in `cur`, from two scrapes `elapsed` apart.
/// `listeners_of` maps a target group to the listeners forwarding to it (their active
/// connections are counted for the group). Returns nothing for a zero `elapsed`.
pub fn derive(
    prev: &ProxySample,
    cur: &ProxySample,
    elapsed: Duration,
    listeners_of: &HashMap<String, Vec<String>>,
) -> BTreeMap<String, Figures> {
    let mut out = BTreeMap::new();
    let period = elapsed.as_secs_f64();
    if period <= 0.0 {
        return out;
    }
    let empty = GroupSample::default();
    for (name, c) in &cur.groups {
        let p = prev.groups.get(name).unwrap_or(&empty);
        // Bucket deltas only when both scrapes have the same bounds; otherwise the whole
        // current histogram (first sight or a proxy restart).
        let same_bounds = p.latency_buckets.len() == c.latency_buckets.len()
            && p.latency_buckets
                .iter()
                .zip(&c.latency_buckets)
                .all(|(a, b)| a.0 == b.0);
        let reset = c.latency_count < p.latency_count;
        let latency_buckets = if same_bounds && !reset {
            c.latency_buckets
                .iter()
                .zip(&p.latency_buckets)
                .map(|(cb, pb)| (cb.0, (cb.1 - pb.1).max(0.0)))
                .collect()
        } else {
            c.latency_buckets.clone()
        };
        let active_connections = listeners_of
            .get(name)
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| cur.active_connections.get(l))
                    .sum::<f64>()
            })
            .unwrap_or(0.0);
        out.insert(
            name.clone(),
            Figures {
                period,
                requests: delta(p.requests, c.requests),
                target_5xx: delta(p.target_5xx, c.target_5xx),
                elb_5xx: delta(p.elb_5xx, c.elb_5xx),
                healthy: c.healthy,
                unhealthy: c.unhealthy,
                active_connections,
                latency_buckets,
                latency_sum: if reset {
                    c.latency_sum
                } else {
                    (c.latency_sum - p.latency_sum).max(0.0)
                },
                latency_count: delta(p.latency_count, c.latency_count),
                partial: false,
            },
        );
    }
    out
}

impl Figures {
    /// Requests per second.
    pub fn request_rate(&self) -> f64 {
        if self.period > 0.0 {
            self.requests / self.period
        } else {
            0.0
        }
    }

    /// 5xx answers (target and proxy) per second.
    pub fn error_rate(&self) -> f64 {
        if self.period > 0.0 {
            (self.target_5xx + self.elb_5xx) / self.period
        } else {
            0.0
        }
    }

    /// The `p`th percentile (0..100) of latency in seconds, interpolated linearly within a
    /// bucket as Prometheus' `histogram_quantile` does; `None` without requests.
    pub fn latency_percentile(&self, p: f64) -> Option<f64> {
        let total = self.latency_buckets.last().map(|b| b.1)?;
        if total <= 0.0 {
            return None;
        }
        let rank = (p / 100.0).clamp(0.0, 1.0) * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, cum) in &self.latency_buckets {
            if cum >= rank {
                if le.is_infinite() {
                    // Above the highest finite bound: that bound is all we know.
                    return Some(lower);
                }
                let in_bucket = cum - below;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(lower + (le - lower) * (rank - below) / in_bucket);
            }
            lower = le;
            below = cum;
        }
        Some(lower)
    }

    /// Average latency in seconds (ALB's TargetResponseTime); `None` without requests.
    pub fn average_latency(&self) -> Option<f64> {
        (self.latency_count > 0.0).then(|| self.latency_sum / self.latency_count)
    }

    /// The value of a policy metric; `None` when it cannot be known (no healthy target to
    /// divide by, no requests for a latency).
    pub fn value(&self, metric: ScalingMetric) -> Option<f64> {
        match metric {
            ScalingMetric::RequestRate(per) => Some(self.request_rate() * per.seconds()),
            ScalingMetric::RequestsPerTarget(per) => {
                (self.healthy > 0.0).then(|| self.request_rate() * per.seconds() / self.healthy)
            }
            ScalingMetric::Latency(p) => self.latency_percentile(p),
            ScalingMetric::ErrorRate => Some(self.error_rate()),
            ScalingMetric::ActiveConnectionsPerTarget => {
                (self.healthy > 0.0).then(|| self.active_connections / self.healthy)
            }
            ScalingMetric::HealthyTargets => Some(self.healthy),
        }
    }
}

/// Fetches the proxy's `/metrics` over HTTP/1.1.
#[derive(Clone)]
pub struct Scraper {
    url: String,
    uri: http::Uri,
    timeout: Duration,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<bytes::Bytes>,
    >,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper").field("url", &self.url).finish()
    }
}

impl Scraper {
    /// A scraper of `url` (validated by the config) giving up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Scraper, SourceError> {
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| SourceError::Fetch {
                    url: url.to_owned(),
                    message: e.to_string(),
                })?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Scraper {
            url: url.to_owned(),
            uri,
            timeout,
            client,
        })
    }

    /// GETs the metrics text within the timeout; a non-200 answer is an error.
    pub async fn fetch(&self) -> Result<String, SourceError> {
        let fetch_err = |message: String| SourceError::Fetch {
            url: self.url.clone(),
            message,
        };
        let fut = async {
            let resp = self
                .client
                .get(self.uri.clone())
                .await
                .map_err(|e| fetch_err(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(SourceError::Status {
                    url: self.url.clone(),
                    status: status.as_u16(),
                });
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| fetch_err(e.to_string()))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|e| SourceError::Parse(e.to_string()))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| fetch_err(format!("no answer within {:?}", self.timeout)))?
    }

    /// Fetches and parses one [`ProxySample`].
    pub async fn scrape(&self) -> Result<ProxySample, SourceError> {
        let text = self.fetch().await?;
        ProxySample::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::Per;

    const T1: &str = r#"# HELP berth_requests_total Requests answered.
# TYPE berth_requests_total counter
berth_requests_total{listener="web",target_group="api",class="2xx",origin="target"} 100
berth_requests_total{listener="web",target_group="api",class="5xx",origin="target"} 4
berth_requests_total{listener="web",target_group="api",class="5xx",origin="proxy"} 1
berth_requests_total{listener="web",target_group="",class="2xx",origin="proxy"} 50
# TYPE berth_targets gauge
berth_targets{target_group="api",state="healthy"} 2
berth_targets{target_group="api",state="unhealthy"} 1
berth_targets{target_group="api",state="draining"} 0
# TYPE berth_active_connections gauge
berth_active_connections{listener="web"} 6
berth_active_connections{listener="admin2"} 100
# TYPE berth_target_response_seconds histogram
berth_target_response_seconds_bucket{target_group="api",le="0.1"} 50
berth_target_response_seconds_bucket{target_group="api",le="0.5"} 90
berth_target_response_seconds_bucket{target_group="api",le="1"} 100
berth_target_response_seconds_bucket{target_group="api",le="+Inf"} 104
berth_target_response_seconds_sum{target_group="api"} 20
berth_target_response_seconds_count{target_group="api"} 104
"#;

    const T2: &str = r#"# TYPE berth_requests_total counter
berth_requests_total{listener="web",target_group="api",class="2xx",origin="target"} 700
berth_requests_total{listener="web",target_group="api",class="5xx",origin="target"} 10
berth_requests_total{listener="web",target_group="api",class="5xx",origin="proxy"} 1
# TYPE berth_targets gauge
berth_targets{target_group="api",state="healthy"} 3
berth_targets{target_group="api",state="unhealthy"} 0
# TYPE berth_active_connections gauge
berth_active_connections{listener="web"} 9
# TYPE berth_target_response_seconds histogram
berth_target_response_seconds_bucket{target_group="api",le="0.1"} 350
berth_target_response_seconds_bucket{target_group="api",le="0.5"} 690
berth_target_response_seconds_bucket{target_group="api",le="1"} 700
berth_target_response_seconds_bucket{target_group="api",le="+Inf"} 710
berth_target_response_seconds_sum{target_group="api"} 80
berth_target_response_seconds_count{target_group="api"} 710
"#;

    fn listeners() -> HashMap<String, Vec<String>> {
        HashMap::from([("api".to_owned(), vec!["web".to_owned()])])
    }

    #[test]
    fn parses_the_groups_and_connections() {
        let s = ProxySample::parse(T1).unwrap();
        let g = &s.groups["api"];
        assert_eq!(g.requests, 105.0);
        assert_eq!(g.target_5xx, 4.0);
        assert_eq!(g.elb_5xx, 1.0);
        assert_eq!(g.healthy, 2.0);
        assert_eq!(g.unhealthy, 1.0);
        assert_eq!(g.latency_buckets.len(), 4);
        assert_eq!(g.latency_buckets[3], (f64::INFINITY, 104.0));
        assert_eq!(g.latency_sum, 20.0);
        assert_eq!(g.latency_count, 104.0);
        assert_eq!(s.active_connections["web"], 6.0);
        assert!(
            !s.groups.contains_key(""),
            "proxy answers without a group are not a group"
        );
    }

    #[test]
    fn derives_rates_from_deltas() {
        let a = ProxySample::parse(T1).unwrap();
        let b = ProxySample::parse(T2).unwrap();
        let f = &derive(&a, &b, Duration::from_secs(10), &listeners())["api"];
        assert_eq!(f.requests, 606.0);
        assert_eq!(f.request_rate(), 60.6);
        assert_eq!(f.target_5xx, 6.0);
        assert_eq!(f.elb_5xx, 0.0);
        assert_eq!(f.error_rate(), 0.6);
        assert_eq!(f.healthy, 3.0);
        assert_eq!(f.active_connections, 9.0);
        assert_eq!(f.latency_count, 606.0);
        assert_eq!(f.average_latency(), Some(60.0 / 606.0));
        assert_eq!(
            f.latency_buckets,
            vec![
                (0.1, 300.0),
                (0.5, 600.0),
                (1.0, 600.0),
                (f64::INFINITY, 606.0)
            ]
        );
        // 606 requests per 10 s over 3 healthy targets = 1212 per target per minute.
        let per_min = f
            .value(ScalingMetric::RequestsPerTarget(Per::Minute))
            .unwrap();
        assert!((per_min - 1212.0).abs() < 1e-9);
        let per_s = f
            .value(ScalingMetric::RequestsPerTarget(Per::Second))
            .unwrap();
        assert!((per_s - 20.2).abs() < 1e-9);
        assert_eq!(
            f.value(ScalingMetric::ActiveConnectionsPerTarget),
            Some(3.0)
        );
        assert_eq!(f.value(ScalingMetric::HealthyTargets), Some(3.0));
    }

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let f = Figures {
            latency_buckets: vec![
                (0.1, 300.0),
                (0.5, 600.0),
                (1.0, 600.0),
                (f64::INFINITY, 606.0),
            ],
            ..Figures::default()
        };
        // p50: rank 303 lies in (0.1, 0.5]: 0.1 + 0.4 * 3/300.
        let p50 = f.latency_percentile(50.0).unwrap();
        assert!((p50 - 0.104).abs() < 1e-9, "{p50}");
        // p25: rank 151.5 in the first bucket from 0: 0.1 * 151.5/300.
        let p25 = f.latency_percentile(25.0).unwrap();
        assert!((p25 - 0.0505).abs() < 1e-9, "{p25}");
        // p99.9: in +Inf: the highest finite bound.
        assert_eq!(f.latency_percentile(99.9), Some(1.0));
        assert_eq!(Figures::default().latency_percentile(99.0), None);
        assert_eq!(Figures::default().value(ScalingMetric::Latency(99.0)), None);
    }

    #[test]
    fn counter_reset_counts_the_new_value() {
        let a = ProxySample::parse(T2).unwrap();
        let b = ProxySample::parse(T1).unwrap();
        let f = &derive(&a, &b, Duration::from_secs(5), &listeners())["api"];
        assert_eq!(f.requests, 105.0);
        assert_eq!(f.latency_count, 104.0);
        assert_eq!(f.latency_buckets.last(), Some(&(f64::INFINITY, 104.0)));
    }

    #[test]
    fn no_healthy_target_means_no_per_target_value() {
        let f = Figures {
            period: 5.0,
            requests: 100.0,
            ..Figures::default()
        };
        assert_eq!(f.value(ScalingMetric::RequestsPerTarget(Per::Second)), None);
        assert_eq!(f.value(ScalingMetric::ActiveConnectionsPerTarget), None);
        assert_eq!(
            f.value(ScalingMetric::RequestRate(Per::Minute)),
            Some(1200.0)
        );
    }

    #[test]
    fn zero_elapsed_gives_nothing_and_garbage_is_tolerated() {
        let a = ProxySample::parse(T1).unwrap();
        assert!(derive(&a, &a, Duration::ZERO, &listeners()).is_empty());
        let s = ProxySample::parse(
            "garbage line\n{{{\nberth_targets{target_group=\"x\",state=\"healthy\"} nope\n",
        )
        .unwrap();
        assert!(s.groups.is_empty());
    }
}
