//! Configuration errors: each names its key path and line.

use std::fmt;

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `target_groups[2].health_check.interval`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line of the key (or of the table holding it), when known.
    pub line: Option<usize>,
}

impl ConfigError {
    /// An error at key `path` (empty for the whole file), found on `line` when known.
    pub fn new(path: impl Into<String>, message: impl Into<String>, line: Option<usize>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
