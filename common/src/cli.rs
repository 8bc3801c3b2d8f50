//! [`CommonArgs`]: the command-line flags both binaries accept.

use std::path::PathBuf;

use crate::logs::LogArgs;

/// `--config FILE`, `--check` and the log flags, the same for `berth-proxy` and
/// `berth-scaler` (the deploy files run both with the same `--config`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (TOML; the scaler reads its `[scaler]` table and the target groups
    /// and listeners it names). Without it, the embedded default runs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print every error, and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on LogArgs; clap takes help from its fields.
    pub log: LogArgs,
}
