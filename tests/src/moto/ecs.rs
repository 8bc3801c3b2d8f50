//! ECS and EC2 state driven through the launcher: clusters, task definitions, services, tasks
//! with loopback addresses, container instances and reconciliation, plus the two ECS calls
//! berth's tests make as ECS itself would see them (`UpdateService`, `StopTask`).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::spec::{millis, DeploymentConfiguration, UpdateServiceRequest};
use super::{
    AppSpec, ContainerInstance, Health, Moto, Reconciled, ServiceState, ServiceUpdate,
    TaskDefinition, TaskInfo, TaskSpec, TaskUpdate,
};

/// The launcher's `POST /setup/service` body.
#[derive(Serialize)]
struct NewService<'a> {
    cluster: &'a str,
    name: &'a str,
    task_definition: &'a str,
    desired_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a AppSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_configuration: Option<DeploymentConfiguration>,
}

impl<'a> NewService<'a> {
    /// A service without task apps, on moto's default deployment configuration.
    fn new(
        cluster: &'a str,
        name: &'a str,
        task_definition: &'a str,
        desired_count: u32,
    ) -> NewService<'a> {
        NewService {
            cluster,
            name,
            task_definition,
            desired_count,
            app: None,
            deployment_configuration: None,
        }
    }
}

/// A task named by its cluster and ARN, with an optional change.
#[derive(Serialize)]
struct TaskRef<'a> {
    cluster: &'a str,
    task_arn: &'a str,
    #[serde(flatten)]
    update: Option<&'a TaskUpdate>,
}

/// Which service a reconciler keeps at its desired count, with which addresses.
#[derive(Serialize)]
struct Reconcile<'a> {
    cluster: &'a str,
    service: &'a str,
    ip_pool: &'a [IpAddr],
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
}

/// One string field of an answer (`cluster_arn`, `service_arn`, ...).
#[derive(Deserialize)]
struct Arn {
    #[serde(
        alias = "cluster_arn",
        alias = "task_definition_arn",
        alias = "service_arn"
    )]
    arn: String,
}

impl Moto {
    /// Creates cluster `name` (idempotent); returns its ARN.
    pub async fn create_cluster(&self, name: &str) -> Result<String> {
        let created: Arn = self
            .post("/setup/cluster", &json!({ "name": name }))
            .await?;
        Ok(created.arn)
    }

    /// Registers a new revision of `td`; returns its ARN (`...:task-definition/family:rev`).
    pub async fn register_task_definition(&self, td: &TaskDefinition) -> Result<String> {
        let registered: Arn = self.post("/setup/task-definition", td).await?;
        Ok(registered.arn)
    }

    /// Creates service `name` in `cluster` on `task_definition` with `desired_count` (FARGATE
    /// for awsvpc, else EC2). moto starts no tasks: see [`Moto::reconcile`]. Returns its ARN.
    pub async fn create_service(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired_count: u32,
    ) -> Result<String> {
        let service = NewService::new(cluster, name, task_definition, desired_count);
        self.setup_service(&service).await
    }

    /// [`Moto::create_service`] whose tasks run `app`, with `deploymentConfiguration`
    /// `maximum_percent` / `minimum_healthy_percent` for rolling replacements.
    pub async fn create_service_with(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired_count: u32,
        app: &AppSpec,
        (maximum_percent, minimum_healthy_percent): (u32, u32),
    ) -> Result<String> {
        let service = NewService {
            app: Some(app),
            deployment_configuration: Some(DeploymentConfiguration {
                maximum_percent: Some(maximum_percent),
                minimum_healthy_percent: Some(minimum_healthy_percent),
            }),
            ..NewService::new(cluster, name, task_definition, desired_count)
        };
        self.setup_service(&service).await
    }

    /// Creates `service`; returns its ARN.
    async fn setup_service(&self, service: &NewService<'_>) -> Result<String> {
        let created: Arn = self.post("/setup/service", service).await?;
        Ok(created.arn)
    }

    /// Makes the tasks `service` starts from now on run `app` (`None`: no app).
    pub async fn set_service_app(
        &self,
        cluster: &str,
        service: &str,
        app: Option<&AppSpec>,
    ) -> Result<()> {
        let body = json!({ "cluster": cluster, "service": service, "app": app });
        self.post_command("/services/app", &body).await
    }

    /// ECS `UpdateService` through moto's API.
    pub async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        update: &ServiceUpdate,
    ) -> Result<()> {
        let body = serde_json::to_value(UpdateServiceRequest::new(cluster, service, update))?;
        self.ecs_api("UpdateService", body).await.map(drop)
    }

    /// ECS `StopTask` through moto's API (a harness task's app gets SIGTERM at once).
    pub async fn ecs_stop_task(&self, cluster: &str, task_arn: &str, reason: &str) -> Result<()> {
        let body = json!({ "cluster": cluster, "task": task_arn, "reason": reason });
        self.ecs_api("StopTask", body).await.map(drop)
    }

    /// Creates tasks straight in moto's backend, visible to ListTasks / DescribeTasks; returns
    /// their ARNs.
    pub async fn create_tasks(&self, spec: &TaskSpec) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Created {
            task_arns: Vec<String>,
        }
        Ok(self.post::<Created>("/tasks", spec).await?.task_arns)
    }

    /// Changes a task's statuses or health.
    pub async fn update_task(
        &self,
        cluster: &str,
        task_arn: &str,
        update: &TaskUpdate,
    ) -> Result<()> {
        let task = TaskRef {
            cluster,
            task_arn,
            update: Some(update),
        };
        self.post_command("/tasks/update", &task).await
    }

    /// Sets a task's health (task and containers with a health check).
    pub async fn set_task_health(
        &self,
        cluster: &str,
        task_arn: &str,
        health: Health,
    ) -> Result<()> {
        let update = TaskUpdate {
            health: Some(health),
            ..TaskUpdate::default()
        };
        self.update_task(cluster, task_arn, &update).await
    }

    /// Stops a task: desiredStatus then lastStatus `STOPPED`; it leaves the (default, RUNNING)
    /// ListTasks answer.
    pub async fn stop_task(&self, cluster: &str, task_arn: &str) -> Result<()> {
        let task = TaskRef {
            cluster,
            task_arn,
            update: None,
        };
        self.post_command("/tasks/stop", &task).await
    }

    /// All tasks of `cluster` (any status), as the launcher holds them.
    pub async fn tasks(&self, cluster: &str) -> Result<Vec<TaskInfo>> {
        #[derive(Deserialize)]
        struct Listed {
            tasks: Vec<TaskInfo>,
        }
        let listed: Listed = self.get(&format!("/tasks?cluster={cluster}")).await?;
        Ok(listed.tasks)
    }

    /// Runs an EC2 instance whose `PrivateIpAddress` is `private_ip` (a loopback address) and
    /// registers it as a container instance of `cluster`.
    pub async fn add_container_instance(
        &self,
        cluster: &str,
        private_ip: IpAddr,
    ) -> Result<ContainerInstance> {
        let body = json!({ "cluster": cluster, "private_ip": private_ip });
        self.post("/container-instances", &body).await
    }

    /// Once: starts or stops tasks of `service` until its RUNNING tasks equal its desiredCount
    /// (awsvpc tasks take free addresses from `ip_pool`; newest tasks are stopped first).
    pub async fn reconcile(
        &self,
        cluster: &str,
        service: &str,
        ip_pool: &[IpAddr],
    ) -> Result<Reconciled> {
        let reconcile = Reconcile {
            cluster,
            service,
            ip_pool,
            interval_ms: None,
        };
        self.post("/services/reconcile", &reconcile).await
    }

    /// Reconciles now, then every `interval` in the background (until [`Moto::stop_auto_reconcile`]
    /// or drop), so the service follows `UpdateService` like ECS would.
    pub async fn auto_reconcile(
        &self,
        cluster: &str,
        service: &str,
        ip_pool: &[IpAddr],
        interval: Duration,
    ) -> Result<Reconciled> {
        let reconcile = Reconcile {
            cluster,
            service,
            ip_pool,
            interval_ms: Some(millis(interval.max(Duration::from_millis(10)))),
        };
        self.post("/services/autoreconcile", &reconcile).await
    }

    /// Stops background reconciliation of one service, or of all with `None`.
    pub async fn stop_auto_reconcile(&self, service: Option<(&str, &str)>) -> Result<()> {
        let body = match service {
            Some((cluster, service)) => json!({ "cluster": cluster, "service": service }),
            None => json!({}),
        };
        self.delete("/services/autoreconcile", Some(body)).await
    }

    /// A service's desired/running/pending counts.
    pub async fn service(&self, cluster: &str, service: &str) -> Result<ServiceState> {
        self.get(&format!("/services?cluster={cluster}&service={service}"))
            .await
    }
}
