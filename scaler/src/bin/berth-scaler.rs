//! `berth-scaler`: the scaling sidecar.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// berth-scaler: scales ECS services from berth's request metrics.
#[derive(Debug, Parser)]
#[command(name = "berth-scaler", version)]
struct Cli {
    /// Configuration file (TOML; the `[scaler]` table). Without it, the embedded default.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print every error, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match &cli.config {
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
    let s = &config.scaler;
    let summary = format!(
        "scaler config ok: metrics from {}, every {:?}, dry_run = {}, admin on {}",
        s.metrics_url, s.interval, s.dry_run, s.admin_bind
    );
    if cli.check {
        println!("{summary}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level)),
        )
        .with_writer(std::io::stderr)
        .init();
    tracing::info!("{summary}");
    tracing::warn!("scaling policies are not implemented yet: the scaler only validates its configuration");
    ExitCode::SUCCESS
}
