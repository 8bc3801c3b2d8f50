//! Upstream HTTP/1.1 connections: the request body berth sends, connecting to a target, and the
//! per-target pool of idle keep-alive connections.
//!
//! Each target owns one [`Pool`]: idle connections go back to it when
//! a response has been read to its end, are reused newest first, expire after the target
//! group's `timeouts.idle`, and close when the target is reaped (the pool is dropped with it)
//! or starts draining (the engine's sweeper empties it).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use metrics::Counter;

/// The body of a request sent to a target.
#[derive(Debug)]
pub enum UpBody {
    /// No body (GET, HEAD, or a request whose body was empty).
    Empty,
    /// A body read whole before sending (replayable on retry).
    Full(Option<Bytes>),
    /// A body streamed from the client as it arrives (not replayable); request body bytes are
    /// counted on the way.
    Stream(Incoming, Counter),
}

impl UpBody {
    /// A copy for a retry, when the body is replayable.
    pub fn replay(&self) -> Option<UpBody> {
        match self {
            UpBody::Empty => Some(UpBody::Empty),
            UpBody::Full(b) => Some(UpBody::Full(b.clone())),
            UpBody::Stream(..) => None,
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Stream(inner, bytes_in) => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &polled {
                    if let Some(d) = f.data_ref() {
                        bytes_in.increment(d.len() as u64);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.is_none(),
            UpBody::Stream(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream(inner, _) => inner.size_hint(),
        }
    }
}

/// A client connection to a target.
pub type Sender = SendRequest<UpBody>;

/// Why a connection to a target could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection within the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The connect failed (refused, unreachable, reset).
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// Opens a new HTTP/1.1 connection to `addr`; its I/O runs in a task of the current runtime
/// until the connection closes (by either side, or when every [`Sender`] of it is dropped).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(addr)),
        Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
        Ok(Ok(s)) => s,
    };
    // Requests and responses are written whole by hyper; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, UpBody>(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target = %addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// One idle connection and when it became idle (the `now_ms` clock).
#[derive(Debug)]
struct Idle {
    sender: Sender,
    since_ms: u64,
}

/// The idle keep-alive connections to one target.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// The most recently idle live connection that has been idle for less than `max_idle_ms`;
    /// closed and expired ones met on the way are dropped.
    pub fn take(&self, now_ms: u64, max_idle_ms: u64) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && now_ms.saturating_sub(c.since_ms) < max_idle_ms {
                return Some(c.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response was read whole; kept unless the pool already
    /// holds `max` idle connections.
    pub fn put(&self, sender: Sender, now_ms: u64, max: usize) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < max {
                idle.push(Idle {
                    sender,
                    since_ms: now_ms,
                });
            }
        }
    }

    /// Closes connections idle for `max_idle_ms` or more, and closed ones; returns how many stay.
    pub fn prune(&self, now_ms: u64, max_idle_ms: u64) -> usize {
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        idle.retain(|c| !c.sender.is_closed() && now_ms.saturating_sub(c.since_ms) < max_idle_ms);
        idle.len()
    }

    /// Closes every idle connection (the target is leaving).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Idle connections now.
    pub fn len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback HTTP/1.1 server answering every request with 200, keeping connections open.
    async fn server() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn pool_reuses_newest_and_expires_idle_connections() {
        let addr = server().await;
        let pool = Pool::default();
        let a = connect(addr, Duration::from_secs(1)).await.unwrap();
        let b = connect(addr, Duration::from_secs(1)).await.unwrap();
        pool.put(a, 100, 8);
        pool.put(b, 200, 8);
        assert_eq!(pool.len(), 2);
        // The connection idle since 100 is past a 150 ms idle limit at 260; the one from 200
        // is not.
        assert_eq!(pool.prune(260, 150), 1);
        let mut c = pool.take(260, 150).expect("the newer connection");
        assert!(pool.is_empty());
        c.ready().await.unwrap();
        let resp = c
            .send_request(hyper::Request::new(UpBody::Empty))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    #[tokio::test]
    async fn pool_keeps_at_most_max_and_clear_closes_all() {
        let addr = server().await;
        let pool = Pool::default();
        for _ in 0..3 {
            let s = connect(addr, Duration::from_secs(1)).await.unwrap();
            pool.put(s, 1, 2);
        }
        assert_eq!(pool.len(), 2);
        pool.clear();
        assert!(pool.take(1, 1000).is_none());
    }

    #[tokio::test]
    async fn refused_connect_is_an_io_error() {
        // Bind then drop to get a port with nothing listening.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        match connect(addr, Duration::from_secs(1)).await {
            Err(ConnectError::Io(a, _)) => assert_eq!(a, addr),
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }

    #[test]
    fn only_buffered_bodies_replay() {
        assert!(UpBody::Empty.replay().is_some());
        assert!(UpBody::Full(Some(Bytes::from_static(b"x")))
            .replay()
            .is_some());
    }
}
