//! Every AWS call the scaler makes: ECS DescribeServices / UpdateService ([`AwsEcs`], a
//! [`CapacityController`]) and CloudWatch PutMetricData / GetMetricData ([`AwsCloudWatch`], a
//! [`MetricSink`]). This is the only file that names AWS SDK types.
//!
//! Region, credentials and endpoint come from the SDK's default chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, task role, ...). Throttling and 5xx answers are retried by the SDK's
//! standard retry strategy (exponential backoff with jitter, 4 attempts). Every call is counted
//! in `berth_aws_api_calls_total{operation,outcome}`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;

use crate::capacity::{CapacityController, CapacityError, ServiceCounts};
use crate::metrics as m;
use crate::sink::{Datum, MetricSink, SinkError, SumQuery, Unit};

/// The shared SDK configuration: standard retries (4 attempts, 100 ms .. 5 s backoff) and
/// timeouts (5 s per attempt, 20 s per operation).
pub async fn sdk_config() -> aws_config::SdkConfig {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5));
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(20))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts)
        .load()
        .await
}

fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "Throttling"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
        )
    )
}

fn count(operation: &'static str, code: Option<Option<&str>>) {
    let outcome = match code {
        None => "success",
        Some(c) if is_throttling(c) => "throttled",
        Some(_) => "error",
    };
    metrics::counter!(m::AWS_API_CALLS, "operation" => operation, "outcome" => outcome)
        .increment(1);
}

/// Counts one call's outcome; an error comes back as its AWS error code and message.
fn counted<T, E, R>(
    operation: &'static str,
    r: Result<T, aws_sdk_cloudwatch::error::SdkError<E, R>>,
) -> Result<T, (Option<String>, String)>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match r {
        Ok(v) => {
            count(operation, None);
            Ok(v)
        }
        Err(e) => {
            let (code, message) = error_parts(&e);
            count(operation, Some(code.as_deref()));
            Err((code, message))
        }
    }
}

fn error_parts<E, R>(e: &aws_sdk_cloudwatch::error::SdkError<E, R>) -> (Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(se) => (
            se.code().map(str::to_string),
            se.message()
                .map(str::to_string)
                .unwrap_or_else(|| se.to_string()),
        ),
        None => (
            None,
            aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string(),
        ),
    }
}

/// ECS through the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsEcs {
    client: aws_sdk_ecs::Client,
}

impl AwsEcs {
    /// A client from a loaded SDK configuration.
    pub fn new(conf: &aws_config::SdkConfig) -> AwsEcs {
        AwsEcs {
            client: aws_sdk_ecs::Client::new(conf),
        }
    }
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

#[async_trait]
impl CapacityController for AwsEcs {
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, CapacityError> {
        const OP: &str = "DescribeServices";
        let r = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await;
        let out = counted(OP, r).map_err(|(code, message)| CapacityError {
            operation: OP,
            code,
            message,
        })?;
        let found = out
            .services()
            .iter()
            .find(|s| s.service_name() == Some(service) || s.service_arn() == Some(service));
        match found {
            Some(s) if s.status() != Some("INACTIVE") => Ok(ServiceCounts {
                desired: non_negative(s.desired_count()),
                running: non_negative(s.running_count()),
                pending: non_negative(s.pending_count()),
            }),
            _ => {
                let reason = out
                    .failures()
                    .first()
                    .and_then(|f| f.reason())
                    .unwrap_or("not found or inactive");
                Err(CapacityError {
                    operation: OP,
                    code: Some("ServiceNotFoundException".into()),
                    message: format!("service {service} in cluster {cluster}: {reason}"),
                })
            }
        }
    }

    async fn set_desired(
        &self,
        cluster: &str,
        service: &str,
        desired: u32,
    ) -> Result<(), CapacityError> {
        const OP: &str = "UpdateService";
        let desired = i32::try_from(desired).map_err(|_| CapacityError {
            operation: OP,
            code: None,
            message: format!("desired count {desired} is too large"),
        })?;
        let r = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .desired_count(desired)
            .send()
            .await;
        counted(OP, r).map_err(|(code, message)| CapacityError {
            operation: OP,
            code,
            message,
        })?;
        Ok(())
    }
}

/// CloudWatch through the AWS SDK (Smithy RPC v2 CBOR protocol).
#[derive(Debug, Clone)]
pub struct AwsCloudWatch {
    client: aws_sdk_cloudwatch::Client,
}

impl AwsCloudWatch {
    /// A client from a loaded SDK configuration.
    pub fn new(conf: &aws_config::SdkConfig) -> AwsCloudWatch {
        AwsCloudWatch {
            client: aws_sdk_cloudwatch::Client::new(conf),
        }
    }
}

fn dims(d: &[(&'static str, String)]) -> Vec<aws_sdk_cloudwatch::types::Dimension> {
    d.iter()
        .map(|(n, v)| {
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name(*n)
                .value(v)
                .build()
        })
        .collect()
}

#[async_trait]
impl MetricSink for AwsCloudWatch {
    async fn put(&self, namespace: &str, datums: &[Datum]) -> Result<(), SinkError> {
        use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
        const OP: &str = "PutMetricData";
        let data: Vec<MetricDatum> = datums
            .iter()
            .map(|d| {
                MetricDatum::builder()
                    .metric_name(d.name)
                    .set_dimensions(Some(dims(&d.dimensions)))
                    .value(d.value)
                    .unit(match d.unit {
                        Unit::Count => StandardUnit::Count,
                        Unit::Seconds => StandardUnit::Seconds,
                    })
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(d.timestamp))
                    .storage_resolution(i32::try_from(d.storage_resolution).unwrap_or(60))
                    .build()
            })
            .collect();
        let r = self
            .client
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data))
            .send()
            .await;
        counted(OP, r).map_err(|(code, message)| SinkError {
            operation: OP,
            code,
            message,
        })?;
        Ok(())
    }

    async fn sums(
        &self,
        namespace: &str,
        queries: &[SumQuery],
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Vec<Option<f64>>, SinkError> {
        use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat};
        const OP: &str = "GetMetricData";
        let period = end
            .duration_since(start)
            .map(|d| d.as_secs())
            .unwrap_or(60)
            .max(1);
        let period = i32::try_from(period).unwrap_or(3600);
        let q: Vec<MetricDataQuery> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                MetricDataQuery::builder()
                    .id(format!("q{i}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(namespace)
                                    .metric_name(q.name)
                                    .set_dimensions(Some(dims(&q.dimensions)))
                                    .build(),
                            )
                            .period(period)
                            .stat("Sum")
                            .build(),
                    )
                    .return_data(true)
                    .build()
            })
            .collect();
        let r = self
            .client
            .get_metric_data()
            .set_metric_data_queries(Some(q))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(start))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(end))
            .send()
            .await;
        let out = counted(OP, r).map_err(|(code, message)| SinkError {
            operation: OP,
            code,
            message,
        })?;
        let mut sums = vec![None; queries.len()];
        for res in out.metric_data_results() {
            let Some(i) = res
                .id()
                .and_then(|id| id.strip_prefix('q'))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some(slot) = sums.get_mut(i) {
                let v = res.values();
                if !v.is_empty() {
                    *slot = Some(v.iter().sum());
                }
            }
        }
        Ok(sums)
    }
}
