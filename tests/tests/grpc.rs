//! gRPC through berth: a `protocol_version = "grpc"` target group of h2c tonic targets, behind
//! a plain listener (h2c from the client) and an https one (h2 by ALPN). Every kind of call,
//! trailers untouched, the gRPC status of each call counted, deadlines, a target killed
//! mid-stream, berth's own errors in gRPC form, and gRPC over HTTP/1.1 refused with 464.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_tests::config::{Group, Listener};
use berth_tests::grpc::{drain, GrpcClient, GrpcTarget, Msg, DETAIL_BIN, FAIL_MESSAGE};
use berth_tests::net::listen_addr;
use berth_tests::tls::TestCa;
use berth_tests::{bounded, wait_until, Berth, Http};
use http::Method;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);
const GRPC_RESPONSES: &str = "berth_grpc_responses_total";
const PROXY_RESPONSES: &str = "berth_proxy_responses_total";

/// Health checks every second, gRPC's `Health/Check` (a grpc group's default).
const GRPC_HEALTH: &str = r#"interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// berth with listener `web` (plain, h2c allowed) and `tls` (https, certificate for
/// `grpc.test`) forwarding to group `g` (`protocol_version = "grpc"`) of `targets`, `extra`
/// lines in the group; waits until every target is healthy.
struct Setup {
    web: SocketAddr,
    tls: SocketAddr,
    ca: TestCa,
    berth: Berth,
}

async fn start(targets: &[&GrpcTarget], extra: &str) -> Setup {
    let ca = TestCa::new();
    let cert = ca.issue(&["grpc.test"]);
    let (web, tls) = (listen_addr(), listen_addr());
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address = \"{}\" }}", t.addr()))
        .collect();
    let cfg = Listener::new("web", web)
        .key("http2 = true")
        .forward_to("g")
        .to_string()
        + &Listener::new("tls", tls)
            .key("protocol = \"https\"")
            .tables("\n[[listeners.certificates]]\ncert = \"s.crt\"\nkey = \"s.key\"\n")
            .forward_to("g")
            .to_string()
        + &Group::new("g")
            .deregistration_delay("1s")
            .key("protocol_version = \"grpc\"")
            .key(extra)
            .table("health_check", GRPC_HEALTH)
            .targets(&format!("[{}]", list.join(", ")))
            .to_string();
    let files = [
        ("s.crt", cert.cert_pem.as_str()),
        ("s.key", cert.key_pem.as_str()),
    ];
    let berth = Berth::start_with_files(&cfg, &files).await;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr()).collect();
    berth.wait_healthy("g", &addrs, HEALTHY).await;
    Setup {
        web,
        tls,
        ca,
        berth,
    }
}

impl Setup {
    async fn h2c(&self) -> GrpcClient {
        GrpcClient::h2c(self.web).await.expect("h2c connection")
    }

    async fn tls(&self) -> GrpcClient {
        let cfg = self.ca.client_config(&[b"h2"]);
        GrpcClient::tls(self.tls, cfg, "grpc.test")
            .await
            .expect("TLS h2 connection")
    }

    /// `berth_grpc_responses_total` of group `g` on `listener` with `status` (0 when absent).
    async fn grpc_count(&self, listener: &str, status: &str) -> f64 {
        let labels = [
            ("listener", listener),
            ("target_group", "g"),
            ("grpc_status", status),
        ];
        self.berth
            .metric(GRPC_RESPONSES, &labels)
            .await
            .unwrap_or(0.0)
    }

    async fn proxy_count(&self, reason: &str) -> f64 {
        self.berth
            .metric(PROXY_RESPONSES, &[("reason", reason)])
            .await
            .unwrap_or(0.0)
    }

    async fn wait_active(&self, listener: &str, n: f64) {
        let what = format!("berth_active_connections{{listener={listener}}} == {n}");
        wait_until(Duration::from_secs(10), &what, || async {
            self.berth
                .metric("berth_active_connections", &[("listener", listener)])
                .await
                == Some(n)
        })
        .await;
    }
}

fn msg(text: &str) -> Msg {
    Msg {
        text: text.to_string(),
        ..Msg::default()
    }
}

/// Unary, server, client and bidirectional streaming (1,000 messages, each echoed before the
/// next is sent), and trailers of an OK and of a failed call; returns how many calls ended OK.
async fn every_kind_of_call(c: &mut GrpcClient) -> u32 {
    let r = c.unary(msg("hi"), None).await.expect("unary");
    assert_eq!(r.into_inner().text, "a:hi");

    let s = c
        .server_stream(Msg {
            count: 100,
            ..msg("s")
        })
        .await
        .expect("server stream");
    let (got, end) = drain(s).await;
    end.expect("server stream ends OK");
    let seqs: Vec<u32> = got.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<u32>>(),
        "100 messages in order"
    );

    let sent: Vec<Msg> = (0..100).map(|i| Msg { seq: i, ..msg("c") }).collect();
    let r = c.client_stream(sent).await.expect("client stream");
    assert_eq!(
        (r.seq, r.text.as_str()),
        (100, "4950"),
        "100 messages, summed"
    );

    // Bidirectional: each message is sent only once the previous one came back.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    tx.send(Msg {
        seq: 0,
        ..msg("m0")
    })
    .await
    .expect("first");
    let mut echoes = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bidi");
    for i in 0..1000u32 {
        let m = echoes.message().await.expect("echo").expect("an echo");
        assert_eq!((m.seq, m.text.clone()), (i, format!("a:m{i}")), "echo {i}");
        if i + 1 < 1000 {
            let next = Msg {
                seq: i + 1,
                ..msg(&format!("m{}", i + 1))
            };
            tx.send(next).await.expect("send next");
        }
    }
    drop(tx);
    let (rest, end) = drain(echoes).await;
    assert!(rest.is_empty(), "no extra echoes");
    end.expect("bidi ends OK");

    // Custom trailers after an OK stream, binary one included, reach the client as sent.
    let s = c
        .server_stream(Msg {
            count: 3,
            custom_trailers: true,
            ..msg("t")
        })
        .await
        .expect("stream with trailers");
    let (got, end) = drain(s).await;
    assert_eq!(got.len(), 3);
    let trailers = end.expect("OK with trailers");
    let bin = trailers
        .get_bin("x-detail-bin")
        .expect("x-detail-bin trailer");
    assert_eq!(bin.to_bytes().expect("base64").as_ref(), DETAIL_BIN);
    assert_eq!(
        trailers.get("x-target").map(|v| v.as_bytes()),
        Some(&b"a"[..])
    );

    // And after a failed one: code, message (percent-encoded on the wire) and binary trailer.
    let s = c
        .server_stream(Msg {
            count: 2,
            fail_code: Code::FailedPrecondition as i32,
            custom_trailers: true,
            ..msg("f")
        })
        .await
        .expect("failing stream");
    let (got, end) = drain(s).await;
    assert_eq!(got.len(), 2);
    let st = end.expect_err("FAILED_PRECONDITION");
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert_eq!(st.message(), FAIL_MESSAGE);
    let bin = st
        .metadata()
        .get_bin("x-detail-bin")
        .expect("binary trailer");
    assert_eq!(bin.to_bytes().expect("base64").as_ref(), DETAIL_BIN);
    5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_call_through_h2c_and_https_listeners() {
    bounded(LIMIT, async {
        let a = GrpcTarget::spawn("a").await;
        let s = start(&[&a], "").await;
        for listener in ["web", "tls"] {
            let mut c = if listener == "web" {
                s.h2c().await
            } else {
                s.tls().await
            };
            let ok = every_kind_of_call(&mut c).await;
            // The HTTP/2 client connection is counted while open, and no longer once closed.
            s.wait_active(listener, 1.0).await;
            drop(c);
            s.wait_active(listener, 0.0).await;
            assert_eq!(
                s.grpc_count(listener, "0").await,
                f64::from(ok),
                "{listener}"
            );
            assert_eq!(s.grpc_count(listener, "9").await, 1.0, "{listener}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_statuses_are_counted_and_http1_grpc_is_refused() {
    bounded(LIMIT, async {
        let a = GrpcTarget::spawn("a").await;
        let s = start(&[&a], "").await;
        let mut c = s.h2c().await;

        // UNAVAILABLE on HTTP 200, trailers-only (status in the headers): the target's own.
        let unavailable = Code::Unavailable as i32;
        let st = c
            .unary(
                Msg {
                    fail_code: unavailable,
                    ..msg("x")
                },
                None,
            )
            .await
            .expect_err("UNAVAILABLE");
        assert_eq!((st.code(), st.message()), (Code::Unavailable, FAIL_MESSAGE));
        // And in the trailers after two messages.
        let stream = c
            .server_stream(Msg {
                count: 2,
                fail_code: unavailable,
                ..msg("y")
            })
            .await
            .expect("stream");
        let (got, end) = drain(stream).await;
        assert_eq!(got.len(), 2);
        assert_eq!(end.expect_err("UNAVAILABLE").code(), Code::Unavailable);
        drop(c);
        assert_eq!(s.grpc_count("web", "14").await, 2.0, "both counted as 14");
        let ok_http = s
            .berth
            .metric(
                "berth_requests_total",
                &[
                    ("target_group", "g"),
                    ("class", "2xx"),
                    ("origin", "target"),
                ],
            )
            .await;
        assert_eq!(ok_http, Some(2.0), "both were HTTP 200 from the target");

        // gRPC over HTTP/1.1: ALB's 464, with a body that says why; never sent to a target.
        let url = format!("http://{}/berth.test.Echo/Unary", s.web);
        let headers = [("content-type", "application/grpc"), ("te", "trailers")];
        let r = Http::new()
            .request(Method::POST, &url, &headers)
            .await
            .expect("HTTP/1.1 request");
        assert_eq!(r.status.as_u16(), 464, "{}", r.body);
        assert!(r.body.contains("HTTP/2"), "{}", r.body);
        assert_eq!(s.proxy_count("incompatible_protocol").await, 1.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_bound_the_wait_and_berth_answers_in_grpc_form() {
    bounded(LIMIT, async {
        let a = GrpcTarget::spawn("a").await;
        let s = start(&[&a], "").await;
        let mut c = s.tls().await;

        // The target would answer after 10 s and does not watch grpc-timeout itself; the
        // client does not time out on its own: berth ends the call at its deadline.
        let slow = Msg {
            delay_ms: 10_000,
            ..msg("slow")
        };
        let started = Instant::now();
        let st = c
            .unary(slow, Some(Duration::from_millis(300)))
            .await
            .expect_err("DEADLINE_EXCEEDED");
        let took = started.elapsed();
        assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
        assert!(st.message().starts_with("berth:"), "{st:?}");
        assert!(
            took < Duration::from_secs(5),
            "ended at the deadline, not the target's answer: {took:?}"
        );
        assert_eq!(s.grpc_count("tls", "4").await, 1.0);
        assert_eq!(s.proxy_count("upstream_timeout").await, 1.0);

        // No target left: berth's own error is a gRPC UNAVAILABLE, its reason counted.
        a.kill();
        let st = c.unary(msg("gone"), None).await.expect_err("UNAVAILABLE");
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(st.message().starts_with("berth:"), "{st:?}");
        assert_eq!(s.grpc_count("tls", "14").await, 1.0);
        let reasons = s.proxy_count("upstream_connect").await
            + s.proxy_count("no_healthy_target").await
            + s.proxy_count("upstream_error").await;
        assert_eq!(reasons, 1.0, "one error of berth's own counted");
    })
    .await
}

/// A server stream through `listener` whose only target is killed after 5 messages: the
/// client sees UNAVAILABLE (berth's trailers), not a reset stream nor a hang.
async fn target_killed_mid_stream(listener: &str) {
    let a = GrpcTarget::spawn("a").await;
    let s = start(&[&a], "").await;
    let mut c = if listener == "web" {
        s.h2c().await
    } else {
        s.tls().await
    };
    let long = Msg {
        count: 100_000,
        delay_ms: 10,
        ..msg("long")
    };
    let mut stream = c.server_stream(long).await.expect("stream");
    for _ in 0..5 {
        stream.message().await.expect("message").expect("some");
    }
    a.kill();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the call ends within 5 s of the kill, no hang");
    let st = end.expect_err("the call fails");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(st.message().starts_with("berth:"), "{st:?}");
    assert_eq!(s.grpc_count(listener, "14").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_stream_gives_unavailable_over_h2c() {
    bounded(LIMIT, target_killed_mid_stream("web")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_stream_gives_unavailable_over_https() {
    bounded(LIMIT, target_killed_mid_stream("tls")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_group_target_speaking_http1_gets_unavailable_and_a_counted_reason() {
    bounded(LIMIT, async {
        // An HTTP/1.1-only server as the target of a grpc group (its TCP health checks pass).
        let h1 = berth_tests::Backend::spawn("h1").await;
        let ca = TestCa::new();
        let web = listen_addr();
        let cfg = Listener::new("web", web)
            .key("http2 = true")
            .forward_to("g")
            .to_string()
            + &Group::new("g")
                .deregistration_delay("1s")
                .key("protocol_version = \"grpc\"")
                .table(
                    "health_check",
                    &format!("protocol = \"tcp\"\n{GRPC_HEALTH}"),
                )
                .targets(&format!("[{{ address = \"{}\" }}]", h1.addr()))
                .to_string();
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[h1.addr()], HEALTHY).await;
        let s = Setup {
            web,
            // No https listener in this one.
            tls: web,
            ca,
            berth,
        };
        let mut c = s.h2c().await;
        let st = c.unary(msg("x"), None).await.expect_err("UNAVAILABLE");
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(st.message().starts_with("berth:"), "{st:?}");
        assert_eq!(s.grpc_count("web", "14").await, 1.0);
        let all = s.berth.metric(PROXY_RESPONSES, &[]).await;
        assert_eq!(all, Some(1.0), "one error of berth's own, with its reason");
        let target = h1.addr().to_string();
        wait_until(
            Duration::from_secs(5),
            "a failure logged naming the target",
            || async {
                let log = s.berth.log();
                log.lines()
                    .any(|l| l.contains(&target) && l.contains("failed"))
            },
        )
        .await;
    })
    .await
}
