//! Log set-up, the same for both binaries: tracing to stderr, text or one JSON object per
//! line.
//!
//! The filter is `RUST_LOG` when it is set and valid, otherwise `[log].level`, otherwise
//! `info`. The format is `--log-format` when given, otherwise `[log].format`.

use berth_config::model::{LogFormat, LogSettings};

/// The log flags both binaries accept.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log format, overriding `[log].format`.
    #[arg(long, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

impl LogArgs {
    /// The format to log in: the flag, else the configuration's.
    pub fn format(&self, settings: &LogSettings) -> LogFormat {
        match self.log_format.as_deref() {
            Some("json") => LogFormat::Json,
            Some(_) => LogFormat::Text,
            None => settings.format,
        }
    }
}

/// Installs the global tracing subscriber (see the module docs for the filter and format). A
/// second call in one process leaves the first subscriber in place.
pub fn init(settings: &LogSettings, args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: fails only when a subscriber is already set, which then stays.
    let _ = match args.format(settings) {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_overrides_the_configured_format() {
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "info".into(),
        };
        let none = LogArgs::default();
        assert_eq!(none.format(&settings), LogFormat::Json);
        let text = LogArgs {
            log_format: Some("text".into()),
        };
        assert_eq!(text.format(&settings), LogFormat::Text);
        let json = LogArgs {
            log_format: Some("json".into()),
        };
        let text_settings = LogSettings {
            format: LogFormat::Text,
            ..settings
        };
        assert_eq!(json.format(&text_settings), LogFormat::Json);
    }
}
