//! HTTP/2 to targets (`protocol_version = "http2"`): h2c with prior knowledge and h2 by ALPN,
//! one shared connection per target, bodies streaming both ways, trailers both ways, and the
//! bad cases (an HTTP/1.1-only target, RST_STREAM, GOAWAY) answered 502 with a counted reason
//! and a log line naming the target.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_tests::config::{Group, Listener};
use berth_tests::h2_backend::{H2Backend, Speaks};
use berth_tests::net::listen_addr;
use berth_tests::tls::TestCa;
use berth_tests::{bounded, Berth};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const LIMIT: Duration = Duration::from_secs(90);

type Body = BoxBody<Bytes, Infallible>;

/// An http listener accepting h2c, forwarding to an `http2` group of `targets` with no health
/// checks and no retries; `extra` adds keys to the group.
fn config(web: SocketAddr, targets: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    let mut g = Group::new("g")
        .key("protocol_version = \"http2\"")
        .key("health_check = { enabled = false }")
        .key("retry = { attempts = 0 }");
    if !extra.is_empty() {
        g = g.key(extra);
    }
    Listener::web(web, "g").key("http2 = true").to_string()
        + &g.targets(&format!("[{}]", list.join(", "))).to_string()
}

/// An h2c (prior knowledge) client connection to berth.
async fn h2c(web: SocketAddr) -> SendRequest<Body> {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    send
}

fn get(path: &str) -> Request<Body> {
    Request::get(format!("http://app.test{path}"))
        .header("te", "trailers")
        .body(Empty::new().boxed())
        .expect("request")
}

async fn reason_count(berth: &Berth, reason: &str) -> f64 {
    berth
        .metric("berth_proxy_responses_total", &[("reason", reason)])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_target_gets_http2_streams_both_ways_and_trailers_pass() {
    bounded(LIMIT, async {
        let b = H2Backend::start("b", Speaks::Http2, None).await;
        let web = listen_addr();
        let berth = Berth::start(&config(web, &[b.addr()], "")).await;
        let mut client = h2c(web).await;

        // The target sees HTTP/2 and the client's `te: trailers`.
        for _ in 0..3 {
            let r = client.send_request(get("/")).await.expect("GET /");
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-version"], "HTTP/2.0");
            assert_eq!(r.headers()["x-te"], "trailers");
        }

        // A streamed body: each chunk comes back before the next is sent, so neither berth
        // nor the target buffers the stream; trailers pass both ways.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let req = Request::post("http://app.test/echo")
            .header("te", "trailers")
            .body(StreamBody::new(ReceiverStream::new(rx)).boxed())
            .expect("request");
        let resp = client.send_request(req);
        let chunk = |i: usize| Bytes::from(format!("chunk-{i:03}-").repeat(100));
        tx.send(Ok(Frame::data(chunk(0)))).await.expect("send");
        let resp = resp.await.expect("echo response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut echoed = 0;
        let mut got = Vec::new();
        let mut trailers: Option<HeaderMap> = None;
        while let Some(f) = body.frame().await {
            let f = f.expect("echo frame");
            match f.into_data() {
                Ok(d) => {
                    got.extend_from_slice(&d);
                    while got.len() >= (echoed + 1) * chunk(0).len() {
                        echoed += 1;
                        if echoed < 20 {
                            tx.send(Ok(Frame::data(chunk(echoed)))).await.expect("send");
                        } else if echoed == 20 {
                            let mut t = HeaderMap::new();
                            t.insert("x-client-trailer", HeaderValue::from_static("c1"));
                            tx.send(Ok(Frame::trailers(t)))
                                .await
                                .expect("send trailers");
                        }
                    }
                }
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        let expected: Vec<u8> = (0..20).flat_map(|i| chunk(i).to_vec()).collect();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the echoed stream differs");
        let trailers = trailers.expect("response trailers reach the client");
        assert_eq!(trailers["x-trailer"], "done");
        assert_eq!(
            trailers["x-request-trailer"], "c1",
            "request trailers reach the target"
        );

        // Four requests, all HTTP/2, over one shared connection.
        let st = b.stats();
        assert_eq!(st.http2.load(Ordering::Relaxed), 4);
        assert_eq!(st.http1.load(Ordering::Relaxed), 0);
        assert_eq!(st.connections.load(Ordering::Relaxed), 1);
        drop(berth);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_target_over_tls_is_chosen_by_alpn_and_http1_clients_are_translated() {
    bounded(LIMIT, async {
        let ca = TestCa::new();
        let cert = ca.issue(&["api.internal"]);
        let b = H2Backend::start("t", Speaks::Http2, Some((&cert.cert_pem, &cert.key_pem))).await;
        let web = listen_addr();
        let cfg = config(web, &[b.addr()], "protocol = \"https\"\ntls = { server_name = \"api.internal\", ca_bundle = \"ca.pem\" }");
        let ca_pem = ca.ca_cert_pem();
        let berth = Berth::start_with_files(&cfg, &[("ca.pem", ca_pem.as_str())]).await;
        // An HTTP/1.1 client: berth speaks h2 to the target.
        let r = berth_tests::Http::new()
            .get(&format!("http://{web}/"))
            .await
            .expect("GET over HTTP/1.1");
        assert_eq!(r.status, 200, "{}", berth.log_tail(20));
        assert_eq!(r.header("x-version"), "HTTP/2.0");
        assert_eq!(b.stats().handshakes.load(Ordering::Relaxed), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_only_target_in_an_http2_group_is_a_502_with_reason() {
    bounded(LIMIT, async {
        let b = H2Backend::start("old", Speaks::Http1, None).await;
        let web = listen_addr();
        let berth = Berth::start(&config(web, &[b.addr()], "")).await;
        let mut client = h2c(web).await;
        for _ in 0..2 {
            let r = client.send_request(get("/")).await.expect("GET /");
            assert_eq!(r.status(), 502);
        }
        assert_eq!(reason_count(&berth, "upstream_protocol").await, 2.0);
        let log = berth.log();
        let line = log
            .lines()
            .find(|l| l.contains("upstream_protocol") && l.contains(&b.addr().to_string()))
            .unwrap_or_else(|| panic!("no log line names the target:\n{log}"));
        assert!(
            line.contains("target_group"),
            "the line names the group: {line}"
        );
        assert_eq!(b.stats().http2.load(Ordering::Relaxed), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_and_goaway_from_the_target_are_502s_with_reason() {
    bounded(LIMIT, async {
        let b = H2Backend::start("b", Speaks::Http2, None).await;
        let web = listen_addr();
        let berth = Berth::start(&config(web, &[b.addr()], "")).await;
        let mut client = h2c(web).await;
        let r = client.send_request(get("/")).await.expect("GET /");
        assert_eq!(r.status(), 200);

        // RST_STREAM: that request fails, the connection stays.
        let r = client
            .send_request(get("/reset"))
            .await
            .expect("GET /reset");
        assert_eq!(r.status(), 502);
        assert_eq!(reason_count(&berth, "upstream_reset").await, 1.0);
        let r = client
            .send_request(get("/"))
            .await
            .expect("GET / after reset");
        assert_eq!(r.status(), 200);
        assert_eq!(b.stats().connections.load(Ordering::Relaxed), 1);

        // GOAWAY, then the connection closes under the request: 502; the next request goes
        // on a new connection.
        let r = client
            .send_request(get("/goaway"))
            .await
            .expect("GET /goaway");
        assert_eq!(r.status(), 502);
        assert_eq!(reason_count(&berth, "upstream_reset").await, 2.0);
        let r = client
            .send_request(get("/"))
            .await
            .expect("GET / after GOAWAY");
        assert_eq!(r.status(), 200);
        assert_eq!(b.stats().connections.load(Ordering::Relaxed), 2);
        let log = berth.log();
        let named = log
            .lines()
            .filter(|l| l.contains("upstream_reset") && l.contains(&b.addr().to_string()))
            .count();
        assert_eq!(named, 2, "one log line per reset naming the target:\n{log}");
    })
    .await
}
