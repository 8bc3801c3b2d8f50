//! Every AWS call the scaler makes: ECS DescribeServices / UpdateService ([`EcsCapacity`], a
//! [`CapacityController`]) and CloudWatch PutMetricData / GetMetricData ([`AwsCloudWatch`], a
//! [`MetricSink`]). This is the only file that names AWS SDK types.
//!
//! Both clients are built from [`berth_common::sdk_config::load`] (the default chain, the
//! SDK's standard retries, berth's timeouts); every call is counted in
//! `berth_aws_api_calls_total{operation,outcome}` ([`berth_common::aws_calls`]).

use std::time::SystemTime;

use async_trait::async_trait;
use berth_common::aws_calls::counted;
use berth_common::aws_error::AwsError;

use crate::capacity::{service_not_found, CapacityController, ServiceCounts};
use crate::sink::{Datum, MetricSink, SumQuery, Unit};

/// The scaler's [`CapacityController`] on real ECS: DescribeServices and UpdateService through
/// the AWS SDK.
#[derive(Debug, Clone)]
pub struct EcsCapacity {
    client: aws_sdk_ecs::Client,
}

impl EcsCapacity {
    /// An ECS client from the loaded SDK configuration ([`berth_common::sdk_config::load`]).
    pub fn new(conf: &aws_config::SdkConfig) -> EcsCapacity {
        EcsCapacity {
            client: aws_sdk_ecs::Client::new(conf),
        }
    }
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

#[async_trait]
impl CapacityController for EcsCapacity {
    async fn describe(&self, cluster: &str, service: &str) -> Result<ServiceCounts, AwsError> {
        const OP: &str = "DescribeServices";
        let r = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await;
        let out = counted(OP, r)?;
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
                Err(service_not_found(format!(
                    "service {service} in cluster {cluster}: {reason}"
                )))
            }
        }
    }

    async fn set_desired(
        &self,
        cluster: &str,
        service: &str,
        desired: u32,
    ) -> Result<(), AwsError> {
        const OP: &str = "UpdateService";
        let desired = i32::try_from(desired).map_err(|_| AwsError {
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
        counted(OP, r)?;
        Ok(())
    }
}

/// CloudWatch through the AWS SDK (Smithy RPC v2 CBOR protocol).
#[derive(Debug, Clone)]
pub struct AwsCloudWatch {
    client: aws_sdk_cloudwatch::Client,
}

impl AwsCloudWatch {
    /// A CloudWatch client from the loaded SDK configuration
    /// ([`berth_common::sdk_config::load`]).
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
    async fn put(&self, namespace: &str, datums: &[Datum]) -> Result<(), AwsError> {
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
        counted(OP, r)?;
        Ok(())
    }

    async fn sums(
        &self,
        namespace: &str,
        queries: &[SumQuery],
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Vec<Option<f64>>, AwsError> {
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
        let out = counted(OP, r)?;
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
