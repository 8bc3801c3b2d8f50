//! ECS discovery: the tasks of a service (or task definition family) become targets.
//!
//! Work is grouped by cluster: one [`ClusterPoller`] per cluster serves every target group
//! that names it. Its own loop polls at the shortest `poll_interval` of those groups and hands
//! each new snapshot to them at once (they do not wait for a timer of their own), so a task
//! that ECS marks to stop leaves its groups within one interval. A cycle costs one paginated
//! `ListTasks` (desired status RUNNING: a task ECS is stopping drops out of it), and
//! `DescribeTasks` only for the tasks [`describe_again`] names: new ones, ones not yet
//! eligible, and ones whose container has a health check (to see it turn UNHEALTHY); the
//! others are re-described once a minute. Task definitions are cached by ARN (revisions are
//! immutable). Any failed call keeps the last good snapshot (fail-static).
//!
//! - [`resolve`](mod@resolve): which tasks become targets, and at which address (pure);
//! - [`poller`]: the per-cluster poll loop;
//! - [`hub`]: the process's ECS client and pollers, and the [`Discovery`](crate::discovery::source::Discovery) of
//!   one target group;
//! - [`service_discovery`]: the same targets as Prometheus HTTP service-discovery entries.

pub mod hub;
pub mod poller;
pub mod resolve;
pub mod service_discovery;

#[cfg(test)]
mod fixtures;

pub use hub::{EcsDiscovery, EcsHub};
pub use poller::{describe_again, ClusterPoller};
pub use resolve::{cluster_name, resolve, targets_of, ClusterSnapshot, EcsTarget, KnownTask, Skip};
pub use service_discovery::{sd_entries, SdEntry};
