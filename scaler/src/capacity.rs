//! Acting on ECS: [`CapacityController`] reads a service's counts and sets its desired count.
//! The AWS implementation is [`crate::aws::EcsCapacity`]; [`SimulatedCapacity`] serves dry
//! runs without AWS (`dry_run_count`). Both fail with an [`AwsError`].

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use berth_common::aws_error::AwsError;

/// A service's task counts as DescribeServices reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounts {
    /// The count ECS works towards (the last UpdateService, ours or anyone's).
    pub desired: u32,
    /// Tasks in the RUNNING state.
    pub running: u32,
    /// Tasks started but not yet RUNNING; they count through `desired`.
    pub pending: u32,
}

/// The DescribeServices error for a service that does not exist or is inactive.
pub fn service_not_found(message: String) -> AwsError {
    AwsError {
        operation: "DescribeServices",
        code: Some("ServiceNotFoundException".into()),
        message,
    }
}

/// The ECS calls the scaler makes.
#[async_trait]
pub trait CapacityController: Send + Sync + std::fmt::Debug {
    /// DescribeServices for one service.
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, AwsError>;
    /// UpdateService with a new desired count (and nothing else).
    async fn set_desired(&self, cluster: &str, service: &str, desired: u32)
        -> Result<(), AwsError>;
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
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, AwsError> {
        match self.lock().get(&(cluster.to_owned(), service.to_owned())) {
            Some(&n) => Ok(ServiceCounts {
                desired: n,
                running: n,
                pending: 0,
            }),
            None => Err(service_not_found(format!(
                "no simulated service {service} in {cluster}"
            ))),
        }
    }

    async fn set_desired(
        &self,
        cluster: &str,
        service: &str,
        desired: u32,
    ) -> Result<(), AwsError> {
        self.lock()
            .insert((cluster.to_owned(), service.to_owned()), desired);
        Ok(())
    }
}
