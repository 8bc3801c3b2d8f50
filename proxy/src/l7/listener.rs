//! An HTTP listener: a pingora `ServerApp` (pingora accepts, terminates TLS and runs graceful
//! shutdown) that serves each client connection with hyper — HTTP/1.1, and HTTP/2 by ALPN or
//! prior knowledge (h2c) where the listener enables it. Per connection it applies what hyper
//! leaves to the server:
//!
//! - the listener's `max_connections`: connections beyond it are closed at once and counted;
//! - the PROXY protocol header where the listener accepts one (the original client and the VPC
//!   endpoint ID);
//! - `header_timeout` for every request head (the first from the accept on), counted as a
//!   rejected connection, and `idle_timeout` between requests;
//! - closing idle connections on shutdown (SIGTERM) and letting busy ones finish their request;
//! - counting the requests hyper refuses itself (431 for an oversized head, 400 for a malformed
//!   one).
//!
//! Requests themselves go to [`super::proxy::handle`]. Pipelined HTTP/1.1 requests are read
//! and answered one after another, in order.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics::Counter;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::protocols::ALPN;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::DownBody;
use super::conn::{Activity, ClientConn, Step};
use crate::l4::tcp::{accept_proxy_header, stream_addrs};
use crate::limit::ConnectionLimit;
use crate::metrics::{self as m, ListenerMetrics};
use crate::runtime::Shared;
use crate::target::now_ms;

/// How long an idle HTTP/2 connection may take to wind down after its GOAWAY.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The app of one HTTP or HTTPS listener.
#[derive(Debug)]
pub struct HttpListener {
    name: String,
    scheme: &'static str,
    shared: Arc<Shared>,
    metrics: Arc<ListenerMetrics>,
    limit: ConnectionLimit,
    over_limit: Counter,
    header_timeouts: Counter,
}

impl HttpListener {
    /// The app of listener `name`; `scheme` is `http` or `https`.
    pub fn new(name: &str, scheme: &'static str, shared: Arc<Shared>) -> HttpListener {
        let rejected = |reason: &'static str| metrics::counter!(m::REJECTED_CONNECTIONS, "listener" => name.to_string(), "reason" => reason);
        HttpListener {
            name: name.to_string(),
            scheme,
            shared,
            metrics: Arc::new(ListenerMetrics::new(name)),
            limit: ConnectionLimit::default(),
            over_limit: rejected("connection_limit"),
            header_timeouts: rejected("header_timeout"),
        }
    }
}

/// The listener settings one connection runs with (taken at accept).
#[derive(Debug, Clone, Copy)]
struct Settings {
    idle: Duration,
    header: Duration,
    max_header_bytes: usize,
    /// Which protocols to speak.
    protocols: Protocols,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocols {
    Http1,
    Http2,
    /// Plain listener with `http2`: HTTP/2 if the client starts with its preface (h2c).
    Either,
}

#[async_trait]
impl ServerApp for HttpListener {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let snap = self.shared.snapshot.load_full();
        let listener = snap.listener(&self.name)?;
        let Some(_admitted) = self.limit.admit(listener.max_connections) else {
            self.over_limit.increment(1);
            return None;
        };
        let (peer, local) = stream_addrs(&stream);
        let mut client_ip = peer.map(|p| p.ip());
        let mut vpce_id = None;
        if listener.proxy_protocol.is_some() {
            let info = accept_proxy_header(listener, &self.name, &mut stream, peer)
                .await
                .ok()?;
            if let Some(info) = info {
                // The PROXY header's client replaces the load balancer's address everywhere.
                if let Some(src) = info.source {
                    client_ip = Some(src.ip());
                }
                vpce_id = info.vpce_id;
            }
        }
        let tls = stream.get_ssl_digest().is_some();
        let protocols = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            Protocols::Http2
        } else if listener.http2 && !tls {
            Protocols::Either
        } else {
            Protocols::Http1
        };
        let settings = Settings {
            idle: listener.idle_timeout,
            header: listener.header_timeout,
            max_header_bytes: listener.max_header_bytes,
            protocols,
        };
        drop(snap);
        let conn = Arc::new(ClientConn::new(
            self.name.clone(),
            self.scheme,
            Arc::clone(&self.shared),
            Arc::clone(&self.metrics),
            client_ip,
            local.map(|a| a.port()),
            vpce_id,
        ));
        self.serve(stream, conn, settings, shutdown).await;
        None
    }
}

impl HttpListener {
    /// Serves one connection until it closes.
    async fn serve(
        &self,
        stream: Stream,
        conn: Arc<ClientConn>,
        s: Settings,
        shutdown: &ShutdownWatch,
    ) {
        let activity = Arc::clone(&conn.activity);
        let io = TokioIo::new(CountingIo {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder = match s.protocols {
            Protocols::Http1 => builder.http1_only(),
            Protocols::Http2 => builder.http2_only(),
            Protocols::Either => builder,
        };
        builder
            .http1()
            // berth times heads itself (hyper's timer would also cut idle keep-alive waits).
            .header_read_timeout(None)
            // Heads beyond this hyper refuses with 431 itself; smaller ones over the
            // listener's limit get berth's 431.
            .max_buf_size(s.max_header_bytes.saturating_add(1).max(8192))
            .max_headers(256);
        let connection = builder.serve_connection(io, Handler(conn));
        tokio::pin!(connection);

        let (idle_ms, header_ms) = (s.idle.as_millis() as u64, s.header.as_millis() as u64);
        let mut shut = shutdown.clone();
        let mut draining = *shut.borrow();
        if draining {
            connection.as_mut().graceful_shutdown();
        }
        let mut closing_idle = false;
        let sleep = tokio::time::sleep(s.header.min(s.idle));
        tokio::pin!(sleep);
        let failed = loop {
            tokio::select! {
                r = connection.as_mut() => break r.err(),
                _ = shut.changed(), if !draining => {
                    // SIGTERM: idle connections close now, busy ones after their response.
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = sleep.as_mut() => {
                    let now = now_ms();
                    match activity.step(now, idle_ms, header_ms) {
                        Step::WaitUntil(at) => {
                            let wait = Duration::from_millis(at.saturating_sub(now).max(1));
                            sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                        }
                        Step::HeaderTimeout => {
                            self.header_timeouts.increment(1);
                            tracing::debug!(listener = %self.name, "request head not complete within header_timeout; closed");
                            break None;
                        }
                        Step::Idle if closing_idle => break None,
                        Step::Idle => {
                            closing_idle = true;
                            connection.as_mut().graceful_shutdown();
                            sleep.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                        }
                    }
                }
            }
        };
        if let Some(e) = failed {
            self.count_refused(e.as_ref());
        }
    }

    /// Counts a request hyper refused itself (it wrote the 431 or 400).
    fn count_refused(&self, e: &(dyn std::error::Error + 'static)) {
        let Some(e) = e.downcast_ref::<hyper::Error>() else {
            tracing::debug!(listener = %self.name, error = %e, "connection ended with an error");
            return;
        };
        let (status, reason) = if e.is_parse_too_large() {
            (431, "header_too_large")
        } else if e.is_parse() {
            (400, "bad_request")
        } else {
            tracing::debug!(listener = %self.name, error = %e, "connection ended with an error");
            return;
        };
        self.metrics.requests("").count(status, false);
        self.metrics.proxy_response(reason);
    }
}

/// The hyper service of one connection: each request goes to the proxy. Its future is boxed so
/// that hyper's per-connection slot for it stays small while the connection is idle.
#[derive(Debug, Clone)]
struct Handler(Arc<ClientConn>);

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response<DownBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<DownBody>;
    type Error = Infallible;
    type Future = HandlerFuture;

    fn call(&self, req: Request<Incoming>) -> HandlerFuture {
        let conn = Arc::clone(&self.0);
        Box::pin(async move { Ok(super::proxy::handle(conn, req).await) })
    }
}

/// The client stream, telling the connection's [`Activity`] when bytes arrive (a new request
/// head begins).
struct CountingIo {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
