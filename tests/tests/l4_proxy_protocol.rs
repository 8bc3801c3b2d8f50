//! L4 PROXY protocol end to end: headers in (v1 and v2, trusted peers, VPC endpoint
//! allow-lists, header timeouts), v2 out to targets (berth's own encoder and HAProxy's
//! `send-proxy-v2` in front), and a PROXY header on an HTTP listener. Every connection stays on
//! loopback.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use berth_tests::config::{forward, static_group, tcp_config, Listener};
use berth_tests::tcp::{roundtrip, v2_header, Echo};
use berth_tests::{bounded, metrics, net, wait_until, which, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An echo target (reading a PROXY v2 header first when `aware`) behind TCP listener `tcp`,
/// whose `[listeners.proxy_protocol]` table holds `proxy_protocol`, with `group_extra` lines
/// in the target group and TCP health checks unless `checks` is false; returns the target, the
/// listener's address and berth once the target is healthy.
async fn start(
    aware: bool,
    proxy_protocol: &str,
    group_extra: &str,
    checks: bool,
) -> (Echo, SocketAddr, Berth) {
    let echo = Echo::start(aware).await;
    let listen = net::listen_addr();
    let proxy_protocol = format!("[listeners.proxy_protocol]\n{proxy_protocol}\n");
    let mut cfg = tcp_config(listen, &proxy_protocol, group_extra, &[echo.addr]);
    if !checks {
        cfg = cfg.replace(
            "[target_groups.health_check]\nprotocol",
            "[target_groups.health_check]\nenabled = false\nprotocol",
        );
    }
    let berth = Berth::start(&cfg).await;
    berth
        .wait_healthy("echo", &[echo.addr], Duration::from_secs(10))
        .await;
    (echo, listen, berth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_with_proxy_headers_in_and_out() {
    bounded(Duration::from_secs(60), async {
        let (_plain, listen, berth) = start(
            false,
            "trusted_cidrs = [\"127.0.0.1/32\"]\nallowed_vpc_endpoints = [\"vpce-0good\"]",
            "",
            true,
        )
        .await;

        // v2 with the allowed VPC endpoint is accepted; payload passes intact. (v1 carries no
        // TLVs, so this listener's allow-list refuses it: see below.)
        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\n";
        let src: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        let hdr = v2_header(src, listen, Some("vpce-0good"));
        assert_eq!(
            roundtrip(listen, &hdr, b"hello v2").await.unwrap(),
            b"hello v2"
        );

        // Refused: no header, malformed, truncated, VPC endpoint not allowed, no TLV.
        let refused: [(&str, Vec<u8>); 6] = [
            ("vpce_not_allowed", v1.to_vec()),
            ("malformed", b"hello".to_vec()),
            ("malformed", b"PROXY GARBAGE\r\n".to_vec()),
            ("truncated", hdr[..20].to_vec()),
            (
                "vpce_not_allowed",
                v2_header(src, listen, Some("vpce-0bad")),
            ),
            ("vpce_not_allowed", v2_header(src, listen, None)),
        ];
        for (why, prefix) in &refused {
            let out = roundtrip(listen, prefix, b"").await.unwrap_or_default();
            assert!(out.is_empty(), "{why}: nothing is forwarded, got {out:?}");
        }
        let m = berth.metrics().await;
        for reason in ["malformed", "truncated", "vpce_not_allowed"] {
            let v = metrics::value(
                &m,
                "berth_proxy_protocol_rejected_total",
                &[("listener", "tcp"), ("reason", reason)],
            );
            assert!(v.unwrap_or(0.0) >= 1.0, "{reason} counted: {v:?}");
        }
        assert!(
            metrics::value(&m, "berth_l4_new_flows_total", &[("listener", "tcp")]).unwrap_or(0.0)
                >= 7.0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_and_slow_header_are_refused() {
    bounded(Duration::from_secs(60), async {
        // Only 127.0.0.200 may send PROXY headers; we connect from 127.0.0.1.
        // Health checks off, so the target sees only forwarded connections.
        let (plain, listen, berth) = start(
            false,
            "trusted_cidrs = [\"127.0.0.200/32\"]\nheader_timeout = \"300ms\"",
            "",
            false,
        )
        .await;
        let spoof = b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 80\r\n";
        let out = roundtrip(listen, spoof, b"x").await.unwrap_or_default();
        assert!(out.is_empty());
        let m = berth.metrics().await;
        assert_eq!(
            metrics::value(
                &m,
                "berth_proxy_protocol_rejected_total",
                &[("listener", "tcp"), ("reason", "untrusted")]
            ),
            Some(1.0)
        );
        assert_eq!(plain.accepted(), 0, "nothing reached the target");
        // A trusted-looking plain connection without a header is refused too.
        let out = roundtrip(listen, b"", b"x").await.unwrap_or_default();
        assert!(out.is_empty());
        assert_eq!(plain.accepted(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_of_a_slow_proxy_header_is_counted() {
    bounded(Duration::from_secs(30), async {
        let (_plain, listen, berth) = start(
            false,
            "trusted_cidrs = [\"127.0.0.1/32\"]\nheader_timeout = \"200ms\"",
            "",
            true,
        )
        .await;
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(b"PROXY TCP4 ").await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
        wait_until(Duration::from_secs(5), "timeout counted", || async {
            let m = berth.metrics().await;
            metrics::value(
                &m,
                "berth_proxy_protocol_rejected_total",
                &[("listener", "tcp"), ("reason", "timeout")],
            )
            .is_some()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_is_sent_to_targets_with_client_address_and_tlvs() {
    bounded(Duration::from_secs(60), async {
        let (_aware, listen, _berth) = start(
            true,
            "trusted_cidrs = [\"127.0.0.1/32\"]",
            "proxy_protocol_v2 = true",
            true,
        )
        .await;
        let src: SocketAddr = "127.0.0.77:4242".parse().unwrap();
        let out = roundtrip(listen, &v2_header(src, listen, Some("vpce-0abc")), b"ping")
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text, "source=127.0.0.77:4242;vpce=vpce-0abc\nping");
        // A v1 header in, v2 out: the client address carries over.
        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\n";
        let out = roundtrip(listen, v1, b"pong").await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "source=127.0.0.9:5555;vpce=\npong"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_interoperates() {
    bounded(Duration::from_secs(60), async {
        let Some(haproxy) = which("haproxy") else {
            panic!("haproxy is not installed (scripts/test installs the Debian package)");
        };
        let (_aware, listen, _berth) = start(
            true,
            "trusted_cidrs = [\"127.0.0.0/8\"]",
            "proxy_protocol_v2 = true",
            true,
        )
        .await;
        // HAProxy in TCP mode in front of berth, sending PROXY v2.
        let front = net::listen_addr();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\nfrontend f\n  bind {front}\n  default_backend b\nbackend b\n  server berth {listen} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(haproxy)
            .arg("-f")
            .arg(&conf)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy");
        wait_until(Duration::from_secs(10), "haproxy listening", || async {
            TcpStream::connect(front).await.is_ok()
        })
        .await;
        // Connect to HAProxy from a chosen loopback address: berth must report it as the client.
        let client_ip: IpAddr = "127.0.0.66".parse().unwrap();
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(client_ip, 0)).unwrap();
        let mut s = sock.connect(front).await.unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(b"hi").await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(String::from_utf8_lossy(&out), format!("source={local};vpce=\nhi"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_on_http_listener_sets_client_address_and_vpce() {
    bounded(Duration::from_secs(60), async {
        let backend = berth_tests::Backend::spawn("web").await;
        let listen = net::listen_addr();
        let listener = Listener::new("web", listen)
            .tables("[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.1/32\"]\n")
            .rule(
                1,
                r#"{ vpc_endpoint = ["vpce-0allowed"] }, { source_cidr = ["127.0.0.77/32"] }"#,
                &forward("web"),
            )
            .default_action(r#"fixed_response = { status = 403, body = "not via the endpoint\n" }"#);
        let cfg = listener.to_string() + &static_group("web", &[&backend], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("web", &[backend.addr()], Duration::from_secs(10)).await;
        let src: SocketAddr = "127.0.0.77:4242".parse().unwrap();
        let req = b"GET /echo-headers HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nx-berth-vpce-id: vpce-spoofed\r\nConnection: close\r\n\r\n";
        let out = http_roundtrip(listen, &v2_header(src, listen, Some("vpce-0allowed")), req).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let headers: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.77", "the PROXY source is the client: {headers}");
        assert_eq!(headers["x-berth-vpce-id"], "vpce-0allowed");
        // Another endpoint: the rule does not match.
        let out = http_roundtrip(listen, &v2_header(src, listen, Some("vpce-0other")), req).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 403"));
    })
    .await;
}

/// Sends a PROXY header and an HTTP request with `Connection: close` and reads until the server
/// closes (no half-close from the client: an HTTP proxy takes that as the client leaving).
async fn http_roundtrip(addr: SocketAddr, prefix: &[u8], req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(prefix).await.expect("write header");
    s.write_all(req).await.expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}
