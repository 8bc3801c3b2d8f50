//! [`Sender`]: one request's way to a target, over an HTTP/1.1 connection of its own or a
//! stream of a shared, multiplexed HTTP/2 connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::body::UpBody;
use super::dial::UpstreamIo;
use super::ConnectError;

/// Streams one HTTP/2 connection carries at once before another is opened: the least a
/// server should allow (RFC 9113 section 6.5.2 recommends no less than 100).
pub const MAX_STREAMS_PER_CONNECTION: usize = 100;

/// What the requests of one HTTP/2 connection share: their count, and whether the target
/// ever answered on it (a connection that fails before any answer did not speak HTTP/2).
#[derive(Debug)]
pub struct H2Conn {
    streams: AtomicUsize,
    answered: AtomicBool,
    addr: SocketAddr,
    tls: bool,
}

impl H2Conn {
    /// Streams in use now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Whether any response came on this connection.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }
}

/// One stream slot of a shared HTTP/2 connection; the slot is given back when dropped.
#[derive(Debug)]
pub struct H2Stream {
    tx: http2::SendRequest<UpBody>,
    conn: Arc<H2Conn>,
}

impl H2Stream {
    /// Takes a slot of `conn` (counted until this is dropped).
    pub fn new(tx: http2::SendRequest<UpBody>, conn: Arc<H2Conn>) -> H2Stream {
        conn.streams.fetch_add(1, Ordering::Relaxed);
        H2Stream { tx, conn }
    }

    /// The connection this stream belongs to.
    pub fn conn(&self) -> &Arc<H2Conn> {
        &self.conn
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.conn.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A way to send one request to a target.
#[derive(Debug)]
pub enum Sender {
    /// An HTTP/1.1 connection (one request at a time; pooled when idle).
    H1(http1::SendRequest<UpBody>),
    /// A stream of a shared HTTP/2 connection.
    H2(H2Stream),
}

impl Sender {
    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.tx.is_closed(),
        }
    }

    /// Whether a request can be sent now.
    pub fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.tx.is_ready(),
        }
    }

    /// Waits until a request can be sent (the previous HTTP/1.1 response ended).
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.tx.ready().await,
        }
    }

    /// What a failed send means ([`classify_h2`] for HTTP/2, [`classify_h1`] for HTTP/1.1).
    pub fn failure(&self, err: &hyper::Error) -> SendFailure {
        match self {
            Sender::H1(_) => classify_h1(err),
            Sender::H2(s) => classify_h2(err, s.conn.answered()),
        }
    }

    /// Whether this is an HTTP/2 stream.
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// Sends `req`. HTTP/2 requests are put in the form HTTP/2 needs (absolute URI whose
    /// authority is the `Host` header, or the target's address). When the request could not
    /// be sent at all, the error gives it back ([`TrySendError::take_message`]).
    pub async fn send(
        &mut self,
        mut req: Request<UpBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpBody>>> {
        match self {
            Sender::H1(s) => {
                *req.version_mut() = Version::HTTP_11;
                s.try_send_request(req).await
            }
            Sender::H2(s) => {
                h2_form(&mut req, s.conn.addr, s.conn.tls);
                let r = s.tx.try_send_request(req).await;
                if r.is_ok() {
                    s.conn.answered.store(true, Ordering::Relaxed);
                }
                r
            }
        }
    }
}

/// Rewrites an origin-form HTTP/1.1 request for HTTP/2: version 2, scheme and authority in
/// the URI (from `Host`, or the target address), no `Host` field.
fn h2_form(req: &mut Request<UpBody>, addr: SocketAddr, tls: bool) {
    *req.version_mut() = Version::HTTP_2;
    let host = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or_else(|| addr.to_string());
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let scheme = if tls { "https" } else { "http" };
    if let Ok(u) = Uri::builder()
        .scheme(scheme)
        .authority(host.as_str())
        .path_and_query(pq)
        .build()
    {
        *req.uri_mut() = u;
    } else if let Ok(v) = HeaderValue::from_str(&host) {
        // Not expected (the parts were checked); keep the request sendable as it was.
        req.headers_mut().insert(header::HOST, v);
    }
}

/// Starts HTTP on a dialled connection: HTTP/2 (prior knowledge, or as ALPN chose) when `h2`,
/// HTTP/1.1 otherwise. The connection's I/O runs in a task of the current runtime until it
/// closes (by either side, or once every sender of it is dropped). HTTP/2 answers with the
/// connection's shared state, for the pool.
pub async fn handshake(
    io: UpstreamIo,
    h2: bool,
    addr: SocketAddr,
) -> Result<Handshaken, ConnectError> {
    let tls = io.is_tls();
    if h2 {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake::<_, UpBody>(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target = %addr, error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        let shared = Arc::new(H2Conn {
            streams: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            addr,
            tls,
        });
        Ok(Handshaken::H2(tx, shared))
    } else {
        let (tx, conn) = http1::Builder::new()
            .handshake::<_, UpBody>(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Handshaken::H1(tx))
    }
}

/// A connection after its HTTP handshake.
#[derive(Debug)]
pub enum Handshaken {
    /// HTTP/1.1: the connection's sender.
    H1(http1::SendRequest<UpBody>),
    /// HTTP/2: a sender (cloned for each stream) and the connection's shared state.
    H2(http2::SendRequest<UpBody>, Arc<H2Conn>),
}

/// Why a request sent to a target failed, from hyper's error: what berth answers and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The target reset the stream with REFUSED_STREAM, or went away (GOAWAY) without
    /// processing it: the request never ran and may go to another target whatever its method.
    Unprocessed,
    /// The target reset the stream (RST_STREAM), went away with an error (GOAWAY), or closed
    /// the connection under a stream it had accepted.
    Reset,
    /// The target broke HTTP/2 (or never spoke it).
    Protocol,
    /// HTTP/1.1: the target reset the connection (TCP RST) before any byte of its answer. Its
    /// kernel threw away request bytes the application never read: a listener closed with the
    /// connection still in its accept queue (an app stopping), or an idle keep-alive connection
    /// closed as the request arrived. The request may go to another target whatever its method.
    Unread,
    /// An HTTP/1.1 failure (the connection closed, I/O errors).
    Other,
}

impl SendFailure {
    /// The reason counted in `berth_proxy_responses_total`.
    pub fn reason(self) -> &'static str {
        match self {
            SendFailure::Unprocessed | SendFailure::Reset | SendFailure::Unread => "upstream_reset",
            SendFailure::Protocol => "upstream_protocol",
            SendFailure::Other => "upstream_error",
        }
    }
}

/// What an h2 error says about who ended a stream, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Failure {
    /// The target sent it: RST_STREAM (`reset`) or GOAWAY (`go_away`).
    pub remote: bool,
    /// A RST_STREAM.
    pub reset: bool,
    /// A GOAWAY.
    pub go_away: bool,
    /// berth's side found the target breaking the protocol.
    pub library: bool,
    /// The HTTP/2 error code.
    pub reason: Option<h2::Reason>,
}

impl H2Failure {
    fn of(e: &h2::Error) -> H2Failure {
        H2Failure {
            remote: e.is_remote(),
            reset: e.is_reset(),
            go_away: e.is_go_away(),
            library: e.is_library(),
            reason: e.reason(),
        }
    }
}

/// Classifies a failed HTTP/1.1 send: a connection reset under the request, before any answer,
/// is [`SendFailure::Unread`]; anything else (a close, a timeout, a malformed answer) is `Other`.
pub fn classify_h1(err: &hyper::Error) -> SendFailure {
    let reset = std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .filter_map(|e| e.downcast_ref::<std::io::Error>())
    .any(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
    if reset {
        SendFailure::Unread
    } else {
        SendFailure::Other
    }
}

/// Classifies a failed HTTP/2 send by the h2 error under hyper's. `answered` says whether the
/// connection ever carried a response: one that fails before any did not speak HTTP/2.
pub fn classify_h2(err: &hyper::Error, answered: bool) -> SendFailure {
    let h2 = std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<h2::Error>())
    .map(H2Failure::of);
    classify_h2_failure(h2, answered)
}

/// [`classify_h2`] on what the h2 error said (`None`: no h2 error, e.g. the connection closed).
fn classify_h2_failure(h2: Option<H2Failure>, answered: bool) -> SendFailure {
    match h2 {
        // The target refused the stream before any work, or a graceful GOAWAY did not take it.
        Some(f) if f.remote && f.reset && f.reason == Some(h2::Reason::REFUSED_STREAM) => {
            SendFailure::Unprocessed
        }
        Some(f) if f.remote && f.go_away && f.reason == Some(h2::Reason::NO_ERROR) => {
            SendFailure::Unprocessed
        }
        Some(f) if f.remote => SendFailure::Reset,
        Some(f) if f.library => SendFailure::Protocol,
        _ if !answered => SendFailure::Protocol,
        // The connection broke under a stream it had accepted (closed after a GOAWAY, or reset).
        _ => SendFailure::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_errors_classified_by_who_sent_what() {
        use h2::Reason;
        let f = |remote, reset, go_away, library, reason| {
            Some(H2Failure {
                remote,
                reset,
                go_away,
                library,
                reason: Some(reason),
            })
        };
        let c = classify_h2_failure;
        // RST_STREAM(REFUSED_STREAM) and a graceful GOAWAY: the request never ran.
        assert_eq!(
            c(f(true, true, false, false, Reason::REFUSED_STREAM), true),
            SendFailure::Unprocessed
        );
        assert_eq!(
            c(f(true, false, true, false, Reason::NO_ERROR), true),
            SendFailure::Unprocessed
        );
        // Any other reset or GOAWAY from the target.
        assert_eq!(
            c(f(true, true, false, false, Reason::INTERNAL_ERROR), true),
            SendFailure::Reset
        );
        assert_eq!(
            c(f(true, false, true, false, Reason::INTERNAL_ERROR), true),
            SendFailure::Reset
        );
        // berth found the target breaking the protocol.
        assert_eq!(
            c(f(false, false, true, true, Reason::FRAME_SIZE_ERROR), true),
            SendFailure::Protocol
        );
        // No h2 error: before any answer the target did not speak HTTP/2; after, it broke.
        assert_eq!(c(None, false), SendFailure::Protocol);
        assert_eq!(c(None, true), SendFailure::Reset);
        assert_eq!(SendFailure::Reset.reason(), "upstream_reset");
    }

    #[test]
    fn h2_form_moves_host_to_the_authority() {
        let mut req = Request::builder()
            .uri("/a?b=1")
            .header(header::HOST, "api.test:8080")
            .body(UpBody::Empty)
            .unwrap();
        h2_form(&mut req, "127.0.0.1:9".parse().unwrap(), true);
        assert_eq!(req.uri().to_string(), "https://api.test:8080/a?b=1");
        assert!(req.headers().get(header::HOST).is_none());
        assert_eq!(req.version(), Version::HTTP_2);
        let mut req = Request::builder().uri("/").body(UpBody::Empty).unwrap();
        h2_form(&mut req, "127.0.0.1:9".parse().unwrap(), false);
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:9/");
    }
}
