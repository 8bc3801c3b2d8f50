//! Which tasks of a cluster snapshot are targets of a source, and at which address: pure
//! functions of what the last poll saw.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use berth_config::model::{EcsSelector, EcsSource, PortRef};

use crate::discovery::ecs_api::{Task, TaskDefinition};

/// A discovered task with what is needed to address it.
#[derive(Debug, Clone)]
pub struct KnownTask {
    /// The task as `DescribeTasks` returned it.
    pub task: Task,
    /// The private IP of its container instance (EC2 bridge/host mode).
    pub instance_ip: Option<IpAddr>,
}

/// What one cluster looked like at the last successful poll.
#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    /// Running tasks by ARN.
    pub tasks: HashMap<String, KnownTask>,
    /// Task definitions by ARN.
    pub task_definitions: HashMap<String, TaskDefinition>,
    /// When it was taken.
    pub taken_at: Option<Instant>,
}

/// A resolved target with its Prometheus service-discovery labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsTarget {
    /// Where requests go: ENI IP and container port, or instance IP and host port.
    pub address: SocketAddr,
    /// Labels (cluster, service, task ARN, family, revision, AZ, launch type).
    pub labels: Vec<(&'static str, String)>,
}

impl EcsTarget {
    /// The task's Availability Zone (its `availability_zone` label), when ECS reported a
    /// valid one.
    pub fn zone(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == "availability_zone")
            .map(|(_, v)| v.as_str())
            .filter(|z| crate::zone::valid_zone(z))
    }
}

/// Why a task is not a target (for debugging and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not this target group's service or family.
    OtherGroup,
    /// Not RUNNING, or desired STOPPED.
    NotRunning,
    /// The container's ECS health check does not report HEALTHY.
    NotHealthy,
    /// No address could be worked out.
    NoAddress(&'static str),
}

/// Works out whether a task is a target of `source`, and its address: the ENI IP and the
/// container port in awsvpc mode; the container instance's IP and the binding's host port in
/// bridge/host mode.
pub fn resolve(
    source: &EcsSource,
    cluster_name: &str,
    kt: &KnownTask,
    td: Option<&TaskDefinition>,
) -> Result<EcsTarget, Skip> {
    let task = &kt.task;
    let service = task
        .group
        .as_deref()
        .and_then(|g| g.strip_prefix("service:"));
    match &source.selector {
        EcsSelector::Service(s) if service != Some(s.as_str()) => return Err(Skip::OtherGroup),
        EcsSelector::Family(f) if td.map(|t| t.family.as_str()) != Some(f.as_str()) => {
            return Err(Skip::OtherGroup)
        }
        _ => {}
    }
    if task.last_status != "RUNNING" || task.desired_status != "RUNNING" {
        return Err(Skip::NotRunning);
    }
    let td = td.ok_or(Skip::NoAddress("task definition unknown"))?;
    let cdef = td
        .containers
        .iter()
        .find(|c| c.name == source.container)
        .ok_or(Skip::NoAddress("container not in task definition"))?;
    let container = task.containers.iter().find(|c| c.name == source.container);
    if cdef.has_health_check
        && container.and_then(|c| c.health_status.as_deref()) != Some("HEALTHY")
    {
        return Err(Skip::NotHealthy);
    }
    let container_port = match &source.port {
        PortRef::Number(n) => *n,
        PortRef::Name(name) => cdef
            .port_mappings
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| p.container_port)
            .ok_or(Skip::NoAddress("no port mapping with that name"))?,
    };
    let address = if let Some(ip) = task.eni_private_ip {
        SocketAddr::new(ip, container_port)
    } else {
        let ip = kt
            .instance_ip
            .ok_or(Skip::NoAddress("container instance IP unknown"))?;
        let host_port = container
            .and_then(|c| {
                c.network_bindings
                    .iter()
                    .find(|b| b.container_port == Some(container_port))
                    .and_then(|b| b.host_port)
            })
            .or_else(|| (td.network_mode.as_deref() == Some("host")).then_some(container_port))
            .ok_or(Skip::NoAddress("no network binding for the container port"))?;
        SocketAddr::new(ip, host_port)
    };
    let mut labels = vec![
        ("cluster", cluster_name.to_string()),
        ("task_arn", task.arn.clone()),
        ("task_definition_family", td.family.clone()),
        ("task_definition_revision", td.revision.to_string()),
        ("container", source.container.clone()),
    ];
    if let Some(s) = service {
        labels.push(("service", s.to_string()));
    }
    if let Some(az) = &task.availability_zone {
        labels.push(("availability_zone", az.clone()));
    }
    if let Some(lt) = &task.launch_type {
        labels.push(("launch_type", lt.clone()));
    }
    Ok(EcsTarget { address, labels })
}

/// Every target of `source` in a snapshot, in a stable order.
pub fn targets_of(source: &EcsSource, snap: &ClusterSnapshot) -> Vec<EcsTarget> {
    let name = cluster_name(&source.cluster);
    let mut out: Vec<EcsTarget> = snap
        .tasks
        .values()
        .filter_map(|kt| {
            resolve(
                source,
                name,
                kt,
                snap.task_definitions.get(&kt.task.task_definition_arn),
            )
            .ok()
        })
        .collect();
    out.sort_by_key(|t| t.address);
    out.dedup_by(|a, b| a.address == b.address);
    out
}

/// The cluster name of a name or ARN (`arn:aws:ecs:...:cluster/NAME`).
pub fn cluster_name(cluster: &str) -> &str {
    cluster.rsplit_once('/').map(|(_, n)| n).unwrap_or(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ecs::fixtures::{kt, src, task, td};

    #[test]
    fn awsvpc_task_uses_eni_ip_and_container_port() {
        let t = kt(task("t1", "awsvpc", Some("127.0.0.2"), "UNKNOWN"), None);
        let r = resolve(
            &src(PortRef::Name("http".into())),
            "prod",
            &t,
            Some(&td("awsvpc", false)),
        )
        .unwrap();
        assert_eq!(r.address, "127.0.0.2:8080".parse().unwrap());
        assert!(r.labels.contains(&("service", "api".to_string())));
    }

    #[test]
    fn a_task_target_carries_its_zone() {
        let mut task = task("t1", "awsvpc", Some("127.0.0.2"), "UNKNOWN");
        let t = kt(task.clone(), None);
        let def = td("awsvpc", false);
        let src = src(PortRef::Name("http".into()));
        let r = resolve(&src, "prod", &t, Some(&def)).unwrap();
        assert_eq!(r.zone(), Some("us-east-1a"));
        task.availability_zone = None;
        let r = resolve(&src, "prod", &kt(task, None), Some(&def)).unwrap();
        assert_eq!(r.zone(), None);
    }

    #[test]
    fn bridge_task_uses_instance_ip_and_host_port() {
        let t = kt(task("t1", "bridge", None, "UNKNOWN"), Some("127.0.0.9"));
        let r = resolve(
            &src(PortRef::Number(8080)),
            "prod",
            &t,
            Some(&td("bridge", false)),
        )
        .unwrap();
        assert_eq!(r.address, "127.0.0.9:32768".parse().unwrap());
    }

    #[test]
    fn health_checked_container_must_be_healthy() {
        let t = kt(task("t1", "awsvpc", Some("127.0.0.2"), "UNKNOWN"), None);
        assert_eq!(
            resolve(
                &src(PortRef::Number(8080)),
                "prod",
                &t,
                Some(&td("awsvpc", true))
            ),
            Err(Skip::NotHealthy)
        );
        let t = kt(task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY"), None);
        assert!(resolve(
            &src(PortRef::Number(8080)),
            "prod",
            &t,
            Some(&td("awsvpc", true))
        )
        .is_ok());
    }

    #[test]
    fn stopping_and_other_services_are_skipped() {
        let mut t = task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY");
        t.desired_status = "STOPPED".into();
        let d = td("awsvpc", false);
        assert_eq!(
            resolve(&src(PortRef::Number(8080)), "prod", &kt(t, None), Some(&d)),
            Err(Skip::NotRunning)
        );
        let mut t = task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY");
        t.group = Some("service:web".into());
        assert_eq!(
            resolve(&src(PortRef::Number(8080)), "prod", &kt(t, None), Some(&d)),
            Err(Skip::OtherGroup)
        );
    }

    #[test]
    fn family_selector_matches_task_definition_family() {
        let mut s = src(PortRef::Number(8080));
        s.selector = EcsSelector::Family("api".into());
        let mut t = task("t1", "awsvpc", Some("127.0.0.2"), "HEALTHY");
        t.group = Some("family:api".into());
        assert!(resolve(&s, "prod", &kt(t, None), Some(&td("awsvpc", false))).is_ok());
    }

    #[test]
    fn cluster_name_of_arn() {
        assert_eq!(cluster_name("arn:aws:ecs:us-east-1:1:cluster/prod"), "prod");
        assert_eq!(cluster_name("prod"), "prod");
    }
}
