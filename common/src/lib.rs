//! What `berth-proxy` and `berth-scaler` share, so the two binaries cannot drift apart:
//!
//! - [`sdk_config`]: one AWS SDK configuration (region, credentials and endpoints from the
//!   default chain; retry and timeout policy).
//! - [`aws_error`]: one error type for a failed AWS call, which knows the throttling codes.
//! - [`aws_calls`]: counting every AWS call by operation and outcome.
//! - [`proxy_metric_names`]: the proxy metric names the scaler scrapes.
//! - [`prometheus`]: installing the process-wide Prometheus recorder.
//! - [`cli`]: the flags both binaries accept (`--config`, `--check`, `--log-format`).
//! - [`logs`]: the `--log-format` flag and the tracing subscriber.
//! - [`admin_server`]: the admin port's accept loop and HTTP/1.1 connection serving.

#![warn(missing_docs)]

pub mod admin_server;
pub mod aws_calls;
pub mod aws_error;
pub mod cli;
pub mod logs;
pub mod prometheus;
pub mod proxy_metric_names;
pub mod sdk_config;
