//! Process assembly: the worker threads serving every listener ([`crate::workers`]), the
//! pingora server that runs the process (signals, graceful shutdown), and the control runtime
//! that runs the admin endpoint, target groups' loops and configuration reloads.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_config::model::ListenerProtocol;
use berth_config::Config;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::discovery::ecs::EcsHub;
use crate::l4::tcp::TcpProxy;
use crate::l7::listener::HttpListener;
use crate::runtime::{ConfigSource, Shared};
use crate::tls::Alpn;
use crate::workers::{App, Endpoint, ShutdownRelay};
use pingora::services::background::background_service;

/// Why berth could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The admin address could not be bound.
    #[error("cannot bind the admin listener on {addr}: {source}")]
    AdminBind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A listener's TLS could not be set up.
    #[error("listener {listener}: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// Cause.
        source: crate::tls::TlsError,
    },
    /// The control runtime could not start.
    #[error("cannot start the control runtime: {0}")]
    Runtime(std::io::Error),
    /// The HTTP engine could not start.
    #[error(transparent)]
    Http(#[from] crate::workers::EngineError),
    /// A listener address is already taken.
    #[error("listener {listener}: cannot bind {addr}: {source}")]
    ListenerBind {
        /// Listener name.
        listener: String,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Runs berth until a signal stops it. Never returns on success (pingora exits the process).
pub fn run(config: Config, source: ConfigSource) -> Result<(), StartError> {
    let prom = crate::metrics::install();
    // Fail early and clearly on ports another process holds (the workers bind with
    // SO_REUSEPORT, which could share a port with another berth).
    for l in &config.listeners {
        std::net::TcpListener::bind(l.bind).map_err(|source| StartError::ListenerBind {
            listener: l.name.clone(),
            addr: l.bind,
            source,
        })?;
    }
    let shared = Shared::new(config.clone(), source, Arc::new(EcsHub::new()));

    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("berth-control")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let admin_addr = config.admin.bind;
    let admin = control
        .block_on(crate::admin::bind(admin_addr))
        .map_err(|source| StartError::AdminBind {
            addr: admin_addr,
            source,
        })?;
    let hangup = control
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .map_err(StartError::Runtime)?;
    {
        let shared = Arc::clone(&shared);
        control.spawn(async move {
            shared.start_loops();
        });
    }
    control.spawn(crate::admin::serve(admin, Arc::clone(&shared), prom));
    control.spawn(watch_reloads(Arc::clone(&shared), hangup));
    control.spawn(crate::l7::pools::run(Arc::clone(&shared)));
    control.spawn(wait_ready(
        Arc::clone(&shared),
        config.listeners.iter().map(|l| l.bind).collect(),
    ));

    let conf = ServerConf {
        threads: config.proxy.threads,
        grace_period_seconds: Some(config.proxy.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let endpoints = config
        .listeners
        .iter()
        .map(|l| endpoint(l, &shared))
        .collect::<Result<Vec<_>, _>>()?;
    // The listeners run on berth's own worker threads; pingora tells them when to stop
    // accepting.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    crate::workers::start(&endpoints, config.proxy.threads, stopped)?;
    server.add_service(background_service("listener shutdown", ShutdownRelay(stop)));
    tracing::info!(
        listeners = config.listeners.len(),
        target_groups = config.target_groups.len(),
        admin = %config.admin.bind,
        "berth proxy starting"
    );
    // The control runtime lives as long as the process.
    std::mem::forget(control);
    server.run_forever()
}

/// What serves one listener, with its TLS set up.
fn endpoint(
    l: &berth_config::model::Listener,
    shared: &Arc<Shared>,
) -> Result<Endpoint, StartError> {
    let tls = |alpn| {
        crate::tls::acceptor(&l.certificates, alpn).map_err(|source| StartError::Tls {
            listener: l.name.clone(),
            source,
        })
    };
    let app = match l.protocol {
        ListenerProtocol::Tcp => App::Tcp(Arc::new(TcpProxy::new(
            l.name.clone(),
            Arc::clone(shared),
            None,
        ))),
        ListenerProtocol::Tls => App::Tcp(Arc::new(TcpProxy::new(
            l.name.clone(),
            Arc::clone(shared),
            Some(tls(Alpn::None)?),
        ))),
        ListenerProtocol::Http => App::Http(Arc::new(HttpListener::new(
            &l.name,
            Arc::clone(shared),
            None,
        ))),
        ListenerProtocol::Https => {
            let alpn = if l.http2 {
                Alpn::Http2AndHttp1
            } else {
                Alpn::Http1
            };
            App::Http(Arc::new(HttpListener::new(
                &l.name,
                Arc::clone(shared),
                Some(tls(alpn)?),
            )))
        }
    };
    Ok(Endpoint { app, addr: l.bind })
}

/// How long pingora may take to put every listener in LISTEN state.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// Marks the process ready once every listener's socket is listening. Reads the kernel's socket
/// table rather than connecting, so the probe is not a client (it would count as a failed
/// PROXY header or a flow).
async fn wait_ready(shared: Arc<Shared>, binds: Vec<SocketAddr>) {
    let started = std::time::Instant::now();
    loop {
        let listening = listening_sockets();
        if binds.iter().all(|b| listening.contains(b)) {
            break;
        }
        if started.elapsed() > LISTEN_DEADLINE {
            // A listener that never reaches LISTEN (a port taken between berth's check and
            // its bind): a berth that serves only its admin port must not linger.
            let missing: Vec<String> = binds
                .iter()
                .filter(|b| !listening.contains(b))
                .map(ToString::to_string)
                .collect();
            tracing::error!(missing = ?missing, "listeners did not start listening; exiting");
            eprintln!("berth-proxy: listeners {missing:?} did not start listening within {LISTEN_DEADLINE:?}; exiting");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!("all listeners accept connections; ready");
}

/// Addresses of TCP sockets in LISTEN state, from /proc/net/tcp and /proc/net/tcp6.
fn listening_sockets() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_proc_net_line));
    }
    out
}

/// One line of /proc/net/tcp{,6}: the local address when the state is LISTEN (0A).
fn parse_proc_net_line(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let ip: std::net::IpAddr = match ip_hex.len() {
        8 => {
            let v = u32::from_str_radix(ip_hex, 16).ok()?;
            std::net::Ipv4Addr::from(v.swap_bytes()).into()
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip_hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            std::net::Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Reloads on SIGHUP and when the configuration file changes (polled).
async fn watch_reloads(shared: Arc<Shared>, mut hangup: tokio::signal::unix::Signal) {
    let path = match &shared.source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::Embedded => None,
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut last = path.as_deref().and_then(stamp);
    loop {
        let interval = shared.snapshot.load().config.proxy.watch_interval;
        tokio::select! {
            _ = hangup.recv() => {
                let _ = shared.reload("SIGHUP").await;
                last = path.as_deref().and_then(stamp);
            }
            _ = tokio::time::sleep(interval) => {
                if let Some(p) = path.as_deref() {
                    let now = stamp(p);
                    if now != last {
                        last = now;
                        if now.is_some() {
                            let _ = shared.reload("file change").await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_listen_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_proc_net_line(v4),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let est = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_proc_net_line(&est), None);
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        assert_eq!(parse_proc_net_line(v6), Some("[::1]:80".parse().unwrap()));
    }
}
