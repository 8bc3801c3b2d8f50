//! Counting AWS calls: every call either binary makes is counted in [`AWS_API_CALLS`] by
//! `operation` and `outcome`, the same series from both (dashboards and the
//! `BerthAwsApiErrors` alert sum them by `job`).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws_error::AwsError;

/// AWS API calls by `operation` (`ListTasks`, `UpdateService`, ...) and `outcome` (`success`,
/// `throttled`, `error`). CloudWatch: `AWS/Usage` `CallCount`.
pub const AWS_API_CALLS: &str = "berth_aws_api_calls_total";

/// Registers the description of [`AWS_API_CALLS`] with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(AWS_API_CALLS, "AWS API calls by operation and outcome.");
}

/// Counts one finished call of `operation`: `success`, `throttled` ([`AwsError::is_throttling`])
/// or `error`.
pub fn count<T>(operation: &'static str, result: &Result<T, AwsError>) {
    let outcome = match result {
        Ok(_) => "success",
        Err(e) if e.is_throttling() => "throttled",
        Err(_) => "error",
    };
    metrics::counter!(AWS_API_CALLS, "operation" => operation, "outcome" => outcome).increment(1);
}

/// The result of one SDK call of `operation`, counted, with its error as an [`AwsError`].
pub fn counted<T, E, R>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let result = result.map_err(|e| AwsError::from_sdk(operation, &e));
    count(operation, &result);
    result
}
