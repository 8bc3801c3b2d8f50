//! Reading a Prometheus text exposition (berth-proxy's or berth-scaler's `/metrics`) with the
//! `prometheus-parse` crate, the parser berth-scaler reads the proxy with, flattened back into
//! one [`Sample`] per written line so tests can look a series up by the name they see in the
//! text.
//!
//! What `prometheus-parse` groups is split again: a histogram gives its `_bucket` samples (with
//! an `le` label, `+Inf` for the last), a summary its samples with a `quantile` label; `_sum`
//! and `_count` lines stay samples of their own. Label values are unescaped (`\\`, `\"`, `\n`).
//! The crate splits labels at `,` and `=` and ends the label set at the first `}`: a label value
//! holding one of those is not read correctly (berth's label values never do).

use prometheus_parse::{Scrape, Value};

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written, with its `_bucket`/`_sum`/`_count` suffix.
    pub name: String,
    /// Label pairs, sorted by label name (the crate keeps no written order).
    pub labels: Vec<(String, String)>,
    /// The sample's value; `+Inf`, `-Inf` and `NaN` as the matching `f64`.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every sample of an exposition text (comments and unreadable lines skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    let lines = text.lines().map(|line| Ok(line.to_string()));
    match Scrape::parse(lines) {
        Ok(scrape) => scrape.samples.into_iter().flat_map(flatten).collect(),
        // Only a failed read of a line fails the parse, and reading a `&str` cannot fail.
        Err(_) => Vec::new(),
    }
}

/// The text lines `prometheus-parse` folded into one sample, as samples again.
fn flatten(sample: prometheus_parse::Sample) -> Vec<Sample> {
    let mut labels: Vec<(String, String)> = sample
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), unescape(v)))
        .collect();
    labels.sort();
    let with = |extra: (&str, f64)| {
        let mut l = labels.clone();
        l.push((extra.0.to_string(), bound(extra.1)));
        l.sort();
        l
    };
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => vec![Sample {
            name: sample.metric,
            labels,
            value: v,
        }],
        Value::Histogram(buckets) => buckets
            .iter()
            .map(|b| Sample {
                name: format!("{}_bucket", sample.metric),
                labels: with(("le", b.less_than)),
                value: b.count,
            })
            .collect(),
        Value::Summary(quantiles) => quantiles
            .iter()
            .map(|q| Sample {
                name: sample.metric.clone(),
                labels: with(("quantile", q.quantile)),
                value: q.count,
            })
            .collect(),
    }
}

/// A bucket bound or quantile as the text format writes it (`+Inf` for infinity).
fn bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else {
        v.to_string()
    }
}

/// A label value with the text format's escapes (`\\`, `\"`, `\n`) resolved.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Sum of the samples named `name` whose labels include every pair of `labels`; `None` when no
/// sample matches.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .collect();
    if matching.is_empty() {
        None
    } else {
        Some(matching.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_values() {
        let t = "# HELP x y\nberth_requests_total{listener=\"web\",class=\"2xx\"} 3\nberth_requests_total{listener=\"web\",class=\"5xx\"} 2\nup 1\n";
        assert_eq!(
            value(t, "berth_requests_total", &[("listener", "web")]),
            Some(5.0)
        );
        assert_eq!(
            value(t, "berth_requests_total", &[("class", "5xx")]),
            Some(2.0)
        );
        assert_eq!(value(t, "up", &[]), Some(1.0));
        assert_eq!(value(t, "down", &[]), None);
    }

    #[test]
    fn histograms_and_summaries_are_one_sample_per_line() {
        let t = "\
# TYPE berth_request_duration_seconds histogram
berth_request_duration_seconds_bucket{target_group=\"api\",le=\"0.005\"} 1
berth_request_duration_seconds_bucket{target_group=\"api\",le=\"+Inf\"} 4
berth_request_duration_seconds_sum{target_group=\"api\"} 0.75
berth_request_duration_seconds_count{target_group=\"api\"} 4
# TYPE berth_scaler_tick_seconds summary
berth_scaler_tick_seconds{quantile=\"0.5\"} 0.01
berth_scaler_tick_seconds_sum 0.2
berth_scaler_tick_seconds_count 9
";
        let bucket = "berth_request_duration_seconds_bucket";
        assert_eq!(value(t, bucket, &[("le", "+Inf")]), Some(4.0));
        assert_eq!(value(t, bucket, &[("le", "0.005")]), Some(1.0));
        assert_eq!(value(t, bucket, &[("target_group", "api")]), Some(5.0));
        assert_eq!(
            value(t, "berth_request_duration_seconds_count", &[]),
            Some(4.0)
        );
        assert_eq!(
            value(t, "berth_request_duration_seconds_sum", &[]),
            Some(0.75)
        );
        assert_eq!(
            value(t, "berth_scaler_tick_seconds", &[("quantile", "0.5")]),
            Some(0.01)
        );
        assert_eq!(value(t, "berth_scaler_tick_seconds_count", &[]), Some(9.0));
        let names: Vec<String> = parse(t).into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 7, "{names:?}");
    }

    #[test]
    fn infinities_and_escaped_label_values() {
        let t = "gauge_up +Inf\ngauge_down -Inf\n\
                 berth_x{path=\"C:\\\\dir\",note=\"a \\\"b\\\" c\\nd\"} 2\n";
        assert_eq!(value(t, "gauge_up", &[]), Some(f64::INFINITY));
        assert_eq!(value(t, "gauge_down", &[]), Some(f64::NEG_INFINITY));
        assert_eq!(value(t, "berth_x", &[("path", "C:\\dir")]), Some(2.0));
        assert_eq!(value(t, "berth_x", &[("note", "a \"b\" c\nd")]), Some(2.0));
    }
}
