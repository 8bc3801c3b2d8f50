//! What the harness asks the launcher to create or change: task definitions, tasks, task
//! updates, service updates and faults. Each type serializes (serde) to the body the launcher's
//! control API (snake_case keys) or ECS (camelCase keys) expects.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// A task's or container's health as ECS reports it; serializes to the ECS spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    /// `HEALTHY`: the container health check passes.
    Healthy,
    /// `UNHEALTHY`: the container health check fails.
    Unhealthy,
    /// `UNKNOWN` (no container health check, or not yet evaluated).
    Unknown,
}

impl Health {
    /// The ECS API spelling (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// A task definition's network mode; serializes to the ECS spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// `awsvpc`: one ENI (here: one loopback address) per task; FARGATE by default.
    Awsvpc,
    /// `bridge`: the container instance's address and a dynamic host port; EC2.
    Bridge,
    /// `host`: the container instance's address and the container port; EC2.
    Host,
}

impl NetworkMode {
    /// The ECS API spelling (`awsvpc`, `bridge`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
        }
    }
}

/// A fault the launcher injects in front of moto for the next `count` calls of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// ECS: HTTP 400 `ThrottlingException`; EC2: HTTP 503 `RequestLimitExceeded`;
    /// CloudWatch (CBOR): HTTP 400 `Throttling`.
    Throttle,
    /// ECS: HTTP 500 `ServerException`; EC2: HTTP 500 `InternalError`; CloudWatch (CBOR):
    /// HTTP 500 `InternalServiceFault`.
    Error500,
    /// Answer normally after this delay.
    Delay(Duration),
}

/// The launcher's `POST /faults` body for one [`FaultKind`].
#[derive(Debug, Serialize)]
pub(crate) struct FaultRequest<'a> {
    operation: &'a str,
    kind: &'static str,
    count: u32,
    delay_ms: u64,
}

impl<'a> FaultRequest<'a> {
    /// `kind` for the next `count` calls of `operation` (a delay of at least 1 ms).
    pub(crate) fn new(operation: &'a str, kind: FaultKind, count: u32) -> FaultRequest<'a> {
        let (kind, delay_ms) = match kind {
            FaultKind::Throttle => ("throttle", 0),
            FaultKind::Error500 => ("error500", 0),
            FaultKind::Delay(d) => ("delay", millis(d.max(Duration::from_millis(1)))),
        };
        FaultRequest {
            operation,
            kind,
            count,
            delay_ms,
        }
    }
}

/// Whole milliseconds of `d`, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One container of a task definition made by [`Moto::register_task_definition`](super::Moto::register_task_definition).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerDef {
    /// The container's name, which berth's `container = "..."` selects.
    pub name: String,
    /// Container port (none: the container exposes nothing).
    pub port: Option<u16>,
    /// The port mapping's name (Service Connect style), e.g. `http`.
    pub port_name: Option<String>,
    /// Host port for bridge/host mode; `None` or `Some(0)` in bridge mode means dynamic.
    pub host_port: Option<u16>,
    /// Whether the container has a (dummy) health check, which makes task health
    /// `HEALTHY`/`UNHEALTHY` instead of `UNKNOWN`.
    pub health_check: bool,
}

impl ContainerDef {
    /// A container `name` listening on `port`, port mapping named `http`, no health check.
    pub fn new(name: &str, port: u16) -> ContainerDef {
        ContainerDef {
            name: name.to_string(),
            port: Some(port),
            port_name: Some("http".to_string()),
            host_port: None,
            health_check: false,
        }
    }

    /// With a container health check.
    pub fn with_health_check(mut self) -> ContainerDef {
        self.health_check = true;
        self
    }

    /// With a fixed host port (bridge/host mode).
    pub fn with_host_port(mut self, port: u16) -> ContainerDef {
        self.host_port = Some(port);
        self
    }
}

/// A task definition for [`Moto::register_task_definition`](super::Moto::register_task_definition).
#[derive(Debug, Clone, Serialize)]
pub struct TaskDefinition {
    /// The family (`family:revision` names one registration); each registration adds a
    /// revision.
    pub family: String,
    /// How tasks of this definition get their address: see [`NetworkMode`].
    pub network_mode: NetworkMode,
    /// Containers, the first one being the one a load balancer targets.
    pub containers: Vec<ContainerDef>,
}

impl TaskDefinition {
    /// `family` with one container `app` on `port` (mapping named `http`) in `network_mode`.
    pub fn single(family: &str, network_mode: NetworkMode, port: u16) -> TaskDefinition {
        TaskDefinition {
            family: family.to_string(),
            network_mode,
            containers: vec![ContainerDef::new("app", port)],
        }
    }
}

/// Tasks to create with [`Moto::create_tasks`](super::Moto::create_tasks); empty and unset
/// fields are left out of the request, so the launcher picks its defaults.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSpec {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service the tasks belong to (their group becomes `service:<name>`), or none
    /// (group `family:<family>`).
    pub service: Option<String>,
    /// Task definition: `family`, `family:revision` or ARN.
    pub task_definition: String,
    /// How many tasks to create (awsvpc: as many as `ips`; bridge: as many as `host_ports`).
    pub count: usize,
    /// awsvpc: one loopback address per task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// `FARGATE` or `EC2`; default from the network mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// Overrides the task definition's network mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// bridge: one host port per task (for the first dynamic port mapping); empty: allocated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<u16>,
    /// bridge/host: the container instance ARN; default: the cluster's first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_instance: Option<String>,
    /// Availability zone; default: the instance's, or rotating through a, b, c.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Task health; default `HEALTHY` with a container health check, else `UNKNOWN`.
    #[serde(rename = "health_status", skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// `lastStatus` (`PROVISIONING`, `PENDING`, `ACTIVATING`, `RUNNING`); default `RUNNING`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
}

impl TaskSpec {
    /// awsvpc tasks, one per address in `ips`.
    pub fn awsvpc(cluster: &str, task_definition: &str, ips: &[IpAddr]) -> TaskSpec {
        TaskSpec {
            cluster: cluster.to_string(),
            service: None,
            task_definition: task_definition.to_string(),
            count: ips.len(),
            ips: ips.to_vec(),
            launch_type: None,
            network_mode: None,
            host_ports: Vec::new(),
            container_instance: None,
            availability_zone: None,
            health: None,
            last_status: None,
        }
    }

    /// bridge tasks on `container_instance`, one per host port in `host_ports`.
    pub fn bridge(
        cluster: &str,
        task_definition: &str,
        container_instance: &str,
        host_ports: &[u16],
    ) -> TaskSpec {
        TaskSpec {
            count: host_ports.len(),
            ips: Vec::new(),
            network_mode: Some(NetworkMode::Bridge),
            launch_type: Some("EC2".to_string()),
            host_ports: host_ports.to_vec(),
            container_instance: Some(container_instance.to_string()),
            ..TaskSpec::awsvpc(cluster, task_definition, &[])
        }
    }

    /// Makes the tasks members of `service`.
    pub fn service(mut self, service: &str) -> TaskSpec {
        self.service = Some(service.to_string());
        self
    }

    /// Sets the tasks' health.
    pub fn health(mut self, health: Health) -> TaskSpec {
        self.health = Some(health);
        self
    }

    /// Sets the tasks' availability zone.
    pub fn availability_zone(mut self, az: &str) -> TaskSpec {
        self.availability_zone = Some(az.to_string());
        self
    }

    /// Sets the tasks' `lastStatus`.
    pub fn last_status(mut self, status: &str) -> TaskSpec {
        self.last_status = Some(status.to_string());
        self
    }
}

/// A change to one task for [`Moto::update_task`](super::Moto::update_task); `None` fields
/// stay as they are (and are left out of the request).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskUpdate {
    /// New `lastStatus` (e.g. `RUNNING`, `DEACTIVATING`, `STOPPED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// New `desiredStatus` (`RUNNING` or `STOPPED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    /// New health (task and containers with a health check).
    #[serde(rename = "health_status", skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// An ECS `UpdateService` call made by [`Moto::update_service`](super::Moto::update_service);
/// `None` fields are left out.
#[derive(Debug, Clone, Default)]
pub struct ServiceUpdate {
    /// `desiredCount`: how many tasks the service keeps running.
    pub desired_count: Option<u32>,
    /// `taskDefinition` (family, family:revision or ARN): a new one starts a new deployment.
    pub task_definition: Option<String>,
    /// `deploymentConfiguration.maximumPercent`: the most tasks (percent of the desired count)
    /// a rolling replacement may run at once.
    pub maximum_percent: Option<u32>,
    /// `deploymentConfiguration.minimumHealthyPercent`: the fewest healthy tasks (percent of
    /// the desired count) it keeps while replacing.
    pub minimum_healthy_percent: Option<u32>,
    /// `forceNewDeployment`: replace every task even with an unchanged task definition.
    pub force_new_deployment: bool,
}

/// The ECS `UpdateService` request body (AWS JSON 1.1) for a [`ServiceUpdate`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateServiceRequest<'a> {
    cluster: &'a str,
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    desired_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_definition: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    force_new_deployment: bool,
}

/// ECS `deploymentConfiguration`: how far a rolling replacement may go above and below the
/// desired count.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) minimum_healthy_percent: Option<u32>,
}

impl<'a> UpdateServiceRequest<'a> {
    /// `update` of `cluster`/`service`; `deploymentConfiguration` only when a percent is set.
    pub(crate) fn new(
        cluster: &'a str,
        service: &'a str,
        update: &'a ServiceUpdate,
    ) -> UpdateServiceRequest<'a> {
        let percents = (update.maximum_percent, update.minimum_healthy_percent);
        UpdateServiceRequest {
            cluster,
            service,
            desired_count: update.desired_count,
            task_definition: update.task_definition.as_deref(),
            deployment_configuration: (percents != (None, None)).then_some(
                DeploymentConfiguration {
                    maximum_percent: update.maximum_percent,
                    minimum_healthy_percent: update.minimum_healthy_percent,
                },
            ),
            force_new_deployment: update.force_new_deployment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_spec_leaves_out_what_is_unset() {
        let ip: IpAddr = "127.0.0.7".parse().expect("literal address");
        let spec = TaskSpec::awsvpc("prod", "api", &[ip])
            .service("api")
            .health(Health::Unhealthy);
        assert_eq!(
            serde_json::to_value(&spec).expect("serializes"),
            json!({
                "cluster": "prod", "service": "api", "task_definition": "api", "count": 1,
                "ips": ["127.0.0.7"], "health_status": "UNHEALTHY",
            })
        );
        let bridge = TaskSpec::bridge("prod", "web", "arn:ci", &[32768]);
        assert_eq!(
            serde_json::to_value(&bridge).expect("serializes"),
            json!({
                "cluster": "prod", "service": null, "task_definition": "web", "count": 1,
                "launch_type": "EC2", "network_mode": "bridge", "host_ports": [32768],
                "container_instance": "arn:ci",
            })
        );
    }

    #[test]
    fn update_service_is_camel_case_with_a_nested_deployment_configuration() {
        let only_count = ServiceUpdate {
            desired_count: Some(3),
            ..ServiceUpdate::default()
        };
        assert_eq!(
            serde_json::to_value(UpdateServiceRequest::new("prod", "api", &only_count))
                .expect("serializes"),
            json!({ "cluster": "prod", "service": "api", "desiredCount": 3 })
        );
        let rollout = ServiceUpdate {
            task_definition: Some("api:2".into()),
            maximum_percent: Some(200),
            force_new_deployment: true,
            ..ServiceUpdate::default()
        };
        assert_eq!(
            serde_json::to_value(UpdateServiceRequest::new("prod", "api", &rollout))
                .expect("serializes"),
            json!({
                "cluster": "prod", "service": "api", "taskDefinition": "api:2",
                "deploymentConfiguration": { "maximumPercent": 200 },
                "forceNewDeployment": true,
            })
        );
    }

    #[test]
    fn faults_carry_their_delay_in_milliseconds() {
        let delay = FaultRequest::new("ListTasks", FaultKind::Delay(Duration::ZERO), 2);
        assert_eq!(
            serde_json::to_value(delay).expect("serializes"),
            json!({ "operation": "ListTasks", "kind": "delay", "count": 2, "delay_ms": 1 })
        );
        let throttle = FaultRequest::new("*", FaultKind::Throttle, 1);
        assert_eq!(
            serde_json::to_value(throttle).expect("serializes"),
            json!({ "operation": "*", "kind": "throttle", "count": 1, "delay_ms": 0 })
        );
    }
}
