//! Process assembly: the worker threads serving every listener ([`crate::workers`]), the
//! pingora server that runs the process (signals, graceful shutdown), and the control runtime
//! that runs the admin endpoint, target groups' loops and configuration reloads.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_config::model::ListenerProtocol;
use berth_config::Config;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::discovery::ecs::EcsHub;
use crate::l4::tcp::TcpProxy;
use crate::l7::listener::HttpListener;
use crate::runtime::{ConfigSource, ProxyState};
use crate::tls::Certificates;
use crate::workers::{App, Endpoint, ShutdownRelay};
use pingora::services::background::background_service;

/// Why berth could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The admin address could not be bound.
    #[error("cannot bind the admin listener on {addr}: {source}")]
    AdminBind {
        /// The configured `admin.bind`.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A listener's TLS could not be set up.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener (`listeners[].name`) whose certificates failed.
        listener: String,
        /// Which certificate or key, and why.
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
        /// The listener (`listeners[].name`) that cannot bind.
        listener: String,
        /// Its `bind` address.
        addr: SocketAddr,
        /// What the operating system said (usually: another process holds the port).
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
    let certificates = Certificates::load(&config)
        .map_err(|(listener, source)| StartError::Tls { listener, source })?;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("berth-control")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    // The own zone is known before any group exists (a few short tries of the ECS task
    // metadata endpoint at most): zone-aware routing applies from the first request.
    control.block_on(crate::zone::learn_own(
        config.proxy.availability_zone.as_deref(),
    ));
    let shared = ProxyState::new(config.clone(), source, Arc::new(EcsHub::new()));
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
    control.spawn(crate::runtime::watch_reloads(Arc::clone(&shared), hangup));
    control.spawn(crate::l7::pools::run(Arc::clone(&shared)));
    control.spawn(crate::readiness::wait_ready(
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
    let endpoints: Vec<Endpoint> = config
        .listeners
        .iter()
        .map(|l| endpoint(l, &shared, &certificates))
        .collect();
    {
        let current = Arc::clone(&shared);
        control.spawn(certificates.watch(
            move || Arc::clone(&current.current.load().config),
            Arc::clone(&shared.reread_certificates),
        ));
    }
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
    // `control` stays owned here: `run_forever` ends the process without returning, so the
    // control runtime (admin, reloads, group loops) serves until the very end.
    let _control = control;
    server.run_forever()
}

/// What serves one listener, with its live TLS acceptor where it terminates TLS.
fn endpoint(
    l: &berth_config::model::Listener,
    shared: &Arc<ProxyState>,
    certificates: &Certificates,
) -> Endpoint {
    let tls = certificates.acceptor(&l.name);
    let app =
        match l.protocol {
            ListenerProtocol::Tcp | ListenerProtocol::Tls => App::Tcp(Arc::new(TcpProxy::new(
                l.name.clone(),
                Arc::clone(shared),
                tls,
            ))),
            ListenerProtocol::Http | ListenerProtocol::Https => App::Http(Arc::new(
                HttpListener::new(&l.name, Arc::clone(shared), tls),
            )),
        };
    Endpoint { app, addr: l.bind }
}
