//! What every target source is: the [`Discovery`] trait, its error, and the fixed-list source.

use std::time::Duration;

use async_trait::async_trait;
use berth_config::model::TargetSpec;

/// Why a source could not produce targets.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A targets file could not be read.
    #[error("cannot read targets file {path}: {source}")]
    Read {
        /// The targets file as configured.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// ECS could not be read and no earlier poll succeeded.
    #[error("ECS: {0}")]
    Ecs(String),
    /// A targets file has invalid content.
    #[error("invalid targets file {path}: {message}")]
    Invalid {
        /// The targets file as configured.
        path: String,
        /// Every problem, one per line.
        message: String,
    },
}

/// A source of targets for one target group.
#[async_trait]
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// The complete current target list, or an error (the caller keeps its last good list).
    async fn discover(&self) -> Result<Vec<TargetSpec>, DiscoveryError>;

    /// Resolves when the source has something new to tell (the next [`Discovery::discover`]
    /// should be called now rather than at the next interval). Sources that only change when
    /// asked never resolve.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }

    /// Whether [`Discovery::look_again`] does anything.
    fn can_look_again(&self) -> bool {
        false
    }

    /// Asks the source to look again soon, ahead of its schedule (rate-limited by the source);
    /// [`Discovery::changed`] resolves when it has.
    fn look_again(&self) {}

    /// How often to ask.
    fn poll_interval(&self) -> Duration;

    /// A short name for logs and metrics (`static`, `file`).
    fn kind(&self) -> &'static str;
}

/// A fixed list.
#[derive(Debug)]
pub struct StaticSource(pub Vec<TargetSpec>);

#[async_trait]
impl Discovery for StaticSource {
    async fn discover(&self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        Ok(self.0.clone())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn kind(&self) -> &'static str {
        "static"
    }
}
