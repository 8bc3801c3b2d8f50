//! HTTPS targets (`protocol = "https"`): verification by a CA bundle for a configured server
//! name or the target's IP, `verify = false` against a self-signed target, wrong and untrusted
//! certificates answered 502 with reason `upstream_tls` and a log line naming the target, and
//! health checks over HTTPS that follow the certificate's validity.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_tests::config::{Group, Listener, FAST_HEALTH_CHECK};
use berth_tests::h2_backend::{H2Backend, Speaks};
use berth_tests::net::listen_addr;
use berth_tests::tls::{ServerCert, TestCa};
use berth_tests::{bounded, Berth, Http};

const LIMIT: Duration = Duration::from_secs(120);

/// A self-signed certificate for `name`, from no CA berth trusts.
fn self_signed(name: &str) -> ServerCert {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("self-signed");
    ServerCert {
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

async fn backend(name: &str, cert: &ServerCert) -> H2Backend {
    H2Backend::start(name, Speaks::Http1, Some((&cert.cert_pem, &cert.key_pem))).await
}

/// A listener `name` on its own address forwarding to an https group `name` of `target`;
/// `tls` is the inline `tls` table, `checks` whether health checks run.
fn pair(name: &str, web: SocketAddr, target: SocketAddr, tls: &str, checks: bool) -> String {
    let mut g = Group::new(name)
        .key("protocol = \"https\"")
        .key("retry = { attempts = 0 }")
        .key(&format!("tls = {tls}"));
    g = if checks {
        g.table("health_check", FAST_HEALTH_CHECK)
    } else {
        g.key("health_check = { enabled = false }")
    };
    Listener::new(name, web).forward_to(name).to_string()
        + &g.targets(&format!("[{{ address = \"{target}\" }}]"))
            .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_verified_by_bundle_name_and_ip_or_not_at_all() {
    bounded(LIMIT, async {
        let ca = TestCa::new();
        let by_name = backend("by-name", &ca.issue(&["api.internal"])).await;
        let by_ip = backend("by-ip", &ca.issue(&["127.0.0.1"])).await;
        let unverified = backend("unverified", &self_signed("anything.test")).await;
        let wrong = backend("wrong", &ca.issue(&["other.internal"])).await;
        let untrusted = backend("untrusted", &self_signed("api.internal")).await;
        let webs: Vec<SocketAddr> = (0..5).map(|_| listen_addr()).collect();
        let bundle = "{ server_name = \"api.internal\", ca_bundle = \"ca.pem\" }";
        let cfg = [
            pair("by_name", webs[0], by_name.addr(), bundle, true),
            pair(
                "by_ip",
                webs[1],
                by_ip.addr(),
                "{ ca_bundle = \"ca.pem\" }",
                false,
            ),
            pair(
                "unverified",
                webs[2],
                unverified.addr(),
                "{ verify = false }",
                false,
            ),
            pair("wrong", webs[3], wrong.addr(), bundle, true),
            pair("untrusted", webs[4], untrusted.addr(), bundle, false),
        ]
        .concat();
        let ca_pem = ca.ca_cert_pem();
        let berth = Berth::start_with_files(&cfg, &[("ca.pem", ca_pem.as_str())]).await;
        assert!(
            berth
                .log()
                .lines()
                .any(|l| l.contains("verify = false") && l.contains("unverified")),
            "verify = false is warned about at load:\n{}",
            berth.log_tail(30)
        );

        // Health checks over HTTPS: the verified target turns healthy, the wrong name not.
        berth
            .wait_healthy("by_name", &[by_name.addr()], Duration::from_secs(30))
            .await;
        berth
            .wait_target(
                "wrong",
                wrong.addr(),
                Some("unhealthy"),
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(wrong.stats().handshakes.load(Ordering::Relaxed), 0);

        let http = Http::new();
        for (web, b) in [
            (webs[0], &by_name),
            (webs[1], &by_ip),
            (webs[2], &unverified),
        ] {
            let r = http.get(&format!("http://{web}/")).await.expect("GET");
            assert_eq!(r.status, 200, "{}", berth.log_tail(20));
            assert_eq!(r.header("x-version"), "HTTP/1.1");
            assert!(b.stats().http1.load(Ordering::Relaxed) >= 1);
        }

        // A certificate for another name, and one from no trusted CA: 502, counted, logged.
        for (web, b) in [(webs[3], &wrong), (webs[4], &untrusted)] {
            let r = http.get(&format!("http://{web}/")).await.expect("GET");
            assert_eq!(r.status, 502);
            assert_eq!(b.stats().http1.load(Ordering::Relaxed), 0);
            let log = berth.log();
            assert!(
                log.lines().any(|l| l.contains("upstream_tls")
                    && l.contains(&b.addr().to_string())
                    && l.contains("target_group")),
                "no log line names {}:\n{log}",
                b.addr()
            );
        }
        let count = berth
            .metric("berth_proxy_responses_total", &[("reason", "upstream_tls")])
            .await;
        assert_eq!(count, Some(2.0));
        let connect_errors = berth
            .metric(
                "berth_target_connect_errors_total",
                &[("target_group", "wrong")],
            )
            .await;
        assert_eq!(
            connect_errors,
            Some(1.0),
            "a bad certificate is a connect failure"
        );
    })
    .await
}
