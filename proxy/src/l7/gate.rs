//! The gate in front of every HTTP listener: a pingora `ServerApp` wrapper that owns each client
//! connection from accept to close and applies what pingora's HTTP app does not:
//!
//! - the listener's `max_connections`: connections beyond it are closed at once and counted,
//!   so a flood of new connections cannot take resources from established ones;
//! - the PROXY protocol header where the listener accepts one: the original client and the VPC
//!   endpoint ID are recorded by the socket's kernel cookie, and berth's `ProxyHttp` takes the
//!   client address from there for X-Forwarded-For, source-CIDR rules, hashing and logs;
//! - `header_timeout` for the first request's head (pingora's own is a fixed 60 s): a
//!   connection whose head is not complete in time is closed and counted (slowloris). On TLS
//!   listeners pingora's own header timeout applies.
//!
//! Keep-alive requests after the first are bounded by the listener's idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use metrics::Counter;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::protocols::ALPN;
use pingora::server::ShutdownWatch;

use crate::l4::tcp::{accept_proxy_header, stream_addrs};
use crate::limit::ConnectionLimit;
use crate::metrics as m;
use crate::runtime::Shared;

/// What a connection's PROXY header said that requests need.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The original client.
    pub source: Option<SocketAddr>,
    /// The VPC endpoint ID.
    pub vpce_id: Option<String>,
}

/// Per connection (by kernel socket cookie): what its PROXY header said.
fn conn_map() -> &'static Mutex<HashMap<u64, ConnInfo>> {
    static MAP: OnceLock<Mutex<HashMap<u64, ConnInfo>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What the PROXY header of the connection with this socket cookie said.
pub fn conn_info(cookie: u64) -> Option<ConnInfo> {
    conn_map().lock().ok()?.get(&cookie).cloned()
}

fn cookie(stream: &Stream) -> Option<u64> {
    stream
        .get_socket_digest()
        .and_then(|d| d.socket_cookie().ok())
        .filter(|c| *c != 0)
}

/// Wraps the HTTP app of one listener.
#[derive(Debug)]
pub struct HttpGate<A> {
    inner: Arc<A>,
    listener: String,
    shared: Arc<Shared>,
    limit: ConnectionLimit,
    over_limit: Counter,
    header_timeouts: Counter,
}

impl<A> HttpGate<A> {
    /// The gate of listener `listener` in front of `inner`.
    pub fn new(inner: A, listener: &str, shared: Arc<Shared>) -> HttpGate<A> {
        let rejected = |reason: &'static str| metrics::counter!(m::REJECTED_CONNECTIONS, "listener" => listener.to_string(), "reason" => reason);
        HttpGate {
            inner: Arc::new(inner),
            listener: listener.to_string(),
            shared,
            limit: ConnectionLimit::default(),
            over_limit: rejected("connection_limit"),
            header_timeouts: rejected("header_timeout"),
        }
    }
}

/// The client closed (or broke) the connection before its first request head was complete.
struct Closed;

/// Reads the first request's head (until its blank line, `limit` bytes, or the client's
/// close) and puts it back into the stream for the HTTP app to parse. Only plain TCP streams can
/// be replayed; others pass through untouched.
async fn await_head(stream: Stream, limit: usize) -> Result<Stream, Closed> {
    use tokio::io::AsyncReadExt;
    let mut tcp = match stream.into_any().downcast::<L4Stream>() {
        Ok(tcp) => tcp,
        Err(_) => {
            // `into_any` consumed a stream that is not plain TCP; that cannot happen for the
            // streams this is called with (TLS is checked by the caller).
            return Err(Closed);
        }
    };
    // On the heap (not in this future, which would make every connection's task larger).
    let mut head = bytes::BytesMut::with_capacity(2048);
    loop {
        if head.capacity() == head.len() {
            head.reserve(4096);
        }
        let from = head.len().saturating_sub(3);
        let n = tcp.read_buf(&mut head).await.map_err(|_| Closed)?;
        if n == 0 {
            if head.is_empty() {
                return Err(Closed);
            }
            break;
        }
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= limit {
            break;
        }
    }
    tcp.rewind(&head);
    Ok(tcp as Stream)
}

/// Waits, between keep-alive requests, for the next request's first byte (or the idle
/// timeout, or shutdown). The wait happens here rather than inside pingora's per-request task,
/// whose state is tens of kilobytes: an idle keep-alive connection then holds only its stream.
/// Returns false when the connection should close.
async fn await_next_request(
    stream: &mut Stream,
    idle: std::time::Duration,
    shutdown: &ShutdownWatch,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut shut = shutdown.clone();
    let mut one = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(idle, stream.try_peek(&mut one)) => matches!(r, Ok(Ok(true))),
        _ = shut.changed() => false,
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> HttpGate<A> {
    /// Serves one connection's requests. HTTP/1 keep-alive is driven here rather than by
    /// pingora's own loop, so that between requests the connection waits in this small
    /// future: pingora's per-request state (tens of KiB) is freed when each request ends, and
    /// an idle keep-alive connection holds little more than its socket. HTTP/2 (h2c or ALPN)
    /// goes to pingora whole.
    async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        idle: std::time::Duration,
        shutdown: &ShutdownWatch,
    ) {
        let options = self.inner.server_options();
        let h2 = options.is_some_and(|o| o.h2c)
            || matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 {
            let _ = ServerApp::process_new(&self.inner, stream, shutdown).await;
            return;
        }
        let plain = stream.get_ssl_digest().is_none();
        let mut session = ServerSession::new_http1(stream);
        // As pingora does: no reuse once shutting down; the first request's keep-alive timeout
        // is replaced per request by the listener's idle timeout (in the proxy).
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((mut stream, persistent)) = result.map(|r| r.consume()) {
            if plain && !await_next_request(&mut stream, idle, shutdown).await {
                break;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent {
                p.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for HttpGate<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let snap = self.shared.snapshot.load_full();
        let listener = snap.listener(&self.listener)?;
        let Some(_admitted) = self.limit.admit(listener.max_connections) else {
            self.over_limit.increment(1);
            return None;
        };
        let key = cookie(&stream);
        if listener.proxy_protocol.is_some() {
            let (peer, _) = stream_addrs(&stream);
            let info = accept_proxy_header(listener, &self.listener, &mut stream, peer)
                .await
                .ok()?;
            let conn = ConnInfo {
                source: info.as_ref().and_then(|i| i.source),
                vpce_id: info.and_then(|i| i.vpce_id),
            };
            match (key, conn_map().lock()) {
                (Some(k), Ok(mut m)) => {
                    m.insert(k, conn);
                }
                _ => {
                    tracing::warn!(listener = %self.listener, "no socket cookie; PROXY header information dropped");
                }
            }
        }
        let outcome = if stream.get_ssl_digest().is_some() {
            // TLS: the handshake was pingora's; the head cannot be replayed into the stream.
            Some(stream)
        } else {
            let head = await_head(stream, listener.max_header_bytes + 1);
            match tokio::time::timeout(listener.header_timeout, head).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(Closed)) => None,
                Err(_) => {
                    self.header_timeouts.increment(1);
                    tracing::debug!(listener = %self.listener, "request head not complete within header_timeout; closed");
                    None
                }
            }
        };
        let idle = listener.idle_timeout;
        drop(snap);
        // The whole connection runs here, keep-alive requests included, so the count and the
        // PROXY record live exactly as long as the connection.
        if let Some(stream) = outcome {
            self.serve(stream, idle, shutdown).await;
        }
        if let (Some(k), Ok(mut m)) = (key, conn_map().lock()) {
            m.remove(&k);
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}
