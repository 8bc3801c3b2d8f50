//! L4 flows end to end: a killed target's flows end and new ones go elsewhere, 1 GiB passes
//! intact, and 5,000 idle flows are held, relay and are released. Every connection stays on
//! loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::config::tcp_config;
use berth_tests::tcp::{roundtrip, Echo};
use berth_tests::{bounded, net, wait_until, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            let before = a.accepted();
            let mut s = TcpStream::connect(listen).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            if a.accepted() > before {
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

/// Connections accepted so far by `echoes` (forwarded flows and TCP health checks).
fn accepted(echoes: &[Echo]) -> u64 {
    echoes.iter().map(|e| e.accepted()).sum()
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
                e.accepted() > 100,
                "flows spread over the targets: {} on {}",
                e.accepted(),
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
