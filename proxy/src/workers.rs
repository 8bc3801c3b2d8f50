//! The proxy's own threads. Each of `proxy.threads` workers runs a current-thread tokio runtime
//! with its own listening socket for every listener (`SO_REUSEPORT`: the kernel spreads new
//! connections over the workers), so a connection, its requests and its upstream connections
//! stay on one thread with no work-stealing scheduler in between.
//!
//! Measured against hyper served from a pingora `ServerApp`, this costs neither pingora's
//! per-connection task (about 9 KiB per idle connection or flow) nor its scheduler (hyper in
//! pingora ran at 0.92 of hyper alone). pingora still runs the process: signals, the grace
//! period and exit, and background services; on SIGTERM the workers close their listening
//! sockets at once and let connections finish their requests until pingora ends the process
//! after the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::l4::tcp::TcpProxy;
use crate::l7::listener::HttpListener;

/// Pending connections each listening socket queues.
const BACKLOG: u32 = 4096;

/// How long accepting pauses after an error (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A listener's socket could not be bound.
    #[error("listener {listener}: cannot bind {addr}: {source}")]
    Bind {
        /// The listener (`listeners[].name`) whose socket failed.
        listener: String,
        /// Its `bind` address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A worker's runtime or thread could not start.
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
}

/// What serves a listener's connections.
#[derive(Debug, Clone)]
pub enum App {
    /// An http or https listener.
    Http(Arc<HttpListener>),
    /// A tcp or tls listener.
    Tcp(Arc<TcpProxy>),
}

impl App {
    fn name(&self) -> &str {
        match self {
            App::Http(a) => a.name(),
            App::Tcp(a) => &a.listener,
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr, shutdown: &ShutdownWatch) {
        match self {
            App::Http(a) => {
                tokio::spawn(Arc::clone(a).serve_tcp(stream, peer, shutdown.clone()));
            }
            App::Tcp(a) => {
                tokio::spawn(Arc::clone(a).handle(stream, peer));
            }
        }
    }
}

/// One listener to serve: its app and address.
#[derive(Debug)]
pub struct Endpoint {
    /// The listener's app.
    pub app: App,
    /// The address the workers bind (with SO_REUSEPORT, one socket per worker).
    pub addr: SocketAddr,
}

/// Binds every endpoint once per worker and starts the workers. They serve until the process
/// ends; `shutdown` turning true closes their listening sockets.
pub fn start(
    endpoints: &[Endpoint],
    threads: usize,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EngineError> {
    if endpoints.is_empty() {
        return Ok(());
    }
    for i in 0..threads.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EngineError::Worker)?;
        let sockets = {
            let _in_runtime = rt.enter();
            endpoints
                .iter()
                .map(|e| {
                    bind(e.addr)
                        .map(|s| (s, e.app.clone()))
                        .map_err(|source| EngineError::Bind {
                            listener: e.app.name().to_string(),
                            addr: e.addr,
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("berth-worker-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    for (socket, app) in sockets {
                        tokio::spawn(accept_loop(socket, app, shutdown.clone()));
                    }
                    // Connections go on after the listening sockets close; the process ends
                    // them.
                    std::future::pending::<()>().await;
                })
            })
            .map_err(EngineError::Worker)?;
    }
    Ok(())
}

/// A listening socket that shares its port with the other workers' (`SO_REUSEPORT`).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(socket: TcpListener, app: App, mut shutdown: ShutdownWatch) {
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => app.serve(stream, peer, &shutdown),
                Err(e) => {
                    tracing::warn!(listener = %app.name(), error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!(listener = %app.name(), "stopped accepting");
}

/// Passes pingora's shutdown (SIGTERM) on to the workers.
#[derive(Debug)]
pub struct ShutdownRelay(pub watch::Sender<bool>);

#[async_trait]
impl BackgroundService for ShutdownRelay {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let _ = self.0.send(true);
    }
}
