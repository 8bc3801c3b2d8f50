//! The process-wide Prometheus recorder, which the admin port's `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder on the first call (histograms with `buckets`, in base units;
/// empty: the exporter's summaries) and returns the handle that renders it. `describe`
/// registers the binary's metric descriptions; it runs on every call, so a later caller's
/// descriptions are kept too. Later calls keep the first recorder and its buckets (tests
/// start several servers in one process).
pub fn install(buckets: &[f64], describe: fn()) -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed: the first one stays.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone();
    describe();
    handle
}
