//! Golden tests: every example configuration loads, and every broken fixture produces exactly
//! the error text in its sibling `.expected` file.
//!
//! Regenerate the `.expected` files with `BERTH_BLESS=1 cargo test -p berth-config --release
//! --test golden`, then review every changed file: the message and the line must be right.

use std::path::{Path, PathBuf};

use berth_config::model::{Action, Source, TargetSpec};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `*.toml` files directly in `dir`, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// `*.toml` files anywhere under `dir`, sorted.
fn toml_files_recursive(dir: &Path) -> Vec<PathBuf> {
    let mut out = toml_files(dir);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(toml_files_recursive(&e.path()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn examples_load() {
    let examples = toml_files(&manifest_dir().join("examples"));
    assert!(examples.len() >= 3, "examples missing: {examples:?}");
    for path in &examples {
        if let Err(e) = berth_config::load(path) {
            panic!("{} does not load:\n{e}", path.display());
        }
    }
}

#[test]
fn deploy_configs_load() {
    // Configuration files shipped under deploy/, if any. Targets files are checked as such.
    let deploy = manifest_dir().join("../deploy");
    for path in toml_files_recursive(&deploy) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("targets") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = berth_config::parse_targets_file(&text) {
                panic!("{} is not a valid targets file:\n{e}", path.display());
            }
        } else if let Err(e) = berth_config::load(&path) {
            panic!("{} does not load:\n{e}", path.display());
        }
    }
}

#[test]
fn embedded_default_is_the_documented_one() {
    let c = berth_config::parse(berth_config::EMBEDDED_DEFAULT, Path::new(".")).unwrap();
    assert_eq!(c.admin.bind.to_string(), "127.0.0.1:9901");
    assert!(c.scaler.dry_run);
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(l.rules.len(), 1);
    assert!(matches!(l.rules[0].action, Action::FixedResponse(_)));
    match &l.default_action {
        Action::Forward(g) => assert_eq!(g[0].target_group, "demo"),
        other => panic!("unexpected default action {other:?}"),
    }
    let t = c.target_group("demo").unwrap();
    assert_eq!(t.health_check.interval.as_secs(), 2);
    assert_eq!(t.health_check.timeout.as_secs(), 1);
    assert_eq!(t.health_check.healthy_threshold, 2);
    assert_eq!(t.health_check.unhealthy_threshold, 2);
    assert!(t.health_check.matcher.matches(399) && !t.health_check.matcher.matches(400));
    assert_eq!(t.deregistration_delay.as_secs(), 5);
    match &t.source {
        Source::File(p) => assert_eq!(p, &Path::new(".").join("berth-targets.toml")),
        other => panic!("unexpected source {other:?}"),
    }
}

#[test]
fn broken_fixtures_report_exact_errors() {
    let dir = manifest_dir().join("tests/broken");
    let bless = std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1");
    let fixtures = toml_files(&dir);
    assert!(
        fixtures.len() >= 15,
        "only {} broken fixtures",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for path in &fixtures {
        let actual = match berth_config::load(path) {
            Ok(_) => "<loaded without errors>".to_owned(),
            Err(e) => e.to_string(),
        };
        // File paths in messages are absolute; make them machine-independent.
        let actual = actual.replace(&dir.display().to_string(), "<dir>") + "\n";
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn spec(addr: &str, weight: u32) -> TargetSpec {
    TargetSpec {
        address: addr.parse().unwrap(),
        weight,
        zone: None,
    }
}

#[test]
fn targets_file_toml() {
    let text = r#"
# discovered targets
targets = [
  { address = "127.0.0.2:8080", weight = 2 },
  { address = "[::1]:8081" },
]
"#;
    assert_eq!(
        berth_config::parse_targets_file(text).unwrap(),
        vec![spec("127.0.0.2:8080", 2), spec("[::1]:8081", 1)]
    );
    assert_eq!(berth_config::parse_targets_file("").unwrap(), vec![]);
    assert_eq!(
        berth_config::parse_targets_file("targets = []").unwrap(),
        vec![]
    );
}

#[test]
fn targets_file_json() {
    let text = r#"  {"targets": [{"address": "127.0.0.2:8080", "weight": 2}, {"address": "127.0.0.3:8080"}]}"#;
    assert_eq!(
        berth_config::parse_targets_file(text).unwrap(),
        vec![spec("127.0.0.2:8080", 2), spec("127.0.0.3:8080", 1)]
    );
    assert_eq!(berth_config::parse_targets_file("{}").unwrap(), vec![]);
}

/// The errors of a targets file as one text, one error a line.
fn targets_file_errors(text: &str) -> String {
    berth_config::parse_targets_file(text)
        .unwrap_err()
        .to_string()
}

#[test]
fn targets_file_toml_errors() {
    let text = r#"targets = [
  { address = "127.0.0.2:8080" },
  { address = "127.0.0.2:8080" },
  { address = "localhost:80" },
  { address = "127.0.0.4:80", weight = 0 },
  { weight = 3 },
]
"#;
    assert_eq!(
        targets_file_errors(text),
        "targets[1].address: duplicate target 127.0.0.2:8080 (also at targets[0]) (line 3)\n\
         targets[2].address: invalid address \"localhost:80\" (expected ip:port, e.g. \"127.0.0.1:8080\") (line 4)\n\
         targets[3].weight: must be between 1 and 1000 (line 5)\n\
         targets[4].address: required (line 6)"
    );

    assert_eq!(
        targets_file_errors("targets = [\n  { adress = \"127.0.0.1:1\" },\n]"),
        "targets[0].adress: unknown key \"adress\" (expected one of: address, weight, zone) (line 2)"
    );

    assert_eq!(
        targets_file_errors("targets = [\n  { address = 5 },\n]"),
        "targets[0].address: expected a string, found integer `5` (line 2)"
    );

    let e = berth_config::parse_targets_file("targets = [\n  { address = \"127.0.0.1:1\" ,\n")
        .unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.starts_with("TOML syntax error"), "{e}");
    assert!(e.0[0].line.is_some());
}

#[test]
fn targets_file_json_errors() {
    assert_eq!(
        targets_file_errors(
            "{\"targets\": [\n {\"address\": \"127.0.0.1:1\"},\n {\"address\": \"nope\"}\n]}"
        ),
        "targets[1].address: invalid address \"nope\" (expected ip:port, e.g. \"127.0.0.1:8080\")"
    );

    assert_eq!(
        targets_file_errors("{\"targets\": [\n {\"adress\": \"x\"}\n]}"),
        "targets[0].adress: unknown key \"adress\" (expected one of: address, weight, zone) (line 2)"
    );

    assert_eq!(
        targets_file_errors("{\"targets\": [\n {\"address\": 5}\n]}"),
        "targets[0].address: expected a string, found integer `5` (line 2)"
    );

    let e = berth_config::parse_targets_file("{\"targets\": [").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, Some(1));

    let e = berth_config::parse_targets_file("{\"targets\": []} x").unwrap_err();
    assert_eq!(e.0[0].message, "trailing characters after the JSON object");
}
