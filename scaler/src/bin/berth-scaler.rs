//! `berth-scaler`: the scaling sidecar.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_common::cli::CommonArgs;
use berth_config::model::{Aggregate, Config};
use berth_scaler::capacity::{CapacityController, SimulatedCapacity};
use berth_scaler::runner::{Controller, LastDecisions, Runner};
use berth_scaler::sink::{MetricSink, Publisher};
use clap::Parser;

/// berth-scaler: scales ECS services from berth's request metrics.
#[derive(Debug, Parser)]
#[command(name = "berth-scaler", version)]
struct Cli {
    #[command(flatten)]
    args: CommonArgs,
}

fn summary(config: &Config) -> String {
    let s = &config.scaler;
    format!(
        "scaler config ok: metrics from {}, every {:?}, dry_run = {}, admin on {}, {} service(s), \
         publish = {}, aggregate = {}, AWS needed = {}",
        s.metrics_url,
        s.interval,
        s.dry_run,
        s.admin_bind,
        s.services.len(),
        s.publish,
        match s.aggregate {
            Aggregate::Local => "local",
            Aggregate::CloudWatch => "cloudwatch",
        },
        s.needs_aws()
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match &cli.args.config {
        Some(p) => berth_config::load(p),
        None => berth_config::parse(berth_config::EMBEDDED_DEFAULT, std::path::Path::new(".")),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{} error(s)", errors.0.len());
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.args.check {
        println!("{}", summary(&config));
        return ExitCode::SUCCESS;
    }
    berth_common::logs::init(&config.log, &cli.args.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let s = &config.scaler;
    tracing::info!("{}", summary(&config));
    let prom = berth_scaler::metrics::install();
    let (tx, rx) = tokio::sync::watch::channel(false);

    let sdk = if s.needs_aws() {
        Some(berth_common::sdk_config::load().await)
    } else {
        tracing::info!(
            "no AWS call needed (dry run with dry_run_count, publish off): no credentials used"
        );
        None
    };
    let simulated = Arc::new(SimulatedCapacity::new(s.services.iter().filter_map(
        |svc| {
            svc.dry_run_count
                .map(|n| ((svc.cluster.clone(), svc.service.clone()), n))
        },
    )));
    let ecs: Option<Arc<dyn CapacityController>> = sdk
        .as_ref()
        .map(|c| Arc::new(berth_scaler::aws::EcsCapacity::new(c)) as Arc<dyn CapacityController>);
    let mut controllers = Vec::new();
    for svc in &s.services {
        let c = match (svc.dry_run_count, &ecs) {
            (Some(_), _) => Controller {
                capacity: simulated.clone(),
                may_update: true,
            },
            (None, Some(ecs)) => Controller {
                capacity: ecs.clone(),
                may_update: !s.dry_run,
            },
            (None, None) => anyhow::bail!(
                "service {} needs ECS but no AWS configuration was loaded",
                svc.service
            ),
        };
        controllers.push(c);
    }
    let cloudwatch: Option<Arc<dyn MetricSink>> = match (&sdk, s.publish) {
        (Some(c), true) => Some(Arc::new(berth_scaler::aws::AwsCloudWatch::new(c))),
        _ => None,
    };
    let mut tasks = Vec::new();
    let publisher = match &cloudwatch {
        Some(sink) => {
            let (p, task) = Publisher::spawn(
                sink.clone(),
                s.namespace.clone(),
                s.publish_buffer,
                rx.clone(),
            );
            tasks.push(task);
            Some(p)
        }
        None => None,
    };
    // Reads the sum across replicas (aggregate = "cloudwatch") or counts the replicas
    // publishing (aggregate = "local").
    let aggregate_sink = cloudwatch.clone();

    let last: LastDecisions = Default::default();
    let listener = berth_scaler::admin::bind(s.admin_bind)
        .await
        .with_context(|| format!("bind the admin address {}", s.admin_bind))?;
    tracing::info!(
        "admin on http://{}/metrics",
        listener.local_addr().unwrap_or(s.admin_bind)
    );
    tasks.push(tokio::spawn(berth_scaler::admin::serve(
        listener,
        prom,
        last.clone(),
        rx.clone(),
    )));

    if s.services.is_empty() {
        tracing::info!("no [[scaler.services]]: scraping only (add services to scale)");
    }
    let runner = Runner::new(
        &config,
        controllers,
        aggregate_sink,
        publisher,
        chrono::Utc::now(),
        last,
    )
    .context("scraper")?;
    let run = tokio::spawn(runner.run(rx.clone()));

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = tx.send(true);
    let _ = run.await;
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), t).await;
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
