//! gRPC health checks (`protocol_version = "grpc"`): `grpc.health.v1.Health/Check` against a
//! real tonic-health server; berth's target health follows the server's serving status, and a
//! gRPC server without the health service counts healthy with ALB's default matcher `"12"`
//! (UNIMPLEMENTED) and unhealthy with matcher `"0"`.

use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::config::{Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, Berth};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(30);

/// Fast gRPC checks: every second, two results to change state; `extra` adds keys.
fn grpc_group(name: &str, target: SocketAddr, extra: &str) -> String {
    let body = format!(
        "interval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n{extra}"
    );
    Group::new(name)
        .key("protocol_version = \"grpc\"")
        .table("health_check", &body)
        .targets(&format!("[{{ address = \"{target}\" }}]"))
        .to_string()
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_health_follows_the_servers_serving_status() {
    bounded(LIMIT, async {
        // A server with the health service, and one without any service.
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("app.Api", ServingStatus::NotServing)
            .await;
        let (l, with_health) = listener().await;
        tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpListenerStream::new(l)),
        );
        let (l, bare) = listener().await;
        tokio::spawn(
            Server::builder()
                .add_routes(Routes::default())
                .serve_with_incoming(TcpListenerStream::new(l)),
        );

        let web = listen_addr();
        let cfg = Listener::web(web, "whole").to_string()
            + &grpc_group("whole", with_health, "")
            + &grpc_group("api", with_health, "grpc_service = \"app.Api\"")
            + &grpc_group("bare_default", bare, "")
            + &grpc_group("bare_strict", bare, "matcher = \"0\"");
        let berth = Berth::start(&cfg).await;

        berth.wait_healthy("whole", &[with_health], SETTLE).await;
        berth
            .wait_target("api", with_health, Some("unhealthy"), SETTLE)
            .await;
        berth.wait_healthy("bare_default", &[bare], SETTLE).await;
        berth
            .wait_target("bare_strict", bare, Some("unhealthy"), SETTLE)
            .await;

        // The server flips: berth follows, both ways, for the whole server and one service.
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("app.Api", ServingStatus::Serving)
            .await;
        berth
            .wait_target("whole", with_health, Some("unhealthy"), SETTLE)
            .await;
        berth.wait_healthy("api", &[with_health], SETTLE).await;
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        berth.wait_healthy("whole", &[with_health], SETTLE).await;

        let log = berth.log();
        let changes = log
            .lines()
            .filter(|l| l.contains("health changed") && l.contains(&with_health.to_string()))
            .count();
        // whole: initial→healthy→unhealthy→healthy; api: initial→unhealthy→healthy.
        assert_eq!(changes, 5, "{log}");
        assert!(
            log.contains("NOT_SERVING"),
            "the reason names the serving status:\n{log}"
        );
        assert!(
            log.contains("gRPC status 12 does not match"),
            "the strict group's reason names the code:\n{log}"
        );
    })
    .await
}
