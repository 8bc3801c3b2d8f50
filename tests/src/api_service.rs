//! The ECS world of the scaler tests: moto with the service `prod/api`, whose tasks follow its
//! desired count and are answered by in-process backends, and proxies discovering it with
//! [`ecs_api_config`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::moto::{Moto, NetworkMode, TaskDefinition};
use crate::{ecs_api_config, net, Backend, Berth};

/// Launches moto with cluster `prod` and service `api` (task definition `api`, awsvpc,
/// container port `port`, desired count 1), starts `tasks` backends named `task0`, `task1`, ...
/// on `port` at fresh target addresses, and has moto place the service's tasks on them (every
/// 200 ms, as many as the desired count).
pub async fn launch(port: u16, tasks: u32) -> anyhow::Result<(Moto, Vec<Backend>)> {
    let moto = Moto::launch().await?;
    moto.create_cluster("prod").await?;
    moto.register_task_definition(&TaskDefinition::single("api", NetworkMode::Awsvpc, port))
        .await?;
    moto.create_service("prod", "api", "api", 1).await?;
    let mut backends = Vec::new();
    for i in 0..tasks {
        let addr = SocketAddr::new(net::target_ip(), port);
        backends.push(Backend::start_on(&format!("task{i}"), addr).await);
    }
    let ips: Vec<_> = backends.iter().map(|b| b.addr().ip()).collect();
    moto.auto_reconcile("prod", "api", &ips, Duration::from_millis(200))
        .await?;
    Ok((moto, backends))
}

/// A proxy discovering `prod/api` from `moto` ([`ecs_api_config`]), returned once the first
/// task `first` is a healthy target (15 s at the most), with its listener address.
pub async fn start_proxy(moto: &Moto, first: &Backend) -> (Berth, SocketAddr) {
    let listen = net::listen_addr();
    let berth = Berth::start_with_env(&ecs_api_config(listen), &[], &moto.aws_env()).await;
    berth
        .wait_healthy("api", &[first.addr()], Duration::from_secs(15))
        .await;
    (berth, listen)
}
