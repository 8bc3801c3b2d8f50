//! `berth-proxy`: the load balancer.

use std::process::ExitCode;

use anyhow::Context;
use berth_common::cli::CommonArgs;
use berth_proxy::runtime::ConfigSource;
use clap::Parser;

/// berth: an L7 load balancer for Amazon ECS services.
#[derive(Debug, Parser)]
#[command(name = "berth-proxy", version)]
struct Cli {
    #[command(flatten)]
    args: CommonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = match &cli.args.config {
        Some(p) => ConfigSource::File(p.clone()),
        None => ConfigSource::Embedded,
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(errors) => {
            let origin = cli
                .args
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded default".into());
            eprintln!("{origin}: {} error(s)", errors.0.len());
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.args.check {
        println!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    berth_common::logs::init(&config.log, &cli.args.log);
    match berth_proxy::server::run(config, source).context("berth-proxy failed to start") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
