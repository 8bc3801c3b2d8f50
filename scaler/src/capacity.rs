//! Acting on ECS: [`CapacityController`] reads a service's counts and sets its desired count.
//! The AWS implementation is in [`crate::aws`]; [`SimulatedCapacity`] serves dry runs without
//! AWS (`dry_run_count`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// A failed ECS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct CapacityError {
    /// `DescribeServices` or `UpdateService`.
    pub operation: &'static str,
    /// AWS error code, if any.
    pub code: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl CapacityError {
    /// Whether AWS throttled the call.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "RequestLimitExceeded"
                    | "TooManyRequestsException"
            )
        )
    }
}

/// A service's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Desired count.
    pub desired: u32,
    /// Running tasks.
    pub running: u32,
    /// Pending tasks.
    pub pending: u32,
}

/// The ECS calls the scaler makes.
#[async_trait]
pub trait CapacityController: Send + Sync + std::fmt::Debug {
    /// DescribeServices for one service.
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, CapacityError>;
    /// UpdateService with a new desired count (and nothing else).
    async fn set_desired(
        &self,
        cluster: &str,
        service: &str,
        desired: u32,
    ) -> Result<(), CapacityError>;
}

/// A dry run without AWS: each service starts at its `dry_run_count` and follows the counts
/// set; running equals desired.
#[derive(Debug, Default)]
pub struct SimulatedCapacity {
    counts: Mutex<HashMap<(String, String), u32>>,
}

impl SimulatedCapacity {
    /// With the given starting counts by (cluster, service).
    pub fn new(initial: impl IntoIterator<Item = ((String, String), u32)>) -> SimulatedCapacity {
        SimulatedCapacity {
            counts: Mutex::new(initial.into_iter().collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CapacityController for SimulatedCapacity {
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, CapacityError> {
        match self.lock().get(&(cluster.to_owned(), service.to_owned())) {
            Some(&n) => Ok(ServiceCounts {
                desired: n,
                running: n,
                pending: 0,
            }),
            None => Err(CapacityError {
                operation: "DescribeServices",
                code: Some("ServiceNotFoundException".into()),
                message: format!("no simulated service {service} in {cluster}"),
            }),
        }
    }

    async fn set_desired(
        &self,
        cluster: &str,
        service: &str,
        desired: u32,
    ) -> Result<(), CapacityError> {
        self.lock()
            .insert((cluster.to_owned(), service.to_owned()), desired);
        Ok(())
    }
}
