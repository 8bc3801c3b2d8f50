//! The fault suite: killed and hung targets, reloads and restarts under load, hostile clients,
//! a large configuration, and a property test of the HTTP rule matcher.
//!
//! Every test is bounded in time and talks to loopback only. Measured times and sizes are
//! printed as `figure: ...` lines; only the functional bounds of the issue are asserted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::client::{raw_request, raw_status};
use berth_tests::net::listen_addr;
use berth_tests::{bounded, static_group, wait_until, Backend, Berth, Http, Load};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: Duration = Duration::from_secs(20);

// ---- shared helpers ------------------------------------------------------------------------

/// `[proxy]`, `[log]` (JSON, so tests can read events) and listener `web` on `web` with extra
/// listener keys and rules, forwarding everything else to group `g`.
fn listener(web: SocketAddr, keys: &str, rules: &str) -> String {
    format!(
        r#"
[proxy]
grace_period = "3s"

[log]
format = "json"

[[listeners]]
name = "web"
bind = "{web}"
{keys}
{rules}
[listeners.default_action]
forward = [{{ target_group = "g" }}]

"#
    )
}

/// The `fields` of the JSON log events of `berth` whose message is `message`.
fn log_events(berth: &Berth, message: &str) -> Vec<serde_json::Value> {
    berth
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"] == message)
        .collect()
}

/// User + system CPU time of process `pid` (all threads), from /proc/<pid>/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name start at field 3; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((f[11] + f[12]) as f64 / hz)
}

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

// ---- 1. killed backend ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_ejected_within_1s_and_unhealthy_within_3s() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let mut c = Backend::spawn("c").await;
        let web = listen_addr();
        let outlier = "outlier = { enabled = true, consecutive_connect_failures = 3, \
                       base_ejection_time = \"30s\" }";
        let cfg = listener(web, "", "") + &static_group("g", &[&a, &b, &c], outlier);
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr(), c.addr()], HEALTHY)
            .await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(300, Duration::from_secs(20)).await;
        assert!(c.requests() > 0, "c got traffic before the kill");

        c.kill().await;
        let killed = Instant::now();
        let c_addr = c.addr().to_string();
        let (mut passive, mut active) = (None, None);
        while passive.is_none() || active.is_none() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "10 s after the kill: passive ejection {passive:?}, active unhealthy {active:?}"
            );
            if passive.is_none() {
                let ejections = berth
                    .metric(
                        "berth_ejections_total",
                        &[("target_group", "g"), ("reason", "connect")],
                    )
                    .await
                    .unwrap_or(0.0);
                if ejections >= 1.0 {
                    passive = Some(killed.elapsed());
                    let states = berth.target_states("g").await;
                    assert_eq!(
                        states.get(&c_addr).map(String::as_str),
                        Some("unhealthy"),
                        "an ejected target reports unhealthy in /targets: {states:?}"
                    );
                }
            }
            if active.is_none()
                && log_events(&berth, "health changed")
                    .iter()
                    .any(|f| f["target"] == c_addr.as_str() && f["to"] == "Unhealthy")
            {
                active = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // pacing the poll
        }
        let (passive, active) = (passive.unwrap(), active.unwrap());
        eprintln!(
            "figure: killed backend: passively ejected {passive:?} after SIGKILL, \
             unhealthy by active checks (1 s interval, 2 failures) {active:?} after"
        );
        assert!(
            passive <= Duration::from_secs(1),
            "passive ejection took {passive:?} (bound 1 s)"
        );
        assert!(
            active <= Duration::from_secs(3),
            "active checks took {active:?} to mark the target unhealthy (bound 3 s)"
        );
        let after = load.stats().ok;
        load.wait_ok(after + 500, Duration::from_secs(20)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        eprintln!(
            "figure: killed backend: {} requests, 0 failed, by backend {:?}, retries {:?}",
            stats.ok,
            stats.by_backend,
            berth.metric("berth_retries_total", &[]).await
        );
    })
    .await
}

// ---- 2. hung backend -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_backend_times_out_and_is_ejected_others_unaffected() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let c = Backend::spawn("c").await;
        let web = listen_addr();
        // Checks every 2 s with a 1 s timeout: the hung target stays in rotation for at least
        // 3 s, long enough to see requests time out on it.
        let cfg = listener(web, "", "")
            + &format!(
                r#"
[[target_groups]]
name = "g"
outlier = {{ enabled = true }}
timeouts = {{ read = "1s" }}
health_check = {{ interval = "2s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2, path = "/health" }}
[target_groups.source]
kind = "static"
targets = {}
"#,
                berth_tests::targets_toml(&[&a, &b, &c])
            );
        let berth = Berth::start(&cfg).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr(), c.addr()], HEALTHY)
            .await;

        c.set_hang(true);
        let hung = Instant::now();
        // Nine requests at once: round robin gives the hung target its share.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..9 {
            let url = format!("http://{web}/");
            set.spawn(async move {
                let started = Instant::now();
                let r = Http::no_pool().get(&url).await.expect("a response");
                (r.status.as_u16(), r.backend().to_string(), started.elapsed())
            });
        }
        let mut timeouts = Vec::new();
        while let Some(r) = set.join_next().await {
            let (status, backend, took) = r.unwrap();
            match (status, backend.as_str()) {
                (200, "a" | "b") => {}
                (504, "") => {
                    assert!(
                        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
                        "a request to the hung target answered 504 after {took:?} (read = 1s)"
                    );
                    timeouts.push(took);
                }
                other => panic!("unexpected answer {other:?} after {took:?}"),
            }
        }
        assert!(
            !timeouts.is_empty(),
            "no request reached the hung target (round robin over 3 targets, 9 requests)"
        );
        eprintln!("figure: hung backend: {} of 9 requests timed out after {timeouts:?} (read = 1s)", timeouts.len());
        let t = berth
            .metric(
                "berth_proxy_responses_total",
                &[("listener", "web"), ("reason", "upstream_timeout")],
            )
            .await
            .unwrap_or(0.0);
        assert!(
            t >= timeouts.len() as f64,
            "berth_proxy_responses_total{{reason=upstream_timeout}} = {t}, {} seen",
            timeouts.len()
        );

        berth
            .wait_target("g", c.addr(), Some("unhealthy"), Duration::from_secs(15))
            .await;
        eprintln!(
            "figure: hung backend: out of rotation {:?} after it hung (checks every 2 s, timeout 1 s)",
            hung.elapsed()
        );
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(500, Duration::from_secs(20)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let backends: BTreeSet<&str> = stats.by_backend.keys().map(String::as_str).collect();
        assert_eq!(
            backends,
            BTreeSet::from(["a", "b"]),
            "after ejection only the healthy targets answer"
        );
    })
    .await
}

// ---- 3. reload every second for 30 s under load ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_every_second_for_30s_under_load() {
    bounded(LIMIT, async {
        let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
        let web = listen_addr();
        let group = static_group("g", &[&a, &b], "");
        let cfg = |version: &str| {
            let rule = format!(
                r#"
[[listeners.rules]]
priority = 1
conditions = [{{ path_exact = ["/version"] }}]
action = {{ fixed_response = {{ status = 200, body = "{version}" }} }}
"#
            );
            listener(web, "", &rule) + &group
        };
        let berth = Berth::start(&cfg("v0")).await;
        berth
            .wait_healthy("g", &[a.addr(), b.addr()], HEALTHY)
            .await;
        let load = Load::start(&format!("http://{web}/"), 8);
        load.wait_ok(100, Duration::from_secs(20)).await;
        let http = Http::new();
        let version_url = format!("http://{web}/version");
        let failures = || async {
            berth
                .metric("berth_config_reloads_total", &[("result", "failure")])
                .await
                .unwrap_or(0.0)
        };

        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut current = "v0".to_string();
        let (mut good, mut slowest) = (0, Duration::ZERO);
        for i in 1..=31 {
            tick.tick().await;
            let broken = match i {
                10 => Some(cfg("broken") + "\n[[listeners]\nname = "), // not TOML
                20 => {
                    Some(cfg("broken").replace("grace_period = \"3s\"", "grace_period = \"soon\""))
                }
                _ => None,
            };
            if let Some(text) = broken {
                let before = failures().await;
                berth.write_config(&text);
                berth.reload();
                berth
                    .wait_metric_at_least(
                        "berth_config_reloads_total",
                        &[("result", "failure")],
                        before + 1.0,
                        Duration::from_secs(5),
                    )
                    .await;
                for _ in 0..5 {
                    let r = http.get(&version_url).await.unwrap();
                    assert_eq!(
                        (r.status.as_u16(), r.body.as_str()),
                        (200, current.as_str()),
                        "after the broken config of second {i}, the last good one serves"
                    );
                }
                continue;
            }
            let version = format!("v{i}");
            berth.write_config(&cfg(&version));
            let sent = Instant::now();
            berth.reload();
            wait_until(
                Duration::from_secs(5),
                &format!("{version} to answer"),
                || async {
                    http.get(&version_url)
                        .await
                        .is_ok_and(|r| r.status == 200 && r.body == version)
                },
            )
            .await;
            slowest = slowest.max(sent.elapsed());
            good += 1;
            current = version;
        }
        assert!(
            started.elapsed() >= Duration::from_secs(30),
            "the reloads spanned {:?}",
            started.elapsed()
        );
        let before = load.stats().ok;
        load.wait_ok(before + 100, Duration::from_secs(10)).await;
        let stats = load.stop().await;
        stats.assert_no_failures();
        let ok = berth
            .metric("berth_config_reloads_total", &[("result", "success")])
            .await
            .unwrap_or(0.0);
        assert!(
            ok >= f64::from(good),
            "{ok} successful reloads counted, {good} applied"
        );
        let failed = failures().await;
        // Each broken config fails once per trigger (SIGHUP, maybe also the file watch).
        assert!(
            (2.0..=4.0).contains(&failed),
            "berth_config_reloads_total{{result=failure}} = {failed} for 2 broken configs"
        );
        let states = berth.target_states("g").await;
        assert!(states.values().all(|s| s == "healthy"), "{states:?}");
        eprintln!(
            "figure: reload every second for {:?}: {} requests, 0 failed; {good} good reloads \
             (slowest signal-to-effect {slowest:?}), {failed} failed reloads counted",
            started.elapsed(),
            stats.ok
        );
    })
    .await
}

// ---- 4. graceful restart -------------------------------------------------------------------

/// Whether a failed request never reached berth's proxy logic: the connection was refused, or
/// a pooled keep-alive connection turned out closed. Such an idempotent request is retried.
fn connection_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(h) = c.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return true;
            }
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        })
    })
}

#[derive(Default)]
struct RestartStats {
    ok: AtomicU64,
    retries: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// SIGTERM to a berth serving keep-alive clients and slow requests, then a new berth on the
/// same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_on_the_same_port_loses_no_request() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let web = listen_addr();
        let group = static_group("g", &[&a], "");
        let cfg = listener(web, "", "") + &group;
        let mut old = Berth::start(&cfg).await;
        old.wait_healthy("g", &[a.addr()], HEALTHY).await;

        // Keep-alive clients that retry a GET only when its connection was refused or found
        // closed; any status other than 200, or giving up, is an error.
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RestartStats::default());
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (stop, stats) = (stop.clone(), stats.clone());
                let url = format!("http://{web}/");
                tokio::spawn(async move {
                    let http = Http::new();
                    while !stop.load(Ordering::SeqCst) {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        loop {
                            match http.get(&url).await {
                                Ok(r) if r.status == 200 => {
                                    stats.ok.fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(r) => stats
                                    .errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("status {}: {}", r.status, r.body)),
                                Err(e) if connection_gone(&e) && Instant::now() < deadline => {
                                    stats.retries.fetch_add(1, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(10)).await; // pacing
                                    continue;
                                }
                                Err(e) => stats.errors.lock().unwrap().push(format!("{e:#}")),
                            }
                            break;
                        }
                    }
                })
            })
            .collect();
        let ok = || stats.ok.load(Ordering::SeqCst);
        wait_until(HEALTHY, "200 requests through the old berth", || async {
            ok() >= 200
        })
        .await;

        // Requests in flight at SIGTERM, on their own connections, never retried.
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let url = format!("http://{web}/slow?ms=1500");
                tokio::spawn(async move {
                    Http::no_pool()
                        .with_timeout(Duration::from_secs(20))
                        .get(&url)
                        .await
                })
            })
            .collect();
        wait_until(
            Duration::from_secs(5),
            "3 slow requests in flight",
            || async { a.in_flight() >= 3 },
        )
        .await;
        let at_sigterm = ok();
        old.terminate();
        let t0 = Instant::now();

        // berth sets no SO_REUSEPORT: the new process can bind once the old one has closed
        // its listening socket (pingora does so at SIGTERM, before the grace period).
        wait_until(
            Duration::from_secs(10),
            "the old berth to close its listener",
            || async { std::net::TcpListener::bind(web).is_ok() },
        )
        .await;
        let closed = t0.elapsed();
        let new = Berth::start(&cfg).await;
        let up = t0.elapsed();
        for s in slow {
            let r = s.await.unwrap().expect("in-flight request across SIGTERM");
            assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a"));
        }
        let at_new = ok();
        wait_until(HEALTHY, "200 requests through the new berth", || async {
            ok() >= at_new + 200
        })
        .await;
        let status = old
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("the old berth still runs 15 s after SIGTERM (grace 3 s)");
        assert!(status.success(), "old berth exit status: {status}");
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
        let errors = stats.errors.lock().unwrap().clone();
        let mut kinds = std::collections::BTreeMap::new();
        for e in &errors {
            *kinds.entry(e.as_str()).or_insert(0) += 1;
        }
        assert!(
            errors.is_empty(),
            "{} requests failed across the restart, by error: {kinds:#?}",
            errors.len()
        );
        let served = new
            .metric(
                "berth_requests_total",
                &[("listener", "web"), ("class", "2xx")],
            )
            .await
            .unwrap_or(0.0);
        assert!(served >= 200.0, "the new berth served {served} requests");
        eprintln!(
            "figure: graceful restart: listener closed {closed:?} after SIGTERM, new berth ready \
             {up:?} after; {} requests ok ({} before SIGTERM), {} retried on closed/refused \
             connections, 0 errors",
            ok(),
            at_sigterm,
            stats.retries.load(Ordering::SeqCst)
        );
    })
    .await
}

// ---- 5. hostile clients ------------------------------------------------------------------------

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
        let cfg = listener(web, "max_header_bytes = 4096", "") + &static_group("g", &[&a], "");
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
        let cfg = listener(web, &format!("max_connections = {MAX}"), "")
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
        let cfg = listener(web, "header_timeout = \"2s\"", "") + &static_group("g", &[&a], "");
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

// ---- 6. scale: 1,000 groups, 10,000 targets, 1,000 rules -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1000_groups_10000_targets_1000_rules() {
    bounded(Duration::from_secs(240), async {
        berth_tests::net::raise_nofile_limit();
        const GROUPS: usize = 1000;
        const PER_GROUP: usize = 10;
        // 1,000 backends; group i has backends i..i+9 (mod 1,000), so every group's set of
        // answering backends is its own and a misrouted request shows.
        let mut backends = Vec::new();
        for i in 0..GROUPS {
            backends.push(Backend::spawn(&format!("b{i}")).await);
        }
        let members = |g: usize| -> BTreeSet<String> {
            (0..PER_GROUP).map(|k| format!("b{}", (g + k) % GROUPS)).collect()
        };
        let web = listen_addr();
        let rule = |i: usize, action: &str| {
            let cond = if i.is_multiple_of(2) {
                format!("host = [\"h{i}.scale.test\"]")
            } else {
                format!("path_prefix = [\"/r{i}/\"]")
            };
            format!(
                "[[listeners.rules]]\npriority = {}\nconditions = [{{ {cond} }}]\naction = {action}\n",
                i + 1
            )
        };
        let config = |changed: Option<usize>| {
            let mut rules = String::new();
            for i in 0..GROUPS {
                let action = if changed == Some(i) {
                    "{ fixed_response = { status = 200, body = \"changed\" } }".to_string()
                } else {
                    format!("{{ forward = [{{ target_group = \"g{i}\" }}] }}")
                };
                rules.push_str(&rule(i, &action));
            }
            let mut cfg = listener(web, "", &rules).replace(
                "forward = [{ target_group = \"g\" }]",
                "fixed_response = { status = 404, body = \"no rule\" }",
            );
            for i in 0..GROUPS {
                cfg.push_str(&format!(
                    "[[target_groups]]\nname = \"g{i}\"\nhealth_check = {{ interval = \"5s\", timeout = \"2s\", \
                     healthy_threshold = 2, unhealthy_threshold = 2, path = \"/health\" }}\n\
                     source = {{ kind = \"file\", path = \"g{i}.toml\" }}\n\n"
                ));
            }
            cfg
        };
        let files: Vec<(String, String)> = (0..GROUPS)
            .map(|g| {
                let bs: Vec<&Backend> = (0..PER_GROUP).map(|k| &backends[(g + k) % GROUPS]).collect();
                (format!("g{g}.toml"), format!("targets = {}\n", berth_tests::targets_toml(&bs)))
            })
            .collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        let text = config(None);
        let started = Instant::now();
        let berth = Berth::start_with_files(&text, &files).await;
        let ready = started.elapsed();
        let all = (GROUPS * PER_GROUP) as f64;
        berth
            .wait_metric_at_least("berth_targets", &[("state", "healthy")], all, Duration::from_secs(90))
            .await;
        let healthy = started.elapsed();
        let rss = berth.rss_kib();
        let cpu0 = cpu_time(berth.pid());
        let idle = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await; // the measurement window itself
        let cpu = cpu_time(berth.pid()) - cpu0;
        let window = idle.elapsed();
        eprintln!(
            "figure: scale: config {} KiB, {GROUPS} groups, {} targets, {GROUPS} rules: ready \
             {ready:?}, all targets healthy {healthy:?} after start; RSS {} MiB",
            text.len() / 1024,
            GROUPS * PER_GROUP,
            rss / 1024
        );
        eprintln!(
            "figure: scale: idle CPU with health checks every 5 s: {cpu:?} over {window:?} \
             ({:.1} % of one core)",
            100.0 * cpu.as_secs_f64() / window.as_secs_f64()
        );

        let http = Http::new();
        let get = |i: usize| {
            let http = http.clone();
            async move {
                let (url, host) = if i.is_multiple_of(2) {
                    (format!("http://{web}/x"), format!("h{i}.scale.test"))
                } else {
                    (format!("http://{web}/r{i}/x"), "other.test".to_string())
                };
                http.get_with(&url, &[("host", host.as_str())]).await.unwrap()
            }
        };
        // 50 rules spread over the list, host and path rules alike.
        let sample: Vec<usize> = (0..50).map(|k| (k * 20 + k % 2 + 3) % GROUPS).collect();
        let check_routing = || async {
            for &i in &sample {
                let mut seen = BTreeSet::new();
                for _ in 0..2 * PER_GROUP {
                    let r = get(i).await;
                    assert_eq!(r.status, 200, "rule {i}: {}", r.body);
                    seen.insert(r.backend().to_string());
                }
                assert_eq!(seen, members(i), "rule {i} must route to group g{i}");
            }
        };
        check_routing().await;
        let r = http
            .get_with(&format!("http://{web}/nothing"), &[("host", "none.test")])
            .await
            .unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (404, "no rule"));

        // Reload: rule 0 becomes a fixed response. Time from SIGHUP until it answers so.
        berth.write_config(&config(Some(0)));
        let sent = Instant::now();
        berth.reload();
        let deadline = sent + Duration::from_secs(20);
        loop {
            if get(0).await.body == "changed" {
                break;
            }
            assert!(Instant::now() < deadline, "the reloaded rule did not apply within 20 s");
            tokio::time::sleep(Duration::from_millis(2)).await; // pacing
        }
        let took = sent.elapsed();
        let internal: Vec<f64> = log_events(&berth, "configuration reloaded")
            .iter()
            .filter_map(|f| f["elapsed_ms"].as_f64())
            .collect();
        eprintln!(
            "figure: scale: reload (SIGHUP to the changed rule answering) {took:?} (goal 100 ms); \
             berth's own reload durations in ms: {internal:?}"
        );
        check_routing().await;
        assert_eq!(
            berth.metric("berth_config_reloads_total", &[("result", "failure")]).await.unwrap_or(0.0),
            0.0
        );
        let healthy_after = berth.metric("berth_targets", &[("state", "healthy")]).await;
        assert_eq!(healthy_after, Some(all), "targets keep their health across the reload");
    })
    .await
}

// ---- 7. property test of the HTTP rule matcher -----------------------------------------------

mod matcher {
    use std::net::{IpAddr, Ipv4Addr};

    use berth_config::model::{Action, Listener};
    use berth_proxy::l7::rules::{host_without_port, route, RequestView};
    use http::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    /// A TOML basic string holding `s`.
    fn q(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A listener whose rules (priority, TOML conditions) answer `r<priority>`; `default`
    /// otherwise. `None` when the configuration does not validate.
    fn listener(rules: &[(u32, Vec<String>)]) -> Option<Listener> {
        let mut text = String::from("[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\n");
        for (p, conds) in rules {
            text.push_str(&format!(
                "[[listeners.rules]]\npriority = {p}\nconditions = [{}]\n\
                 action = {{ fixed_response = {{ status = 200, body = \"r{p}\" }} }}\n",
                conds.join(", ")
            ));
        }
        text.push_str(
            "[listeners.default_action]\nfixed_response = { status = 404, body = \"default\" }\n",
        );
        let mut cfg = berth_config::parse(&text, std::path::Path::new(".")).ok()?;
        Some(cfg.listeners.remove(0))
    }

    fn answer(action: &Action) -> String {
        match action {
            Action::FixedResponse(f) => f.body.clone(),
            other => format!("{other:?}"),
        }
    }

    /// A request as rules see it.
    #[derive(Debug, Clone)]
    struct Req {
        host: String,
        path: String,
        query: Vec<(String, String)>,
        method: String,
        headers: Vec<(String, String)>,
        ip: Ipv4Addr,
    }

    impl Req {
        fn route(&self, l: &Listener) -> String {
            let mut headers = HeaderMap::new();
            for (k, v) in &self.headers {
                headers.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query = query.join("&");
            let host = self.host.to_ascii_lowercase();
            let view = RequestView {
                host: Some(&host),
                path: &self.path,
                query: (!query.is_empty()).then_some(query.as_str()),
                method: &self.method,
                headers: &headers,
                client_ip: Some(IpAddr::V4(self.ip)),
                vpce_id: None,
            };
            answer(route(l, &view))
        }

        /// Conditions that this very request satisfies, chosen by the bits of `pick` (at least
        /// one) and `path_kind`.
        fn own_conditions(&self, pick: u8, path_kind: u8) -> Vec<String> {
            let mut out = Vec::new();
            if pick & 1 != 0 {
                out.push(format!("{{ host = [{}] }}", q(&self.host)));
            }
            if pick & 2 != 0 {
                let kind = ["path_exact", "path_prefix", "path_glob"][path_kind as usize % 3];
                out.push(format!("{{ {kind} = [{}] }}", q(&self.path)));
            }
            if pick & 4 != 0 {
                out.push(format!("{{ method = [{}] }}", q(&self.method)));
            }
            if let (true, Some((k, v))) = (pick & 8 != 0, self.headers.first()) {
                out.push(format!("{{ header = {}, values = [{}] }}", q(k), q(v)));
            }
            if let (true, Some((k, v))) = (pick & 16 != 0, self.query.last()) {
                out.push(format!("{{ query = {}, values = [{}] }}", q(k), q(v)));
            }
            if pick & 32 != 0 {
                out.push(format!("{{ source_cidr = [\"{}/32\"] }}", self.ip));
            }
            if out.is_empty() {
                out.push(format!("{{ path_exact = [{}] }}", q(&self.path)));
            }
            out
        }
    }

    fn request() -> impl Strategy<Value = Req> {
        (
            "[a-zA-Z0-9][a-zA-Z0-9._-]{0,30}",
            "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,30}",
            prop::collection::vec(
                ("[a-z][a-z0-9_]{0,6}", "[A-Za-z0-9._~*?!,{}\\[\\]-]{0,10}"),
                0..4,
            ),
            "GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|[A-Z]{1,10}",
            prop::collection::vec(("x-[a-z0-9-]{1,12}", "[ -~]{0,24}"), 0..4),
            any::<[u8; 4]>(),
        )
            .prop_map(|(host, path, query, method, headers, ip)| Req {
                host,
                path,
                query,
                method,
                headers,
                ip: Ipv4Addr::from(ip),
            })
    }

    /// Any condition, valid or not (invalid ones make the configuration fail validation).
    fn condition() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9.*?_-]{1,20}".prop_map(|h| format!("{{ host = [{}] }}", q(&h))),
            "/\\PC{0,20}".prop_map(|p| format!("{{ path_exact = [{}] }}", q(&p))),
            "/[a-zA-Z0-9/._-]{0,6}".prop_map(|p| format!("{{ path_prefix = [{}] }}", q(&p))),
            "/[a-z*?{}\\[\\],!/\\\\-]{0,16}".prop_map(|p| format!("{{ path_glob = [{}] }}", q(&p))),
            ("x-[a-z]{1,3}", "\\PC{0,12}").prop_map(|(n, v)| format!(
                "{{ header = {}, values = [{}] }}",
                q(&n),
                q(&v)
            )),
            ("[a-z]{1,3}", "\\PC{0,12}").prop_map(|(n, v)| format!(
                "{{ query = {}, values = [{}] }}",
                q(&n),
                q(&v)
            )),
            "GET|POST|[A-Za-z]{1,8}".prop_map(|m| format!("{{ method = [{}] }}", q(&m))),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(ip, len)| {
                format!("{{ source_cidr = [\"{}/{len}\"] }}", Ipv4Addr::from(ip))
            }),
        ]
    }

    fn rules() -> impl Strategy<Value = Vec<Vec<String>>> {
        prop::collection::vec(prop::collection::vec(condition(), 0..4), 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary request fields against arbitrary (validated) rules never panic.
        #[test]
        fn routing_arbitrary_requests_never_panics(
            rules in rules(),
            host in "\\PC{0,40}",
            path in "\\PC{0,40}",
            query in proptest::option::of("\\PC{0,40}"),
            method in "\\PC{0,12}",
            headers in prop::collection::vec(("x-[a-z]{1,3}", prop::collection::vec(any::<u8>(), 0..24)), 0..6),
            ip in any::<[u8; 4]>(),
        ) {
            let _ = host_without_port(&host);
            let rules: Vec<(u32, Vec<String>)> =
                rules.into_iter().enumerate().map(|(i, c)| (i as u32 + 1, c)).collect();
            if let Some(l) = listener(&rules) {
                let mut map = HeaderMap::new();
                for (k, v) in &headers {
                    if let Ok(v) = HeaderValue::from_bytes(v) {
                        map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v);
                    }
                }
                let view = RequestView {
                    host: Some(&host),
                    path: &path,
                    query: query.as_deref(),
                    method: &method,
                    headers: &map,
                    client_ip: Some(IpAddr::V4(Ipv4Addr::from(ip))),
                    vpce_id: Some(&host),
                };
                let a = answer(route(&l, &view));
                prop_assert!(a == "default" || rules.iter().any(|(p, _)| a == format!("r{p}")), "{a}");
            }
        }

        /// A rule built from a request's own host, path, method, header, query or address
        /// routes that request: first when it has the lowest priority number, and otherwise
        /// nothing with a higher number (nor the default) ever wins over it.
        #[test]
        fn rule_built_from_the_request_routes_it(
            req in request(),
            pick in 1u8..64,
            path_kind in 0u8..3,
            others in rules(),
            own_priority in 1u32..16,
        ) {
            let own = req.own_conditions(pick, path_kind);
            let alone = listener(&[(1, own.clone())]);
            prop_assert!(alone.is_some(), "a rule made of the request's own values is valid: {own:?}");
            prop_assert_eq!(req.route(&alone.unwrap()), "r1", "{:?}", own);

            let mut all = vec![(own_priority, own.clone())];
            let free = (1u32..).filter(|p| *p != own_priority);
            all.extend(free.zip(others));
            if let Some(l) = listener(&all) {
                let a = req.route(&l);
                let winner: Option<u32> = a.strip_prefix('r').and_then(|p| p.parse().ok());
                prop_assert!(
                    winner.is_some_and(|p| p <= own_priority),
                    "own rule at priority {own_priority} matched but {a} answered; rules {all:?}"
                );
            }
        }

        /// An exact-path rule does not match a longer path.
        #[test]
        fn exact_path_rule_does_not_match_a_longer_path(req in request(), extra in "[a-z0-9/]{1,5}") {
            let l = listener(&[(1, vec![format!("{{ path_exact = [{}] }}", q(&req.path))])]).unwrap();
            let mut longer = req.clone();
            longer.path.push_str(&extra);
            prop_assert_eq!(req.route(&l), "r1");
            prop_assert_eq!(longer.route(&l), "default");
        }
    }
}
