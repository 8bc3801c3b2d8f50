//! A targets file (TOML or JSON), re-read when its modification time or size changes.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_config::model::TargetSpec;

use super::source::{Discovery, DiscoveryError};

/// Targets listed in a file: `targets = [{ address = "127.0.0.2:8080", weight = 1 }]`.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
    cache: Mutex<Option<(SystemTime, u64, Vec<TargetSpec>)>>,
}

impl FileSource {
    /// A source reading `path`, polled every `interval`.
    pub fn new(path: PathBuf, interval: Duration) -> Self {
        FileSource {
            path,
            interval,
            cache: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Discovery for FileSource {
    async fn discover(&self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        let path = self.path.display().to_string();
        let meta =
            tokio::fs::metadata(&self.path)
                .await
                .map_err(|source| DiscoveryError::Read {
                    path: path.clone(),
                    source,
                })?;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let len = meta.len();
        if let Ok(cache) = self.cache.lock() {
            if let Some((m, l, list)) = cache.as_ref() {
                if *m == mtime && *l == len {
                    return Ok(list.clone());
                }
            }
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| DiscoveryError::Read {
                path: path.clone(),
                source,
            })?;
        let list =
            berth_config::parse_targets_file(&text).map_err(|e| DiscoveryError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((mtime, len, list.clone()));
        }
        Ok(list)
    }

    fn poll_interval(&self) -> Duration {
        self.interval
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}
