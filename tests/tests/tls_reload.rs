//! Listener certificates reloaded live: a steady TLS load (new handshakes in a loop from several
//! clients, plus one keep-alive connection sending requests all along) while the https
//! listener's certificate is rotated by SIGHUP, by rename-over and by in-place rewrites; then a
//! mismatched pair, which keeps the running certificate and is counted once. A tls (TCP)
//! listener picks up a rotated certificate too.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_tests::certs::{get_once, Ca, Issued, LeafSpec, TlsConn};
use berth_tests::config::{Group, Listener, FAST_TCP_HEALTH_CHECK};
use berth_tests::net::listen_addr;
use berth_tests::tcp::Echo;
use berth_tests::{bounded, log, static_group, wait_for, wait_until, Backend, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(240);
const SEEN: Duration = Duration::from_secs(15);
const RELOADS: &str = "berth_tls_certificate_reloads_total";

/// Server certificate generation `gen` for `dns`: its own serial, and notAfter 2030+gen-01-01.
fn server_cert(ca: &Ca, dns: &'static str, gen: u8) -> Issued {
    let cn = format!("{dns} gen {gen}");
    let dns = [dns];
    let serial = [0x10 + gen, 0x01];
    let mut spec = LeafSpec::server(&cn, &dns, &serial);
    spec.not_after = (2030 + i32::from(gen), 1, 1);
    ca.issue(&spec)
}

/// The config: https `web` (certificate web.crt/web.key) to group `g`, and tls `tls`
/// (tcp.crt/tcp.key) to the echo group; certificate files polled every `poll`.
fn config(web: SocketAddr, tls: SocketAddr, a: &Backend, echo: &Echo, poll: &str) -> String {
    let web_listener = Listener::new("web", web)
        .key("protocol = \"https\"\nhttp2 = false")
        .tables("[[listeners.certificates]]\ncert = \"web.crt\"\nkey = \"web.key\"\n")
        .forward_to("g");
    let tls_listener = Listener::new("tls", tls)
        .key("protocol = \"tls\"")
        .tables("[[listeners.certificates]]\ncert = \"tcp.crt\"\nkey = \"tcp.key\"\n")
        .forward_to("echo");
    let echo_group = Group::new("echo")
        .deregistration_delay("1s")
        .table("health_check", FAST_TCP_HEALTH_CHECK)
        .targets(&format!("[{{ address = \"{}\" }}]", echo.addr));
    format!(
        "[proxy]\ncertificate_poll_interval = \"{poll}\"\n\n[log]\nformat = \"json\"\n{web_listener}{tls_listener}{}{echo_group}",
        static_group("g", &[a], "")
    )
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    keep_alive_ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    certs: Mutex<HashSet<Vec<u8>>>,
}

impl Tally {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.errors.lock().expect("errors").push(e);
    }
}

/// Clients each making a new TLS connection and request in a loop until `stop`.
fn new_connection_load(
    clients: usize,
    cfg: Arc<rustls::ClientConfig>,
    web: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (cfg, stop, tally) = (cfg.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match get_once(cfg.clone(), web, "/", &[]).await {
                        Ok((cert, r)) if r.status == 200 && r.body == "a" => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                            tally.certs.lock().expect("certs").insert(cert);
                        }
                        Ok((_, r)) => tally.fail(format!("status {} body {:?}", r.status, r.body)),
                        Err(e) => tally.fail(format!("{e:#}")),
                    }
                }
            })
        })
        .collect()
}

/// One keep-alive connection sending a request every 20 ms until `stop`; returns the
/// certificate it was established with.
fn keep_alive_load(
    cfg: Arc<rustls::ClientConfig>,
    web: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut conn = match TlsConn::open(cfg, web, "web.test").await {
            Ok(c) => c,
            Err(e) => {
                tally.fail(format!("keep-alive connect: {e:#}"));
                return Vec::new();
            }
        };
        while !stop.load(Ordering::SeqCst) {
            match conn.get("/", &[]).await {
                Ok(r) if r.status == 200 => {
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                    tally.keep_alive_ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => tally.fail(format!("keep-alive status {}", r.status)),
                Err(e) => {
                    tally.fail(format!("keep-alive: {e:#}"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conn.server_cert.clone()
    })
}

/// Waits until a new handshake on `web` presents `cert`.
async fn wait_served(cfg: &Arc<rustls::ClientConfig>, web: SocketAddr, cert: &Issued, what: &str) {
    wait_until(SEEN, what, || async {
        matches!(get_once(cfg.clone(), web, "/", &[]).await, Ok((c, _)) if c == cert.der)
    })
    .await;
}

/// Writes a file in place (truncate, then write), as a sidecar rewriting a mounted secret.
fn rewrite_in_place(berth: &Berth, name: &str, content: &str) {
    std::fs::write(berth.dir().join(name), content).expect("rewrite in place");
}

/// The certificate a TLS client gets from the tls listener, after an echo round trip.
async fn tls_echo(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut tls = berth_tests::tls::connect(cfg, addr, "tcp.test").await?;
    let cert = berth_tests::tls::server_leaf(&tls).unwrap_or_default();
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    anyhow::ensure!(&buf == b"ping", "echo answered {buf:?}");
    Ok(cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_handshake() {
    bounded(LIMIT, async {
        let a = Backend::spawn("a").await;
        let echo = Echo::start(false).await;
        let ca = Ca::new("berth server CA");
        let gens: Vec<Issued> = (0..6).map(|g| server_cert(&ca, "web.test", g)).collect();
        let tcp0 = server_cert(&ca, "tcp.test", 0);
        let tcp1 = server_cert(&ca, "tcp.test", 1);
        let (web, tls) = (listen_addr(), listen_addr());
        let files = [
            ("web.crt", gens[0].cert_pem.as_str()),
            ("web.key", gens[0].key_pem.as_str()),
            ("tcp.crt", tcp0.cert_pem.as_str()),
            ("tcp.key", tcp0.key_pem.as_str()),
        ];
        // No polling at first: only SIGHUP can reload.
        let berth = Berth::start_with_files(&config(web, tls, &a, &echo, "1h"), &files).await;
        berth.wait_healthy("g", &[a.addr()], SEEN).await;
        berth.wait_healthy("echo", &[echo.addr], SEEN).await;
        let cfg = ca.client_config(None);
        assert_eq!(
            tls_echo(cfg.clone(), tls).await.expect("tls listener"),
            tcp0.der
        );

        let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
        let mut tasks = new_connection_load(4, cfg.clone(), web, stop.clone(), tally.clone());
        let keep_alive = keep_alive_load(cfg.clone(), web, stop.clone(), tally.clone());
        wait_until(SEEN, "the load is flowing", || async {
            tally.ok.load(Ordering::SeqCst) >= 20
        })
        .await;

        // 1. SIGHUP: files replaced (rename-over) are not seen until the signal.
        berth.write_file("web.crt", &gens[1].cert_pem);
        berth.write_file("web.key", &gens[1].key_pem);
        let (c, _) = get_once(cfg.clone(), web, "/", &[]).await.expect("GET");
        assert!(c == gens[0].der, "reloaded without SIGHUP or polling");
        berth.reload();
        wait_served(&cfg, web, &gens[1], "gen 1 after SIGHUP").await;
        let reloaded = log::events(&berth, "listener certificates reloaded");
        assert!(
            reloaded
                .iter()
                .any(|e| e["listener"] == "web" && e["trigger"] == "reload"),
            "{reloaded:?}"
        );

        // 2. Polling from now on (a config reload changes the interval).
        berth.write_config(&config(web, tls, &a, &echo, "300ms"));
        berth
            .wait_metric_at_least(
                "berth_config_reloads_total",
                &[("result", "success")],
                2.0,
                SEEN,
            )
            .await;
        berth.write_file("web.crt", &gens[2].cert_pem);
        berth.write_file("web.key", &gens[2].key_pem);
        wait_served(&cfg, web, &gens[2], "gen 2 after rename-over").await;
        rewrite_in_place(&berth, "web.crt", &gens[3].cert_pem);
        rewrite_in_place(&berth, "web.key", &gens[3].key_pem);
        wait_served(&cfg, web, &gens[3], "gen 3 after an in-place rewrite").await;
        // Key first this time: the pair mismatches until the certificate follows.
        rewrite_in_place(&berth, "web.key", &gens[4].key_pem);
        rewrite_in_place(&berth, "web.crt", &gens[4].cert_pem);
        wait_served(&cfg, web, &gens[4], "gen 4 after an in-place rewrite").await;

        // The tls (TCP) listener too.
        berth.write_file("tcp.crt", &tcp1.cert_pem);
        berth.write_file("tcp.key", &tcp1.key_pem);
        wait_until(
            SEEN,
            "the tls listener serves its new certificate",
            || async { tls_echo(cfg.clone(), tls).await.ok() == Some(tcp1.der.clone()) },
        )
        .await;

        let before = tally.ok.load(Ordering::SeqCst);
        wait_until(SEEN, "the load keeps flowing", || async {
            tally.ok.load(Ordering::SeqCst) >= before + 20
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks.drain(..) {
            t.await.expect("load task");
        }
        let kept = keep_alive.await.expect("keep-alive task");
        let (ok, failed) = (
            tally.ok.load(Ordering::SeqCst),
            tally.failed.load(Ordering::SeqCst),
        );
        let errors = tally.errors.lock().expect("errors").clone();
        let kept_alive = tally.keep_alive_ok.load(Ordering::SeqCst);
        println!(
            "load: {ok} requests ({} on new connections, {kept_alive} on one keep-alive \
             connection), {failed} failed; rotations: web 4, tls 1",
            ok - kept_alive
        );
        assert!(
            kept_alive >= 50,
            "the keep-alive connection sent {kept_alive} requests"
        );
        assert_eq!(failed, 0, "failed handshakes or requests: {errors:?}");
        assert!(
            kept == gens[0].der,
            "the keep-alive connection kept its first certificate"
        );
        let seen = tally.certs.lock().expect("certs").clone();
        for (g, cert) in gens.iter().enumerate().take(5) {
            assert!(
                seen.contains(&cert.der),
                "no new handshake saw generation {g}"
            );
        }
        let m = berth.metrics().await;
        let count = |l: &str, r: &str| {
            berth_tests::metrics::value(&m, RELOADS, &[("listener", l), ("result", r)])
                .unwrap_or(0.0)
        };
        assert_eq!(count("web", "success"), 4.0, "{m}");
        assert_eq!(count("tls", "success"), 1.0, "{m}");
        assert_eq!(count("web", "failure"), 0.0, "{m}");
        // notAfter of generation 4 (2034-01-01) and of the tls listener's (2031-01-01).
        let expiry = |l: &str| {
            berth_tests::metrics::value(
                &m,
                "berth_tls_certificate_expiry_timestamp_seconds",
                &[("listener", l)],
            )
        };
        assert_eq!(expiry("web"), Some(2_019_686_400.0), "{m}");
        assert_eq!(expiry("tls"), Some(1_924_992_000.0), "{m}");

        // 3. A mismatched pair (generation 5's certificate, generation 4's key) is refused once.
        berth.write_file("web.crt", &gens[5].cert_pem);
        let failures = wait_for(SEEN, "a failed reload", || async {
            berth
                .metric(RELOADS, &[("listener", "web"), ("result", "failure")])
                .await
                .filter(|v| *v > 0.0)
        })
        .await;
        assert_eq!(failures, 1.0);
        let failed = log::events(
            &berth,
            "listener certificate reload failed; keeping the running certificates",
        );
        assert!(
            failed.iter().any(|e| e["listener"] == "web"
                && e["file"].as_str().is_some_and(|f| f.ends_with("web.crt"))
                && e["error"]
                    .as_str()
                    .is_some_and(|f| f.contains("does not match"))),
            "{failed:?}"
        );
        // Several polls later: still the old certificate, still one failure.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (c, r) = get_once(cfg.clone(), web, "/", &[])
            .await
            .expect("GET after a bad pair");
        assert!(
            c == gens[4].der && r.status == 200,
            "the running certificate was kept"
        );
        let failures = berth
            .metric(RELOADS, &[("listener", "web"), ("result", "failure")])
            .await;
        assert_eq!(failures, Some(1.0), "a bad pair is counted once");
    })
    .await
}
