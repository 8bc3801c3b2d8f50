//! The monitoring artifacts: promtool checks the Prometheus scrape config, rules and rule unit
//! tests; every alert has a firing and a quiet unit test and a runbook in deploy/README.md;
//! recording rules used by the rules and the dashboard exist; the Grafana dashboard has the
//! expected panels. (deploy_metrics.rs checks the metric names against a live scrape,
//! deploy_prometheus.rs runs a real Prometheus.)

mod deploy_common;

use std::collections::BTreeSet;
use std::process::Command;

use deploy_common::*;

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    setup();
    run_ok(
        Command::new("promtool").args(["check", "config", "prometheus/prometheus.yml"]),
        "promtool check config",
    );
    let rules = files("prometheus/rules", ".yml");
    run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .args(&rules),
        "promtool check rules",
    );
    let tests = files("prometheus/tests", ".test.yml");
    assert!(!tests.is_empty());
    let out = run_ok(
        Command::new("promtool")
            .args(["test", "rules"])
            .args(&tests),
        "promtool test rules",
    );
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_has_a_firing_unit_test() {
    let rules = files("prometheus/rules", ".yml");
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    let docs = yaml(&refs, false);
    let mut alerts = BTreeSet::new();
    for doc in docs.as_object().unwrap().values() {
        for g in doc["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                if let Some(a) = r["alert"].as_str() {
                    alerts.insert(a.to_string());
                    assert!(
                        r["annotations"]["runbook"].is_string()
                            && r["annotations"]["summary"].is_string(),
                        "{a}: summary and runbook annotations"
                    );
                }
            }
        }
    }
    let tests = files("prometheus/tests", ".test.yml");
    let refs: Vec<&str> = tests.iter().map(String::as_str).collect();
    let docs = yaml(&refs, false);
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for doc in docs.as_object().unwrap().values() {
        for t in doc["tests"].as_array().unwrap() {
            for a in t["alert_rule_test"].as_array().into_iter().flatten() {
                let name = a["alertname"].as_str().unwrap().to_string();
                if a["exp_alerts"].as_array().is_some_and(|v| !v.is_empty()) {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    let want: BTreeSet<String> = [
        "BerthHigh5xxRatio",
        "BerthTargetGroupNoHealthyTargets",
        "BerthTargetGroupFailingOpen",
        "BerthDiscoveryStale",
        "BerthAwsApiErrors",
        "BerthScalerPinnedAtMax",
        "BerthConfigReloadFailing",
        "BerthCertificateExpiringSoon",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        alerts, want,
        "the alert set changed: update this list and deploy/README.md"
    );
    assert_eq!(firing, alerts, "alerts without a unit test where they fire");
    assert_eq!(
        quiet, alerts,
        "alerts without a unit test where they stay quiet"
    );
    let readme = std::fs::read_to_string(deploy().join("README.md")).unwrap();
    for a in &alerts {
        assert!(
            readme.contains(&format!("### {a}")),
            "deploy/README.md has a runbook for {a}"
        );
    }
}

#[test]
fn recording_rules_used_by_rules_and_dashboard_exist() {
    let (rules, recorded) = rule_exprs();
    let mut missing = Vec::new();
    for (where_, e) in rules.iter().chain(dashboard_exprs().iter()) {
        for r in metric_names(e).1 {
            if !recorded.contains(&r) {
                missing.push(format!("{where_}: {r}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "recording rules used but not defined:\n{}",
        missing.join("\n")
    );
}

#[test]
fn grafana_dashboard_has_the_expected_panels() {
    let d = json("grafana/berth.json");
    assert!(d["uid"].is_string() && d["title"].is_string());
    let titles: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for want in [
        "requests/s",
        "5xx",
        "response time",
        "targets by state",
        "active flows",
        "scaling decisions",
        "desired vs running",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "a panel about {want:?}: {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids unique");
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{:?} has queries",
                p["title"]
            );
        }
    }
    let exprs = dashboard_exprs();
    let text: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    assert!(
        text.contains("histogram_quantile(0.99"),
        "latency percentiles"
    );
}

#[test]
fn metric_names_skip_strings_and_recording_rules() {
    let (n, r) = metric_names(
        r#"sum by (le) (rate(berth_x_bucket{a="berth_not_me"}[5m:1m])) / target_group:berth_y:rate5m"#,
    );
    assert_eq!(n.into_iter().collect::<Vec<_>>(), vec!["berth_x_bucket"]);
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        vec!["target_group:berth_y:rate5m"]
    );
}
