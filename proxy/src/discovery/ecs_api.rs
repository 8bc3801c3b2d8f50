//! Every AWS call berth's discovery makes, behind one trait ([`EcsApi`]) returning berth's own
//! types. This is the only file that names AWS SDK types.
//!
//! Region, credentials and endpoint come from the SDK's default chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECS`, task role, ...). Throttling and 5xx answers are
//! retried by the SDK's standard retry strategy: exponential backoff with full jitter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::error::ProvideErrorMetadata;

use crate::metrics as m;

/// A failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ApiError {
    /// The operation, e.g. `ListTasks`.
    pub operation: &'static str,
    /// The AWS error code, when there is one.
    pub code: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
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

/// A network binding of a container (bridge / host networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Container port.
    pub container_port: Option<u16>,
    /// Host port (dynamic ports included).
    pub host_port: Option<u16>,
}

/// A container of a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContainer {
    /// Container name.
    pub name: String,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    pub health_status: Option<String>,
    /// Network bindings (bridge / host mode).
    pub network_bindings: Vec<Binding>,
}

/// An ECS task as berth needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Task ARN.
    pub arn: String,
    /// Task definition ARN.
    pub task_definition_arn: String,
    /// `PROVISIONING`, `PENDING`, `RUNNING`, `STOPPING`, `STOPPED`, ...
    pub last_status: String,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    /// Task group, `service:<name>` for service tasks.
    pub group: Option<String>,
    /// `FARGATE`, `EC2`, `EXTERNAL`.
    pub launch_type: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Container instance (EC2 launch type).
    pub container_instance_arn: Option<String>,
    /// Private IPv4 of the task's ENI (awsvpc).
    pub eni_private_ip: Option<IpAddr>,
    /// Containers.
    pub containers: Vec<TaskContainer>,
}

/// A port mapping of a container definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Container port.
    pub container_port: Option<u16>,
    /// Host port (0 or absent: dynamic).
    pub host_port: Option<u16>,
    /// Mapping name.
    pub name: Option<String>,
}

/// A container definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDef {
    /// Name.
    pub name: String,
    /// Whether it declares a health check.
    pub has_health_check: bool,
    /// Port mappings.
    pub port_mappings: Vec<PortMapping>,
}

/// A task definition revision (immutable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinition {
    /// ARN.
    pub arn: String,
    /// Family.
    pub family: String,
    /// Revision.
    pub revision: i32,
    /// `awsvpc`, `bridge`, `host`, `none`.
    pub network_mode: Option<String>,
    /// Containers.
    pub containers: Vec<ContainerDef>,
}

/// The ECS (and EC2) calls discovery makes.
#[async_trait]
pub trait EcsApi: Send + Sync + std::fmt::Debug {
    /// ARNs of the cluster's tasks whose desired status is RUNNING (all pages).
    async fn list_running_tasks(&self, cluster: &str) -> Result<Vec<String>, ApiError>;
    /// Describes up to 100 tasks.
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>, ApiError>;
    /// Describes a task definition revision.
    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinition, ApiError>;
    /// EC2 instance ids of up to 100 container instances, by container instance ARN.
    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<HashMap<String, String>, ApiError>;
    /// Private IPv4 addresses of EC2 instances, by instance id.
    async fn describe_instances(&self, ids: &[String])
        -> Result<HashMap<String, IpAddr>, ApiError>;
}

/// The real ECS and EC2 APIs through the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsEcs {
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
}

impl AwsEcs {
    /// Loads region, credentials and endpoints from the default chain.
    pub async fn from_env() -> AwsEcs {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(4)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        AwsEcs {
            ecs: aws_sdk_ecs::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
        }
    }
}

fn api_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    e: &aws_sdk_ecs::error::SdkError<E, aws_sdk_ecs::config::http::HttpResponse>,
) -> ApiError {
    let (code, message) = match e.as_service_error() {
        Some(se) => (
            se.code().map(str::to_string),
            se.message()
                .map(str::to_string)
                .unwrap_or_else(|| se.to_string()),
        ),
        None => (None, aws_sdk_ecs::error::DisplayErrorContext(e).to_string()),
    };
    ApiError {
        operation,
        code,
        message,
    }
}

/// Counts one call by operation and outcome.
fn count<T>(operation: &'static str, r: &Result<T, ApiError>) {
    let outcome = match r {
        Ok(_) => "success",
        Err(e) if e.is_throttling() => "throttled",
        Err(_) => "error",
    };
    metrics::counter!(m::ECS_API_CALLS, "operation" => operation, "outcome" => outcome)
        .increment(1);
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
    async fn list_running_tasks(&self, cluster: &str) -> Result<Vec<String>, ApiError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .ecs
                .list_tasks()
                .cluster(cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| api_error("ListTasks", &e));
            count("ListTasks", &r);
            let page = r?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(arns)
    }

    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>, ApiError> {
        let r = self
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| api_error("DescribeTasks", &e));
        count("DescribeTasks", &r);
        Ok(r?
            .tasks
            .unwrap_or_default()
            .into_iter()
            .filter_map(to_task)
            .collect())
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinition, ApiError> {
        let r = self
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| api_error("DescribeTaskDefinition", &e));
        count("DescribeTaskDefinition", &r);
        let td = r?.task_definition.ok_or_else(|| ApiError {
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
    ) -> Result<HashMap<String, String>, ApiError> {
        let r = self
            .ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| api_error("DescribeContainerInstances", &e));
        count("DescribeContainerInstances", &r);
        Ok(r?
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
    ) -> Result<HashMap<String, IpAddr>, ApiError> {
        let r = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| api_error("DescribeInstances", &e));
        count("DescribeInstances", &r);
        Ok(r?
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
