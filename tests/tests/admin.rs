//! The admin port behind an NLB whose target group has `proxy_protocol_v2.enabled`: its health
//! checks start with a PROXY v2 header (command LOCAL, no addresses). With
//! `[admin.proxy_protocol]` such a header is optional and accepted from trusted peers only;
//! Prometheus and the ECS container health check keep sending plain HTTP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use berth_tests::client::{connect_from, raw_status};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, web_to_static_group, Backend, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);
/// The only peer allowed to send PROXY headers to the admin port (the "NLB").
const NLB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// Any other peer (Prometheus, the container health check).
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A PROXY v2 header as an NLB health check sends it: the 12-byte signature, version 2 with
/// command LOCAL (0x20), family/protocol UNSPEC (0x00), no address block. Written out by hand
/// so that the test does not share berth's encoder.
const V2_LOCAL: [u8; 16] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
];

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
}

/// Sends `head` then `request` on one connection from `source` and returns everything berth
/// answers until it closes (empty when it closes, or resets, without answering).
async fn exchange(source: IpAddr, admin: SocketAddr, head: &[u8], request: &str) -> String {
    let mut s = connect_from(source, admin)
        .await
        .unwrap_or_else(|e| panic!("connect from {source} to {admin}: {e}"));
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    // berth may already have closed (refused header): then the write or the read fails.
    let _ = s.write_all(&bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "berth neither answered nor closed within 10 s"
    );
    String::from_utf8_lossy(&out).into_owned()
}

async fn start(admin_extra: &str) -> (Backend, Berth) {
    let app = Backend::spawn("app").await;
    let web = listen_addr();
    let cfg = format!("{admin_extra}\n{}", web_to_static_group(web, &[&app], ""));
    let berth = Berth::start(&cfg).await;
    (app, berth)
}

async fn rejected(berth: &Berth, reason: &str) -> f64 {
    berth
        .metric(
            "berth_proxy_protocol_rejected_total",
            &[("listener", "admin"), ("reason", reason)],
        )
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nlb_health_check_with_proxy_v2_local_header_gets_200() {
    bounded(LIMIT, async {
        let (_app, berth) =
            start("[admin.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.2/32\"]\n").await;
        let admin = berth.admin();

        // The NLB's health check: v2 LOCAL, then GET /healthz.
        let r = exchange(NLB, admin, &V2_LOCAL, &get("/healthz")).await;
        assert_eq!(raw_status(&r), Some(200), "v2 LOCAL + /healthz: {r:?}");
        assert!(r.ends_with("ok\n"), "{r:?}");

        // v1 and v2 PROXY (with addresses) are accepted too, on any admin path.
        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.2 5555 9901\r\n";
        let r = exchange(NLB, admin, v1, &get("/metrics")).await;
        assert_eq!(raw_status(&r), Some(200), "v1 + /metrics: {r:?}");
        let v2 = berth_proxy::conn::proxy_protocol::encode_v2(
            "127.0.0.9:5555".parse().unwrap(),
            admin,
            &[],
        )
        .unwrap();
        let r = exchange(NLB, admin, &v2, &get("/healthz")).await;
        assert_eq!(raw_status(&r), Some(200), "v2 PROXY + /healthz: {r:?}");

        // The header is optional: plain HTTP from the trusted peer and from anyone else.
        for source in [NLB, OTHER] {
            let r = exchange(source, admin, b"", &get("/healthz")).await;
            assert_eq!(
                raw_status(&r),
                Some(200),
                "plain /healthz from {source}: {r:?}"
            );
        }
        // Requests that merely start like a signature stay HTTP (POST: 405, not a refusal).
        let r = exchange(
            OTHER,
            admin,
            b"",
            "POST /healthz HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&r), Some(405), "{r:?}");
        assert_eq!(rejected(&berth, "untrusted").await, 0.0);
        assert_eq!(rejected(&berth, "malformed").await, 0.0);

        // A PROXY header from a peer outside trusted_cidrs: closed unanswered, and counted.
        let r = exchange(OTHER, admin, &V2_LOCAL, &get("/healthz")).await;
        assert_eq!(r, "", "untrusted PROXY header answered");
        let r = exchange(OTHER, admin, v1, &get("/healthz")).await;
        assert_eq!(r, "", "untrusted PROXY v1 header answered");
        assert_eq!(rejected(&berth, "untrusted").await, 2.0);

        // A broken header from the trusted peer: closed unanswered, and counted.
        let r = exchange(NLB, admin, b"PROXY GARBAGE\r\n", &get("/healthz")).await;
        assert_eq!(r, "", "malformed PROXY header answered");
        assert_eq!(rejected(&berth, "malformed").await, 1.0);

        // The admin port still serves after all of that.
        let r = exchange(NLB, admin, &V2_LOCAL, &get("/healthz")).await;
        assert_eq!(raw_status(&r), Some(200), "{r:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_proxy_protocol_a_header_is_not_http() {
    bounded(LIMIT, async {
        // The symptom, kept for configurations that do not opt in: hyper sees the
        // header's bytes as a broken request line.
        let (_app, berth) = start("").await;
        let admin = berth.admin();
        let r = exchange(NLB, admin, &V2_LOCAL, &get("/healthz")).await;
        assert_eq!(raw_status(&r), Some(400), "{r:?}");
        let r = exchange(NLB, admin, b"", &get("/healthz")).await;
        assert_eq!(raw_status(&r), Some(200), "{r:?}");
    })
    .await
}
