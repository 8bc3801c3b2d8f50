//! [`Pool`]: a target's connections. Idle HTTP/1.1 keep-alive connections go back to it when
//! a response has been read to its end, are reused newest first and expire after the target
//! group's `timeouts.idle`. HTTP/2 connections stay in it while open and are shared by
//! requests, up to [`MAX_STREAMS_PER_CONNECTION`] streams each; one without streams for
//! `timeouts.idle` closes. All close when the target is reaped (the pool is dropped with it) or
//! starts draining (the engine's sweeper empties it; streams in flight finish first).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::{http1, http2};

use super::body::UpBody;
use super::dial::dial;
use super::sender::{handshake, H2Conn, H2Stream, Handshaken, Sender, MAX_STREAMS_PER_CONNECTION};
use super::tls::TargetTls;
use super::ConnectError;

/// One idle connection and when it became idle (the `now_ms` clock).
#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<UpBody>,
    since_ms: u64,
}

/// One open HTTP/2 connection and when it last had no stream.
#[derive(Debug)]
struct Shared {
    tx: http2::SendRequest<UpBody>,
    conn: Arc<H2Conn>,
    used_ms: u64,
}

impl Shared {
    fn expired(&self, now_ms: u64, max_idle_ms: u64) -> bool {
        self.tx.is_closed()
            || (self.conn.streams() == 0 && now_ms.saturating_sub(self.used_ms) >= max_idle_ms)
    }
}

/// The connections to one target.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Vec<Shared>>,
    /// Held while an HTTP/2 connection is being opened, so that a burst of requests opens one
    /// connection, not one each.
    h2_opening: tokio::sync::Mutex<()>,
}

impl Pool {
    /// A pooled connection for one request, if there is one: for HTTP/1.1 the newest idle
    /// ready one, for HTTP/2 a stream of an open connection with room. `now_ms` is the clock
    /// [`Pool::prune`] is given; `connect` bounds the wait for an idle connection to be ready.
    pub async fn reuse(
        &self,
        h2: bool,
        idle: Duration,
        connect: Duration,
        now_ms: u64,
    ) -> Option<Sender> {
        if h2 {
            return self.h2_stream(now_ms);
        }
        while let Some(mut s) = self.take(now_ms, idle.as_millis() as u64) {
            // Usually ready at once; otherwise its task has yet to see the last response end.
            if s.is_ready() {
                return Some(s);
            }
            if let Ok(Ok(())) = tokio::time::timeout(connect, s.ready()).await {
                return Some(s);
            }
        }
        None
    }

    /// A connection for one request: a pooled one ([`Pool::reuse`]), else a new connection
    /// (dialled with `tls`). Returns whether it was reused.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        tls: Option<&TargetTls>,
        h2: bool,
        idle: Duration,
        connect: Duration,
        now_ms: u64,
    ) -> Result<(Sender, bool), ConnectError> {
        if let Some(s) = self.reuse(h2, idle, connect, now_ms).await {
            return Ok((s, true));
        }
        if h2 {
            let _opening = self.h2_opening.lock().await;
            // Another request may have opened one while this one waited.
            if let Some(s) = self.h2_stream(now_ms) {
                return Ok((s, true));
            }
            let io = dial(addr, tls, connect).await?;
            let Handshaken::H2(tx, conn) = handshake(io, true, addr).await? else {
                return Err(ConnectError::Protocol(addr, "no HTTP/2 connection".into()));
            };
            let stream = H2Stream::new(tx.clone(), Arc::clone(&conn));
            self.h2
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Shared {
                    tx,
                    conn,
                    used_ms: now_ms,
                });
            return Ok((Sender::H2(stream), false));
        }
        let io = dial(addr, tls, connect).await?;
        match handshake(io, false, addr).await? {
            Handshaken::H1(tx) => Ok((Sender::H1(tx), false)),
            Handshaken::H2(..) => Err(ConnectError::Protocol(addr, "unexpected HTTP/2".into())),
        }
    }

    /// A stream of an open HTTP/2 connection with room for one more.
    fn h2_stream(&self, now_ms: u64) -> Option<Sender> {
        let mut conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.tx.is_closed());
        let c = conns
            .iter_mut()
            .find(|c| c.conn.streams() < MAX_STREAMS_PER_CONNECTION)?;
        c.used_ms = now_ms;
        Some(Sender::H2(H2Stream::new(c.tx.clone(), Arc::clone(&c.conn))))
    }

    /// The most recently idle live HTTP/1.1 connection that has been idle for less than
    /// `max_idle_ms`; closed and expired ones met on the way are dropped.
    pub fn take(&self, now_ms: u64, max_idle_ms: u64) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && now_ms.saturating_sub(c.since_ms) < max_idle_ms {
                return Some(Sender::H1(c.sender));
            }
        }
        None
    }

    /// Returns a connection whose last response was read whole; an HTTP/1.1 one is kept
    /// unless the pool already holds `max` idle connections. An HTTP/2 stream just ends (its
    /// connection stays in the pool while open).
    pub fn put(&self, sender: Sender, now_ms: u64, max: usize) {
        let sender = match sender {
            Sender::H1(s) => s,
            Sender::H2(s) => {
                if s.conn().streams() == 1 {
                    let mut conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(c) = conns.iter_mut().find(|c| Arc::ptr_eq(&c.conn, s.conn())) {
                        c.used_ms = now_ms;
                    }
                }
                return;
            }
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < max {
            idle.push(Idle {
                sender,
                since_ms: now_ms,
            });
        }
    }

    /// Closes idle connections unused for `max_idle_ms` or more, and closed ones; returns how
    /// many stay (HTTP/1.1 idle connections and open HTTP/2 connections).
    pub fn prune(&self, now_ms: u64, max_idle_ms: u64) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| !c.sender.is_closed() && now_ms.saturating_sub(c.since_ms) < max_idle_ms);
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        h2.retain(|c| !c.expired(now_ms, max_idle_ms));
        idle.len() + h2.len()
    }

    /// Closes every idle connection and lets HTTP/2 connections close once their streams end
    /// (the target is leaving).
    pub fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Idle HTTP/1.1 connections and open HTTP/2 connections now.
    pub fn len(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            + self.h2.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A loopback server answering every request with 200, keeping connections open; HTTP/2
    /// (h2c) when `h2`.
    async fn server(h2: bool) -> SocketAddr {
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
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    }
                });
            }
        });
        addr
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn pool_reuses_newest_and_expires_idle_connections() {
        let addr = server(false).await;
        let pool = Pool::default();
        let (a, ra) = pool.checkout(addr, None, false, SEC, SEC, 1).await.unwrap();
        let (b, _) = pool.checkout(addr, None, false, SEC, SEC, 1).await.unwrap();
        assert!(!ra);
        pool.put(a, 100, 8);
        pool.put(b, 200, 8);
        assert_eq!(pool.len(), 2);
        // The connection idle since 100 is past a 150 ms idle limit at 260; the one from 200
        // is not.
        assert_eq!(pool.prune(260, 150), 1);
        let mut c = pool.take(260, 150).expect("the newer connection");
        assert!(pool.is_empty());
        c.ready().await.unwrap();
        let resp = c.send(hyper::Request::new(UpBody::Empty)).await.unwrap();
        assert_eq!(resp.status(), 200);
    }

    #[tokio::test]
    async fn pool_keeps_at_most_max_and_clear_closes_all() {
        let addr = server(false).await;
        let pool = Pool::default();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                pool.checkout(addr, None, false, SEC, SEC, 1)
                    .await
                    .unwrap()
                    .0,
            );
        }
        for s in held {
            pool.put(s, 1, 2);
        }
        assert_eq!(pool.len(), 2);
        pool.clear();
        assert!(pool.take(1, 1000).is_none());
    }

    #[tokio::test]
    async fn h2_requests_share_one_connection() {
        let addr = server(true).await;
        let pool = Pool::default();
        let (mut a, ra) = pool.checkout(addr, None, true, SEC, SEC, 1).await.unwrap();
        let (mut b, rb) = pool.checkout(addr, None, true, SEC, SEC, 1).await.unwrap();
        assert!(
            !ra && rb,
            "the second request reuses the first's connection"
        );
        assert_eq!(pool.len(), 1);
        let (x, y) = tokio::join!(
            a.send(hyper::Request::new(UpBody::Empty)),
            b.send(hyper::Request::new(UpBody::Empty))
        );
        assert_eq!(x.unwrap().status(), 200);
        assert_eq!(y.unwrap().status(), 200);
        let Sender::H2(s) = &a else {
            panic!("expected HTTP/2")
        };
        assert_eq!(s.conn().streams(), 2);
        drop(b);
        pool.put(a, 5, 8);
        // No stream left: the connection closes once idle past the limit.
        assert_eq!(pool.prune(500, 1000), 1);
        assert_eq!(pool.prune(5_000, 1000), 0);
    }

    #[tokio::test]
    async fn refused_connect_is_an_io_error() {
        // Bind then drop to get a port with nothing listening.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        match Pool::default()
            .checkout(addr, None, false, SEC, SEC, 1)
            .await
        {
            Err(ConnectError::Io(a, _)) => assert_eq!(a, addr),
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }
}
