//! Tasks, task definitions and sources shared by the ECS discovery unit tests.

use std::time::Duration;

use berth_config::model::{EcsSelector, EcsSource, PortRef};

use super::resolve::KnownTask;
use crate::discovery::ecs_api::{
    Binding, ContainerDef, PortMapping, Task, TaskContainer, TaskDefinition,
};

pub(crate) fn td(mode: &str, health: bool) -> TaskDefinition {
    TaskDefinition {
        arn: format!("arn:td/{mode}"),
        family: "api".into(),
        revision: 3,
        network_mode: Some(mode.into()),
        containers: vec![ContainerDef {
            name: "app".into(),
            has_health_check: health,
            port_mappings: vec![PortMapping {
                container_port: Some(8080),
                host_port: if mode == "bridge" {
                    Some(0)
                } else {
                    Some(8080)
                },
                name: Some("http".into()),
            }],
        }],
    }
}

pub(crate) fn task(arn: &str, mode: &str, ip: Option<&str>, health: &str) -> Task {
    Task {
        arn: arn.into(),
        task_definition_arn: format!("arn:td/{mode}"),
        last_status: "RUNNING".into(),
        desired_status: "RUNNING".into(),
        group: Some("service:api".into()),
        launch_type: Some(if ip.is_some() { "FARGATE" } else { "EC2" }.into()),
        availability_zone: Some("us-east-1a".into()),
        container_instance_arn: ip.is_none().then(|| "arn:ci/1".to_string()),
        eni_private_ip: ip.map(|i| i.parse().unwrap()),
        containers: vec![TaskContainer {
            name: "app".into(),
            health_status: Some(health.into()),
            network_bindings: if ip.is_none() {
                vec![Binding {
                    container_port: Some(8080),
                    host_port: Some(32768),
                }]
            } else {
                vec![]
            },
        }],
    }
}

pub(crate) fn src(port: PortRef) -> EcsSource {
    EcsSource {
        cluster: "prod".into(),
        selector: EcsSelector::Service("api".into()),
        container: "app".into(),
        port,
        poll_interval: Duration::from_millis(1),
    }
}

pub(crate) fn kt(t: Task, ip: Option<&str>) -> KnownTask {
    KnownTask {
        task: t,
        instance_ip: ip.map(|i| i.parse().unwrap()),
    }
}
