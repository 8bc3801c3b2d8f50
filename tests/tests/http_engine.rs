//! The HTTP engine against what real and hostile clients send: pipelined requests, requests a
//! strict parser must refuse (those that have served request smuggling), and HTTP/2 with prior
//! knowledge (h2c).

use std::net::SocketAddr;
use std::time::Duration;

use berth_tests::config::{forward, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, Backend, Berth};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(90);
const HEALTHY: Duration = Duration::from_secs(20);

/// A listener with `/a` → group a, `/b` → group b, `/fixed` → a fixed response, and a 4 KiB
/// header limit; `extra` goes into the listener table.
fn config(web: SocketAddr, a: &Backend, b: &Backend, extra: &str) -> String {
    let listener = Listener::web(web, "a")
        .key("max_header_bytes = 4096")
        .key(extra)
        .rule(1, r#"{ path_prefix = ["/a"] }"#, &forward("a"))
        .rule(2, r#"{ path_prefix = ["/b"] }"#, &forward("b"))
        .rule(
            3,
            r#"{ path_prefix = ["/fixed"] }"#,
            r#"{ fixed_response = { status = 200, body = "f" } }"#,
        );
    format!(
        "{listener}{}{}",
        static_group("a", &[a], ""),
        static_group("b", &[b], "")
    )
}

/// Backends a and b, and berth with [`config`] and `extra`, both groups healthy.
async fn start(extra: &str) -> (Backend, Backend, SocketAddr, Berth) {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let web = listen_addr();
    let berth = Berth::start(&config(web, &a, &b, extra)).await;
    berth.wait_healthy("a", &[a.addr()], HEALTHY).await;
    berth.wait_healthy("b", &[b.addr()], HEALTHY).await;
    (a, b, web, berth)
}

/// Writes `bytes` in one write and reads until the server closes (or 5 s pass).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    out
}

/// The responses in a byte stream of HTTP/1.1 responses with `Content-Length` bodies, as
/// (status, body).
fn responses(mut bytes: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        let body_end = (body_start + len).min(bytes.len());
        out.push((
            status,
            String::from_utf8_lossy(&bytes[body_start..body_end]).to_string(),
        ));
        bytes = &bytes[body_end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_each_routed_on_its_own() {
    bounded(LIMIT, async {
        let (a, b, web, _berth) = start("").await;

        let four = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
                     GET /b HTTP/1.1\r\nHost: t\r\n\r\n\
                     GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n\
                     GET /b/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let got = responses(&exchange(web, four).await);
        let want: Vec<(u16, String)> = [(200, "a"), (200, "b"), (200, "f"), (200, "b")]
            .iter()
            .map(|(s, b)| (*s, b.to_string()))
            .collect();
        assert_eq!(got, want, "four pipelined requests in one write");

        // Limits apply per request: the oversized second head gets 431 and ends the
        // connection; the first is answered, the third never read.
        let before = (a.requests(), b.requests());
        let big = "x".repeat(5000);
        let three = format!(
            "GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
             GET /b HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n\
             GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
        );
        let got = responses(&exchange(web, three.as_bytes()).await);
        assert_eq!(got.len(), 2, "two answers, then close: {got:?}");
        assert_eq!(got[0], (200, "a".to_string()));
        assert_eq!(got[1].0, 431);
        assert_eq!((a.requests(), b.requests()), (before.0 + 1, before.1));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_parser_refuses_what_could_smuggle_a_request() {
    bounded(LIMIT, async {
        let (a, _b, web, berth) = start("").await;

        let refused: [(&str, &[u8]); 5] = [
            (
                "control byte in the request target",
                b"GET /\x01bad HTTP/1.1\r\nHost: t\r\n\r\n",
            ),
            (
                "two differing Content-Length fields",
                b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
            (
                "obsolete line folding",
                b"GET /a HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
            ),
            (
                "NUL in a header value",
                b"GET /a HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n",
            ),
            ("not HTTP at all", b"THIS IS NOT HTTP\r\n\r\n"),
        ];
        for (what, req) in refused {
            let got = responses(&exchange(web, req).await);
            assert_eq!(
                got.first().map(|r| r.0),
                Some(400),
                "{what}: expected 400, got {got:?}"
            );
            assert_eq!(got.len(), 1, "{what}: one answer then close: {got:?}");
        }
        assert_eq!(a.requests(), 0, "no refused request reached a target");
        berth
            .wait_metric_at_least(
                "berth_proxy_responses_total",
                &[("listener", "web"), ("reason", "bad_request")],
                5.0,
                Duration::from_secs(5),
            )
            .await;

        // A malformed chunk size in the body: the client gets 400, never a target's answer.
        let got = responses(
            &exchange(
                web,
                b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            )
            .await,
        );
        assert_eq!(got.first().map(|r| r.0), Some(400), "bad chunk size: {got:?}");

        // Content-Length with Transfer-Encoding: the body is read as chunked, the request is
        // answered once, and the connection closes, so the bytes after the chunked body are
        // never taken for a second request (RFC 9112 section 6.1).
        let before = a.requests();
        let got = responses(
            &exchange(
                web,
                b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\nGET /a/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .await,
        );
        assert_eq!(got.len(), 1, "CL+TE: one answer, then close: {got:?}");
        assert_eq!(a.requests(), before + 1, "CL+TE: one request reached the target");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_proxied_and_counted_as_a_connection() {
    bounded(LIMIT, async {
        let (_a, _b, web, berth) = start("http2 = true").await;

        let tcp = TcpStream::connect(web).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        for (path, want) in [("/a", "a"), ("/b", "b"), ("/fixed", "f")] {
            let req = http::Request::get(format!("http://t{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = send.send_request(req).await.expect("h2 request");
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], want.as_bytes(), "{path}");
        }
        // A POST body crosses from HTTP/2 to the HTTP/1.1 target.
        let req = http::Request::post("http://t/a/echo")
            .body(Full::new(Bytes::from_static(b"ping")))
            .unwrap();
        let resp = send.send_request(req).await.expect("h2 POST");
        assert_eq!(resp.status(), 200);
        let active = berth
            .metric("berth_active_connections", &[("listener", "web")])
            .await;
        assert_eq!(active, Some(1.0), "the HTTP/2 connection is counted");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_parked_resumed_and_closed_at_the_idle_timeout() {
    bounded(LIMIT, async {
        let (_a, _b, web, _berth) = start("idle_timeout = \"4s\"").await;

        let mut s = TcpStream::connect(web).await.expect("connect");
        // Each pause is longer than the time after which an idle connection lets go of its
        // HTTP buffers; the next request on the same connection is answered all the same,
        // pipelined pairs included.
        for round in 0..3 {
            s.write_all(
                b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /fixed HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while responses(&got).len() < 2 {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
                    .await
                    .expect("answers within 5 s")
                    .expect("read");
                assert!(n > 0, "round {round}: closed early");
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(
                responses(&got),
                vec![(200, "a".to_string()), (200, "f".to_string())],
                "round {round}"
            );
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        // Idle past the idle timeout (4 s): berth closes the connection.
        let t = std::time::Instant::now();
        let mut chunk = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(8), s.read(&mut chunk))
            .await
            .expect("closed within 8 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a response");
        let idle = t.elapsed() + Duration::from_millis(1600);
        assert!(
            idle >= Duration::from_millis(3500),
            "closed after {idle:?} idle, before the 4 s idle timeout"
        );
        eprintln!("figure: idle connection closed after {idle:?} (idle_timeout 4 s)");
    })
    .await
}

/// A request no target received goes to another target whatever its method: here half of
/// the group's targets refuse connections (as a task that ECS is stopping does before berth
/// learns of it), and every POST with a 10 KB body still gets the live target's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_target_received_are_resent_whatever_their_method() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let dead = berth_tests::net::free_port(berth_tests::net::target_ip());
        let web = listen_addr();
        // No health checks (targets are healthy once registered) and no passive ejection: the
        // refusing target stays in rotation for the whole test.
        let group = Group::new("g")
            .key("algorithm = \"round_robin\"")
            .key("health_check = { enabled = false }")
            .key("outlier = { enabled = false }")
            .key("retry = { attempts = 0 }")
            .targets(&format!(
                "[{{ address = \"{}\" }}, {{ address = \"{dead}\" }}]",
                a.addr()
            ));
        let cfg = format!("{}{group}", Listener::web(web, "g"));
        let berth = Berth::start(&cfg).await;
        let body = "x".repeat(10 * 1024);
        for (i, method) in ["POST", "PUT", "PATCH", "DELETE", "POST", "GET"]
            .iter()
            .cycle()
            .take(24)
            .enumerate()
        {
            let req = format!(
                "{method} /r{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            let got = responses(&exchange(web, req.as_bytes()).await);
            assert_eq!(got.len(), 1, "{method} /r{i}: one response, got {got:?}");
            assert_eq!(got[0].0, 200, "{method} /r{i} answered {got:?}");
        }
        assert_eq!(a.requests(), 24, "every request reached the live target");
        let resent = berth
            .metric("berth_unsent_resends_total", &[("target_group", "g"), ("reason", "connect")])
            .await
            .unwrap_or(0.0);
        // Round robin over two targets: about every other request met the refusing one first.
        assert!(
            resent >= 6.0,
            "berth_unsent_resends_total{{reason=connect}} = {resent}, expected about 12"
        );
        let retries = berth.metric("berth_retries_total", &[]).await.unwrap_or(0.0);
        assert_eq!(retries, 0.0, "re-sending unsent requests is not a retry (attempts = 0)");
        eprintln!("figure: 24 requests of 5 methods, half to a refusing target: 24 answered 200, {resent} re-sent after a failed connect");
    })
    .await
}

/// A target that accepts connections and drops them after `pause`: unread (`read_first` false:
/// the kernel answers with a reset, as a stopping app's listener does to connections still in
/// its accept queue) or after reading the whole request (a close, FIN: the app had it). Returns
/// its address and how many connections it took.
async fn dropping_target(
    read_first: bool,
    pause: Duration,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind((berth_tests::net::target_ip(), 0))
        .await
        .expect("bind the dropping target");
    let addr = listener.local_addr().expect("its address");
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&taken);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if read_first {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = tokio::time::timeout(pause, async {
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                } else {
                    tokio::time::sleep(pause).await;
                }
                drop(s);
            });
        }
    });
    (addr, taken)
}

/// A target that resets a connection before reading the request (TCP RST with the bytes
/// unread) never had it: every method goes to another target. One that read the request and
/// closed (FIN) may have acted on it: a POST gets a 502, never a second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reset_unread_is_resent_one_closed_after_reading_is_not() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let (resetting, reset_conns) = dropping_target(false, Duration::from_millis(50)).await;
        let (closing, closed_conns) = dropping_target(true, Duration::from_millis(50)).await;
        let web = listen_addr();
        let group = |name: &str, other: SocketAddr| {
            Group::new(name)
                .key("algorithm = \"round_robin\"")
                .key("health_check = { enabled = false }")
                .key("outlier = { enabled = false }")
                .key("retry = { attempts = 0 }")
                .targets(&format!(
                    "[{{ address = \"{}\" }}, {{ address = \"{other}\" }}]",
                    a.addr()
                ))
        };
        let cfg = format!(
            "{}{}{}",
            Listener::web(web, "reset")
                .rule(1, "{ path_prefix = [\"/closed\"] }", &forward("closed")),
            group("reset", resetting),
            group("closed", closing)
        );
        let berth = Berth::start(&cfg).await;
        let body = "x".repeat(10 * 1024);
        let post = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        for i in 0..10 {
            let got = responses(&exchange(web, post(&format!("/r{i}")).as_bytes()).await);
            assert_eq!(got.len(), 1, "POST /r{i}: one response, got {got:?}");
            assert_eq!(got[0].0, 200, "POST /r{i} answered {got:?}");
        }
        let resets = reset_conns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(resets >= 3, "round robin sent POSTs to the resetting target ({resets})");
        let resent = berth
            .metric(
                "berth_unsent_resends_total",
                &[("target_group", "reset"), ("reason", "reset_unread")],
            )
            .await
            .unwrap_or(0.0);
        assert_eq!(resent, resets as f64, "each reset request went to the live target");

        let mut statuses = Vec::new();
        for i in 0..6 {
            let got = responses(&exchange(web, post(&format!("/closed/{i}")).as_bytes()).await);
            assert_eq!(got.len(), 1, "POST /closed/{i}: one response, got {got:?}");
            statuses.push(got[0].0);
        }
        let closes = closed_conns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(closes >= 2, "round robin sent POSTs to the closing target ({closes})");
        assert_eq!(
            statuses.iter().filter(|s| **s == 502).count(),
            closes,
            "each POST the target read and closed on is a 502 ({statuses:?})"
        );
        assert_eq!(
            a.requests(),
            (10 + 6 - closes) as u64,
            "the live target saw each other request once"
        );
        eprintln!("figure: 10 POSTs with {resets} to a target resetting them unread: 10 answered 200, {resent} re-sent; 6 POSTs with {closes} to a target closing after reading: {closes} answered 502, none re-sent");
    })
    .await
}
