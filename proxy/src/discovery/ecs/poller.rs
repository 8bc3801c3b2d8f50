//! The poll loop of one cluster: lists and describes its tasks for every target group that
//! names it, and keeps the last good snapshot when a call fails.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use berth_common::aws_error::AwsError;

use super::resolve::{cluster_name, ClusterSnapshot, KnownTask};
use crate::discovery::ecs_api::{EcsApi, TaskDefinition};
use crate::metrics as m;

/// Largest batch `DescribeTasks` / `DescribeContainerInstances` accept.
const BATCH: usize = 100;
/// Known, eligible tasks without a container health check are re-described this often (a
/// safety net: what can change about them also takes them out of `ListTasks`).
const REDESCRIBE_ALL: Duration = Duration::from_secs(60);

/// Polls one cluster for every target group that names it.
#[derive(Debug)]
pub struct ClusterPoller {
    cluster: String,
    api: Arc<dyn EcsApi>,
    /// Held for a whole poll: one at a time.
    state: tokio::sync::Mutex<PollState>,
    snapshot: arc_swap::ArcSwapOption<ClusterSnapshot>,
    /// The last poll's error, if it failed (read without waiting for a poll in progress).
    last_error: Mutex<Option<AwsError>>,
    /// Counts finished poll attempts; target groups wait on it for the next snapshot.
    attempts: tokio::sync::watch::Sender<u64>,
    /// The poll interval each target group asks for, by a key of the group's discovery.
    intervals: Mutex<HashMap<u64, Duration>>,
    /// Asks [`ClusterPoller::run`] to poll now (at most every `MIN_KICK_SPACING`).
    kick: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct PollState {
    last_full: Option<Instant>,
}

/// Poll interval of a poller no target group has asked anything of yet.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Polls asked for ahead of schedule start at least this far apart (an API call budget:
/// targets refusing every connect ask on every request).
const MIN_KICK_SPACING: Duration = Duration::from_millis(200);

impl ClusterPoller {
    /// A poller for `cluster` using `api`. It polls when [`ClusterPoller::refresh`] is called;
    /// [`ClusterPoller::run`] calls it at the interval its users ask for.
    pub fn new(cluster: String, api: Arc<dyn EcsApi>) -> ClusterPoller {
        ClusterPoller {
            cluster,
            api,
            state: tokio::sync::Mutex::new(PollState::default()),
            snapshot: arc_swap::ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            attempts: tokio::sync::watch::channel(0).0,
            intervals: Mutex::new(HashMap::new()),
            kick: tokio::sync::Notify::new(),
        }
    }

    /// Polls `poller` every interval (the shortest its users ask for) until nothing holds it,
    /// and ahead of schedule when a user asks (`Discovery::look_again`), no sooner than
    /// `MIN_KICK_SPACING` after the last poll began. Ticks are fixed-rate: a slow call does
    /// not push later polls back.
    pub async fn run(poller: Weak<ClusterPoller>) {
        let mut next = tokio::time::Instant::now();
        loop {
            let started = tokio::time::Instant::now();
            let Some(p) = poller.upgrade() else { return };
            let _ = p.refresh().await;
            let interval = p.interval();
            next += interval;
            let now = tokio::time::Instant::now();
            if next < now {
                next = now;
            }
            let kicked = async {
                p.kick.notified().await;
                tokio::time::sleep_until(started + MIN_KICK_SPACING).await;
            };
            // `p` is held for one wait at most: a poller nobody uses ends at the next tick.
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = kicked => next = tokio::time::Instant::now(),
            }
            drop(p);
        }
    }

    /// The interval this poller polls at: the shortest its users ask for.
    pub fn interval(&self) -> Duration {
        lock(&self.intervals)
            .values()
            .min()
            .copied()
            .unwrap_or(DEFAULT_INTERVAL)
    }

    /// Asks for a poll ahead of schedule (no sooner than `MIN_KICK_SPACING` after the last
    /// one began).
    pub fn poll_soon(&self) {
        self.kick.notify_one();
    }

    /// The last good snapshot, if any poll succeeded.
    pub fn last_snapshot(&self) -> Option<Arc<ClusterSnapshot>> {
        self.snapshot.load_full()
    }

    /// Records the interval the user `key` asks for.
    pub(super) fn want_interval(&self, key: u64, interval: Duration) {
        let before = self.interval();
        lock(&self.intervals).insert(key, interval);
        if interval < before {
            // The loop may be asleep for the old, longer interval.
            self.kick.notify_one();
        }
    }

    /// Forgets the interval of the user `key` (it stopped using this poller).
    pub(super) fn forget_interval(&self, key: u64) {
        lock(&self.intervals).remove(&key);
    }

    /// Polls now and returns the latest snapshot (the last good one when this poll failed).
    /// Errors only when no poll ever succeeded.
    pub async fn refresh(&self) -> Result<Arc<ClusterSnapshot>, AwsError> {
        let mut st = self.state.lock().await;
        let full = st.last_full.is_none_or(|t| t.elapsed() >= REDESCRIBE_ALL);
        match self.poll(full).await {
            Ok(snap) => {
                publish_task_states(&self.cluster, &snap);
                self.snapshot.store(Some(Arc::new(snap)));
                *lock(&self.last_error) = None;
                if full {
                    st.last_full = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "ECS poll failed; keeping the last good tasks");
                *lock(&self.last_error) = Some(e);
            }
        }
        drop(st);
        self.attempts.send_modify(|n| *n += 1);
        self.latest_now()
    }

    /// The latest snapshot; waits for the first poll to finish when none has yet (never for a
    /// poll in progress once one has).
    pub async fn latest(&self) -> Result<Arc<ClusterSnapshot>, AwsError> {
        let mut rx = self.attempts.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
        self.latest_now()
    }

    fn latest_now(&self) -> Result<Arc<ClusterSnapshot>, AwsError> {
        match (self.snapshot.load_full(), lock(&self.last_error).as_ref()) {
            (Some(s), _) => Ok(s),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(AwsError {
                operation: "ListTasks",
                code: None,
                message: "no poll completed yet".into(),
            }),
        }
    }

    /// A receiver that changes after every poll attempt.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// One poll cycle; builds a whole new snapshot or fails as a whole.
    async fn poll(&self, redescribe_all: bool) -> Result<ClusterSnapshot, AwsError> {
        let prev = self.snapshot.load_full();
        let empty = ClusterSnapshot::default();
        let prev = prev.as_deref().unwrap_or(&empty);
        let arns = self.api.list_running_tasks(&self.cluster).await?;
        let listed: HashSet<&String> = arns.iter().collect();
        let mut tasks: HashMap<String, KnownTask> = HashMap::new();
        let mut to_describe: Vec<String> = Vec::new();
        for arn in &arns {
            match prev.tasks.get(arn) {
                Some(kt)
                    if !describe_again(
                        kt,
                        prev.task_definitions.get(&kt.task.task_definition_arn),
                        redescribe_all,
                    ) =>
                {
                    tasks.insert(arn.clone(), kt.clone());
                }
                _ => to_describe.push(arn.clone()),
            }
        }
        for chunk in to_describe.chunks(BATCH) {
            for t in self.api.describe_tasks(&self.cluster, chunk).await? {
                if listed.contains(&t.arn) {
                    let instance_ip = prev.tasks.get(&t.arn).and_then(|k| k.instance_ip);
                    tasks.insert(
                        t.arn.clone(),
                        KnownTask {
                            task: t,
                            instance_ip,
                        },
                    );
                }
            }
        }
        // Task definitions: cached by ARN; revisions never change.
        let mut task_definitions: HashMap<String, TaskDefinition> = HashMap::new();
        for kt in tasks.values() {
            let arn = &kt.task.task_definition_arn;
            if task_definitions.contains_key(arn) {
                continue;
            }
            let td = match prev.task_definitions.get(arn) {
                Some(td) => td.clone(),
                None => self.api.describe_task_definition(arn).await?,
            };
            task_definitions.insert(arn.clone(), td);
        }
        // Container instance IPs for tasks without an ENI (EC2 bridge/host mode).
        let need: Vec<String> = tasks
            .values()
            .filter(|k| k.task.eni_private_ip.is_none() && k.instance_ip.is_none())
            .filter_map(|k| k.task.container_instance_arn.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !need.is_empty() {
            let mut instance_of: HashMap<String, String> = HashMap::new();
            for chunk in need.chunks(BATCH) {
                instance_of.extend(
                    self.api
                        .describe_container_instances(&self.cluster, chunk)
                        .await?,
                );
            }
            let ids: Vec<String> = instance_of
                .values()
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut ips = HashMap::new();
            for chunk in ids.chunks(BATCH) {
                ips.extend(self.api.describe_instances(chunk).await?);
            }
            for kt in tasks.values_mut() {
                if let Some(ci) = &kt.task.container_instance_arn {
                    if let Some(ip) = instance_of.get(ci).and_then(|id| ips.get(id)) {
                        kt.instance_ip = Some(*ip);
                    }
                }
            }
        }
        Ok(ClusterSnapshot {
            tasks,
            task_definitions,
            taken_at: Some(Instant::now()),
        })
    }
}

/// Whether a task already known from the last poll is described again this cycle: when it is
/// not yet eligible (starting, or its health check not yet passing), when a container of its
/// task definition has a health check (ECS may report it UNHEALTHY, which `ListTasks` does
/// not show), and on a full re-describe. A task without a health check that is running needs
/// no call: being stopped takes it out of `ListTasks`.
pub fn describe_again(kt: &KnownTask, td: Option<&TaskDefinition>, full: bool) -> bool {
    let Some(td) = td else { return true };
    if full || kt.task.last_status != "RUNNING" || kt.task.desired_status != "RUNNING" {
        return true;
    }
    td.containers.iter().any(|c| c.has_health_check)
}

/// Locks `m`, taking the data of a poisoned lock (a panicked holder left it whole).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn publish_task_states(cluster: &str, snap: &ClusterSnapshot) {
    let mut by_state: HashMap<&str, u32> = HashMap::new();
    for s in [
        "PROVISIONING",
        "PENDING",
        "ACTIVATING",
        "RUNNING",
        "DEACTIVATING",
        "STOPPING",
    ] {
        by_state.insert(s, 0);
    }
    for kt in snap.tasks.values() {
        *by_state.entry(kt.task.last_status.as_str()).or_default() += 1;
    }
    for (state, n) in by_state {
        metrics::gauge!(m::ECS_TASKS, "cluster" => cluster_name(cluster).to_string(), "state" => state.to_string())
            .set(f64::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ecs::fixtures::{kt, src, task, td};
    use crate::discovery::ecs::resolve::targets_of;
    use crate::discovery::ecs_api::Task;
    use async_trait::async_trait;
    use berth_config::model::PortRef;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake API that counts calls and can fail.
    #[derive(Debug, Default)]
    struct Fake {
        tasks: Mutex<Vec<Task>>,
        fail: Mutex<bool>,
        health_check: bool,
        list_calls: AtomicU32,
        describe_calls: AtomicU32,
        td_calls: AtomicU32,
    }

    #[async_trait]
    impl EcsApi for Fake {
        async fn list_running_tasks(&self, _c: &str) -> Result<Vec<String>, AwsError> {
            self.list_calls.fetch_add(1, Ordering::SeqCst);
            if *self.fail.lock().unwrap() {
                return Err(AwsError {
                    operation: "ListTasks",
                    code: Some("ThrottlingException".into()),
                    message: "Rate exceeded".into(),
                });
            }
            Ok(self
                .tasks
                .lock()
                .unwrap()
                .iter()
                .map(|t| t.arn.clone())
                .collect())
        }
        async fn describe_tasks(&self, _c: &str, arns: &[String]) -> Result<Vec<Task>, AwsError> {
            self.describe_calls.fetch_add(1, Ordering::SeqCst);
            assert!(arns.len() <= BATCH);
            Ok(self
                .tasks
                .lock()
                .unwrap()
                .iter()
                .filter(|t| arns.contains(&t.arn))
                .cloned()
                .collect())
        }
        async fn describe_task_definition(&self, _arn: &str) -> Result<TaskDefinition, AwsError> {
            self.td_calls.fetch_add(1, Ordering::SeqCst);
            Ok(td("awsvpc", self.health_check))
        }
        async fn describe_container_instances(
            &self,
            _c: &str,
            _arns: &[String],
        ) -> Result<HashMap<String, String>, AwsError> {
            Ok(HashMap::new())
        }
        async fn describe_instances(
            &self,
            _ids: &[String],
        ) -> Result<HashMap<String, IpAddr>, AwsError> {
            Ok(HashMap::new())
        }
    }

    #[tokio::test]
    async fn describes_only_new_tasks_caches_definitions_and_keeps_last_good_on_failure() {
        let fake = Arc::new(Fake::default());
        *fake.tasks.lock().unwrap() = (0..150)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    "awsvpc",
                    Some(&format!("127.0.{}.{}", i / 200, i % 200 + 2)),
                    "HEALTHY",
                )
            })
            .collect();
        let p = ClusterPoller::new("prod".into(), fake.clone());
        let s = p.refresh().await.unwrap();
        assert_eq!(targets_of(&src(PortRef::Number(8080)), &s).len(), 150);
        assert_eq!(
            fake.describe_calls.load(Ordering::SeqCst),
            2,
            "150 tasks in batches of 100"
        );
        assert_eq!(
            fake.td_calls.load(Ordering::SeqCst),
            1,
            "one task definition, described once"
        );
        // Second cycle: nothing new, nothing described.
        p.refresh().await.unwrap();
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 2);
        assert_eq!(fake.td_calls.load(Ordering::SeqCst), 1);
        // Failure keeps the last good snapshot.
        *fake.fail.lock().unwrap() = true;
        let s = p.refresh().await.unwrap();
        assert_eq!(s.tasks.len(), 150);
    }

    #[tokio::test]
    async fn health_checked_tasks_are_redescribed_every_cycle_and_leave_when_unhealthy() {
        let fake = Arc::new(Fake {
            health_check: true,
            ..Fake::default()
        });
        *fake.tasks.lock().unwrap() = vec![
            task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY"),
            task("t2", "awsvpc", Some("127.0.0.3"), "HEALTHY"),
        ];
        let p = ClusterPoller::new("prod".into(), fake.clone());
        let s = p.refresh().await.unwrap();
        assert_eq!(targets_of(&src(PortRef::Number(8080)), &s).len(), 2);
        let before = fake.describe_calls.load(Ordering::SeqCst);
        fake.tasks.lock().unwrap()[1].containers[0].health_status = Some("UNHEALTHY".into());
        let s = p.refresh().await.unwrap();
        assert_eq!(
            fake.describe_calls.load(Ordering::SeqCst),
            before + 1,
            "one DescribeTasks for the two health-checked tasks"
        );
        let left: Vec<_> = targets_of(&src(PortRef::Number(8080)), &s)
            .into_iter()
            .map(|t| t.address.to_string())
            .collect();
        assert_eq!(
            left,
            ["127.0.0.2:8080"],
            "the UNHEALTHY task left at the next poll"
        );
    }

    #[test]
    fn what_is_described_again() {
        let plain = td("awsvpc", false);
        let checked = td("awsvpc", true);
        let running = kt(task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY"), None);
        assert!(
            !describe_again(&running, Some(&plain), false),
            "running, no health check"
        );
        assert!(
            describe_again(&running, Some(&plain), true),
            "full re-describe"
        );
        assert!(
            describe_again(&running, Some(&checked), false),
            "may turn UNHEALTHY"
        );
        assert!(
            describe_again(&running, None, false),
            "task definition unknown"
        );
        let mut starting = running.clone();
        starting.task.last_status = "PENDING".into();
        assert!(
            describe_again(&starting, Some(&plain), false),
            "not yet running"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_kick_polls_ahead_of_schedule_but_not_sooner_than_the_spacing() {
        let fake = Arc::new(Fake::default());
        let p = Arc::new(ClusterPoller::new("prod".into(), fake.clone()));
        p.want_interval(1, Duration::from_secs(10));
        let mut rx = p.subscribe();
        tokio::spawn(ClusterPoller::run(Arc::downgrade(&p)));
        rx.changed().await.unwrap();
        let first = tokio::time::Instant::now();
        p.kick.notify_one();
        rx.changed().await.unwrap();
        let waited = first.elapsed();
        assert_eq!(fake.list_calls.load(Ordering::SeqCst), 2, "the kick polled");
        assert!(
            waited >= MIN_KICK_SPACING && waited < Duration::from_secs(1),
            "kicked poll after {waited:?}, not the 10 s interval, and not before the spacing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_loop_runs_at_the_shortest_interval_asked_and_stops_when_unused() {
        let fake = Arc::new(Fake::default());
        let p = Arc::new(ClusterPoller::new("prod".into(), fake.clone()));
        p.want_interval(1, Duration::from_secs(2));
        p.want_interval(2, Duration::from_millis(500));
        assert_eq!(p.interval(), Duration::from_millis(500));
        let mut rx = p.subscribe();
        let run = tokio::spawn(ClusterPoller::run(Arc::downgrade(&p)));
        for _ in 0..4 {
            rx.changed().await.unwrap();
        }
        let polls = fake.list_calls.load(Ordering::SeqCst);
        assert_eq!(polls, 4, "4 polls");
        p.forget_interval(2);
        assert_eq!(p.interval(), Duration::from_secs(2));
        drop(p);
        drop(rx);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(run.is_finished(), "the loop ends with the last user");
    }

    #[tokio::test]
    async fn first_poll_failure_is_an_error_not_an_empty_group() {
        let fake = Arc::new(Fake::default());
        *fake.fail.lock().unwrap() = true;
        let p = ClusterPoller::new("prod".into(), fake);
        assert!(p.refresh().await.is_err());
    }

    #[tokio::test]
    async fn unhealthy_known_task_is_redescribed_until_healthy() {
        let fake = Arc::new(Fake {
            health_check: true,
            ..Fake::default()
        });
        *fake.tasks.lock().unwrap() = vec![task("t1", "awsvpc", Some("127.0.0.2"), "UNKNOWN")];
        let p = ClusterPoller::new("prod".into(), fake.clone());
        p.refresh().await.unwrap();
        let s = p.refresh().await.unwrap();
        assert!(targets_of(&src(PortRef::Number(8080)), &s).is_empty());
        fake.tasks.lock().unwrap()[0].containers[0].health_status = Some("HEALTHY".into());
        let s = p.refresh().await.unwrap();
        assert_eq!(
            s.tasks["t1"].task.containers[0].health_status.as_deref(),
            Some("HEALTHY")
        );
        assert_eq!(targets_of(&src(PortRef::Number(8080)), &s).len(), 1);
    }
}
