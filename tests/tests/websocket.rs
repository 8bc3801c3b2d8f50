//! WebSocket through http and https listeners, to http and https targets: echo of text and
//! binary frames, 10,000 messages in order, the listener's idle timeout (not the group's read timeout), metrics,
//! SIGTERM during a tunnel, and targets that refuse the upgrade.

use std::time::{Duration, Instant};

use berth_tests::config::{json_logged, Group, Listener};
use berth_tests::net::listen_addr;
use berth_tests::tls::TestCa;
use berth_tests::websocket::{
    close, connect, connect_tls, echo, ended, refused_status, EchoTarget, SUBPROTOCOL,
};
use berth_tests::{bounded, static_group, wait_until, Backend, Berth};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);
const ECHO: Duration = Duration::from_secs(5);
const HEALTHY: Duration = Duration::from_secs(20);

/// Group `g` of the echo target, fast health checks, `timeouts` as the body of its timeouts
/// table.
fn ws_group(target: &EchoTarget, timeouts: &str) -> String {
    Group::new("g")
        .deregistration_delay("1s")
        .fast_health_check()
        .table("timeouts", timeouts)
        .targets(&target.targets_toml())
        .to_string()
}

async fn metric(berth: &Berth, name: &str, labels: &[(&str, &str)]) -> f64 {
    berth.metric(name, labels).await.unwrap_or(0.0)
}

/// Waits until `name{labels}` equals `want`.
async fn wait_metric(berth: &Berth, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{name}{labels:?} == {want}");
    wait_until(Duration::from_secs(10), &what, || async {
        metric(berth, name, labels).await == want
    })
    .await
}

/// Waits until listener `web`'s tunnel to group `g` is counted closed for `reason`, and no
/// upgraded connection of theirs is open.
async fn wait_tunnel_closed(berth: &Berth, reason: &str) {
    let labels = [
        ("listener", "web"),
        ("target_group", "g"),
        ("reason", reason),
    ];
    wait_metric(
        berth,
        "berth_upgraded_connection_closes_total",
        &labels,
        1.0,
    )
    .await;
    wait_metric(
        berth,
        "berth_active_upgraded_connections",
        &labels[..2],
        0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_http_and_https_listeners_counted_in_metrics() {
    bounded(LIMIT, async {
        let target = EchoTarget::spawn().await;
        let ca = TestCa::new();
        let cert = ca.issue(&["ws.test"]);
        let (web, tls) = (listen_addr(), listen_addr());
        let certificates = "\n[[listeners.certificates]]\ncert = \"ws.crt\"\nkey = \"ws.key\"\n";
        let cfg = Listener::web(web, "g").to_string()
            + &Listener::new("tls", tls)
                .key("protocol = \"https\"")
                .tables(certificates)
                .forward_to("g")
                .to_string()
            + &ws_group(&target, "read = \"60s\"");
        let files = [
            ("ws.crt", cert.cert_pem.as_str()),
            ("ws.key", cert.key_pem.as_str()),
        ];
        let berth = Berth::start_with_files(&cfg, &files).await;
        berth.wait_healthy("g", &[target.addr()], HEALTHY).await;

        // http listener.
        let (mut ws, resp) = connect(web, "/chat?room=1")
            .await
            .expect("upgrade via http");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["sec-websocket-protocol"], SUBPROTOCOL);
        let seen = target
            .last_upgrade_headers()
            .expect("the target saw the upgrade");
        assert_eq!(seen["sec-websocket-protocol"], SUBPROTOCOL);
        assert_eq!(seen["x-forwarded-proto"], "http");
        let text = echo(&mut ws, Message::text("hello over http"), ECHO)
            .await
            .unwrap();
        assert_eq!(text, Message::text("hello over http"));
        let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let back = echo(&mut ws, Message::binary(bin.clone()), ECHO)
            .await
            .unwrap();
        assert_eq!(back, Message::binary(bin.clone()));

        // While open: counted as an active connection and an upgraded one.
        let web_l = [("listener", "web"), ("target_group", "g")];
        assert_eq!(
            metric(&berth, "berth_upgraded_connections_total", &web_l).await,
            1.0
        );
        assert_eq!(
            metric(&berth, "berth_active_upgraded_connections", &web_l).await,
            1.0
        );
        let active = [("listener", "web")];
        assert_eq!(
            metric(&berth, "berth_active_connections", &active).await,
            1.0
        );
        assert!(
            metric(&berth, "berth_received_bytes_total", &active).await >= 70_000.0,
            "tunnel bytes counted as received"
        );
        assert!(metric(&berth, "berth_sent_bytes_total", &active).await >= 70_000.0);

        // https listener, at the same time.
        let client = ca.client_config(&[b"http/1.1"]);
        let (mut wss, resp) = connect_tls(client, tls, "ws.test", "/chat")
            .await
            .expect("upgrade via https");
        assert_eq!(resp.status(), 101);
        let seen = target
            .last_upgrade_headers()
            .expect("the target saw the upgrade");
        assert_eq!(seen["x-forwarded-proto"], "https");
        let text = echo(&mut wss, Message::text("hello over https"), ECHO)
            .await
            .unwrap();
        assert_eq!(text, Message::text("hello over https"));
        let back = echo(&mut wss, Message::binary(bin.clone()), ECHO)
            .await
            .unwrap();
        assert_eq!(back, Message::binary(bin));
        let tls_l = [("listener", "tls"), ("target_group", "g")];
        assert_eq!(
            metric(&berth, "berth_active_upgraded_connections", &tls_l).await,
            1.0
        );
        assert_eq!(target.open(), 2);
        assert_eq!(target.messages(), 4);

        // Closed by the clients: back down everywhere, counted as closed.
        close(ws).await.expect("close ws");
        close(wss).await.expect("close wss");
        for labels in [&web_l, &tls_l] {
            wait_metric(&berth, "berth_active_upgraded_connections", labels, 0.0).await;
            let closed = [labels[0], labels[1], ("reason", "closed")];
            wait_metric(
                &berth,
                "berth_upgraded_connection_closes_total",
                &closed,
                1.0,
            )
            .await;
        }
        wait_metric(&berth, "berth_active_connections", &active, 0.0).await;
        wait_metric(
            &berth,
            "berth_active_connections",
            &[("listener", "tls")],
            0.0,
        )
        .await;
        let ok = [("listener", "web"), ("class", "1xx"), ("origin", "target")];
        assert_eq!(metric(&berth, "berth_requests_total", &ok).await, 1.0);
        wait_until(ECHO, "the target to see both closes", || async {
            target.open() == 0
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_to_an_https_target_through_an_h2c_capable_listener() {
    bounded(LIMIT, async {
        let ca = TestCa::new();
        let target = EchoTarget::spawn_tls(&ca.issue(&["ws-target.test"])).await;
        let web = listen_addr();
        // An https group (ALB does not verify target certificates; this one says so).
        let group = Group::new("g")
            .deregistration_delay("1s")
            .key("protocol = \"https\"")
            .fast_health_check()
            .table("tls", "verify = false")
            .targets(&target.targets_toml());
        // `http2 = true` on a plain listener: connections are served by hyper's auto (h1 or
        // h2c) connection, which hands an upgraded connection over differently.
        let listener = Listener::web(web, "g").key("http2 = true");
        let cfg = listener.to_string() + &group.to_string();
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[target.addr()], HEALTHY).await;
        let (mut ws, resp) = connect(web, "/tls-target").await.expect("upgrade");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["sec-websocket-protocol"], SUBPROTOCOL);
        let text = echo(&mut ws, Message::text("to an https target"), ECHO)
            .await
            .unwrap();
        assert_eq!(text, Message::text("to an https target"));
        let bin = vec![7u8; 5000];
        let back = echo(&mut ws, Message::binary(bin.clone()), ECHO)
            .await
            .unwrap();
        assert_eq!(back, Message::binary(bin));
        assert_eq!((target.upgrades(), target.messages()), (1, 2));
        let labels = [("listener", "web"), ("target_group", "g")];
        assert_eq!(
            metric(&berth, "berth_active_upgraded_connections", &labels).await,
            1.0
        );
        close(ws).await.expect("close");
        wait_metric(&berth, "berth_active_upgraded_connections", &labels, 0.0).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_echoed_in_order() {
    bounded(LIMIT, async {
        const N: usize = 10_000;
        let target = EchoTarget::spawn().await;
        let web = listen_addr();
        let cfg = Listener::web(web, "g").to_string() + &ws_group(&target, "read = \"60s\"");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[target.addr()], HEALTHY).await;
        let (ws, _) = connect(web, "/stream").await.expect("upgrade");
        let (mut tx, mut rx) = ws.split();
        // Every tenth message binary; all sent without waiting for their echo.
        let message = |i: usize| {
            if i.is_multiple_of(10) {
                Message::binary(i.to_be_bytes().to_vec())
            } else {
                Message::text(format!("message {i}"))
            }
        };
        let sender = tokio::spawn(async move {
            for i in 0..N {
                tx.send(message(i)).await?;
            }
            tx.flush().await?;
            anyhow::Ok(tx)
        });
        let mut received = 0usize;
        while received < N {
            let m = tokio::time::timeout(ECHO, rx.next())
                .await
                .unwrap_or_else(|_| panic!("no echo after {received} messages"))
                .unwrap_or_else(|| panic!("connection ended after {received} messages"))
                .expect("a message");
            assert_eq!(m, message(received), "message {received} out of order");
            received += 1;
        }
        let tx = sender.await.unwrap().expect("all sent");
        assert_eq!(received, N);
        assert_eq!(target.messages(), N as u64);
        let ws = tx.reunite(rx).expect("the two halves of one stream");
        close(ws).await.expect("close");
        let labels = [
            ("listener", "web"),
            ("target_group", "g"),
            ("reason", "closed"),
        ];
        wait_metric(
            &berth,
            "berth_upgraded_connection_closes_total",
            &labels,
            1.0,
        )
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_idle_timeout_applies_not_the_read_timeout() {
    bounded(LIMIT, async {
        let target = EchoTarget::spawn().await;
        let web = listen_addr();
        // The group's read timeout is 1 s, the listener's idle timeout 4 s.
        let cfg = Listener::web(web, "g")
            .key("idle_timeout = \"4s\"")
            .to_string()
            + &ws_group(&target, "read = \"1s\"");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[target.addr()], HEALTHY).await;
        let (mut ws, _) = connect(web, "/idle").await.expect("upgrade");
        let first = echo(&mut ws, Message::text("before"), ECHO).await.unwrap();
        assert_eq!(first, Message::text("before"));

        // Idle 2.5 s: past the read timeout, within the idle timeout. The connection is still
        // there and still works.
        assert!(
            !ended(&mut ws, Duration::from_millis(2500)).await.unwrap(),
            "closed while idle for less than the listener's idle timeout"
        );
        let again = echo(&mut ws, Message::text("after 2.5 s"), ECHO)
            .await
            .unwrap();
        assert_eq!(again, Message::text("after 2.5 s"));

        // Idle past the idle timeout: berth closes both sides and the client sees it.
        let idle_since = Instant::now();
        assert!(
            ended(&mut ws, Duration::from_secs(15)).await.unwrap(),
            "still open 15 s after the last byte (idle timeout 4 s)"
        );
        let idle_for = idle_since.elapsed();
        assert!(
            idle_for >= Duration::from_millis(3500),
            "closed after {idle_for:?} of idle time, before the 4 s idle timeout"
        );
        wait_tunnel_closed(&berth, "idle_timeout").await;
        wait_until(ECHO, "the target to see the close", || async {
            target.open() == 0
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_tunnels_through_the_grace_period() {
    bounded(LIMIT, async {
        let target = EchoTarget::spawn().await;
        let web = listen_addr();
        let cfg = "\n[proxy]\ngrace_period = \"4s\"\n".to_string()
            + &Listener::web(web, "g").to_string()
            + &ws_group(&target, "read = \"60s\"");
        let mut berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[target.addr()], HEALTHY).await;
        let (mut ws, _) = connect(web, "/drain").await.expect("upgrade");
        assert!(echo(&mut ws, Message::text("before"), ECHO).await.is_ok());
        let terminated = Instant::now();
        berth.terminate();

        // The tunnel keeps relaying during the grace period.
        let mut echoed = 0;
        while terminated.elapsed() < Duration::from_secs(2) {
            let msg = Message::text(format!("during grace {echoed}"));
            let back = echo(&mut ws, msg.clone(), ECHO)
                .await
                .expect("echo in grace period");
            assert_eq!(back, msg);
            echoed += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            echoed >= 10,
            "only {echoed} echoes in the first 2 s of the grace period"
        );

        // The process exits at the end of the grace period, closing the tunnel.
        let status = berth.wait_exit(Duration::from_secs(15)).await;
        let status = status.expect("berth-proxy still running 15 s after SIGTERM (grace 4 s)");
        assert!(status.success(), "exit status after SIGTERM: {status}");
        assert!(
            ended(&mut ws, Duration::from_secs(5)).await.unwrap(),
            "the client's tunnel is still open after berth exited"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_switch_gets_a_502_and_refusals_pass_through() {
    bounded(LIMIT, async {
        // An ordinary HTTP target: 200 to every request, upgrade or not.
        let plain = Backend::spawn("plain").await;
        let web = listen_addr();
        let cfg = json_logged(&Listener::web(web, "g")) + &static_group("g", &[&plain], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[plain.addr()], HEALTHY).await;

        let Err(e) = connect(web, "/").await else {
            panic!("a target answering 200 upgraded the connection")
        };
        assert_eq!(refused_status(&e), Some(502), "{e:#}");
        let failed = [("listener", "web"), ("reason", "upgrade_failed")];
        assert_eq!(
            metric(&berth, "berth_proxy_responses_total", &failed).await,
            1.0
        );
        let events = berth_tests::log::events(
            &berth,
            "target answered a WebSocket upgrade without switching protocols",
        );
        assert_eq!(events.len(), 1, "{}", berth.log_tail(20));
        assert_eq!(events[0]["target"], plain.addr().to_string());
        assert_eq!(events[0]["status"], 200);

        // A refusal (403: say, authentication) reaches the client as it is.
        let Err(e) = connect(web, "/status/403").await else {
            panic!("a target answering 403 upgraded the connection")
        };
        assert_eq!(refused_status(&e), Some(403), "{e:#}");
        assert_eq!(
            metric(&berth, "berth_proxy_responses_total", &failed).await,
            1.0
        );
        let refused = [("listener", "web"), ("class", "4xx"), ("origin", "target")];
        assert_eq!(metric(&berth, "berth_requests_total", &refused).await, 1.0);
        let upgraded = [("listener", "web")];
        assert_eq!(
            metric(&berth, "berth_upgraded_connections_total", &upgraded).await,
            0.0
        );
        // Each went on a connection of its own, then closed.
        assert_eq!(plain.requests(), 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_targets_tunnels_close_when_its_deregistration_delay_ends() {
    bounded(LIMIT, async {
        let (a, b) = (EchoTarget::spawn().await, EchoTarget::spawn().await);
        let web = listen_addr();
        let group = |target: &EchoTarget| {
            Group::new("g")
                .deregistration_delay("3s")
                .fast_health_check()
                .targets(&target.targets_toml())
                .to_string()
        };
        let listener = Listener::web(web, "g").to_string();
        let berth = Berth::start(&(listener.clone() + &group(&a))).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;
        let (mut ws, _) = connect(web, "/drain").await.expect("upgrade");
        let first = echo(&mut ws, Message::text("to a"), ECHO).await.unwrap();
        assert_eq!(first, Message::text("to a"));

        // a leaves the group (as an ECS task being stopped): it drains for 3 s.
        berth.write_config(&(listener + &group(&b)));
        let reloaded = Instant::now();
        berth.reload();
        berth.wait_healthy("g", &[b.addr()], HEALTHY).await;
        // Within the delay the tunnel to a still relays, and new upgrades go to b.
        let during = echo(&mut ws, Message::text("while a drains"), ECHO)
            .await
            .unwrap();
        assert_eq!(during, Message::text("while a drains"));
        let (mut ws_b, _) = connect(web, "/new").await.expect("upgrade to b");
        let to_b = echo(&mut ws_b, Message::text("to b"), ECHO).await.unwrap();
        assert_eq!(to_b, Message::text("to b"));
        assert_eq!(b.upgrades(), 1, "the new upgrade went to b");

        // At the end of the delay berth closes a's tunnel; the client sees the close.
        assert!(
            ended(&mut ws, Duration::from_secs(15)).await.unwrap(),
            "a's tunnel still open 15 s after a started draining (delay 3 s)"
        );
        let labels = [
            ("listener", "web"),
            ("target_group", "g"),
            ("reason", "deregistered"),
        ];
        wait_metric(
            &berth,
            "berth_upgraded_connection_closes_total",
            &labels,
            1.0,
        )
        .await;
        wait_until(ECHO, "a to see the close", || async { a.open() == 0 }).await;
        assert!(
            reloaded.elapsed() >= Duration::from_millis(2500),
            "a's tunnel closed {:?} after the reload, before the 3 s delay",
            reloaded.elapsed()
        );
        // b's tunnel is untouched.
        let still = echo(&mut ws_b, Message::text("b stays"), ECHO)
            .await
            .unwrap();
        assert_eq!(still, Message::text("b stays"));
    })
    .await
}
