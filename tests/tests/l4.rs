//! L4 end to end: TCP listeners, PROXY protocol in and out (berth's own encoder and HAProxy's
//! `send-proxy-v2`), VPC endpoint allow-lists, killed targets, large transfers and many idle
//! flows. Every connection stays on loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::{bounded, metrics, net, wait_until, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A TCP echo target. In `proxy_aware` mode it first reads a PROXY v2 header and answers
/// `source=<ip:port>;vpce=<id>\n` before echoing.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<AtomicU64>,
}

impl Echo {
    async fn start(proxy_aware: bool) -> Echo {
        let ip = net::target_ip();
        let l = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind echo");
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicU64::new(0));
        let c2 = conns.clone();
        let task = tokio::spawn(async move {
            let mut handlers = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                handlers.spawn(async move {
                    if proxy_aware {
                        match read_v2(&mut s).await {
                            Some((src, vpce)) => {
                                let line =
                                    format!("source={src};vpce={}\n", vpce.unwrap_or_default());
                                if s.write_all(line.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Echo { addr, task, conns }
    }

    fn kill(&self) {
        // Aborting the accept loop drops the listener and every handler's socket.
        self.task.abort();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a PROXY v2 header: the IPv4 source and the AWS VPC endpoint TLV.
async fn read_v2(s: &mut TcpStream) -> Option<(SocketAddr, Option<String>)> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await.ok()?;
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" || head[13] != 0x11 {
        return None;
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    let src = SocketAddr::from((
        [body[0], body[1], body[2], body[3]],
        u16::from_be_bytes([body[8], body[9]]),
    ));
    let mut vpce = None;
    let mut i = 12;
    while i + 3 <= body.len() {
        let kind = body[i];
        let l = u16::from_be_bytes([body[i + 1], body[i + 2]]) as usize;
        let v = body.get(i + 3..i + 3 + l)?;
        if kind == 0xEA && v.first() == Some(&1) {
            vpce = Some(String::from_utf8_lossy(&v[1..]).into_owned());
        }
        i += 3 + l;
    }
    Some((src, vpce))
}

/// A PROXY v2 header (IPv4, TCP) with an optional AWS VPC endpoint TLV.
fn v2_header(src: SocketAddr, dst: SocketAddr, vpce: Option<&str>) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("ipv4 only");
    };
    let mut body = Vec::new();
    body.extend_from_slice(&s.ip().octets());
    body.extend_from_slice(&d.ip().octets());
    body.extend_from_slice(&s.port().to_be_bytes());
    body.extend_from_slice(&d.port().to_be_bytes());
    if let Some(id) = vpce {
        body.push(0xEA);
        body.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
        body.push(0x01);
        body.extend_from_slice(id.as_bytes());
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

fn tcp_config(
    listen: SocketAddr,
    listener_extra: &str,
    group_extra: &str,
    targets: &[SocketAddr],
) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address = \"{t}\" }}"))
        .collect();
    format!(
        r#"
[[listeners]]
name = "tcp"
bind = "{listen}"
protocol = "tcp"
idle_timeout = "30s"
{listener_extra}
[listeners.default_action]
forward = [{{ target_group = "echo" }}]

[[target_groups]]
name = "echo"
deregistration_delay = "1s"
{group_extra}
[target_groups.health_check]
protocol = "tcp"
interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
[target_groups.source]
kind = "static"
targets = [{}]
"#,
        targets.join(", ")
    )
}

async fn roundtrip(addr: SocketAddr, prefix: &[u8], payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(prefix).await?;
    s.write_all(payload).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_with_proxy_headers_in_and_out() {
    bounded(Duration::from_secs(60), async {
        let plain = Echo::start(false).await;
        let listen = net::listen_addr();
        let cfg = format!(
            "{}\n{}",
            tcp_config(
                listen,
                "[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.1/32\"]\nallowed_vpc_endpoints = [\"vpce-0good\"]\n",
                "",
                &[plain.addr]
            ),
            ""
        );
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("echo", &[plain.addr], Duration::from_secs(10)).await;

        // v2 with the allowed VPC endpoint is accepted; payload passes intact. (v1 carries no
        // TLVs, so this listener's allow-list refuses it: see below.)
        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\n";
        let src: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        let hdr = v2_header(src, listen, Some("vpce-0good"));
        assert_eq!(roundtrip(listen, &hdr, b"hello v2").await.unwrap(), b"hello v2");

        // Refused: no header, malformed, truncated, VPC endpoint not allowed, no TLV.
        let refused: [(&str, Vec<u8>); 6] = [
            ("vpce_not_allowed", v1.to_vec()),
            ("malformed", b"hello".to_vec()),
            ("malformed", b"PROXY GARBAGE\r\n".to_vec()),
            ("truncated", hdr[..20].to_vec()),
            ("vpce_not_allowed", v2_header(src, listen, Some("vpce-0bad"))),
            ("vpce_not_allowed", v2_header(src, listen, None)),
        ];
        for (why, prefix) in &refused {
            let out = roundtrip(listen, prefix, b"").await.unwrap_or_default();
            assert!(out.is_empty(), "{why}: nothing is forwarded, got {out:?}");
        }
        let m = berth.metrics().await;
        for reason in ["malformed", "truncated", "vpce_not_allowed"] {
            let v = metrics::value(&m, "berth_proxy_protocol_rejected_total", &[("listener", "tcp"), ("reason", reason)]);
            assert!(v.unwrap_or(0.0) >= 1.0, "{reason} counted: {v:?}");
        }
        assert!(metrics::value(&m, "berth_l4_new_flows_total", &[("listener", "tcp")]).unwrap_or(0.0) >= 7.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_and_slow_header_are_refused() {
    bounded(Duration::from_secs(60), async {
        let plain = Echo::start(false).await;
        let listen = net::listen_addr();
        // Only 127.0.0.200 may send PROXY headers; we connect from 127.0.0.1.
        // Health checks off, so the target sees only forwarded connections.
        let cfg = tcp_config(
            listen,
            "[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.200/32\"]\nheader_timeout = \"300ms\"\n",
            "",
            &[plain.addr],
        )
        .replace(
            "[target_groups.health_check]\nprotocol",
            "[target_groups.health_check]\nenabled = false\nprotocol",
        );
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("echo", &[plain.addr], Duration::from_secs(10)).await;
        let spoof = b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 80\r\n";
        let out = roundtrip(listen, spoof, b"x").await.unwrap_or_default();
        assert!(out.is_empty());
        let m = berth.metrics().await;
        assert_eq!(
            metrics::value(&m, "berth_proxy_protocol_rejected_total", &[("listener", "tcp"), ("reason", "untrusted")]),
            Some(1.0)
        );
        assert_eq!(plain.conns.load(Ordering::SeqCst), 0, "nothing reached the target");
        // A trusted-looking plain connection without a header is refused too.
        let out = roundtrip(listen, b"", b"x").await.unwrap_or_default();
        assert!(out.is_empty());
        assert_eq!(plain.conns.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_of_a_slow_proxy_header_is_counted() {
    bounded(Duration::from_secs(30), async {
        let plain = Echo::start(false).await;
        let listen = net::listen_addr();
        let cfg = tcp_config(
            listen,
            "[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.1/32\"]\nheader_timeout = \"200ms\"\n",
            "",
            &[plain.addr],
        );
        let berth = Berth::start(&cfg).await;
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(b"PROXY TCP4 ").await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
        wait_until(Duration::from_secs(5), "timeout counted", || async {
            let m = berth.metrics().await;
            metrics::value(&m, "berth_proxy_protocol_rejected_total", &[("listener", "tcp"), ("reason", "timeout")]).is_some()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_is_sent_to_targets_with_client_address_and_tlvs() {
    bounded(Duration::from_secs(60), async {
        let aware = Echo::start(true).await;
        let listen = net::listen_addr();
        let cfg = tcp_config(
            listen,
            "[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.1/32\"]\n",
            "proxy_protocol_v2 = true",
            &[aware.addr],
        );
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("echo", &[aware.addr], Duration::from_secs(10))
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
        let aware = Echo::start(true).await;
        let listen = net::listen_addr();
        let cfg = tcp_config(
            listen,
            "[listeners.proxy_protocol]\ntrusted_cidrs = [\"127.0.0.0/8\"]\n",
            "proxy_protocol_v2 = true",
            &[aware.addr],
        );
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("echo", &[aware.addr], Duration::from_secs(10)).await;
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

fn which(bin: &str) -> Option<std::path::PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join(bin))
    .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_target_closes_its_flows_and_new_flows_go_elsewhere() {
    bounded(Duration::from_secs(60), async {
        let a = Echo::start(false).await;
        let b = Echo::start(false).await;
        let listen = net::listen_addr();
        let berth = Berth::start(&tcp_config(listen, "", "", &[a.addr, b.addr])).await;
        berth
            .wait_healthy("echo", &[a.addr, b.addr], Duration::from_secs(10))
            .await;
        // Open flows until one lands on `a`.
        let mut held = Vec::new();
        loop {
            let before = a.conns.load(Ordering::SeqCst);
            let mut s = TcpStream::connect(listen).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            if a.conns.load(Ordering::SeqCst) > before {
                held.push(s);
                break;
            }
            held.push(s);
        }
        let on_a = held.last_mut().unwrap();
        a.kill();
        // The client sees the close.
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), on_a.read(&mut buf))
            .await
            .expect("close seen in time");
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "flow on the killed target ends: {r:?}"
        );
        // New flows all work (connect failures are retried on the other target).
        for i in 0..20 {
            let out = roundtrip(listen, b"", format!("m{i}").as_bytes())
                .await
                .unwrap();
            assert_eq!(out, format!("m{i}").as_bytes());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_passes_intact() {
    bounded(Duration::from_secs(120), async {
        let e = Echo::start(false).await;
        let listen = net::listen_addr();
        let berth = Berth::start(&tcp_config(listen, "", "", &[e.addr])).await;
        berth
            .wait_healthy("echo", &[e.addr], Duration::from_secs(10))
            .await;
        const TOTAL: u64 = 1 << 30;
        let s = TcpStream::connect(listen).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            let mut sum = Checksum::default();
            let mut block = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            while sent < TOTAL {
                for chunk in block.chunks_mut(8) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
                }
                sum.add(&block);
                w.write_all(&block).await.unwrap();
                sent += block.len() as u64;
            }
            w.shutdown().await.unwrap();
            sum
        });
        let mut got = Checksum::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.add(&buf[..n]);
            received += n as u64;
        }
        let sent = writer.await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "figure: 1 GiB echoed through berth in {secs:.2}s ({:.0} MB/s each way)",
            TOTAL as f64 / secs / 1e6
        );
        assert_eq!(received, TOTAL);
        assert_eq!(got.finish(), sent.finish(), "checksums equal");
    })
    .await;
}

/// An order-sensitive streaming checksum (Fletcher-64 over bytes; chunking does not matter).
#[derive(Default)]
struct Checksum {
    a: u64,
    b: u64,
}

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        for &x in bytes {
            self.a = (self.a + u64::from(x)) % 0xFFFF_FFFB;
            self.b = (self.b + self.a) % 0xFFFF_FFFB;
        }
    }

    fn finish(&self) -> (u64, u64) {
        (self.a, self.b)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_on_http_listener_sets_client_address_and_vpce() {
    bounded(Duration::from_secs(60), async {
        let backend = berth_tests::Backend::spawn("web").await;
        let listen = net::listen_addr();
        let cfg = format!(
            r#"
[[listeners]]
name = "web"
bind = "{listen}"
[listeners.proxy_protocol]
trusted_cidrs = ["127.0.0.1/32"]
[[listeners.rules]]
priority = 1
conditions = [{{ vpc_endpoint = ["vpce-0allowed"] }}, {{ source_cidr = ["127.0.0.77/32"] }}]
action = {{ forward = [{{ target_group = "web" }}] }}
[listeners.default_action]
fixed_response = {{ status = 403, body = "not via the endpoint\n" }}
{}"#,
            berth_tests::static_group("web", &[&backend], "")
        );
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

/// Connections accepted so far by `echoes` (forwarded flows and TCP health checks).
fn accepted(echoes: &[Echo]) -> u64 {
    echoes.iter().map(|e| e.conns.load(Ordering::SeqCst)).sum()
}

/// 5,000 concurrent idle flows through one TCP listener: all are counted as active, all reach a
/// target, all still relay a few bytes each way afterwards, and all are released when the
/// clients close. Prints berth's resident memory per idle flow.
///
/// File descriptors: this process holds 5,000 client sockets and 5,000 echo-side sockets; berth
/// holds 5,000 client-side and 5,000 target-side sockets (it connects to the target as soon as it
/// accepts, before any client data). They are separate processes, each needing about 10,100
/// descriptors, so the soft limit is raised to the hard limit first; berth inherits it.
/// Ports: the clients bind to 127.0.10.1..=8 (separate 4-tuples and port spaces); berth's
/// target connections take source ports on 127.0.0.1 towards four echo targets. Connects and
/// echo checks run with bounded concurrency so that no accept queue overflows (the echo
/// listeners' backlog is small) and the test's two runtime threads are never hogged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_flows_are_held() {
    const FLOWS: usize = 5_000;
    const CONCURRENCY: usize = 128;
    let nofile = net::raise_nofile_limit();
    assert!(
        nofile >= 2 * FLOWS as u64 + 500,
        "RLIMIT_NOFILE is {nofile}; this test needs about {} descriptors per process",
        2 * FLOWS + 500
    );
    bounded(Duration::from_secs(120), async {
        let mut echoes = Vec::new();
        for _ in 0..4 {
            echoes.push(Echo::start(false).await);
        }
        let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
        let listen = net::listen_addr();
        // Idle timeout well above the test's length: the flows must stay open on their own.
        let cfg = tcp_config(listen, "max_connections = 6000\n", "", &addrs)
            .replace("idle_timeout = \"30s\"", "idle_timeout = \"300s\"");
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("echo", &addrs, Duration::from_secs(10))
            .await;
        let active_flows = "berth_l4_active_flows";
        let labels = [("listener", "tcp")];

        // Warm up (the first flow registers the metric), then take the baseline.
        assert_eq!(roundtrip(listen, b"", b"warm").await.unwrap(), b"warm");
        wait_until(Duration::from_secs(10), "warm-up flow closed", || async {
            berth.metric(active_flows, &labels).await == Some(0.0)
        })
        .await;
        let rss_before = berth.rss_kib();
        let accepted_before = accepted(&echoes);

        // Open the flows and leave them idle.
        let started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut opening = tokio::task::JoinSet::new();
        for i in 0..FLOWS {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let source = IpAddr::from([127, 0, 10, 1 + (i % 8) as u8]);
            opening.spawn(async move {
                let s = tokio::time::timeout(
                    Duration::from_secs(10),
                    berth_tests::client::connect_from(source, listen),
                )
                .await;
                drop(permit);
                match s {
                    Ok(Ok(s)) => (i, s),
                    Ok(Err(e)) => panic!("flow {i} from {source}: connect: {e:#}"),
                    Err(_) => panic!("flow {i} from {source}: connect timed out"),
                }
            });
        }
        let mut slots: Vec<Option<TcpStream>> = (0..FLOWS).map(|_| None).collect();
        while let Some(r) = opening.join_next().await {
            let (i, s) = r.expect("connect task");
            slots[i] = Some(s);
        }
        let active = berth
            .wait_metric_at_least(active_flows, &labels, FLOWS as f64, Duration::from_secs(30))
            .await;
        assert_eq!(active, FLOWS as f64, "exactly the held flows are active");
        // berth counts a flow before connecting to its target: wait for the targets' side too.
        wait_until(
            Duration::from_secs(30),
            "every flow connected to a target",
            || async { accepted(&echoes) - accepted_before >= FLOWS as u64 },
        )
        .await;
        let opened_in = started.elapsed();
        for e in &echoes {
            assert!(
                e.conns.load(Ordering::SeqCst) > 100,
                "flows spread over the targets: {} on {}",
                e.conns.load(Ordering::SeqCst),
                e.addr
            );
        }

        // Memory while idle.
        let rss_idle = berth.rss_kib();
        assert!(rss_before > 0 && rss_idle > 0, "RSS readable");
        eprintln!(
            "figure: berth RSS per idle TCP flow: {:.1} KiB ({rss_before} KiB before, \
             {rss_idle} KiB with {FLOWS} idle flows, opened in {:.2}s)",
            (rss_idle as f64 - rss_before as f64) / FLOWS as f64,
            opened_in.as_secs_f64()
        );

        // Every flow still relays: a few bytes each way (no half-close), bounded concurrency.
        let mut checking = tokio::task::JoinSet::new();
        let mut pending = std::mem::take(&mut slots)
            .into_iter()
            .map(|s| s.expect("flow open"))
            .enumerate();
        slots = (0..FLOWS).map(|_| None).collect();
        loop {
            while checking.len() < CONCURRENCY {
                let Some((i, mut s)) = pending.next() else {
                    break;
                };
                checking.spawn(async move {
                    let msg = format!("f{i:05}");
                    let r = tokio::time::timeout(Duration::from_secs(10), async {
                        s.write_all(msg.as_bytes()).await?;
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back).await?;
                        Ok::<_, std::io::Error>(back)
                    })
                    .await;
                    match r {
                        Ok(Ok(back)) => assert_eq!(back, msg.as_bytes(), "flow {i} echo"),
                        Ok(Err(e)) => panic!("flow {i}: {e}"),
                        Err(_) => panic!(
                            "flow {i}: the {}-byte echo did not come back within 10s \
                             (small writes towards the client must be flushed)",
                            msg.len()
                        ),
                    }
                    (i, s)
                });
            }
            let Some(r) = checking.join_next().await else {
                break;
            };
            let (i, s) = r.expect("echo task");
            slots[i] = Some(s);
        }
        assert!(slots.iter().all(Option::is_some), "every flow checked");
        let rss_used = berth.rss_kib();
        eprintln!(
            "figure: berth RSS per TCP flow after one echo on each: {:.1} KiB ({rss_used} KiB)",
            (rss_used as f64 - rss_before as f64) / FLOWS as f64
        );
        assert_eq!(
            berth.metric(active_flows, &labels).await,
            Some(FLOWS as f64),
            "all flows still active"
        );

        // Close everything: berth releases every flow.
        drop(slots);
        wait_until(
            Duration::from_secs(30),
            "active flows back to 0",
            || async { berth.metric(active_flows, &labels).await == Some(0.0) },
        )
        .await;
    })
    .await;
}
