//! Hostile clients: slowloris connections, malformed and oversized requests, a connection
//! flood beyond `max_connections`, and stalled request headers do not starve normal clients.
//!
//! Every test is bounded in time and talks to loopback only. Measured times and counts are
//! printed as `figure: ...` lines; only the functional bounds are asserted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::client::{raw_request, raw_status};
use berth_tests::config::{json_logged, Listener};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, wait_until, Backend, Berth, Http};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);

/// One client connection driven by hyper's connection-level HTTP/1.1 client: every request
/// goes over this very TCP connection (keep-alive), so a closed connection shows as an error.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { send })
    }

    /// `GET path`: (status, body); an error if the connection is gone or 5 s pass.
    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let fut = async {
            self.send.ready().await?;
            let req = http::Request::get(path)
                .header("host", "faults.test")
                .body(Full::new(Bytes::new()))?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).to_string()))
        };
        tokio::time::timeout(Duration::from_secs(5), fut).await?
    }
}

/// Reads from `s` until the peer closes it (EOF or error) or `deadline`; returns what was read
/// and whether it was closed.
async fn read_until_closed(s: &mut TcpStream, deadline: tokio::time::Instant) -> (String, bool) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (String::from_utf8_lossy(&buf).to_string(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).to_string(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_malformed_requests_do_not_starve_clients() {
    bounded(LIMIT, async {
        let nofile = berth_tests::net::raise_nofile_limit();
        assert!(
            nofile >= 3000,
            "RLIMIT_NOFILE hard limit {nofile} is too low for 1,000 connections"
        );
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let cfg = json_logged(&Listener::web(web, "g").key("max_header_bytes = 4096"))
            + &static_group("g", &[&a], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;

        // 1,000 connections, each sending a request header one byte a second, never finishing.
        const SLOW: usize = 1000;
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicU64::new(0));
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..SLOW {
            let (stop, connected) = (stop.clone(), connected.clone());
            slow.spawn(async move {
                let mut s = TcpStream::connect(web).await.ok()?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Slow: ")
                    .await
                    .ok()?;
                connected.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    tokio::select! {
                        r = s.read(&mut buf) => match r {
                            Ok(0) | Err(_) => return None, // closed by berth
                            Ok(_) => {}
                        },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            s.write_all(b"a").await.ok()?;
                        }
                    }
                }
                Some(())
            });
        }
        wait_until(
            Duration::from_secs(20),
            "1,000 slowloris connections",
            || async { connected.load(Ordering::SeqCst) == SLOW as u64 },
        )
        .await;

        // For 10 s: fresh connections and a keep-alive client get their 200s within 5 s each;
        // an oversized header gets 431 and a malformed request line 400.
        let fresh = Http::no_pool().with_timeout(Duration::from_secs(5));
        let kept = Http::new().with_timeout(Duration::from_secs(5));
        let url = format!("http://{web}/");
        let big = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "x".repeat(8192)
        );
        let (mut n, mut slowest) = (0, Duration::ZERO);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            for http in [&fresh, &kept] {
                let t = Instant::now();
                let r = http
                    .get(&url)
                    .await
                    .expect("a normal request during the attack");
                assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"));
                slowest = slowest.max(t.elapsed());
                n += 1;
            }
            let text = raw_request(web, big.as_bytes())
                .await
                .expect("oversized header");
            assert_eq!(raw_status(&text), Some(431), "oversized header: {text:?}");
            let text = raw_request(web, b"GET\x01/ nonsense\r\n\r\n")
                .await
                .expect("malformed");
            assert_eq!(
                raw_status(&text),
                Some(400),
                "malformed request line: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await; // pacing
        }
        stop.store(true, Ordering::SeqCst);
        let mut open = 0;
        while let Some(r) = slow.join_next().await {
            open += usize::from(r.unwrap().is_some());
        }
        eprintln!(
            "figure: slowloris: {n} normal requests during 10 s with {SLOW} slow connections, \
             slowest {slowest:?}; {open} slow connections still open at the end"
        );
        assert!(
            open >= SLOW * 9 / 10,
            "only {open} of {SLOW} slow connections stayed open: the attack was not in effect"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_beyond_max_connections_spares_established_ones() {
    bounded(LIMIT, async {
        berth_tests::net::raise_nofile_limit();
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        const MAX: usize = 20;
        const ESTABLISHED: usize = 5;
        const FLOOD: usize = 200;
        let cfg = json_logged(&Listener::web(web, "g").key(&format!("max_connections = {MAX}")))
            + &static_group("g", &[&a], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;

        let mut established = Vec::new();
        for _ in 0..ESTABLISHED {
            let mut c = Conn::open(web).await.unwrap();
            assert_eq!(c.get("/").await.unwrap(), (200, "a".to_string()));
            established.push(c);
        }
        // The established connections keep sending during the flood.
        let flooding = Arc::new(AtomicBool::new(true));
        let mut steady = tokio::task::JoinSet::new();
        for mut c in established {
            let flooding = flooding.clone();
            steady.spawn(async move {
                let mut n = 0u64;
                while flooding.load(Ordering::SeqCst) || n == 0 {
                    let r = c.get("/").await.expect("an established keep-alive connection failed");
                    assert_eq!(r, (200, "a".to_string()), "established connection answer");
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await; // pacing
                }
                (c, n)
            });
        }

        // The flood: each new connection sends one request and is held open if served.
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..FLOOD {
            flood.spawn(async move {
                let mut c = Conn::open(web).await.ok()?;
                match c.get("/").await {
                    Ok((200, _)) => Some(c),
                    _ => None,
                }
            });
        }
        let mut held = Vec::new();
        let mut refused = 0;
        while let Some(r) = flood.join_next().await {
            match r.unwrap() {
                Some(c) => held.push(c),
                None => refused += 1,
            }
        }
        flooding.store(false, Ordering::SeqCst);
        let mut established = Vec::new();
        while let Some(r) = steady.join_next().await {
            let (c, n) = r.unwrap();
            assert!(n > 0);
            established.push(c);
        }
        eprintln!(
            "figure: connection flood: {FLOOD} new connections with max_connections = {MAX} and \
             {ESTABLISHED} established: {} served, {refused} refused",
            held.len()
        );
        assert!(
            held.len() <= MAX - ESTABLISHED,
            "{} flood connections were served beside {ESTABLISHED} established ones (max {MAX})",
            held.len()
        );
        let counted = berth
            .wait_metric_at_least(
                "berth_rejected_connections_total",
                &[("listener", "web"), ("reason", "connection_limit")],
                refused as f64,
                Duration::from_secs(5),
            )
            .await;
        eprintln!("figure: connection flood: berth_rejected_connections_total{{reason=connection_limit}} = {counted}");
        // Established connections still work after the flood, and once the flood's connections
        // are gone a new one is accepted again.
        for c in &mut established {
            assert_eq!(c.get("/").await.unwrap(), (200, "a".to_string()));
        }
        drop(held);
        wait_until(Duration::from_secs(10), "a new connection to be served again", || async {
            match Conn::open(web).await {
                Ok(mut c) => matches!(c.get("/").await, Ok((200, _))),
                Err(_) => false,
            }
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_header_is_closed_after_header_timeout() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let header_timeout = Duration::from_secs(2);
        let cfg = json_logged(&Listener::web(web, "g").key(r#"header_timeout = "2s""#))
            + &static_group("g", &[&a], "");
        let berth = Berth::start(&cfg).await;
        berth.wait_healthy("g", &[a.addr()], HEALTHY).await;

        // One connection stalls after a partial header; one drips a byte every 300 ms.
        let mut tasks = tokio::task::JoinSet::new();
        for drip in [false, true] {
            tasks.spawn(async move {
                let started = Instant::now();
                let deadline = tokio::time::Instant::now() + header_timeout + Duration::from_secs(3);
                let mut s = TcpStream::connect(web).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Partial: ").await.unwrap();
                let (text, closed) = if drip {
                    loop {
                        let pace = tokio::time::Instant::now() + Duration::from_millis(300);
                        let (text, closed) = read_until_closed(&mut s, pace.min(deadline)).await;
                        if closed || tokio::time::Instant::now() >= deadline {
                            break (text, closed);
                        }
                        if s.write_all(b"a").await.is_err() {
                            break (text, true);
                        }
                    }
                } else {
                    read_until_closed(&mut s, deadline).await
                };
                (drip, closed, started.elapsed(), text)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (drip, closed, took, text) = r.unwrap();
            let what = if drip { "dripping" } else { "stalled" };
            eprintln!("figure: header_timeout 2s: {what} connection closed after {took:?} (answer {:?})", raw_status(&text));
            assert!(
                closed,
                "the {what} connection is still open {took:?} after connecting (header_timeout 2s, bound 5 s)"
            );
            assert!(
                took >= header_timeout / 2,
                "the {what} connection was closed after {took:?}, well before header_timeout 2s"
            );
        }
        berth
            .wait_metric_at_least(
                "berth_rejected_connections_total",
                &[("listener", "web"), ("reason", "header_timeout")],
                2.0,
                Duration::from_secs(5),
            )
            .await;
        let r = Http::no_pool().get(&format!("http://{web}/")).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"), "normal requests still pass");
    })
    .await
}
