//! The tick loop: scrape, derive, publish, (aggregate), decide, act, log, count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_config::model::{Action, Aggregate, Config, ScaledService, ScalerSettings};
use chrono::{DateTime, Utc};

use crate::capacity::CapacityController;
use crate::metrics as m;
use crate::policy::{self, Decision, Direction, Inputs, State};
use crate::sink::{self, MetricSink, Publisher, SumQuery};
use crate::source::{derive, Figures, ProxySample, Scraper, SourceError};

/// Time allowed for the GetMetricData read-back before local figures are used.
pub const AGGREGATE_TIMEOUT: Duration = Duration::from_secs(3);

/// The last decision time of each (cluster, service), for `berth_scaler_last_decision_age_seconds`.
pub type LastDecisions = Arc<Mutex<HashMap<(String, String), Instant>>>;

/// How a service's counts are read and set: real ECS, or a simulation for `dry_run_count`.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Where counts come from and go to.
    pub capacity: Arc<dyn CapacityController>,
    /// Whether `set_desired` may be called (false for a dry run against real ECS).
    pub may_update: bool,
}

/// One service's outcome of one tick.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The ECS cluster of the service.
    pub cluster: String,
    /// The ECS service name.
    pub service: String,
    /// The decision, when the service's counts could be read.
    pub decision: Option<Decision>,
    /// Whether a new desired count was set.
    pub updated: bool,
}

struct ServiceRun {
    cfg: ScaledService,
    state: State,
    controller: Controller,
}

/// The scaler's state across ticks.
pub struct Runner {
    settings: ScalerSettings,
    listeners_of: HashMap<String, Vec<String>>,
    scraper: Scraper,
    services: Vec<ServiceRun>,
    sink: Option<Arc<dyn MetricSink>>,
    publisher: Option<Publisher>,
    prev: Option<(Instant, ProxySample)>,
    last: LastDecisions,
    /// When each service's replicas were last counted (`aggregate = "local"` with a sink).
    replicas_checked: HashMap<usize, Instant>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("services", &self.services.len())
            .finish()
    }
}

/// The listeners whose rules or default action forward to each target group.
pub fn listeners_of(config: &Config) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for l in &config.listeners {
        let actions = l
            .rules
            .iter()
            .map(|r| &r.action)
            .chain(std::iter::once(&l.default_action));
        for a in actions {
            if let Action::Forward(groups) = a {
                for g in groups {
                    let v = out.entry(g.target_group.clone()).or_default();
                    if !v.contains(&l.name) {
                        v.push(l.name.clone());
                    }
                }
            }
        }
    }
    out
}

impl Runner {
    /// A runner for `config`'s scaler. `controllers` has one entry per service (in order);
    /// `sink` reads aggregates (with `aggregate = "cloudwatch"`) or counts the replicas (with
    /// `aggregate = "local"` and a `publisher`); `publisher` sends figures.
    pub fn new(
        config: &Config,
        controllers: Vec<Controller>,
        sink: Option<Arc<dyn MetricSink>>,
        publisher: Option<Publisher>,
        started: DateTime<Utc>,
        last: LastDecisions,
    ) -> Result<Runner, SourceError> {
        let s = &config.scaler;
        let timeout = s
            .interval
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(500));
        let scraper = Scraper::new(&s.metrics_url, timeout)?;
        let services = s
            .services
            .iter()
            .cloned()
            .zip(controllers)
            .map(|(cfg, controller)| ServiceRun {
                state: State::new(&cfg, started),
                cfg,
                controller,
            })
            .collect();
        Ok(Runner {
            settings: s.clone(),
            listeners_of: listeners_of(config),
            scraper,
            services,
            sink,
            publisher,
            prev: None,
            last,
            replicas_checked: HashMap::new(),
        })
    }

    /// Who `svc`'s datapoints are about, published by this replica; `aggregate`: with the
    /// copies without `Replica` that CloudWatch sums across replicas.
    fn series(&self, svc: &ScaledService, aggregate: bool) -> sink::ServiceSeries {
        sink::ServiceSeries {
            target_group: svc.target_group.clone(),
            cluster: svc.cluster.clone(),
            service: svc.service.clone(),
            replica: self.settings.replica.clone(),
            storage_resolution: self.settings.storage_resolution,
            aggregate,
        }
    }

    /// With `aggregate = "local"`: counts the replicas publishing heartbeats for `svc` (once
    /// per `aggregate_window`); other replicas mean each scaler decides on its share of the load
    /// only, which is logged as a warning and shown as `berth_scaler_other_replicas`.
    async fn check_replicas(&mut self, i: usize, svc: &ScaledService, at: SystemTime) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let window = self.settings.aggregate_window;
        if self
            .replicas_checked
            .get(&i)
            .is_some_and(|t| t.elapsed() < window)
        {
            return;
        }
        self.replicas_checked.insert(i, Instant::now());
        let series = self.series(svc, false);
        let queries = [false, true].map(|with_replica| SumQuery {
            name: sink::HEARTBEAT,
            dimensions: sink::dimensions(&series, with_replica),
        });
        let start = at.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let r = tokio::time::timeout(
            AGGREGATE_TIMEOUT,
            sink.sums(&self.settings.namespace, &queries, start, at),
        )
        .await;
        let others = match r {
            Ok(Ok(s)) => {
                sink::other_replicas(s.first().copied().flatten(), s.get(1).copied().flatten())
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %svc.service, error = %e, "cannot count replicas");
                None
            }
            Err(_) => None,
        };
        if let Some(n) = others {
            metrics::gauge!(m::OTHER_REPLICAS, "cluster" => svc.cluster.clone(), "service" => svc.service.clone())
                .set(f64::from(n));
            if n > 0 {
                tracing::warn!(cluster = %svc.cluster, service = %svc.service, other_replicas = n,
                    "other scaler replicas publish for this service but aggregate = \"local\": each \
                     decides on its own share of the load; set aggregate = \"cloudwatch\"");
            }
        }
    }

    /// Scrapes once; figures per target group when a previous scrape exists.
    async fn read(&mut self) -> Option<std::collections::BTreeMap<String, Figures>> {
        match self.scraper.scrape().await {
            Ok(snap) => {
                let now = Instant::now();
                let figs = self.prev.as_ref().map(|(at, prev)| {
                    derive(prev, &snap, now.duration_since(*at), &self.listeners_of)
                });
                self.prev = Some((now, snap));
                figs
            }
            Err(e) => {
                metrics::counter!(m::SCRAPE_ERRORS).increment(1);
                tracing::warn!(error = %e, "scrape failed: no data this tick (holds, never scales in)");
                // Keep the previous snapshot: the next delta spans the gap.
                None
            }
        }
    }

    /// Replaces the additive figures with the sums across replicas; marks them partial when
    /// CloudWatch cannot answer.
    async fn aggregate(&self, svc: &ScaledService, f: &mut Figures, at: SystemTime) {
        let Some(sink) = &self.sink else {
            return;
        };
        let series = self.series(svc, true);
        let queries: Vec<SumQuery> = sink::ADDITIVE
            .iter()
            .map(|name| SumQuery {
                name,
                dimensions: sink::dimensions(&series, false),
            })
            .collect();
        let window = self.settings.aggregate_window;
        let start = at.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let r = tokio::time::timeout(
            AGGREGATE_TIMEOUT,
            sink.sums(
                &self.settings.namespace,
                &queries,
                start,
                at + Duration::from_secs(1),
            ),
        )
        .await;
        match r {
            Ok(Ok(sums)) if sums.first().is_some_and(Option::is_some) => {
                let w = window.as_secs_f64();
                let scale = f.period / w;
                let ticks = (w / self.settings.interval.as_secs_f64()).max(1.0);
                let get = |i: usize| sums.get(i).copied().flatten().unwrap_or(0.0);
                // Counts over the window, brought to this tick's period.
                f.requests = f.requests.max(get(0) * scale);
                f.target_5xx = f.target_5xx.max(get(1) * scale);
                f.elb_5xx = f.elb_5xx.max(get(2) * scale);
                // A gauge published every tick: its sum over the window divided by the ticks.
                f.active_connections = f.active_connections.max(get(3) / ticks);
            }
            Ok(Ok(_)) => {
                f.partial = true;
                tracing::debug!(service = %svc.service, "no aggregate datapoints yet: local figures, no scale-in");
            }
            Ok(Err(e)) => {
                f.partial = true;
                tracing::warn!(service = %svc.service, error = %e, "aggregate unavailable: local figures, no scale-in");
            }
            Err(_) => {
                f.partial = true;
                tracing::warn!(service = %svc.service, "aggregate timed out: local figures, no scale-in");
            }
        }
    }

    /// One tick at wall-clock `now`.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Vec<Outcome> {
        let figures = self.read().await;
        let wall = SystemTime::from(now);
        let mut outcomes = Vec::new();
        for i in 0..self.services.len() {
            let (cfg, controller) = {
                let s = &self.services[i];
                (s.cfg.clone(), s.controller.clone())
            };
            let mut fig = figures
                .as_ref()
                .and_then(|f| f.get(&cfg.target_group).cloned());
            if let (Some(p), Some(f)) = (&self.publisher, &fig) {
                let series = self.series(&cfg, self.settings.aggregate == Aggregate::CloudWatch);
                let mut datums = sink::encode(f, &series, wall);
                datums.extend(sink::heartbeat(&series, wall));
                p.publish(datums);
            }
            if self.settings.aggregate == Aggregate::CloudWatch {
                if let Some(f) = fig.as_mut() {
                    self.aggregate(&cfg, f, wall).await;
                }
            } else if self.publisher.is_some() {
                self.check_replicas(i, &cfg, wall).await;
            }
            let counts = match controller
                .capacity
                .describe(&cfg.cluster, &cfg.service)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(cluster = %cfg.cluster, service = %cfg.service, error = %e,
                        "cannot read the service's counts: no decision this tick");
                    outcomes.push(Outcome {
                        cluster: cfg.cluster,
                        service: cfg.service,
                        decision: None,
                        updated: false,
                    });
                    continue;
                }
            };
            let inputs = Inputs {
                figures: fig,
                current: counts.desired,
                running: counts.running,
                pending: counts.pending,
            };
            let decision = policy::decide(now, &cfg, &inputs, &self.services[i].state);
            let mut updated = false;
            let mut applied = false;
            if decision.desired != counts.desired {
                if controller.may_update {
                    match controller
                        .capacity
                        .set_desired(&cfg.cluster, &cfg.service, decision.desired)
                        .await
                    {
                        Ok(()) => {
                            updated = true;
                            applied = true;
                        }
                        Err(e) => tracing::warn!(cluster = %cfg.cluster, service = %cfg.service,
                            desired = decision.desired, error = %e,
                            "UpdateService failed: desired count unchanged, retried next tick"),
                    }
                } else {
                    tracing::info!(cluster = %cfg.cluster, service = %cfg.service, desired = decision.desired,
                        "dry run: UpdateService not called");
                }
            }
            self.services[i].state.record(now, &cfg, &decision, applied);
            log_decision(&cfg, &inputs, &decision, self.settings.dry_run);
            record_metrics(&cfg, &inputs, &decision);
            if let Ok(mut last) = self.last.lock() {
                last.insert((cfg.cluster.clone(), cfg.service.clone()), Instant::now());
            }
            outcomes.push(Outcome {
                cluster: cfg.cluster,
                service: cfg.service,
                decision: Some(decision),
                updated,
            });
        }
        outcomes
    }

    /// Ticks every `interval` until `shutdown` becomes true.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.settings.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            self.tick(Utc::now()).await;
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn log_decision(cfg: &ScaledService, inputs: &Inputs, d: &Decision, dry_run: bool) {
    let f = inputs.figures.as_ref();
    let votes: Vec<String> = d
        .votes
        .iter()
        .map(|v| {
            format!(
                "{}={}",
                v.policy,
                v.desired.map_or("-".to_owned(), |d| d.to_string())
            )
        })
        .collect();
    let figures = match f {
        None => "no data".to_owned(),
        Some(f) => format!(
            "rate={:.2}/s healthy={} per_target={}/s p99={}s 5xx={:.2}/s conns={}{}",
            f.request_rate(),
            f.healthy,
            fmt_opt((f.healthy > 0.0).then(|| f.request_rate() / f.healthy)),
            fmt_opt(f.latency_percentile(99.0)),
            f.error_rate(),
            f.active_connections,
            if f.partial { " (partial)" } else { "" }
        ),
    };
    let line = format!(
        "{}/{}: {} {} → {} [{}..{}] by {}: {} | inputs: {figures}, running={} pending={} | votes: {}",
        cfg.cluster,
        cfg.service,
        d.direction.as_str(),
        d.current,
        d.desired,
        d.min,
        d.max,
        d.policy,
        d.reason,
        inputs.running,
        inputs.pending,
        votes.join(" ")
    );
    if d.direction == Direction::None {
        tracing::debug!(dry_run, "{line}");
    } else {
        tracing::info!(dry_run, "{line}");
    }
}

fn record_metrics(cfg: &ScaledService, inputs: &Inputs, d: &Decision) {
    let labels = [
        ("cluster", cfg.cluster.clone()),
        ("service", cfg.service.clone()),
    ];
    metrics::gauge!(m::DESIRED_COUNT, &labels).set(f64::from(d.desired));
    metrics::gauge!(m::RUNNING_COUNT, &labels).set(f64::from(inputs.running));
    metrics::gauge!(m::MIN_CAPACITY, &labels).set(f64::from(d.min));
    metrics::gauge!(m::MAX_CAPACITY, &labels).set(f64::from(d.max));
    metrics::counter!(
        m::DECISIONS,
        "cluster" => cfg.cluster.clone(),
        "service" => cfg.service.clone(),
        "policy" => d.policy.clone(),
        "direction" => d.direction.as_str()
    )
    .increment(1);
}
