//! ECS discovery end to end: berth polls the real moto server (extended by
//! tests/moto/launcher.py), its tasks become targets, stopped tasks drain, faults keep the last
//! good targets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_tests::config::Group;
use berth_tests::moto::{
    ContainerDef, FaultKind, Health, Moto, NetworkMode, TaskDefinition, TaskSpec,
};
use berth_tests::{bounded, net, wait_until, Backend, Berth, Http};

const PORT: u16 = 18080;

fn ecs_config(cluster: &str, selector: &str, extra: &str) -> (String, SocketAddr) {
    let listen = net::listen_addr();
    let tail = format!("poll_interval = \"500ms\"\n{extra}");
    let text = berth_tests::ecs_proxy_config(listen, "api", cluster, selector, "3s", &tail);
    (text, listen)
}

async fn start_berth(moto: &Moto, config: &(String, SocketAddr)) -> (Berth, String) {
    let b = Berth::start_with_env(&config.0, &[], &moto.aws_env()).await;
    (b, format!("http://{}/", config.1))
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        let ip = net::target_ip();
        out.push(Backend::start_on(&format!("task{i}"), SocketAddr::new(ip, PORT)).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tasks_become_targets_and_stopped_tasks_drain() {
    bounded(Duration::from_secs(90), async {
        let moto = Moto::launch().await.expect("moto");
        moto.create_cluster("prod").await.unwrap();
        let td = TaskDefinition::single("api", NetworkMode::Awsvpc, PORT);
        moto.register_task_definition(&td).await.unwrap();
        moto.create_service("prod", "api", "api", 2).await.unwrap();
        let bs = backends(3).await;
        let ips: Vec<_> = bs.iter().map(|b| b.addr().ip()).collect();
        // Two tasks of the service, and one task of another service that must not be a target.
        let arns = moto
            .create_tasks(&TaskSpec::awsvpc("prod", "api", &ips[..2]).service("api"))
            .await
            .unwrap();
        moto.create_service("prod", "other", "api", 1)
            .await
            .unwrap();
        moto.create_tasks(&TaskSpec::awsvpc("prod", "api", &ips[2..]).service("other"))
            .await
            .unwrap();

        let (berth, url) = start_berth(&moto, &ecs_config("prod", "service = \"api\"", "")).await;
        berth
            .wait_healthy(
                "api",
                &[bs[0].addr(), bs[1].addr()],
                Duration::from_secs(10),
            )
            .await;
        let states = berth.target_states("api").await;
        assert_eq!(states.len(), 2, "only the service's tasks: {states:?}");

        // Traffic reaches both tasks.
        let http = Http::new();
        for _ in 0..20 {
            let r = http.get(&url).await.expect("request");
            assert_eq!(r.status, 200);
        }
        assert!(bs[0].requests() > 0 && bs[1].requests() > 0);
        assert_eq!(bs[2].requests(), 0);

        // Prometheus service discovery lists the tasks with their labels.
        let sd: serde_json::Value = http
            .get(&berth.admin_url("/sd/prometheus"))
            .await
            .unwrap()
            .json();
        let entries = sd.as_array().expect("array");
        assert_eq!(entries.len(), 2, "{sd}");
        let labels = &entries[0]["labels"];
        assert_eq!(labels["__meta_ecs_cluster"], "prod");
        assert_eq!(labels["__meta_ecs_service"], "api");
        assert_eq!(labels["__meta_ecs_task_definition_family"], "api");
        assert!(labels["__meta_ecs_task_arn"]
            .as_str()
            .unwrap()
            .contains("task"));
        assert!(labels["__meta_ecs_launch_type"].is_string());
        assert!(labels["__meta_ecs_availability_zone"].is_string());

        // A new task becomes a target within 2 s of running (plus berth's own health checks).
        let extra = backends(1).await;
        let started = Instant::now();
        moto.create_tasks(&TaskSpec::awsvpc("prod", "api", &[extra[0].addr().ip()]).service("api"))
            .await
            .unwrap();
        let addr = extra[0].addr().to_string();
        wait_until(Duration::from_secs(5), "new task registered", || async {
            berth.target_states("api").await.contains_key(&addr)
        })
        .await;
        let registered = started.elapsed();
        wait_until(Duration::from_secs(10), "new task gets traffic", || async {
            let _ = http.get(&url).await;
            extra[0].requests() > 0
        })
        .await;
        println!(
            "figure: task RUNNING -> registered {:?}, -> first proxied request {:?}",
            registered,
            started.elapsed()
        );
        assert!(
            registered < Duration::from_secs(2),
            "registered after {registered:?}"
        );

        // A stopped task drains: an in-flight request completes, then it leaves.
        bs[0].set_delay(Duration::from_millis(1500));
        let slow = {
            let http = http.clone();
            let target = bs[0].addr();
            let url = url.clone();
            tokio::spawn(async move {
                // Send until one lands on the slow target.
                loop {
                    let r = http.get(&url).await.expect("request");
                    if r.header("x-backend") == "task0" {
                        return (r.status, target);
                    }
                }
            })
        };
        wait_until(Duration::from_secs(5), "slow request in flight", || async {
            bs[0].in_flight() > 0
        })
        .await;
        moto.stop_task("prod", &arns[0]).await.unwrap();
        let a0 = bs[0].addr().to_string();
        wait_until(Duration::from_secs(5), "stopped task draining", || async {
            berth
                .target_states("api")
                .await
                .get(&a0)
                .map(String::as_str)
                == Some("draining")
        })
        .await;
        let (status, _) = slow.await.unwrap();
        assert_eq!(status, 200, "in-flight request completes while draining");
        wait_until(Duration::from_secs(8), "drained task removed", || async {
            !berth.target_states("api").await.contains_key(&a0)
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_ecs_container_is_not_a_target_until_healthy() {
    bounded(Duration::from_secs(60), async {
        let moto = Moto::launch().await.expect("moto");
        moto.create_cluster("c2").await.unwrap();
        let td = TaskDefinition {
            family: "hc".into(),
            network_mode: NetworkMode::Awsvpc,
            containers: vec![ContainerDef::new("app", PORT).with_health_check()],
        };
        moto.register_task_definition(&td).await.unwrap();
        moto.create_service("c2", "hc", "hc", 1).await.unwrap();
        let bs = backends(2).await;
        moto.create_tasks(&TaskSpec::awsvpc("c2", "hc", &[bs[0].addr().ip()]).service("hc"))
            .await
            .unwrap();
        let sick = moto
            .create_tasks(
                &TaskSpec::awsvpc("c2", "hc", &[bs[1].addr().ip()])
                    .service("hc")
                    .health(Health::Unknown),
            )
            .await
            .unwrap();
        let (berth, _url) = start_berth(&moto, &ecs_config("c2", "service = \"hc\"", "")).await;
        berth
            .wait_healthy("api", &[bs[0].addr()], Duration::from_secs(10))
            .await;
        assert!(!berth
            .target_states("api")
            .await
            .contains_key(&bs[1].addr().to_string()));
        moto.set_task_health("c2", &sick[0], Health::Healthy)
            .await
            .unwrap();
        berth
            .wait_healthy("api", &[bs[1].addr()], Duration::from_secs(10))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_tasks_use_instance_ip_and_host_port() {
    bounded(Duration::from_secs(60), async {
        let moto = Moto::launch().await.expect("moto");
        moto.create_cluster("ec2").await.unwrap();
        let instance_ip = net::target_ip();
        let ci = moto
            .add_container_instance("ec2", instance_ip)
            .await
            .unwrap();
        let td = TaskDefinition {
            family: "web".into(),
            network_mode: NetworkMode::Bridge,
            containers: vec![ContainerDef::new("app", 80).with_host_port(0)],
        };
        moto.register_task_definition(&td).await.unwrap();
        moto.create_service("ec2", "web", "web", 2).await.unwrap();
        let p1 = net::free_port(instance_ip);
        let p2 = net::free_port(instance_ip);
        let b1 = Backend::start_on("h1", p1).await;
        let b2 = Backend::start_on("h2", p2).await;
        moto.create_tasks(
            &TaskSpec::bridge(
                "ec2",
                "web",
                &ci.container_instance_arn,
                &[p1.port(), p2.port()],
            )
            .service("web"),
        )
        .await
        .unwrap();
        let (berth, _url) = start_berth(&moto, &ecs_config("ec2", "service = \"web\"", "")).await;
        berth
            .wait_healthy("api", &[b1.addr(), b2.addr()], Duration::from_secs(10))
            .await;
        let calls = moto.calls().await.unwrap();
        assert!(
            calls
                .get("DescribeContainerInstances")
                .copied()
                .unwrap_or(0)
                >= 1,
            "{calls:?}"
        );
        assert!(
            calls.get("DescribeInstances").copied().unwrap_or(0) >= 1,
            "{calls:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_failures_keep_the_last_good_targets_and_calls_stay_few() {
    bounded(Duration::from_secs(90), async {
        let moto = Moto::launch().await.expect("moto");
        moto.create_cluster("f").await.unwrap();
        moto.register_task_definition(&TaskDefinition::single("api", NetworkMode::Awsvpc, PORT))
            .await
            .unwrap();
        moto.create_service("f", "api", "api", 2).await.unwrap();
        let bs = backends(2).await;
        let ips: Vec<_> = bs.iter().map(|b| b.addr().ip()).collect();
        moto.create_tasks(&TaskSpec::awsvpc("f", "api", &ips).service("api"))
            .await
            .unwrap();
        // A second target group on the same cluster shares the poller (one ListTasks a cycle).
        let extra = Group::new("api-by-family")
            .table("health_check", "enabled = false")
            .source(
                "kind = \"ecs\"\ncluster = \"f\"\nfamily = \"api\"\ncontainer = \"app\"\n\
                 port = 18080\npoll_interval = \"500ms\"",
            )
            .to_string();
        let (berth, url) = start_berth(&moto, &ecs_config("f", "service = \"api\"", &extra)).await;
        berth
            .wait_healthy("api", &[bs[0].addr(), bs[1].addr()], Duration::from_secs(10))
            .await;

        // Steady state: count calls over ~3 s of polling.
        moto.reset_calls().await.unwrap();
        let t0 = Instant::now();
        wait_until(Duration::from_secs(10), "several poll cycles", || async {
            moto.call_count("ListTasks").await.unwrap_or(0) >= 6
        })
        .await;
        let calls = moto.calls().await.unwrap();
        let list = calls.get("ListTasks").copied().unwrap_or(0);
        let describe = calls.get("DescribeTasks").copied().unwrap_or(0);
        let tds = calls.get("DescribeTaskDefinition").copied().unwrap_or(0);
        println!(
            "figure: {list} ListTasks, {describe} DescribeTasks, {tds} DescribeTaskDefinition in {:?} for 2 target groups on one cluster",
            t0.elapsed()
        );
        assert_eq!(tds, 0, "task definitions are cached");
        assert!(describe * 2 <= list, "known tasks are not re-described every cycle: {calls:?}");
        // Two groups at 500 ms for ~3 s would be ~12 if not shared.
        assert!(list <= 10, "one ListTasks per cycle per cluster: {calls:?}");

        // Throttling and server errors: the targets stay, traffic keeps flowing.
        moto.inject_fault("ListTasks", FaultKind::Throttle, 40).await.unwrap();
        let http = Http::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let r = http.get(&url).await.expect("request");
            assert_eq!(r.status, 200);
        }
        assert_eq!(berth.target_states("api").await.len(), 2);
        let m = berth.metrics().await;
        assert!(
            m.lines().any(|l| l.starts_with("berth_aws_api_calls_total")
                && l.contains("operation=\"ListTasks\"")
                && l.contains("outcome=\"throttled\"")),
            "throttled calls are counted"
        );
        moto.clear_faults().await.unwrap();
        moto.inject_fault("DescribeTasks", FaultKind::Error500, 40).await.unwrap();
        let more = backends(1).await;
        moto.create_tasks(&TaskSpec::awsvpc("f", "api", &[more[0].addr().ip()]).service("api"))
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            assert_eq!(http.get(&url).await.expect("request").status, 200);
        }
        assert_eq!(berth.target_states("api").await.len(), 2, "no change while ECS fails");
        moto.clear_faults().await.unwrap();
        berth.wait_healthy("api", &[more[0].addr()], Duration::from_secs(10)).await;
        let m = berth.metrics().await;
        assert!(m.contains("berth_discovery_last_success_age_seconds{target_group=\"api\"}"));
        assert!(m.contains("berth_ecs_tasks{"));
    })
    .await;
}
