//! Every AWS call berth's discovery makes, behind one trait ([`EcsApi`]) returning berth's own
//! types. This is the only file that names AWS SDK types.
//!
//! The clients come from [`berth_common::sdk_config::load`] (the default chain, the SDK's
//! standard retries, berth's timeouts); every call is counted in
//! `berth_aws_api_calls_total{operation,outcome}` ([`berth_common::aws_calls`]).

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;
use berth_common::aws_calls::counted;
use berth_common::aws_error::AwsError;

/// A network binding of a container (bridge / host networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The port the container listens on (the ECS source's `port`, resolved to a number).
    pub container_port: Option<u16>,
    /// The port on the instance traffic is sent to (the one ECS chose for a dynamic mapping).
    pub host_port: Option<u16>,
}

/// A container of a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContainer {
    /// The name from the task definition, matched against the ECS source's `container`.
    pub name: String,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    pub health_status: Option<String>,
    /// Network bindings (bridge / host mode).
    pub network_bindings: Vec<Binding>,
}

/// An ECS task as berth needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's ARN, which names it in logs and in the service-discovery output.
    pub arn: String,
    /// The revision the task runs, looked up (and cached) for its ports and health check.
    pub task_definition_arn: String,
    /// `PROVISIONING`, `PENDING`, `RUNNING`, `STOPPING`, `STOPPED`, ...
    pub last_status: String,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    /// Task group, `service:<name>` for service tasks.
    pub group: Option<String>,
    /// `FARGATE`, `EC2`, `EXTERNAL`.
    pub launch_type: Option<String>,
    /// E.g. `us-east-1a`; a label in the service-discovery output.
    pub availability_zone: Option<String>,
    /// The EC2 container instance it runs on (EC2 launch type): resolved to the instance's
    /// private IP for bridge and host networking.
    pub container_instance_arn: Option<String>,
    /// Private IPv4 of the task's ENI (awsvpc).
    pub eni_private_ip: Option<IpAddr>,
    /// Every container of the task with its health and bindings.
    pub containers: Vec<TaskContainer>,
}

/// A port mapping of a container definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The port the container listens on.
    pub container_port: Option<u16>,
    /// The instance port (0 or absent: dynamic).
    pub host_port: Option<u16>,
    /// The mapping's name, which the ECS source's `port` may give instead of a number.
    pub name: Option<String>,
}

/// A container definition: what discovery needs to pick a task's container and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDef {
    /// The name tasks' containers carry ([`TaskContainer::name`]).
    pub name: String,
    /// Whether it declares a health check (then its `health_status` is meaningful).
    pub has_health_check: bool,
    /// Its declared ports.
    pub port_mappings: Vec<PortMapping>,
}

/// A task definition revision (immutable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinition {
    /// `arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>`.
    pub arn: String,
    /// The name shared by every revision.
    pub family: String,
    /// The revision number within the family.
    pub revision: i32,
    /// `awsvpc` (address: the task's ENI), `bridge` or `host` (address: the instance), `none`.
    pub network_mode: Option<String>,
    /// The container definitions, in the definition's order.
    pub containers: Vec<ContainerDef>,
}

/// The ECS (and EC2) calls discovery makes.
#[async_trait]
pub trait EcsApi: Send + Sync + std::fmt::Debug {
    /// ARNs of the cluster's tasks whose desired status is RUNNING (all pages).
    async fn list_running_tasks(&self, cluster: &str) -> Result<Vec<String>, AwsError>;
    /// Describes up to 100 tasks.
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>, AwsError>;
    /// Describes a task definition revision.
    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinition, AwsError>;
    /// EC2 instance ids of up to 100 container instances, by container instance ARN.
    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<HashMap<String, String>, AwsError>;
    /// Private IPv4 addresses of EC2 instances, by instance id.
    async fn describe_instances(&self, ids: &[String])
        -> Result<HashMap<String, IpAddr>, AwsError>;
}

/// The real ECS and EC2 APIs through the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsEcs {
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
}

impl AwsEcs {
    /// ECS and EC2 clients from [`berth_common::sdk_config::load`]: region, credentials and
    /// endpoints from the default chain.
    pub async fn from_env() -> AwsEcs {
        let conf = berth_common::sdk_config::load().await;
        AwsEcs {
            ecs: aws_sdk_ecs::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
        }
    }
}

fn port(v: Option<i32>) -> Option<u16> {
    v.and_then(|p| u16::try_from(p).ok())
}

fn to_task(t: aws_sdk_ecs::types::Task) -> Option<Task> {
    let eni_private_ip = t
        .attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface") || a.r#type() == Some("eni"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .and_then(|v| v.parse().ok());
    Some(Task {
        arn: t.task_arn()?.to_string(),
        task_definition_arn: t.task_definition_arn().unwrap_or_default().to_string(),
        last_status: t.last_status().unwrap_or_default().to_string(),
        desired_status: t.desired_status().unwrap_or_default().to_string(),
        group: t.group().map(str::to_string),
        launch_type: t.launch_type().map(|l| l.as_str().to_string()),
        availability_zone: t.availability_zone().map(str::to_string),
        container_instance_arn: t.container_instance_arn().map(str::to_string),
        eni_private_ip,
        containers: t
            .containers()
            .iter()
            .map(|c| TaskContainer {
                name: c.name().unwrap_or_default().to_string(),
                health_status: c.health_status().map(|h| h.as_str().to_string()),
                network_bindings: c
                    .network_bindings()
                    .iter()
                    .map(|b| Binding {
                        container_port: port(b.container_port()),
                        host_port: port(b.host_port()),
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[async_trait]
impl EcsApi for AwsEcs {
    async fn list_running_tasks(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = counted(
                "ListTasks",
                self.ecs
                    .list_tasks()
                    .cluster(cluster)
                    .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                    .max_results(100)
                    .set_next_token(token.take())
                    .send()
                    .await,
            )?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(arns)
    }

    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>, AwsError> {
        let answer = counted(
            "DescribeTasks",
            self.ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(arns.to_vec()))
                .send()
                .await,
        )?;
        Ok(answer
            .tasks
            .unwrap_or_default()
            .into_iter()
            .filter_map(to_task)
            .collect())
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinition, AwsError> {
        let answer = counted(
            "DescribeTaskDefinition",
            self.ecs
                .describe_task_definition()
                .task_definition(arn)
                .send()
                .await,
        )?;
        let td = answer.task_definition.ok_or_else(|| AwsError {
            operation: "DescribeTaskDefinition",
            code: None,
            message: format!("no task definition in the answer for {arn}"),
        })?;
        Ok(TaskDefinition {
            arn: td.task_definition_arn().unwrap_or(arn).to_string(),
            family: td.family().unwrap_or_default().to_string(),
            revision: td.revision(),
            network_mode: td.network_mode().map(|n| n.as_str().to_string()),
            containers: td
                .container_definitions()
                .iter()
                .map(|c| ContainerDef {
                    name: c.name().unwrap_or_default().to_string(),
                    has_health_check: c.health_check().is_some(),
                    port_mappings: c
                        .port_mappings()
                        .iter()
                        .map(|p| PortMapping {
                            container_port: port(p.container_port()),
                            host_port: port(p.host_port()),
                            name: p.name().map(str::to_string),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<HashMap<String, String>, AwsError> {
        let answer = counted(
            "DescribeContainerInstances",
            self.ecs
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(arns.to_vec()))
                .send()
                .await,
        )?;
        Ok(answer
            .container_instances()
            .iter()
            .filter_map(|ci| {
                Some((
                    ci.container_instance_arn()?.to_string(),
                    ci.ec2_instance_id()?.to_string(),
                ))
            })
            .collect())
    }

    async fn describe_instances(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, IpAddr>, AwsError> {
        let answer = counted(
            "DescribeInstances",
            self.ec2
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await,
        )?;
        Ok(answer
            .reservations()
            .iter()
            .flat_map(|res| res.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_string(),
                    i.private_ip_address()?.parse().ok()?,
                ))
            })
            .collect())
    }
}
