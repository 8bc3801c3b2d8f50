//! The process's ECS client and cluster pollers ([`EcsHub`], one per process, owned by the
//! running state and handed to whatever needs it), and the [`Discovery`] of one target group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use berth_config::model::{EcsSource, TargetSpec};

use super::poller::{lock, ClusterPoller};
use super::resolve::targets_of;
use crate::discovery::ecs_api::{AwsEcs, EcsApi};
use crate::discovery::source::{Discovery, DiscoveryError};

/// The process's ECS client and its cluster pollers (one per cluster, shared by every target
/// group that names it while any does). The client is made from the environment at the first
/// ECS source, so a configuration without one never touches AWS.
#[derive(Debug, Default)]
pub struct EcsHub {
    api: tokio::sync::OnceCell<Arc<dyn EcsApi>>,
    pollers: Mutex<HashMap<String, Weak<ClusterPoller>>>,
}

impl EcsHub {
    /// A hub whose client is made from the environment when first needed.
    pub fn new() -> EcsHub {
        EcsHub::default()
    }

    /// A hub that calls `api` instead of AWS (an emulator, a test double).
    pub fn with_api(api: Arc<dyn EcsApi>) -> EcsHub {
        EcsHub {
            api: tokio::sync::OnceCell::new_with(Some(api)),
            pollers: Mutex::default(),
        }
    }

    async fn api(&self) -> Arc<dyn EcsApi> {
        self.api
            .get_or_init(|| async { Arc::new(AwsEcs::from_env().await) as Arc<dyn EcsApi> })
            .await
            .clone()
    }

    /// The poller of `cluster`, shared while any target group uses it.
    pub async fn poller(&self, cluster: &str) -> Arc<ClusterPoller> {
        if let Some(p) = self.existing(cluster) {
            return p;
        }
        let api = self.api().await;
        let mut map = lock(&self.pollers);
        if let Some(p) = map.get(cluster).and_then(Weak::upgrade) {
            return p;
        }
        let p = Arc::new(ClusterPoller::new(cluster.to_string(), api));
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(cluster.to_string(), Arc::downgrade(&p));
        tokio::spawn(ClusterPoller::run(Arc::downgrade(&p)));
        p
    }

    /// The poller of `cluster` if one is running.
    pub fn existing(&self, cluster: &str) -> Option<Arc<ClusterPoller>> {
        lock(&self.pollers).get(cluster).and_then(Weak::upgrade)
    }
}

/// The [`Discovery`] of a target group with an ECS source. It makes no call of its own: it
/// reads its cluster poller's latest snapshot, and [`Discovery::changed`] wakes its group as
/// soon as the poller has a new one.
#[derive(Debug)]
pub struct EcsDiscovery {
    source: EcsSource,
    hub: Arc<EcsHub>,
    key: u64,
    poller: tokio::sync::OnceCell<Arc<ClusterPoller>>,
    seen: std::sync::atomic::AtomicU64,
}

impl EcsDiscovery {
    /// Discovery for `source`, polled through `hub`.
    pub fn new(source: EcsSource, hub: Arc<EcsHub>) -> EcsDiscovery {
        static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        EcsDiscovery {
            source,
            hub,
            key: KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            poller: tokio::sync::OnceCell::new(),
            seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn poller(&self) -> &Arc<ClusterPoller> {
        self.poller
            .get_or_init(|| async {
                let p = self.hub.poller(&self.source.cluster).await;
                p.want_interval(self.key, self.source.poll_interval);
                p
            })
            .await
    }
}

impl Drop for EcsDiscovery {
    fn drop(&mut self) {
        if let Some(p) = self.poller.get() {
            p.forget_interval(self.key);
        }
    }
}

#[async_trait]
impl Discovery for EcsDiscovery {
    async fn discover(&self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        let poller = self.poller().await;
        self.seen.store(
            *poller.subscribe().borrow(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let snap = poller
            .latest()
            .await
            .map_err(|e| DiscoveryError::Ecs(e.to_string()))?;
        Ok(targets_of(&self.source, &snap)
            .into_iter()
            .map(|t| TargetSpec {
                address: t.address,
                weight: 1,
                zone: t.zone().map(str::to_string),
            })
            .collect())
    }

    async fn changed(&self) {
        let poller = self.poller().await;
        let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed);
        let mut rx = poller.subscribe();
        if rx.wait_for(|n| *n != seen).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn can_look_again(&self) -> bool {
        true
    }

    fn look_again(&self) {
        if let Some(p) = self.poller.get() {
            p.poll_soon();
        }
    }

    fn poll_interval(&self) -> Duration {
        // Snapshots arrive through `changed`; this is only a fallback.
        Duration::from_secs(30)
    }

    fn kind(&self) -> &'static str {
        "ecs"
    }
}
