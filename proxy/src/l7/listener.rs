//! An HTTP listener: serves each client connection accepted by the engine's worker
//! threads with hyper — TLS (rustls) on https listeners, HTTP/1.1, and HTTP/2 by
//! ALPN or prior knowledge (h2c) where the listener enables it. Per connection it applies what
//! hyper leaves to the server:
//!
//! - the listener's `max_connections`: connections beyond it are closed at once and counted;
//! - the PROXY protocol header where the listener accepts one (the original client and the VPC
//!   endpoint ID);
//! - `header_timeout` for the TLS handshake and every request head (the first from the accept
//!   on), counted as a rejected connection, and `idle_timeout` between requests;
//! - closing idle connections on shutdown (SIGTERM) and letting busy ones finish their request;
//! - counting the requests hyper refuses itself (431 for an oversized head, 400 for a malformed
//!   one);
//! - tunnelling a connection whose request was upgraded (WebSocket, see [`super::upgrade`]) in
//!   its own task once hyper has written the `101`, under the listener's `idle_timeout`.
//!
//! Requests themselves go to [`super::proxy::handle`]. Pipelined HTTP/1.1 requests are read
//! and answered one after another, in order.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics::Counter;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::body::DownBody;
use super::conn::{Activity, ClientConn, Step};
use super::upgrade;
use crate::conn::limit::ConnectionLimit;
use crate::conn::proxy_header::accept_proxy_header;
use crate::metrics::{self as m, ListenerMetrics};
use crate::runtime::ProxyState;
use crate::target::now_ms;
use crate::tls::LiveAcceptor;

/// How long an idle HTTP/2 connection may take to wind down after its GOAWAY.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long an HTTP/1.1 connection stays idle with hyper's buffers before it is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// About what a parked connection frees: hyper's read and write buffers.
const PARKED_BYTES: u64 = 16 * 1024;

/// How [`HttpListener::drive`] polls a connection (with or without shutting its stream down).
type PollFn<C, E> = fn(Pin<&mut C>, &mut Context<'_>) -> Poll<Result<(), E>>;

/// How a hyper connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed, or to be closed.
    Done,
    /// Idle: hyper let go of it; the connection waits for its next request without buffers.
    Parked,
}

/// The app of one HTTP or HTTPS listener.
pub struct HttpListener {
    name: String,
    scheme: &'static str,
    shared: Arc<ProxyState>,
    metrics: Arc<ListenerMetrics>,
    limit: ConnectionLimit,
    over_limit: Counter,
    header_timeouts: Counter,
    tls_failures: Counter,
    tls: Option<Arc<LiveAcceptor>>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpListener {
    /// The app of listener `name`; with a (live) TLS acceptor it is an https listener.
    pub fn new(
        name: &str,
        shared: Arc<ProxyState>,
        tls: Option<Arc<LiveAcceptor>>,
    ) -> HttpListener {
        let rejected = |reason: &'static str| metrics::counter!(m::REJECTED_CONNECTIONS, "listener" => name.to_string(), "reason" => reason);
        HttpListener {
            name: name.to_string(),
            shared,
            metrics: Arc::new(ListenerMetrics::new(name)),
            limit: ConnectionLimit::default(),
            over_limit: rejected("connection_limit"),
            header_timeouts: rejected("header_timeout"),
            tls_failures: rejected("tls_handshake"),
            scheme: if tls.is_some() { "https" } else { "http" },
            tls,
        }
    }
}

impl Settings {
    /// hyper's read buffer limit: room for the largest head the listener accepts (hyper's
    /// minimum is 8 KiB).
    fn max_buf(&self) -> usize {
        self.max_header_bytes.saturating_add(1).max(8192)
    }
}

impl HttpListener {
    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What each stage of serving one connection works with: its activity (requests in flight,
/// last use), the listener settings taken at accept, and the shutdown signal.
#[derive(Clone, Copy)]
struct Serving<'a> {
    activity: &'a Activity,
    /// The connection, for the access log line of a request hyper refuses.
    conn: &'a ClientConn,
    s: Settings,
    shutdown: &'a ShutdownWatch,
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

impl HttpListener {
    /// Serves one accepted TCP connection until it closes: admission, PROXY header, TLS, then
    /// HTTP.
    pub async fn serve_tcp(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        shutdown: ShutdownWatch,
    ) {
        let snap = self.shared.current.load_full();
        let Some(listener) = snap.listener(&self.name) else {
            return;
        };
        let Some(_admitted) = self.limit.admit(listener.max_connections) else {
            self.over_limit.increment(1);
            return;
        };
        // Responses are written whole; Nagle would only hold back their last segment.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let mut client_ip = Some(peer.ip());
        let mut client_addr = Some(peer);
        let mut vpce_id = None;
        if listener.proxy_protocol.is_some() {
            let Ok(info) = accept_proxy_header(listener, &self.name, &mut stream, Some(peer)).await
            else {
                return;
            };
            if let Some(info) = info {
                // The PROXY header's client replaces the load balancer's address everywhere.
                if let Some(src) = info.source {
                    client_ip = Some(src.ip());
                    client_addr = Some(src);
                }
                vpce_id = info.vpce_id;
            }
        }
        let mut settings = Settings {
            idle: listener.idle_timeout,
            header: listener.header_timeout,
            max_header_bytes: listener.max_header_bytes,
            protocols: if listener.http2 {
                Protocols::Either
            } else {
                Protocols::Http1
            },
        };
        drop(snap);
        let conn = |client_ip, vpce_id, client_cert, tls| {
            let mut c = ClientConn::new(
                self.name.clone(),
                self.scheme,
                Arc::clone(&self.shared),
                Arc::clone(&self.metrics),
                client_ip,
                local.map(|a| a.port()),
                vpce_id,
            );
            c.client_cert = client_cert;
            c.client_addr = client_addr;
            c.tls = tls;
            Arc::new(c)
        };
        match &self.tls {
            None => {
                let conn = conn(client_ip, vpce_id, None, None);
                // Each kind of connection in its own allocation, sized to it: a plain
                // connection's task does not carry room for a TLS one.
                Box::pin(self.serve(stream, conn, settings, &shutdown)).await;
            }
            Some(live) => {
                // The certificates of the moment: a reload swaps them for later handshakes.
                let current = live.current();
                // The handshake counts toward the first request's header timeout.
                let handshake = Box::pin(current.accept(stream));
                let tls = match tokio::time::timeout(settings.header, handshake).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        match crate::tls::mtls::refusal_reason(&e) {
                            Some(reason) => metrics::counter!(m::REJECTED_CONNECTIONS, "listener" => self.name.clone(), "reason" => reason).increment(1),
                            None => self.tls_failures.increment(1),
                        }
                        tracing::debug!(listener = %self.name, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        self.header_timeouts.increment(1);
                        return;
                    }
                };
                // HTTP/2 only when ALPN chose it (no prior knowledge over TLS).
                settings.protocols = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Protocols::Http2
                } else {
                    Protocols::Http1
                };
                let client_cert = current.client_cert_headers(tls.get_ref().1);
                drop(current);
                let facts = crate::access_log::TlsFacts::of(tls.get_ref().1);
                let conn = conn(client_ip, vpce_id, client_cert, Some(facts));
                Box::pin(self.serve(tls, conn, settings, &shutdown)).await;
            }
        }
    }

    /// Serves one connection until it closes.
    async fn serve<S>(
        &self,
        stream: S,
        conn: Arc<ClientConn>,
        s: Settings,
        shutdown: &ShutdownWatch,
    ) where
        S: AsyncRead + AsyncWrite + Readable + Unpin + Send + 'static,
    {
        let activity = Arc::clone(&conn.activity);
        let mut io = CountingIo {
            inner: stream,
            activity: Arc::clone(&activity),
            prefix: Bytes::new(),
        };
        let log_conn = Arc::clone(&conn);
        if s.protocols != Protocols::Http1 {
            let serving = Serving {
                activity: &activity,
                conn: &log_conn,
                s,
                shutdown,
            };
            Box::pin(self.serve_auto(io, conn, serving)).await;
            return;
        }
        let serving = Serving {
            activity: &activity,
            conn: &log_conn,
            s,
            shutdown,
        };
        // HTTP/1.1: hyper serves the connection while requests come; once it has been idle for
        // PARK_AFTER, hyper lets go of it (its read and write buffers are freed) and the
        // connection waits here holding only its socket until the next request's first byte.
        loop {
            // Boxed: hyper's connection state is allocated while it serves and freed when the
            // connection parks.
            let (ended, back, buffered) =
                Box::pin(self.serve_h1(io, Arc::clone(&conn), serving)).await;
            io = back;
            if let Some(pending) = conn.upgrade.take() {
                // The last response was a `101`: hyper let go of the connection after writing
                // it; what it had read beyond the request belongs to the tunnel.
                Box::pin(upgrade::relay(io, buffered, pending, s.idle, &conn)).await;
                return;
            }
            if ended != Ended::Parked {
                let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, io.shutdown()).await;
                return;
            }
            crate::heap::note_freed(PARKED_BYTES);
            tracing::trace!(listener = %self.name, buffered = buffered.len(), "connection parked");
            // Bytes hyper had read but not used yet (rare: part of a next request); copied so
            // that hyper's whole read buffer is freed.
            io.prefix = if buffered.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&buffered)
            };
            drop(buffered);
            if io.prefix.is_empty() && !self.await_request(&io, serving).await {
                return;
            }
        }
    }

    /// Serves an HTTP/2 connection, or one that may start with the HTTP/2 preface (h2c).
    async fn serve_auto<S>(&self, io: CountingIo<S>, conn: Arc<ClientConn>, serving: Serving<'_>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let s = serving.s;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if s.protocols == Protocols::Http2 {
            builder = builder.http2_only();
        }
        builder
            .http1()
            .header_read_timeout(None)
            .max_buf_size(s.max_buf());
        // With upgrades: after a `101` hyper hands the connection to the request's upgrade.
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(io), Handler(Arc::clone(&conn)));
        let connection = std::pin::pin!(connection);
        self.drive(
            connection,
            |c, cx| c.poll(cx),
            |c| c.graceful_shutdown(),
            None,
            serving,
        )
        .await;
        let Some(mut pending) = conn.upgrade.take() else {
            return;
        };
        let Some(client) = pending.take_client() else {
            return;
        };
        match client.await {
            Ok(io) => {
                let io = TokioIo::new(io);
                Box::pin(upgrade::relay(io, Bytes::new(), pending, s.idle, &conn)).await;
            }
            Err(e) => {
                tracing::debug!(listener = %self.name, error = %e, "upgraded connection lost before the tunnel");
            }
        }
    }

    /// Serves HTTP/1.1 requests with hyper until the connection ends or parks; gives the
    /// stream back with what hyper had read of it but not used.
    async fn serve_h1<S>(
        &self,
        io: CountingIo<S>,
        conn: Arc<ClientConn>,
        serving: Serving<'_>,
    ) -> (Ended, CountingIo<S>, Bytes)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let s = serving.s;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            // Heads beyond the listener's limit are refused by hyper with 431; berth times
            // heads itself (hyper's header timer would also cut idle keep-alive waits).
            .header_read_timeout(None)
            .max_header_size(s.max_header_bytes)
            .max_buf_size(s.max_buf());
        let mut connection = builder.serve_connection(TokioIo::new(io), Handler(conn));
        let ended = self
            .drive(
                Pin::new(&mut connection),
                |c, cx| c.get_mut().poll_without_shutdown(cx),
                |c| c.graceful_shutdown(),
                Some(PARK_AFTER),
                serving,
            )
            .await;
        let parts = connection.into_parts();
        (ended, parts.io.into_inner(), parts.read_buf)
    }

    /// Waits, holding no buffer, for the next request's first byte on a parked connection;
    /// false when the connection should close instead (idle timeout, shutdown, error).
    async fn await_request<S: Readable>(&self, io: &CountingIo<S>, serving: Serving<'_>) -> bool {
        let Serving {
            activity,
            s,
            shutdown,
            ..
        } = serving;
        let mut shut = shutdown.clone();
        if *shut.borrow() {
            return false;
        }
        let now = now_ms();
        let idle_left = activity
            .idle_deadline(s.idle.as_millis() as u64)
            .saturating_sub(now);
        tokio::select! {
            r = io.inner.readable() => r.is_ok(),
            () = tokio::time::sleep(Duration::from_millis(idle_left)) => false,
            _ = shut.changed() => false,
        }
    }

    /// Runs a hyper connection until it ends or is parked, applying the header and idle
    /// timeouts and shutdown; counts what hyper refused.
    async fn drive<C, E>(
        &self,
        mut connection: Pin<&mut C>,
        poll: PollFn<C, E>,
        graceful: fn(Pin<&mut C>),
        park_after: Option<Duration>,
        serving: Serving<'_>,
    ) -> Ended
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Serving {
            activity,
            conn,
            s,
            shutdown,
        } = serving;
        let (idle_ms, header_ms) = (s.idle.as_millis() as u64, s.header.as_millis() as u64);
        let park_ms = park_after.map(|p| p.as_millis() as u64);
        let mut shut = shutdown.clone();
        let mut draining = *shut.borrow();
        if draining {
            graceful(connection.as_mut());
        }
        // Whether a graceful shutdown was asked for, and why.
        let mut winding_down: Option<Ended> = None;
        let first = match activity.step(now_ms(), idle_ms, header_ms, park_ms) {
            Step::WaitUntil(at) => at.saturating_sub(now_ms()),
            _ => 0,
        };
        let sleep = tokio::time::sleep(Duration::from_millis(first));
        tokio::pin!(sleep);
        let result = loop {
            tokio::select! {
                r = std::future::poll_fn(|cx| poll(connection.as_mut(), cx)) => break r,
                _ = shut.changed(), if !draining => {
                    // SIGTERM: idle connections close now, busy ones after their response.
                    draining = true;
                    winding_down = Some(Ended::Done);
                    graceful(connection.as_mut());
                }
                () = sleep.as_mut() => {
                    let now = now_ms();
                    match activity.step(now, idle_ms, header_ms, park_ms) {
                        Step::WaitUntil(at) => {
                            let wait = Duration::from_millis(at.saturating_sub(now).max(1));
                            sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                        }
                        Step::HeaderTimeout => {
                            self.header_timeouts.increment(1);
                            tracing::debug!(listener = %self.name, "request head not complete within header_timeout; closed");
                            return Ended::Done;
                        }
                        Step::Park | Step::Idle if winding_down.is_some() => return Ended::Done,
                        step => {
                            winding_down = Some(if step == Step::Park && !draining {
                                Ended::Parked
                            } else {
                                Ended::Done
                            });
                            graceful(connection.as_mut());
                            sleep.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                        }
                    }
                }
            }
        };
        match result {
            Ok(()) => winding_down.unwrap_or(Ended::Done),
            Err(e) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                self.count_refused(e.as_ref(), conn);
                Ended::Done
            }
        }
    }

    /// Counts a request hyper refused itself (it wrote the 431 or 400).
    fn count_refused(&self, e: &(dyn std::error::Error + 'static), conn: &ClientConn) {
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
        super::access::refused(&self.shared.current.load(), conn, status, reason);
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
        Box::pin(async move {
            let mut resp = super::proxy::handle(Arc::clone(&conn), req).await;
            super::response_headers::apply_for(&conn, resp.headers_mut());
            Ok(resp)
        })
    }
}

/// The client stream, telling the connection's [`Activity`] when bytes arrive (a new request
/// head begins); `prefix` holds bytes a parked hyper connection had read but not used.
struct CountingIo<S> {
    inner: S,
    activity: Arc<Activity>,
    prefix: Bytes,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

/// A stream that can wait for incoming bytes without reading them (so without a buffer).
pub trait Readable {
    /// Resolves when bytes (or the peer's close) can be read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl Readable for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        TcpStream::readable(self)
    }
}

impl Readable for pingora::tls::ServerTlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        // A parked connection's TLS layer holds no unread plaintext: hyper read until it had
        // to wait before it was parked.
        self.get_ref().0.readable()
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
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
