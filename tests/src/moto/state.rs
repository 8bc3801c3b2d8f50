//! What the launcher reports back: container instances, reconciliations, service counts, tasks
//! and CloudWatch datapoints, each deserialized (serde) from the control API's snake_case JSON.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// A container instance made by [`Moto::add_container_instance`](super::Moto::add_container_instance).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerInstance {
    /// ECS container instance ARN, for [`TaskSpec::bridge`](super::TaskSpec::bridge).
    pub container_instance_arn: String,
    /// The EC2 instance behind it, whose `PrivateIpAddress` is the loopback address given.
    pub ec2_instance_id: String,
}

/// What one [`Moto::reconcile`](super::Moto::reconcile) did.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reconciled {
    /// ARNs of tasks started.
    pub created: Vec<String>,
    /// ARNs of tasks stopped.
    pub stopped: Vec<String>,
    /// The service's desired count.
    pub desired_count: u64,
    /// RUNNING tasks of the service afterwards.
    pub running_count: u64,
    /// Tasks that could not be started because the IP pool was exhausted.
    pub missing_ips: u64,
}

/// A service's counts as moto holds them (see [`Moto::service`](super::Moto::service)).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServiceState {
    /// The service's ARN (`arn:aws:ecs:<region>:<account>:service/<cluster>/<name>`).
    pub service_arn: String,
    /// `desiredCount` (what `UpdateService` changed last).
    pub desired_count: u64,
    /// RUNNING tasks.
    pub running_count: u64,
    /// Tasks wanted RUNNING but not yet RUNNING.
    pub pending_count: u64,
    /// The service's task definition ARN (empty when moto holds none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub task_definition: String,
}

/// One task as [`Moto::tasks`](super::Moto::tasks) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskInfo {
    /// The task's ARN, as ListTasks returns it.
    pub task_arn: String,
    /// `service:<name>` or `family:<family>`.
    pub group: String,
    /// ECS `lastStatus`: where the task is in its life cycle (`PENDING`, `RUNNING`,
    /// `STOPPING`, `STOPPED`, ...).
    pub last_status: String,
    /// ECS `desiredStatus`: `RUNNING`, or `STOPPED` once ECS decided to stop it.
    pub desired_status: String,
    /// `healthStatus`, if any.
    pub health_status: Option<String>,
    /// awsvpc: the task's address.
    pub private_ip: Option<IpAddr>,
    /// bridge/host: the host ports of its network bindings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub host_ports: Vec<u16>,
    /// bridge/host: its container instance.
    pub container_instance_arn: Option<String>,
    /// Its task definition ARN.
    pub task_definition: Option<String>,
    /// Whether its task app process (if it has one) is still running.
    #[serde(rename = "app", default, deserialize_with = "app_alive")]
    pub app_alive: Option<bool>,
}

/// `alive` of the launcher's `app` object (`null` for a task without an app).
fn app_alive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    struct App {
        alive: Option<bool>,
    }
    Ok(Option::<App>::deserialize(d)?.and_then(|app| app.alive))
}

/// A datapoint held by moto's CloudWatch ([`Moto::cloudwatch_datapoints`](super::Moto::cloudwatch_datapoints)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CloudWatchDatapoint {
    /// The metric's namespace, e.g. `Berth`.
    pub namespace: String,
    /// The metric's name within its namespace.
    pub name: String,
    /// Dimensions by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub dimensions: BTreeMap<String, String>,
    /// The stored value (0 when moto holds none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: f64,
    /// Unit, e.g. `Count`.
    pub unit: Option<String>,
    /// ISO 8601 time.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: String,
}

/// A missing or `null` field as `T::default()`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_row_reads_with_or_without_its_app() {
        let with_app: TaskInfo = serde_json::from_value(json!({
            "task_arn": "arn:t1", "group": "service:api", "last_status": "RUNNING",
            "desired_status": "RUNNING", "health_status": null, "private_ip": "127.0.0.9",
            "host_ports": [], "container_instance_arn": null, "availability_zone": "us-east-1a",
            "task_definition": "arn:td", "started_by": null, "app": { "alive": true, "pid": 7 },
        }))
        .expect("a task row");
        assert_eq!(with_app.app_alive, Some(true));
        assert_eq!(
            with_app.private_ip,
            Some("127.0.0.9".parse().expect("literal"))
        );
        let bare: TaskInfo = serde_json::from_value(json!({
            "task_arn": "arn:t2", "group": "family:web", "last_status": "STOPPED",
            "desired_status": "STOPPED", "host_ports": [32768, 32769], "app": null,
        }))
        .expect("a task row");
        assert_eq!((bare.app_alive, bare.private_ip), (None, None));
        assert_eq!(bare.host_ports, vec![32768, 32769]);
    }

    #[test]
    fn a_datapoint_without_unit_or_value_reads_as_defaults() {
        let d: CloudWatchDatapoint = serde_json::from_value(json!({
            "namespace": "Berth", "name": "RequestCount", "dimensions": { "TargetGroup": "api" },
            "value": null, "unit": null, "timestamp": "2026-01-01T00:00:00+00:00",
        }))
        .expect("a datapoint");
        assert_eq!(d.value, 0.0);
        assert_eq!(d.unit, None);
        assert_eq!(
            d.dimensions.get("TargetGroup").map(String::as_str),
            Some("api")
        );
    }
}
