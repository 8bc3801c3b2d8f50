//! The image and ECS deploy artifacts, each checked by the real tool that consumes or lints it:
//! hadolint + dockerfile-parse (Dockerfile), botocore's ECS model (task and service definitions),
//! `berth-proxy --check` (the ECS config), plus the cross-references between them and the
//! application side (deploy/app). CloudFormation is checked in deploy_cloudformation.rs,
//! Prometheus and Grafana in deploy_monitoring.rs.
//!
//! No container engine runs here, so the image is not built: the Dockerfile is linted and its
//! structure asserted (see `dockerfile_*`).

mod deploy_common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use deploy_common::*;
use serde_json::Value;

// ---- Dockerfile -------------------------------------------------------------------------------

#[test]
fn dockerfile_passes_hadolint() {
    setup();
    run_ok(
        Command::new(venv_bin("hadolint")).args(["--config", ".hadolint.yaml", "Dockerfile"]),
        "hadolint deploy/Dockerfile",
    );
    run_ok(
        Command::new("sh").args(["-n", "docker-entrypoint.sh"]),
        "sh -n deploy/docker-entrypoint.sh",
    );
    assert!(
        is_executable(&deploy().join("docker-entrypoint.sh")),
        "entrypoint must be executable"
    );
}

fn instructions<'a>(stage: &'a Value, name: &str) -> Vec<&'a str> {
    stage["instructions"]
        .as_array()
        .expect("instructions")
        .iter()
        .filter(|i| i["instruction"] == name)
        .map(|i| i["value"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_stops_gracefully() {
    setup();
    let out = run_ok(
        python().args(["tools/dockerfile_facts.py", "Dockerfile"]),
        "dockerfile-parse",
    );
    let facts: Value = serde_json::from_str(&out).expect("facts JSON");
    let stages = facts["stages"].as_array().expect("stages");
    assert!(stages.len() >= 2, "multi-stage build expected: {stages:?}");
    let builder = stages
        .iter()
        .find(|s| s["as"] == "builder")
        .expect("a stage named builder");
    let runtime = stages.last().unwrap();
    let images = strings(&facts["parent_images"]);
    assert!(
        images[0].starts_with("rust:"),
        "builder from the rust image: {images:?}"
    );
    let last = images.last().unwrap();
    assert!(
        last.starts_with("debian:") && last.ends_with("-slim"),
        "runtime is debian slim: {images:?}"
    );

    let build_runs = instructions(builder, "RUN").join("\n");
    assert!(
        build_runs.contains("cmake"),
        "builder installs cmake: {build_runs}"
    );
    assert!(
        build_runs.contains("cargo build --release"),
        "builder runs cargo build --release: {build_runs}"
    );
    for bin in ["berth-proxy", "berth-scaler"] {
        assert!(build_runs.contains(&format!("-p {bin}")), "builds {bin}");
    }

    let copies = instructions(runtime, "COPY").join("\n");
    for bin in ["berth-proxy", "berth-scaler"] {
        assert!(
            copies.contains("--from=builder") && copies.contains(bin),
            "runtime copies {bin} from the builder: {copies}"
        );
    }
    let user = instructions(runtime, "USER");
    let user = user.last().expect("runtime sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runtime user is not root: {user}"
    );
    assert_eq!(instructions(runtime, "STOPSIGNAL"), vec!["SIGTERM"]);
    let health = instructions(runtime, "HEALTHCHECK").join(" ");
    assert!(
        health.contains("/healthz"),
        "health check on /healthz: {health}"
    );
    let entry = instructions(runtime, "ENTRYPOINT").join(" ");
    assert!(
        entry.starts_with('['),
        "exec-form ENTRYPOINT (signals reach berth): {entry}"
    );
    let cmd = instructions(runtime, "CMD").join(" ");
    assert!(
        cmd.contains("berth-proxy"),
        "default command runs the proxy: {cmd}"
    );
    let expose = instructions(runtime, "EXPOSE").join(" ");
    for port in ["8080", "9901", "9902"] {
        assert!(expose.contains(port), "EXPOSE {port}: {expose}");
    }

    // The stop timeout cannot be set in a Dockerfile; the comment must say what to set, and
    // the entrypoint must exec (so SIGTERM reaches berth, not a shell).
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(
        text.contains("stopTimeout") && text.contains("grace_period"),
        "Dockerfile comment explains the stop timeout vs grace period"
    );
    let entry = std::fs::read_to_string(deploy().join("docker-entrypoint.sh")).unwrap();
    assert!(
        entry.contains("exec \"$@\""),
        "entrypoint execs its command"
    );
}

// ---- ECS ---------------------------------------------------------------------------------------

#[test]
fn ecs_definitions_match_botocore_model() {
    setup();
    let out = run_ok(
        python().args([
            "tools/ecs_validate.py",
            "ecs/task-definition.json",
            "ecs/service.json",
            "app/task-definition.json",
        ]),
        "botocore validation of deploy/ecs and deploy/app",
    );
    assert_eq!(out.matches("valid ").count(), 3, "{out}");
}

// ---- the application side: deploy/app ---------------------------------------------------------

/// The example application task definition is the one `ecs/berth.toml` routes to (container
/// `app`, port mapping `http`), runs under `stop-delay.sh`, has a container health check, and
/// gives the application more time than the delay before SIGKILL.
#[test]
fn app_example_fits_berth_toml_and_stops_safely() {
    let td = json("app/task-definition.json");
    let cfg = berth_config::load(&deploy().join("ecs/berth.toml")).expect("berth.toml loads");
    let ecs = cfg
        .target_groups
        .iter()
        .find_map(|g| match &g.source {
            berth_config::model::Source::Ecs(e) => Some(e.clone()),
            _ => None,
        })
        .expect("an ECS target group in berth.toml");
    let app = container(&td, &ecs.container);
    let (port_name, port_number) = match &ecs.port {
        berth_config::model::PortRef::Name(n) => (n.clone(), None),
        berth_config::model::PortRef::Number(n) => (n.to_string(), Some(u64::from(*n))),
    };
    assert!(
        app["portMappings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port_name.as_str()
                || port_number.is_some() && p["containerPort"].as_u64() == port_number),
        "the app container maps the port berth.toml names ({port_name})"
    );
    assert_eq!(
        app["entryPoint"][0], "/stop-delay.sh",
        "runs under stop-delay.sh"
    );
    assert!(
        app["healthCheck"]["command"].is_array(),
        "has a container health check"
    );
    let delay: u64 = app["environment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "BERTH_STOP_DELAY")
        .and_then(|e| e["value"].as_str())
        .and_then(|v| v.parse().ok())
        .expect("BERTH_STOP_DELAY set");
    let poll = ecs.poll_interval;
    assert!(
        Duration::from_secs(delay) > poll + Duration::from_millis(500),
        "the stop delay ({delay} s) exceeds berth's detection ({poll:?} poll + call latency)"
    );
    let stop_timeout = app["stopTimeout"].as_u64().expect("stopTimeout");
    assert!(
        stop_timeout >= delay + 10,
        "stopTimeout {stop_timeout} leaves the application 10 s after the delay"
    );
}

/// `stop-delay.sh` keeps the application running for BERTH_STOP_DELAY seconds after SIGTERM,
/// then passes SIGTERM on and exits with the application's status; a bad setting is refused.
#[test]
fn stop_delay_wrapper_delays_sigterm_and_keeps_the_exit_status() {
    let script = deploy().join("app/stop-delay.sh");
    run_ok(
        Command::new("sh").arg("-n").arg(&script),
        "sh -n deploy/app/stop-delay.sh",
    );
    assert!(is_executable(&script), "stop-delay.sh must be executable");
    let marker = tempfile::tempdir().unwrap();
    let got_term = marker.path().join("got-term");
    let app = format!(
        "trap 'touch {}; exit 7' TERM; while :; do sleep 0.05; done",
        got_term.display()
    );
    let mut child = Command::new(&script)
        .args(["sh", "-c", &app])
        .env("BERTH_STOP_DELAY", "1")
        .spawn()
        .expect("run stop-delay.sh");
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !got_term.exists(),
        "the application still runs 0.5 s after SIGTERM"
    );
    let status = child.wait().expect("wait");
    let took = sent.elapsed();
    assert!(got_term.exists(), "the application got SIGTERM");
    assert_eq!(status.code(), Some(7), "the application's exit status");
    assert!(
        took >= Duration::from_secs(1),
        "SIGTERM passed on after the 1 s delay, not before ({took:?})"
    );
    let out = Command::new(&script)
        .arg("true")
        .env("BERTH_STOP_DELAY", "soon")
        .output()
        .expect("run stop-delay.sh");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BERTH_STOP_DELAY must be a whole number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn grace_period_secs(config: &str) -> u64 {
    let line = config
        .lines()
        .find(|l| l.trim_start().starts_with("grace_period"))
        .expect("grace_period set in deploy/ecs/berth.toml");
    let v = line.split('"').nth(1).expect("quoted duration");
    v.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .expect("grace_period in seconds")
}

#[test]
fn ecs_definitions_are_consistent() {
    let td = json("ecs/task-definition.json");
    let svc = json("ecs/service.json");
    let config = std::fs::read_to_string(deploy().join("ecs/berth.toml")).unwrap();

    assert_eq!(td["networkMode"], "awsvpc");
    assert!(td["taskRoleArn"].is_string() && td["executionRoleArn"].is_string());
    let proxy = container(&td, "proxy");
    let scaler = container(&td, "scaler");
    assert_eq!(proxy["essential"], true);
    assert!(proxy["command"][0] == "berth-proxy" && scaler["command"][0] == "berth-scaler");

    // Ports: the proxy's listener and admin, the scaler's admin, as in berth.toml.
    let ports = |c: &Value| -> BTreeSet<u64> {
        c["portMappings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ports(proxy), BTreeSet::from([8080, 9901]));
    assert_eq!(ports(scaler), BTreeSet::from([9902]));
    for bind in ["0.0.0.0:8080", "0.0.0.0:9901", "0.0.0.0:9902"] {
        assert!(config.contains(bind), "berth.toml binds {bind}");
    }

    // Health check on the admin /healthz port.
    let hc = strings(&proxy["healthCheck"]["command"]);
    assert!(
        hc.iter().any(|a| a.ends_with(":9901/healthz")),
        "health check hits /healthz on the admin port: {hc:?}"
    );

    // Draining: stopTimeout covers berth's grace period with a margin; Fargate allows 120.
    let grace = grace_period_secs(&config);
    let stop = proxy["stopTimeout"].as_u64().expect("proxy stopTimeout");
    assert!(
        stop >= grace + 10 && stop <= 120,
        "stopTimeout {stop}s vs grace {grace}s"
    );

    // Config from an SSM parameter, written by the entrypoint to the path --config reads.
    for c in [proxy, scaler] {
        let secret = &c["secrets"][0];
        assert_eq!(secret["name"], "BERTH_CONFIG_TOML");
        assert!(secret["valueFrom"].as_str().unwrap().contains(":ssm:"));
        let path = c["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "BERTH_CONFIG_PATH")
            .expect("BERTH_CONFIG_PATH")["value"]
            .as_str()
            .unwrap();
        let cmd = strings(&c["command"]);
        assert_eq!(
            cmd.last(),
            Some(&path),
            "{} reads the written config",
            c["name"]
        );
        // Writable mount for it (read-only root filesystem), backed by a declared volume.
        let mount = &c["mountPoints"][0];
        assert!(path.starts_with(mount["containerPath"].as_str().unwrap()));
        let vol = mount["sourceVolume"].as_str().unwrap();
        assert!(
            td["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == vol),
            "volume {vol} declared"
        );
        // awslogs.
        assert_eq!(c["logConfiguration"]["logDriver"], "awslogs");
        let opts = &c["logConfiguration"]["options"];
        for k in ["awslogs-group", "awslogs-region", "awslogs-stream-prefix"] {
            assert!(opts[k].is_string(), "{} log option {k}", c["name"]);
        }
        assert_ne!(c["user"], "root");
    }
    // The sidecar starts after the proxy is healthy and does not take the task down.
    assert_eq!(scaler["essential"], false);
    assert_eq!(scaler["dependsOn"][0]["containerName"], "proxy");

    // Service: this family, the proxy's listener port behind the load balancer.
    assert_eq!(svc["taskDefinition"], td["family"]);
    let lb = &svc["loadBalancers"][0];
    assert_eq!(lb["containerName"], "proxy");
    assert_eq!(lb["containerPort"], 8080);
    assert_eq!(svc["serviceRegistries"][0]["containerName"], "proxy");
    assert_eq!(
        svc["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
}

#[test]
fn ecs_config_passes_berth_check() {
    let path = deploy().join("ecs/berth.toml");
    let out = Command::new(berth_tests::berth::proxy_bin())
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .expect("run berth-proxy --check");
    assert!(
        out.status.success(),
        "berth-proxy --check {} failed:\n{}",
        path.display(),
        text(&out)
    );
}
