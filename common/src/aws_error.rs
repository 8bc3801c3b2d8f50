//! [`AwsError`]: a failed AWS call, as every berth component reports and counts it.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The AWS error codes that mean "throttled" (ECS, CloudWatch, EC2 and API Gateway spell it
/// differently).
pub const THROTTLING_CODES: [&str; 4] = [
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// A failed AWS call (after the SDK's own retries), or an answer berth cannot use.
/// Displays as `ListTasks failed (ThrottlingException): Rate exceeded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation, e.g. `ListTasks` or `PutMetricData`.
    pub operation: &'static str,
    /// The AWS error code (`AccessDeniedException`, `ServiceNotFoundException`, ...); `None`
    /// when the call never got an AWS answer (network, timeout) or berth found the answer
    /// unusable.
    pub code: Option<String>,
    /// AWS's message, or the transport error with its causes.
    pub message: String,
}

impl AwsError {
    /// The error of `operation` from an SDK error: the service's code and message when AWS
    /// answered, otherwise the whole chain of causes (timeouts, connection errors).
    pub fn from_sdk<E, R>(operation: &'static str, e: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, message) = match e.as_service_error() {
            Some(se) => (
                se.code().map(str::to_string),
                se.message()
                    .map(str::to_string)
                    .unwrap_or_else(|| se.to_string()),
            ),
            None => (None, DisplayErrorContext(e).to_string()),
        };
        AwsError {
            operation,
            code,
            message,
        }
    }

    /// Whether AWS throttled the call (its code is one of [`THROTTLING_CODES`]).
    pub fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| THROTTLING_CODES.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, message: &str) -> SdkError<ErrorMetadata, ()> {
        SdkError::service_error(
            ErrorMetadata::builder().code(code).message(message).build(),
            (),
        )
    }

    #[test]
    fn displays_operation_code_and_message() {
        let e = AwsError::from_sdk("ListTasks", &service_error("ThrottlingException", "slow"));
        assert_eq!(
            e.to_string(),
            "ListTasks failed (ThrottlingException): slow"
        );
        let e = AwsError {
            operation: "UpdateService",
            code: None,
            message: "desired count 3000000000 is too large".into(),
        };
        assert_eq!(
            e.to_string(),
            "UpdateService failed: desired count 3000000000 is too large"
        );
    }

    #[test]
    fn knows_the_throttling_codes() {
        for code in THROTTLING_CODES {
            assert!(AwsError::from_sdk("X", &service_error(code, "m")).is_throttling());
        }
        let denied = AwsError::from_sdk("X", &service_error("AccessDeniedException", "m"));
        assert!(!denied.is_throttling());
        let timeout = AwsError::from_sdk(
            "X",
            &SdkError::<ErrorMetadata, ()>::timeout_error("too slow"),
        );
        assert_eq!(timeout.code, None);
        assert!(!timeout.is_throttling());
        assert!(timeout.message.contains("too slow"), "{}", timeout.message);
    }
}
