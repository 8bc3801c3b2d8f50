//! Access logs and trace ids end to end: berth's stdout captured while real clients (hyper,
//! tonic, rustls) go through it; every line is parsed (JSON, or ALB's fields counted).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_tests::access_log::{alb_fields, find, is_id, is_root, start_web, AccessLogFile};
use berth_tests::client::Http;
use berth_tests::config::{forward, Group, Listener};
use berth_tests::grpc::{GrpcClient, GrpcTarget, Msg};
use berth_tests::net::listen_addr;
use berth_tests::tls::TestCa;
use berth_tests::{bounded, static_group, Backend, Berth};

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);
const LINES: Duration = Duration::from_secs(10);
/// The fields of an HTTP line in the `alb` format: ALB's 33, then `grpc_status`.
const ALB_HTTP_FIELDS: usize = 34;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_for_forwarded_redirected_fixed_and_failed_requests() {
    bounded(LIMIT, async {
        let (a, web, _berth, out) = start_web("[access_log]\nenabled = true").await;
        let http = Http::new();
        let root = "Root=1-67891233-abcdef012345678912345678";
        let first = http
            .get_with(
                &format!("http://{web}/echo-headers?q=1"),
                &[("user-agent", "tester/1.0"), ("x-amzn-trace-id", root)],
            )
            .await
            .expect("forwarded");
        assert_eq!(first.status, 200);
        let seen = first.json()["x-amzn-trace-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let own = seen.strip_prefix(&format!("{root};Self=")).unwrap_or("");
        assert!(is_id(own), "{seen}");
        let r = http
            .get(&format!("http://{web}/r/x"))
            .await
            .expect("redirect");
        assert_eq!(r.status, 301);
        let r = http.get(&format!("http://{web}/f")).await.expect("fixed");
        assert_eq!(r.status, 418);
        let r = http.get(&format!("http://{web}/dead")).await.expect("502");
        assert_eq!(r.status, 502);
        let r = http.get(&format!("http://{web}/empty")).await.expect("503");
        assert_eq!(r.status, 503);
        let big = "b".repeat(4096);
        let r = Http::no_pool()
            .get_with(&format!("http://{web}/big"), &[("x-big", &big)])
            .await
            .expect("431");
        assert_eq!(r.status, 431);

        let lines = out.wait_json(6, LINES).await;
        assert_eq!(lines.len(), 6, "one line per request: {lines:#?}");
        for l in &lines {
            println!("sample json line: {l}");
        }
        let fwd = find(&lines, "elb_status_code", 200);
        assert_eq!(fwd["type"], "http");
        assert_eq!(fwd["elb"], "web");
        assert_eq!(fwd["elb_status_code"], 200);
        assert_eq!(fwd["target_status_code"], 200);
        assert_eq!(fwd["target:port"], a.addr().to_string());
        assert_eq!(fwd["target_group"], "a");
        assert_eq!(fwd["matched_rule_priority"], 0);
        assert_eq!(fwd["user_agent"], "tester/1.0");
        assert_eq!(
            fwd["request"],
            format!("GET http://{web}/echo-headers?q=1 HTTP/1.1")
        );
        assert_eq!(fwd["trace_id"], seen.as_str(), "the id the target received");
        assert_eq!(fwd["sent_bytes"], first.body.len());
        assert!(fwd["received_bytes"].as_u64().unwrap_or(0) > 0);
        assert!(fwd["target_processing_time"].as_f64().is_some());
        assert!(fwd["client:port"]
            .as_str()
            .unwrap_or("")
            .starts_with("127."));

        let red = find(&lines, "actions_executed", "redirect");
        assert_eq!(red["elb_status_code"], 301);
        assert_eq!(red["matched_rule_priority"], 5);
        assert_eq!(
            red["redirect_url"],
            format!("http://elsewhere.test:{}/r/x", web.port())
        );
        assert!(red.get("target_status_code").is_none());
        assert!(is_root(red["trace_id"].as_str().unwrap_or("")), "{red}");

        let fixed = find(&lines, "actions_executed", "fixed-response");
        assert_eq!(fixed["elb_status_code"], 418);
        assert_eq!(fixed["matched_rule_priority"], 6);
        assert_eq!(fixed["error_reason"], "fixed_response");
        assert_eq!(fixed["sent_bytes"], 6);

        let failed = find(&lines, "elb_status_code", 502);
        assert_eq!(failed["target_group"], "dead");
        assert_eq!(failed["matched_rule_priority"], 1);
        assert!(failed.get("target_status_code").is_none());
        assert_eq!(failed["error_reason"], "upstream_connect", "{failed}");

        let none = find(&lines, "elb_status_code", 503);
        assert_eq!(none["error_reason"], "no_healthy_target");
        assert_eq!(none["target_group"], "empty");
        assert_eq!(none["matched_rule_priority"], 2);
        assert!(none.get("target:port").is_none());

        let refused = find(&lines, "elb_status_code", 431);
        assert_eq!(refused["error_reason"], "header_too_large");
        assert!(
            refused.get("actions_executed").is_none(),
            "refused before routing"
        );
        // The HTTP parser refused the head before berth saw a request: no request line.
        assert_eq!(refused["request"], "- - -");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_lines_keep_their_field_count_whatever_the_client_sends() {
    bounded(LIMIT, async {
        let (a, web, _berth, out) =
            start_web("[access_log]\nenabled = true\nformat = \"alb\"").await;
        let http = Http::new();
        // What hyper lets a client put in a request head: quotes, backslashes, tabs, and a
        // forged ALB line in the user agent (newlines and ESC are refused by the HTTP parser,
        // and covered by the escaping unit tests).
        let forged = "x\" 200 200 \"GET http://evil/ HTTP/1.1\" \\ \t end";
        let r = http
            .get_with(
                &format!("http://{web}/a?x=%22y%22%0A"),
                &[("user-agent", forged), ("host", "h\"ost\\test")],
            )
            .await
            .expect("forwarded");
        assert_eq!(r.status, 200);
        let r = http
            .get(&format!("http://{web}/r"))
            .await
            .expect("redirect");
        assert_eq!(r.status, 301);
        let lines = out.wait_lines(2, LINES).await;
        assert_eq!(lines.len(), 2, "{lines:#?}");
        for l in &lines {
            println!("sample alb line: {l}");
            let f = alb_fields(l);
            assert_eq!(f.len(), ALB_HTTP_FIELDS, "{l}\n{f:#?}");
            assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b)), "{l}");
        }
        let f = alb_fields(&lines[0]);
        assert_eq!(f[0], "http");
        assert_eq!(f[2], "web");
        assert_eq!(f[4], a.addr().to_string());
        assert_eq!((f[8].as_str(), f[9].as_str()), ("200", "200"));
        assert_eq!(f[12], "GET http://h\\\"ost\\\\test/a?x=%22y%22%0A HTTP/1.1");
        assert_eq!(
            f[13],
            "x\\\" 200 200 \\\"GET http://evil/ HTTP/1.1\\\" \\\\ \\x09 end"
        );
        assert_eq!(f[16], "a");
        assert!(is_root(&f[17]), "{}", f[17]);
        assert_eq!(f[20], "0");
        assert_eq!(f[22], "forward");
        let g = alb_fields(&lines[1]);
        assert_eq!((g[8].as_str(), g[9].as_str()), ("301", "-"));
        assert_eq!(g[20], "5");
        assert_eq!(g[22], "redirect");
        assert_eq!(g[24], "redirect");
        assert_eq!((g[5].as_str(), g[6].as_str()), ("-1", "-1"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_per_listener_and_reload() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let (none, half) = (listen_addr(), listen_addr());
        let config = |top: &str| {
            format!(
                "{top}\n{}{}{}",
                Listener::new("none", none)
                    .tables("\n[listeners.access_log]\nsampling = 0.0\n")
                    .forward_to("a"),
                Listener::new("half", half)
                    .tables("\n[listeners.access_log]\nsampling = 0.5\n")
                    .forward_to("a"),
                static_group("a", &[&a], "")
            )
        };
        let out = AccessLogFile::new();
        let berth =
            Berth::start_with_stdout(&config("[access_log]\nenabled = false"), &[], out.stdio())
                .await;
        berth.wait_healthy("a", &[a.addr()], HEALTHY).await;
        let http = Http::new();
        let send = |addr: SocketAddr, n: usize| {
            let http = http.clone();
            async move {
                for _ in 0..n {
                    let r = http.get(&format!("http://{addr}/")).await.expect("request");
                    assert_eq!(r.status, 200);
                }
            }
        };
        // Off: nothing.
        send(half, 20).await;
        // On through a reload, for new requests.
        berth.write_config(&config("[access_log]\nenabled = true"));
        berth.reload();
        berth_tests::wait::wait_until(LINES, "the reload to enable the access log", || {
            let http = http.clone();
            let out = &out;
            async move {
                let _ = http.get(&format!("http://{half}/probe")).await;
                !out.lines().is_empty()
            }
        })
        .await;
        let before = out.lines().len();
        send(none, 200).await;
        send(half, 200).await;
        // Lines are written by another thread: wait for the writer to go quiet.
        let mut seen = out.lines().len();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = out.lines().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        let lines = out.lines();
        let after: Vec<serde_json::Value> = lines[before..]
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert!(
            after.iter().all(|l| l["elb"] == "half"),
            "sampling 0.0 logs nothing"
        );
        let logged = after
            .iter()
            .filter(|l| {
                l["request"]
                    .as_str()
                    .is_some_and(|r| r.contains(" http://"))
            })
            .count();
        println!("sampling 0.5: {logged} of 200 requests logged");
        assert!(
            (40..=160).contains(&logged),
            "sampling 0.5 logged {logged} of 200"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdout_drops_lines_and_never_stalls_requests() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let config = format!(
            "[access_log]\nenabled = true\nbuffer_lines = 16\n{}{}",
            Listener::web(web, "a"),
            static_group("a", &[&a], "")
        );
        // A pipe nobody reads: once its buffer is full, every write to berth's stdout blocks.
        let (reader, writer) = std::io::pipe().expect("pipe");
        let berth = Berth::start_with_stdout(&config, &[], writer.into()).await;
        berth.wait_healthy("a", &[a.addr()], HEALTHY).await;
        let http = Http::new();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let http = http.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..250 {
                    let ua = format!("stall-test-{i}-{}", "x".repeat(200));
                    let r = http
                        .get_with(
                            &format!("http://{web}/some/longer/path/{i}"),
                            &[("user-agent", &ua)],
                        )
                        .await
                        .expect("request while stdout is stalled");
                    assert_eq!(r.status, 200);
                    ok += 1;
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.expect("task");
        }
        let took = started.elapsed();
        assert_eq!(ok, 2000);
        let dropped = berth
            .metric("berth_access_log_dropped_lines_total", &[])
            .await
            .unwrap_or(0.0);
        let written = berth
            .metric("berth_access_log_lines_total", &[])
            .await
            .unwrap_or(0.0);
        println!(
            "stalled stdout: 2000 requests in {took:?}, {written} lines written, {dropped} dropped"
        );
        assert!(dropped > 0.0, "lines were dropped and counted");
        assert!(dropped + written <= 2000.0);
        drop(reader);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_https_and_l4_lines() {
    bounded(LIMIT, async {
        let g = GrpcTarget::spawn("g").await;
        let b = Backend::spawn("b").await;
        let ca = TestCa::new();
        let cert = ca.issue(&["grpc.test"]);
        let (tls, tcp) = (listen_addr(), listen_addr());
        let cfg = "[access_log]\nenabled = true\n".to_string()
            + &Listener::new("tls", tls)
                .key("protocol = \"https\"")
                .tables("\n[[listeners.certificates]]\ncert = \"s.crt\"\nkey = \"s.key\"\n")
                .rule(3, r#"{ path_prefix = ["/plain"] }"#, &forward("b"))
                .forward_to("g")
                .to_string()
            + &Listener::new("tcp", tcp)
                .key("protocol = \"tcp\"")
                .tables("\n[listeners.access_log]\nformat = \"alb\"\n")
                .forward_to("b")
                .to_string()
            + &Group::new("g")
                .key("protocol_version = \"grpc\"")
                .key("[target_groups.health_check]\nenabled = false")
                .targets(&format!("[{{ address = \"{}\" }}]", g.addr()))
                .to_string()
            + &static_group("b", &[&b], "");
        let files = [
            ("s.crt", cert.cert_pem.as_str()),
            ("s.key", cert.key_pem.as_str()),
        ];
        let out = AccessLogFile::new();
        let berth = Berth::start_with_stdout(&cfg, &files, out.stdio()).await;
        berth.wait_healthy("b", &[b.addr()], HEALTHY).await;

        let mut c = GrpcClient::tls(tls, ca.client_config(&[b"h2"]), "grpc.test")
            .await
            .expect("gRPC over TLS");
        let m = |text: &str, fail_code| Msg {
            text: text.into(),
            fail_code,
            ..Default::default()
        };
        let ok = c.unary(m("hi", 0), None).await.expect("unary");
        assert_eq!(ok.into_inner().text, "g:hi");
        let st = c.unary(m("no", 5), None).await.expect_err("NOT_FOUND");
        assert_eq!(st.code(), tonic::Code::NotFound);
        drop(c);
        let r =
            berth_tests::tls::tls_get(ca.client_config(&[b"http/1.1"]), tls, "grpc.test", "/plain")
                .await
                .expect("https GET");
        assert_eq!(r.resp.status, 200);
        let r = Http::new()
            .get(&format!("http://{tcp}/via-tcp"))
            .await
            .expect("through tcp");
        assert_eq!(r.status, 200);

        let lines = out.wait_lines(4, LINES).await;
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let json: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(
            json.len(),
            3,
            "three JSON lines (gRPC x2, https), one alb (tcp): {lines:#?}"
        );
        for l in &lines {
            println!("sample line: {l}");
        }
        let grpc: Vec<&serde_json::Value> = json.iter().filter(|l| l["type"] == "grpcs").collect();
        assert_eq!(grpc.len(), 2, "{json:#?}");
        let statuses: Vec<&str> = grpc
            .iter()
            .map(|l| l["grpc_status"].as_str().unwrap_or(""))
            .collect();
        assert!(
            statuses.contains(&"0") && statuses.contains(&"5"),
            "{statuses:?}"
        );
        for l in &grpc {
            assert_eq!(l["elb_status_code"], 200);
            assert_eq!(l["target_group"], "g");
            assert_eq!(l["ssl_protocol"], "TLSv1.3");
            assert_eq!(l["domain_name"], "grpc.test");
            assert!(
                l["request"].as_str().unwrap_or("").ends_with(" HTTP/2.0"),
                "{l}"
            );
        }
        let https = find(&json, "type", "https");
        assert_eq!(https["matched_rule_priority"], 3);
        assert_eq!(https["domain_name"], "grpc.test");
        assert!(
            https["ssl_cipher"]
                .as_str()
                .unwrap_or("")
                .starts_with("TLS13_"),
            "{https}"
        );
        assert_eq!(https["request"], "GET https://grpc.test/plain HTTP/1.1");

        let flow = lines
            .iter()
            .find(|l| l.starts_with("tcp "))
            .expect("the L4 line");
        let f = alb_fields(flow);
        assert_eq!(f.len(), 14, "{flow}");
        assert_eq!(f[2], "tcp");
        assert_eq!(f[4], b.addr().to_string());
        let (rx, tx): (u64, u64) = (f[7].parse().unwrap_or(0), f[8].parse().unwrap_or(0));
        assert!(rx > 0 && tx > r.body.len() as u64, "{flow}");
        assert_eq!(f[12], "b");
        assert_eq!(f[13], "closed");
    })
    .await;
}
