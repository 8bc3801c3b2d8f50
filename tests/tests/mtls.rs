//! Mutual TLS on https listeners, ALB's two modes, with real rustls clients presenting a valid,
//! an expired, a revoked (CRL), a foreign-CA and no certificate, to a backend that echoes the
//! headers it got.
//!
//! - verify: only the valid certificate is let through, and the target sees its serial,
//!   issuer, subject, validity and leaf; every other handshake is refused before any request
//!   reaches the target, and counted by reason.
//! - passthrough: every client gets through; the chain it sent reaches the target, and headers
//!   of those names a client writes itself are removed.

use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::certs::{
    get_once, percent_decode, serial_hex, validity_header, Ca, Issued, LeafSpec,
};
use berth_tests::config::Listener;
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, Backend, Berth};

const LIMIT: Duration = Duration::from_secs(120);
const REJECTED: &str = "berth_rejected_connections_total";
const FORGED: [(&str, &str); 2] = [
    ("X-Amzn-Mtls-Clientcert-Subject", "CN=forged"),
    ("X-Amzn-Mtls-Clientcert", "forged"),
];

const VALID_SERIAL: &[u8] = &[0x1a, 0x2b, 0x3c, 0x4d];

/// The PEM of `cert` as the target should read it back from a URL-encoded header.
fn pem_of(cert: &Issued) -> String {
    cert.cert_pem.replace("\r\n", "\n")
}

fn https(name: &str, bind: SocketAddr, mtls: &str) -> Listener {
    Listener::new(name, bind)
        .key("protocol = \"https\"\nhttp2 = false")
        .tables(&format!(
            "[[listeners.certificates]]\ncert = \"web.crt\"\nkey = \"web.key\"\n[listeners.mtls]\n{mtls}\n"
        ))
        .forward_to("g")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_passthrough_modes() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let server_ca = Ca::new("berth server CA");
        let clients_ca = Ca::new("berth clients CA");
        let foreign_ca = Ca::new("foreign CA");
        let web_cert = server_ca.issue(&LeafSpec::server("web.test", &["web.test"], &[0x01]));
        let valid_spec = LeafSpec::client("client-1", VALID_SERIAL);
        let valid = clients_ca.issue(&valid_spec);
        let mut expired_spec = LeafSpec::client("client-expired", &[0x22, 0x01]);
        expired_spec.not_before = (2020, 1, 1);
        expired_spec.not_after = (2021, 1, 1);
        let expired = clients_ca.issue(&expired_spec);
        let revoked_serial: &[u8] = &[0x33, 0x01];
        let revoked = clients_ca.issue(&LeafSpec::client("client-revoked", revoked_serial));
        let foreign = foreign_ca.issue(&LeafSpec::client("client-foreign", &[0x44, 0x01]));
        let crl = clients_ca.crl(&[revoked_serial]);
        let clients_pem = clients_ca.pem();

        let (verify, pass) = (listen_addr(), listen_addr());
        let cfg = format!(
            "{}{}{}",
            https(
                "verify",
                verify,
                "mode = \"verify\"\nca_bundle = \"clients.pem\"\ncrls = [\"revoked.crl\"]"
            ),
            https("pass", pass, "mode = \"passthrough\""),
            static_group("g", &[&a], "")
        );
        let files = [
            ("web.crt", web_cert.cert_pem.as_str()),
            ("web.key", web_cert.key_pem.as_str()),
            ("clients.pem", clients_pem.as_str()),
            ("revoked.crl", crl.as_str()),
        ];
        let berth = Berth::start_with_files(&cfg, &files).await;
        berth
            .wait_healthy("g", &[a.addr()], Duration::from_secs(20))
            .await;
        let client = |id: Option<&Issued>| server_ca.client_config(id);

        // verify, valid certificate: 200, and the leaf's facts (a forged subject is replaced).
        let (_, r) = get_once(client(Some(&valid)), verify, "/echo-headers", &FORGED)
            .await
            .expect("valid client certificate");
        assert_eq!(r.status, 200, "{}", r.body);
        let h = r.json();
        assert_eq!(
            h["x-amzn-mtls-clientcert-serial-number"],
            serial_hex(VALID_SERIAL),
            "{h}"
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-subject"], "CN=client-1,O=berth tests",
            "{h}"
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-issuer"], "CN=berth clients CA,O=berth tests",
            "{h}"
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-validity"],
            validity_header(&valid_spec),
            "{h}"
        );
        let leaf = h["x-amzn-mtls-clientcert-leaf"]
            .as_str()
            .unwrap_or_default();
        assert!(
            leaf.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{leaf}"
        );
        assert_eq!(percent_decode(leaf), pem_of(&valid));
        assert!(
            h.get("x-amzn-mtls-clientcert").is_none(),
            "no chain header in verify: {h}"
        );
        assert_eq!(a.requests(), 1);

        // verify, every other client: refused at the handshake, nothing reaches the target.
        let refused: [(&str, Option<&Issued>, &str); 4] = [
            ("expired", Some(&expired), "client_cert_expired"),
            ("revoked", Some(&revoked), "client_cert_revoked"),
            ("foreign CA", Some(&foreign), "client_cert_untrusted"),
            ("no certificate", None, "client_cert_missing"),
        ];
        for (what, id, reason) in refused {
            let r = get_once(client(id), verify, "/echo-headers", &[]).await;
            assert!(
                r.is_err(),
                "{what}: got through: {:?}",
                r.map(|(_, r)| r.status)
            );
            let n = berth
                .wait_metric_at_least(
                    REJECTED,
                    &[("listener", "verify"), ("reason", reason)],
                    1.0,
                    Duration::from_secs(5),
                )
                .await;
            assert_eq!(n, 1.0, "{what}: counted once as {reason}");
        }
        assert_eq!(a.requests(), 1, "a refused client reached the target");

        // passthrough: valid, expired and foreign-CA certificates all reach the target with
        // the chain they sent, and nothing else.
        for (what, cert) in [
            ("valid", &valid),
            ("expired", &expired),
            ("foreign CA", &foreign),
        ] {
            let (_, r) = get_once(client(Some(cert)), pass, "/echo-headers", &FORGED)
                .await
                .unwrap_or_else(|e| panic!("passthrough {what}: {e:#}"));
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            let h = r.json();
            let chain = h["x-amzn-mtls-clientcert"].as_str().unwrap_or_default();
            assert_eq!(percent_decode(chain), pem_of(cert), "{what}: {h}");
            assert!(
                h.get("x-amzn-mtls-clientcert-subject").is_none(),
                "{what}: {h}"
            );
        }
        // passthrough, no certificate: through, without any client-certificate header, the
        // client's own forged ones removed.
        let (_, r) = get_once(client(None), pass, "/echo-headers", &FORGED)
            .await
            .expect("passthrough without a certificate");
        assert_eq!(r.status, 200);
        let h = r.json();
        let mtls: Vec<&String> = h
            .as_object()
            .map(|o| o.keys().filter(|k| k.starts_with("x-amzn-mtls")).collect())
            .unwrap_or_default();
        assert!(mtls.is_empty(), "forged headers reached the target: {h}");
        assert_eq!(a.requests(), 5);
        let m = berth.metrics().await;
        let passthrough_refused =
            berth_tests::metrics::value(&m, REJECTED, &[("listener", "pass")]).unwrap_or(0.0);
        assert_eq!(passthrough_refused, 0.0, "{m}");
    })
    .await
}
