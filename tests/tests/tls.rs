//! HTTPS listeners: certificate choice by SNI, HTTP/2 through ALPN.

use std::time::Duration;

use berth_tests::config::Listener;
use berth_tests::net::listen_addr;
use berth_tests::tls::{tls_get, TestCa};
use berth_tests::{bounded, static_group, Backend, Berth};

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_certificate_and_alpn_negotiates_h2() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let ca = TestCa::new();
        let cert_a = ca.issue(&["a.test"]);
        let cert_b = ca.issue(&["*.b.test", "b.test"]);
        let web = listen_addr();
        let listener = Listener::new("tls", web)
            .key("protocol = \"https\"")
            .forward_to("g");
        let certificates = r#"
[[listeners.certificates]]
cert = "a.crt"
key = "a.key"
server_names = ["a.test"]

[[listeners.certificates]]
cert = "b.crt"
key = "b.key"
server_names = ["*.b.test", "b.test"]
"#;
        let cfg = format!(
            "{}{}",
            listener.tables(certificates),
            static_group("g", &[&a], "")
        );
        let files = [
            ("a.crt", cert_a.cert_pem.as_str()),
            ("a.key", cert_a.key_pem.as_str()),
            ("b.crt", cert_b.cert_pem.as_str()),
            ("b.key", cert_b.key_pem.as_str()),
        ];
        let berth = Berth::start_with_files(&cfg, &files).await;
        berth
            .wait_healthy("g", &[a.addr()], Duration::from_secs(20))
            .await;

        let h1 = ca.client_config(&[b"http/1.1"]);
        let h2 = ca.client_config(&[b"h2", b"http/1.1"]);

        // SNI a.test → certificate a.
        let r = tls_get(h1.clone(), web, "a.test", "/echo-headers")
            .await
            .expect("TLS a.test");
        assert!(
            r.server_cert == cert_a.der,
            "SNI a.test got another certificate"
        );
        assert_eq!(r.resp.status, 200);
        assert_eq!(r.version, http::Version::HTTP_11);
        let h = r.resp.json();
        assert_eq!(h["x-forwarded-proto"], "https", "{h}");
        assert_eq!(h["x-forwarded-port"], web.port().to_string(), "{h}");

        // SNI x.b.test (wildcard) and b.test → certificate b.
        for sni in ["x.b.test", "b.test"] {
            let r = tls_get(h1.clone(), web, sni, "/").await.expect("TLS b");
            assert!(
                r.server_cert == cert_b.der,
                "SNI {sni} did not get certificate b"
            );
            assert_eq!((r.resp.status.as_u16(), r.resp.body.as_str()), (200, "a"));
        }

        // ALPN h2 → HTTP/2 end to end (client side).
        let r = tls_get(h2.clone(), web, "a.test", "/")
            .await
            .expect("TLS h2");
        assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]), "ALPN should pick h2");
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!((r.resp.status.as_u16(), r.resp.body.as_str()), (200, "a"));
        assert_eq!(r.resp.header("x-backend"), "a");
        let r = tls_get(h2, web, "x.b.test", "/status/404")
            .await
            .expect("TLS h2 b");
        assert!(r.server_cert == cert_b.der);
        assert_eq!(r.resp.status, 404, "target status passes through over h2");
    })
    .await
}
