//! The task role in deploy/cloudformation/berth-iam.yaml grants exactly the AWS operations the
//! code calls.
//!
//! The code side: every AWS SDK fluent call in proxy/src and scaler/src — `.<operation>()`
//! followed, in the same statement, by `.send()` — where `<operation>` is an operation of an
//! `aws-sdk-*` crate the binary depends on (the crate's `src/operation/<name>/` modules, at the
//! version in Cargo.lock). `describe_tasks` on aws-sdk-ecs becomes `ecs:DescribeTasks`.
//! The policy side: every `Action` of the TaskRole's policies, both branches of conditions
//! included (the union is what a full deployment — EC2 targets, scaled services — grants).

mod deploy_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use deploy_common::*;
use serde_json::Value;

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"))
}

/// `aws-sdk-*` crates a member crate depends on.
fn sdk_crates(member: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join(member).join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("aws-sdk-"))
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .map(String::from)
        .collect()
}

fn locked_version(krate: &str) -> String {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let needle = format!("name = \"{krate}\"\nversion = \"");
    let at = lock
        .find(&needle)
        .unwrap_or_else(|| panic!("{krate} not in Cargo.lock"));
    let rest = &lock[at + needle.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// snake_case operation names of an SDK crate, from its `src/operation/` modules.
fn operations(krate: &str) -> BTreeSet<String> {
    let version = locked_version(krate);
    let dir_name = format!("{krate}-{version}");
    let mut roots = vec![repo().join("vendor").join(&dir_name)];
    if let Ok(rd) = std::fs::read_dir(cargo_home().join("registry").join("src")) {
        roots.extend(rd.filter_map(|e| e.ok()).map(|e| e.path().join(&dir_name)));
    }
    let root = roots
        .iter()
        .find(|r| r.join("src").join("operation").is_dir())
        .unwrap_or_else(|| {
            panic!("source of {dir_name} not found in {roots:?}: run `cargo fetch` first")
        });
    std::fs::read_dir(root.join("src").join("operation"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Removes `//` and `/* */` comments (string literals are left alone; a `//` inside a string
/// would cut it, which only loses candidates on that line).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            rest = &rest[end..];
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map(|i| i + 2).unwrap_or(rest.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// (IAM action, "file:line") for every SDK call in `member/src`.
fn sdk_calls(member: &str, services: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&repo().join(member).join("src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files {
        let src = strip_comments(&std::fs::read_to_string(&f).unwrap());
        let bytes = src.as_bytes();
        let mut i = 0;
        while let Some(dot) = src[i..].find('.').map(|d| d + i) {
            i = dot + 1;
            let ident_len = src[i..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            if ident_len == 0 || !src[i + ident_len..].starts_with("()") {
                continue;
            }
            let ident = &src[i..i + ident_len];
            // The rest of the statement must send the request.
            let stmt_end = src[i..].find(';').map(|e| e + i).unwrap_or(src.len());
            if !src[i..stmt_end].contains(".send()") {
                continue;
            }
            let mut owners: Vec<&String> = services
                .iter()
                .filter(|(_, ops)| ops.contains(ident))
                .map(|(svc, _)| svc)
                .collect();
            if owners.len() > 1 {
                owners.retain(|svc| src.contains(&format!("aws_sdk_{svc}")));
            }
            let line = bytes[..dot].iter().filter(|b| **b == b'\n').count() + 1;
            let at = format!("{}:{line}", f.strip_prefix(repo()).unwrap_or(&f).display());
            match owners.as_slice() {
                [] => {}
                [svc] => found.push((format!("{svc}:{}", pascal(ident)), at)),
                many => panic!("{at}: .{ident}() is an operation of several SDKs {many:?}"),
            }
        }
    }
    found
}

fn collect_actions(stmt: &Value, out: &mut BTreeSet<String>) {
    // A statement, or {"Fn::If": [cond, statement, {"Ref": "AWS::NoValue"}]}.
    if let Some(branches) = stmt.get("Fn::If").and_then(Value::as_array) {
        for b in &branches[1..] {
            collect_actions(b, out);
        }
        return;
    }
    match &stmt["Action"] {
        Value::String(a) => {
            out.insert(a.clone());
        }
        Value::Array(v) => out.extend(v.iter().filter_map(|a| a.as_str().map(String::from))),
        Value::Null => {}
        other => panic!("Action is not a string or a list: {other}"),
    }
    assert!(
        stmt.get("NotAction").is_none(),
        "NotAction in the task role"
    );
    assert_eq!(
        stmt.get("Effect")
            .and_then(Value::as_str)
            .unwrap_or("Allow"),
        "Allow"
    );
}

fn granted() -> BTreeSet<String> {
    let cfn = yaml(&["cloudformation/berth-iam.yaml"], true);
    let role = &cfn["cloudformation/berth-iam.yaml"]["Resources"]["TaskRole"];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert!(
        role["Properties"]["ManagedPolicyArns"].is_null(),
        "no managed policies on the task role: grants would escape this test"
    );
    let mut out = BTreeSet::new();
    for p in role["Properties"]["Policies"]
        .as_array()
        .expect("inline policies")
    {
        for s in p["PolicyDocument"]["Statement"].as_array().unwrap() {
            collect_actions(s, &mut out);
        }
    }
    for a in &out {
        assert!(!a.contains('*'), "wildcard action {a} in the task role");
    }
    out
}

#[test]
fn task_role_grants_exactly_the_operations_the_code_calls() {
    let mut services: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for member in ["proxy", "scaler"] {
        for krate in sdk_crates(member) {
            let svc = krate.trim_start_matches("aws-sdk-").to_string();
            services.entry(svc).or_insert_with(|| operations(&krate));
        }
    }
    assert!(
        services.contains_key("ecs"),
        "proxy depends on aws-sdk-ecs: {services:?}"
    );

    let proxy_calls = sdk_calls("proxy", &services);
    let scaler_calls = sdk_calls("scaler", &services);
    let mut report = String::new();
    for (a, at) in proxy_calls.iter().chain(&scaler_calls) {
        report.push_str(&format!("  {a:40} {at}\n"));
    }
    println!("AWS SDK calls found:\n{report}");

    let called: BTreeSet<String> = proxy_calls
        .iter()
        .chain(&scaler_calls)
        .map(|(a, _)| a.clone())
        .collect();
    // The discovery calls are known; if none is found the scan itself is broken.
    for a in [
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "ecs:DescribeTaskDefinition",
    ] {
        assert!(
            called.contains(a),
            "scan found no {a}; calls found:\n{report}"
        );
    }

    let granted = granted();
    let not_granted: Vec<&String> = called.difference(&granted).collect();
    let not_called: Vec<&String> = granted.difference(&called).collect();
    let mut msg = String::new();
    if !not_granted.is_empty() {
        msg.push_str(&format!(
            "called by the code but NOT granted by TaskRole in deploy/cloudformation/berth-iam.yaml \
             (the call would fail with AccessDenied in AWS): {not_granted:?}\n"
        ));
    }
    if !not_called.is_empty() {
        msg.push_str(&format!(
            "granted by TaskRole but called nowhere in proxy/src or scaler/src (remove them: \
             least privilege): {not_called:?}\n"
        ));
    }
    assert!(
        msg.is_empty(),
        "{msg}calls found:\n{report}granted: {granted:?}"
    );
}

#[test]
fn pascal_case_matches_iam_names() {
    assert_eq!(pascal("describe_task_definition"), "DescribeTaskDefinition");
    assert_eq!(pascal("put_metric_data"), "PutMetricData");
}
