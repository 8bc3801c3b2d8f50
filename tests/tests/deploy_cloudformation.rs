//! The CloudFormation templates (deploy/cloudformation): cfn-lint passes, the task definition
//! matches the ECS JSON one, and the NLB sends PROXY v2 headers (traffic and health checks)
//! that berth.toml accepts on the ports they reach, behind a PrivateLink endpoint service.

mod deploy_common;

use std::process::Command;

use deploy_common::*;
use serde_json::Value;

#[test]
fn cloudformation_task_definition_matches_the_json_one() {
    let cfn = yaml(&["cloudformation/berth-service.yaml"], true);
    let tpl = &cfn["cloudformation/berth-service.yaml"];
    let td = json("ecs/task-definition.json");
    let res = &tpl["Resources"]["TaskDefinition"]["Properties"];
    assert_eq!(res["NetworkMode"], td["networkMode"]);
    assert_eq!(res["Cpu"], td["cpu"]);
    assert_eq!(res["Memory"], td["memory"]);
    for c in res["ContainerDefinitions"].as_array().unwrap() {
        let name = c["Name"].as_str().unwrap();
        let j = container(&td, name);
        assert_eq!(c["StopTimeout"], j["stopTimeout"], "{name} stopTimeout");
        assert_eq!(c["Essential"], j["essential"], "{name} essential");
        assert_eq!(c["Command"], j["command"], "{name} command");
        assert_eq!(c["User"], j["user"], "{name} user");
        assert_eq!(
            c["HealthCheck"]["Command"], j["healthCheck"]["command"],
            "{name} health check"
        );
        let ports = |v: &Value, k: &str| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p[k].as_u64().unwrap())
                .collect()
        };
        assert_eq!(
            ports(&c["PortMappings"], "ContainerPort"),
            ports(&j["portMappings"], "containerPort"),
            "{name} ports"
        );
    }
}

#[test]
fn cloudformation_templates_pass_cfn_lint() {
    setup();
    let templates = files("cloudformation", ".yaml");
    assert!(templates.len() >= 2, "{templates:?}");
    let out = run(Command::new(venv_bin("cfn-lint"))
        .args(["--format", "parseable"])
        .args(&templates));
    assert!(
        out.status.success(),
        "cfn-lint found problems (exit {}):\n{}",
        out.status,
        text(&out)
    );
}

#[test]
fn nlb_privatelink_and_proxy_protocol_are_wired() {
    let cfn = yaml(&["cloudformation/berth-service.yaml"], true);
    let r = &cfn["cloudformation/berth-service.yaml"]["Resources"];
    assert_eq!(r["LoadBalancer"]["Properties"]["Type"], "network");
    let tg = &r["TargetGroup"]["Properties"];
    assert_eq!(tg["Protocol"], "TCP");
    assert_eq!(tg["TargetType"], "ip");
    let attrs = tg["TargetGroupAttributes"].as_array().unwrap();
    assert!(
        attrs
            .iter()
            .any(|a| a["Key"] == "proxy_protocol_v2.enabled" && a["Value"] == "true"),
        "target group sends PROXY v2: {attrs:?}"
    );
    assert_eq!(tg["HealthCheckPath"], "/healthz");
    assert_eq!(r["Listener"]["Properties"]["Protocol"], "TCP");
    assert_eq!(
        r["EndpointService"]["Properties"]["NetworkLoadBalancerArns"][0]["Ref"],
        "LoadBalancer"
    );
    assert_eq!(
        r["EndpointServicePermissions"]["Properties"]["AllowedPrincipals"]["Ref"],
        "AllowedPrincipals"
    );
    assert_eq!(r["LogGroup"]["Type"], "AWS::Logs::LogGroup");
}

/// The PROXY settings of whatever berth.toml binds on `port`: the admin port's or a listener's
/// (`Err` names the port when nothing binds it).
fn proxy_protocol_on(
    config: &berth_config::Config,
    port: u16,
) -> Result<(String, Option<berth_config::model::ProxyProtocolIn>), String> {
    if config.admin.bind.port() == port {
        return Ok(("[admin]".into(), config.admin.proxy_protocol.clone()));
    }
    config
        .listeners
        .iter()
        .find(|l| l.bind.port() == port)
        .map(|l| (format!("listener {}", l.name), l.proxy_protocol.clone()))
        .ok_or_else(|| format!("berth.toml binds nothing on port {port}"))
}

#[test]
fn nlb_traffic_and_health_check_ports_accept_its_proxy_headers() {
    let cfn = yaml(&["cloudformation/berth-service.yaml"], true);
    let tg = &cfn["cloudformation/berth-service.yaml"]["Resources"]["TargetGroup"]["Properties"];
    let path = deploy().join("ecs/berth.toml");
    let config = berth_config::load(&path)
        .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()));

    let pp_v2 = tg["TargetGroupAttributes"]
        .as_array()
        .expect("TargetGroupAttributes")
        .iter()
        .any(|a| a["Key"] == "proxy_protocol_v2.enabled" && a["Value"] == "true");
    assert!(pp_v2, "this test is about a target group sending PROXY v2");

    let traffic_port = tg["Port"].as_u64().expect("TargetGroup Port") as u16;
    // AWS's default HealthCheckPort is "traffic-port".
    let hc_port = match tg["HealthCheckPort"].as_str().unwrap_or("traffic-port") {
        "traffic-port" => traffic_port,
        p => p
            .parse()
            .unwrap_or_else(|_| panic!("HealthCheckPort {p:?}")),
    };

    // Every connection to the traffic port starts with a header: the listener must take it.
    let (what, traffic) =
        proxy_protocol_on(&config, traffic_port).unwrap_or_else(|e| panic!("{e}"));
    let traffic = traffic.unwrap_or_else(|| {
        panic!("{what} on the target group's port {traffic_port} has no proxy_protocol")
    });
    assert!(!traffic.trusted_cidrs.is_empty());

    // So does every health check (command LOCAL): the health-check port must accept PROXY
    // headers from the same peers (the NLB), or every task fails its checks and ECS replaces
    // it in a loop.
    let (what, hc) = proxy_protocol_on(&config, hc_port).unwrap_or_else(|e| panic!("{e}"));
    let hc = hc.unwrap_or_else(|| {
        panic!(
            "the NLB health-checks port {hc_port} ({what}) with a PROXY v2 header, but {what} \
             has no proxy_protocol in berth.toml"
        )
    });
    for net in &traffic.trusted_cidrs {
        assert!(
            hc.trusted_cidrs.iter().any(|h| h.contains(net)),
            "the NLB's addresses {net} (trusted on port {traffic_port}) are not trusted by {what} \
             on the health-check port {hc_port}: {:?}",
            hc.trusted_cidrs
        );
    }
    assert!(
        hc.allowed_vpc_endpoints.is_empty(),
        "health checks carry no VPC endpoint TLV"
    );
}
