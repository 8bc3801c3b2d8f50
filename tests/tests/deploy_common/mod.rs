//! Shared helpers of the `deploy_*` tests: paths, the tools installed by `deploy/setup`, YAML
//! read through the repo's Python, and metric names pulled out of PromQL expressions.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use berth_tests::moto::{Moto, NetworkMode, TaskDefinition, TaskSpec};
use berth_tests::Backend;

/// The repository root (`$BERTH_REPO`, else the parent of the berth-tests crate).
pub fn repo() -> PathBuf {
    berth_tests::moto::repo_root()
}

/// `<repo>/deploy`.
pub fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// `<repo>/.venv/bin/<name>`.
pub fn venv_bin(name: &str) -> PathBuf {
    repo().join(".venv").join("bin").join(name)
}

/// Runs `deploy/setup` once per test process (installs cfn-lint, hadolint, dockerfile-parse,
/// promtool, prometheus when missing; a no-op when present). Panics with its output on failure.
pub fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(deploy().join("setup"))
            .output()
            .expect("run deploy/setup");
        assert!(
            out.status.success(),
            "deploy/setup failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs a command (in `deploy/`), returning its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(deploy())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// stdout + stderr as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs and asserts success, returning stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The Python of the repo's virtualenv.
pub fn python() -> Command {
    Command::new(venv_bin("python"))
}

/// YAML files (paths relative to `deploy/`) as JSON, `cfn`: through cfn-lint's decoder.
pub fn yaml(paths: &[&str], cfn: bool) -> serde_json::Value {
    setup();
    let mut cmd = python();
    cmd.arg("tools/yaml2json.py");
    if cfn {
        cmd.arg("--cfn");
    }
    cmd.args(paths);
    let out = run_ok(&mut cmd, "tools/yaml2json.py");
    serde_json::from_str(&out).expect("yaml2json output is JSON")
}

/// A JSON file under `deploy/`.
pub fn json(path: &str) -> serde_json::Value {
    let p = deploy().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// The container `name` of an ECS task definition (JSON, camelCase keys); panics when absent.
pub fn container<'a>(td: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    td["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} in the task definition"))
}

/// A JSON list of strings (a command, image names, ...); panics on anything else.
pub fn strings(list: &serde_json::Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("a string: {v}")))
        .collect()
}

/// The `[[target_groups]]` table `ecs` (health checks off, polled every 500 ms) that follows
/// the service [`moto_with_one_task`] creates.
pub const ECS_API_GROUP: &str = r#"[[target_groups]]
name = "ecs"
health_check = { enabled = false }
[target_groups.source]
kind = "ecs"
cluster = "prod"
service = "api"
container = "app"
port = "http"
poll_interval = "500ms"
"#;

/// Files in `deploy/<dir>` whose names end with `suffix`, as paths relative to `deploy/`.
pub fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(deploy().join(dir))
        .unwrap_or_else(|e| panic!("read deploy/{dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

/// Every PromQL expression of the rule files (`expr` of recording and alerting rules) as
/// (where, expr), and the names the recording rules define.
pub fn rule_exprs() -> (Vec<(String, String)>, BTreeSet<String>) {
    let paths = files("prometheus/rules", ".yml");
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let docs = yaml(&refs, false);
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for (path, doc) in docs.as_object().expect("object") {
        for g in doc["groups"].as_array().expect("groups") {
            for r in g["rules"].as_array().expect("rules") {
                let name = r["record"]
                    .as_str()
                    .or_else(|| r["alert"].as_str())
                    .unwrap_or("?")
                    .to_string();
                if let Some(rec) = r["record"].as_str() {
                    recorded.insert(rec.to_string());
                }
                exprs.push((
                    format!("{path}: {name}"),
                    r["expr"].as_str().expect("expr is a string").to_string(),
                ));
            }
        }
    }
    (exprs, recorded)
}

/// Every expression of the Grafana dashboards (panel targets and templating queries).
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in files("grafana", ".json") {
        let d = json(&path);
        for p in d["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("{path}: panel {:?}", p["title"]), e.to_string()));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(q) = v["query"]["query"].as_str() {
                out.push((format!("{path}: variable {:?}", v["name"]), q.to_string()));
            }
        }
    }
    out
}

/// Metric names in a PromQL expression: identifiers outside string literals that start with
/// `berth_` (berth's own prefix) and contain no `:` (recording rules do), plus, separately, the
/// recording-rule names (identifiers with `:`) it reads.
pub fn metric_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut ident = String::new();
    let flush = |ident: &mut String, names: &mut BTreeSet<String>, rec: &mut BTreeSet<String>| {
        if ident.contains(':') {
            // Not a range/subquery duration like "[5m:1m]" (those never start with a letter).
            if ident
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            {
                rec.insert(ident.clone());
            }
        } else if ident.starts_with("berth_") {
            names.insert(ident.clone());
        }
        ident.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                flush(&mut ident, &mut names, &mut recorded);
                // Skip the string literal (with escapes).
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => ident.push(c),
            _ => flush(&mut ident, &mut names, &mut recorded),
        }
    }
    flush(&mut ident, &mut names, &mut recorded);
    (names, recorded)
}

/// ECS in moto for a test binary with one test: cluster `prod`, service `api` (task definition
/// `api`, container `app`, port mapping `http` on `task`'s port) with one awsvpc task at
/// `task`'s address. The moto environment ([`Moto::aws_env`]) is set in this process, so a
/// berth-proxy started afterwards inherits it.
pub async fn moto_with_one_task(task: &Backend) -> Moto {
    let moto = Moto::launch().await.expect("moto");
    for (k, v) in moto.aws_env() {
        // Inherited by the berth-proxy child; each caller's binary has one test.
        std::env::set_var(k, v);
    }
    moto.create_cluster("prod")
        .await
        .expect("create cluster prod");
    let td = TaskDefinition::single("api", NetworkMode::Awsvpc, task.addr().port());
    moto.register_task_definition(&td)
        .await
        .expect("register task definition api");
    moto.create_service("prod", "api", "api", 1)
        .await
        .expect("create service api");
    moto.create_tasks(&TaskSpec::awsvpc("prod", "api", &[task.addr().ip()]).service("api"))
        .await
        .expect("create the service's task");
    moto
}

/// Whether `path` exists and is executable by someone.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
