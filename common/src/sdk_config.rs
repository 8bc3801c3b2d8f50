//! The AWS SDK configuration both binaries load once at start.
//!
//! Region, credentials and endpoint come from the SDK's default chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECS`, ..., the task role). Throttling and 5xx answers
//! are retried by the SDK's standard retry strategy: exponential backoff with full jitter.

use std::time::Duration;

/// Attempts per call, the first included.
pub const MAX_ATTEMPTS: u32 = 4;
/// Backoff before the first retry; it doubles per retry up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Loads the default chain with berth's retry ([`MAX_ATTEMPTS`], [`INITIAL_BACKOFF`] ..
/// [`MAX_BACKOFF`]) and timeout ([`ATTEMPT_TIMEOUT`], [`OPERATION_TIMEOUT`]) policy. Every SDK
/// client berth makes (ECS, EC2, CloudWatch) is built from it.
pub async fn load() -> aws_config::SdkConfig {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF);
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts)
        .load()
        .await
}
