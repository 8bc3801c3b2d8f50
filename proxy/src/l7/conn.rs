//! What berth knows of one client connection on an HTTP listener, shared by its requests: who
//! the client is (after any PROXY header), which port it came in on, the activity the
//! listener's idle and header timeouts are judged by, and the slot where an upgraded (WebSocket)
//! request leaves its target connection for the serving loop.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use super::upgrade::Slot;
use crate::metrics::ListenerMetrics;
use crate::runtime::ProxyState;
use crate::target::now_ms;

/// One client connection.
#[derive(Debug)]
pub struct ClientConn {
    /// The name of the listener that accepted it (a metric label).
    pub listener: String,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The running state (configuration generation, groups).
    pub shared: Arc<ProxyState>,
    /// The listener's metric handles.
    pub metrics: Arc<ListenerMetrics>,
    /// The client: the peer, or the source of a verified PROXY header.
    pub client_ip: Option<IpAddr>,
    /// `client_ip` as a header value, for `X-Forwarded-For`.
    pub client_value: HeaderValue,
    /// The local port the client connected to, for `X-Forwarded-Port`.
    pub server_port: HeaderValue,
    /// VPC endpoint ID from the PROXY header.
    pub vpce_id: Option<String>,
    /// Requests in flight and the last activity, for the idle timeout and draining.
    pub activity: Arc<Activity>,
    /// The `X-Amzn-Mtls-Clientcert-*` headers of the client certificate (mutual TLS), taken
    /// once at handshake.
    pub client_cert: Option<Arc<crate::tls::mtls::ClientCertHeaders>>,
    /// A target connection that switched protocols (WebSocket), left by the request handler
    /// for the serving loop to tunnel once the client has its `101`.
    pub upgrade: Slot,
    /// The client's address and port (after a PROXY header), for the access log.
    pub client_addr: Option<SocketAddr>,
    /// Cipher, protocol and SNI of an https connection, taken once at handshake for the access
    /// log.
    pub tls: Option<crate::access_log::TlsFacts>,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.metrics.active_connections.decrement(1.0);
    }
}

impl ClientConn {
    /// Counts a new connection (it is uncounted when dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: String,
        scheme: &'static str,
        shared: Arc<ProxyState>,
        metrics: Arc<ListenerMetrics>,
        client_ip: Option<IpAddr>,
        server_port: Option<u16>,
        vpce_id: Option<String>,
    ) -> ClientConn {
        metrics.new_connections.increment(1);
        metrics.active_connections.increment(1.0);
        ClientConn {
            listener,
            scheme,
            shared,
            metrics,
            client_ip,
            client_value: client_ip
                .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
                .unwrap_or_else(|| HeaderValue::from_static("")),
            server_port: server_port
                .map(HeaderValue::from)
                .unwrap_or_else(|| HeaderValue::from_static("")),
            vpce_id,
            activity: Arc::new(Activity::new(now_ms())),
            client_cert: None,
            upgrade: Slot::default(),
            client_addr: None,
            tls: None,
        }
    }
}

/// Request activity on a connection, in the `now_ms` clock: requests in flight, when the last
/// one ended, and when the bytes of a next request head started to arrive.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicU32,
    last_end_ms: AtomicU64,
    /// When the head now being read began (0: none), for the header timeout.
    head_started_ms: AtomicU64,
    /// Set when a request ends on HTTP/1: the next bytes read start a new head.
    expecting_head: AtomicBool,
    /// HTTP/2: frames between requests are not request heads.
    h2: AtomicBool,
}

/// What a connection's timer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Check again at this time (ms clock).
    WaitUntil(u64),
    /// A request head took longer than the header timeout: close and count.
    HeaderTimeout,
    /// No request for the idle timeout: close.
    Idle,
    /// No request for a while, none arriving: let go of the HTTP state and wait for the next
    /// request holding only the socket.
    Park,
}

impl Activity {
    /// A new connection, accepted at `now`: its first head is awaited from now on.
    pub fn new(now: u64) -> Activity {
        Activity {
            in_flight: AtomicU32::new(0),
            last_end_ms: AtomicU64::new(now),
            head_started_ms: AtomicU64::new(now),
            expecting_head: AtomicBool::new(false),
            h2: AtomicBool::new(false),
        }
    }

    /// Bytes arrived from the client (called by the connection's reader).
    #[inline]
    pub fn on_read(&self) {
        if self.expecting_head.load(Ordering::Relaxed) {
            self.expecting_head.store(false, Ordering::Relaxed);
            self.head_started_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A request head was read whole: the request is in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>, h2: bool) -> RequestGuard {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.last_end_ms.store(now_ms(), Ordering::Relaxed);
            if !self.h2.load(Ordering::Relaxed) {
                self.expecting_head.store(true, Ordering::Relaxed);
            }
        }
    }

    /// What to do at `now` with these timeouts (ms); `park_ms`: how long an idle connection
    /// keeps its HTTP state, if it can be parked at all.
    pub fn step(&self, now: u64, idle_ms: u64, header_ms: u64, park_ms: Option<u64>) -> Step {
        next_step(
            now,
            Timing {
                in_flight: self.in_flight.load(Ordering::Relaxed),
                head_started: self.head_started_ms.load(Ordering::Relaxed),
                last_end: self.last_end_ms.load(Ordering::Relaxed),
            },
            idle_ms,
            header_ms,
            park_ms,
        )
    }

    /// When the connection reaches its idle timeout if no request comes (ms clock).
    pub fn idle_deadline(&self, idle_ms: u64) -> u64 {
        self.last_end_ms.load(Ordering::Relaxed) + idle_ms
    }
}

/// Counts a request in flight on its connection while alive.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A connection's request timing (ms clock; `head_started` 0: no head arriving).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Requests in flight.
    pub in_flight: u32,
    /// When the head now arriving began.
    pub head_started: u64,
    /// When the last request ended (or the connection was accepted).
    pub last_end: u64,
}

/// The timer decision: with requests in flight, look again an idle timeout later (each
/// request is bounded by its own timeouts); while a head is arriving, close when it took the
/// header timeout; otherwise close when the connection was idle for the idle timeout, and park
/// it once it was idle for `park_ms`.
pub fn next_step(now: u64, t: Timing, idle_ms: u64, header_ms: u64, park_ms: Option<u64>) -> Step {
    match (decide(now, t, idle_ms, header_ms, park_ms), park_ms) {
        // A parkable connection is looked at again within `park_ms`: it may have gone idle
        // since (its timer was set while a head or a request was under way).
        (Step::WaitUntil(at), Some(p)) => Step::WaitUntil(at.min(now + p.max(1))),
        (step, _) => step,
    }
}

fn decide(now: u64, t: Timing, idle_ms: u64, header_ms: u64, park_ms: Option<u64>) -> Step {
    if t.in_flight > 0 {
        return Step::WaitUntil(now + idle_ms.max(1));
    }
    if t.head_started > 0 {
        let deadline = t.head_started + header_ms;
        return if now >= deadline {
            Step::HeaderTimeout
        } else {
            Step::WaitUntil(deadline)
        };
    }
    let idle_at = t.last_end + idle_ms;
    if now >= idle_at {
        return Step::Idle;
    }
    match park_ms.map(|p| t.last_end + p) {
        Some(park_at) if now >= park_at => Step::Park,
        Some(park_at) => Step::WaitUntil(park_at.min(idle_at)),
        None => Step::WaitUntil(idle_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(in_flight: u32, head_started: u64, last_end: u64) -> Timing {
        Timing {
            in_flight,
            head_started,
            last_end,
        }
    }

    #[test]
    fn busy_connections_are_looked_at_again_later() {
        assert_eq!(
            next_step(100, t(1, 0, 0), 50, 10, None),
            Step::WaitUntil(150)
        );
        // Parkable connections are looked at within the park delay.
        assert_eq!(
            next_step(100, t(1, 0, 0), 50, 10, Some(5)),
            Step::WaitUntil(105)
        );
    }

    #[test]
    fn a_slow_head_times_out_at_the_header_timeout() {
        assert_eq!(
            next_step(100, t(0, 95, 0), 1000, 10, None),
            Step::WaitUntil(105)
        );
        assert_eq!(
            next_step(105, t(0, 95, 0), 1000, 10, None),
            Step::HeaderTimeout
        );
    }

    #[test]
    fn an_idle_connection_closes_at_the_idle_timeout() {
        assert_eq!(
            next_step(100, t(0, 0, 80), 50, 10, None),
            Step::WaitUntil(130)
        );
        assert_eq!(next_step(130, t(0, 0, 80), 50, 10, None), Step::Idle);
    }

    #[test]
    fn an_idle_connection_parks_before_its_idle_timeout() {
        assert_eq!(
            next_step(100, t(0, 0, 80), 50, 10, Some(30)),
            Step::WaitUntil(110)
        );
        assert_eq!(next_step(110, t(0, 0, 80), 50, 10, Some(30)), Step::Park);
        // The idle timeout wins when it comes first.
        assert_eq!(next_step(100, t(0, 0, 80), 20, 10, Some(30)), Step::Idle);
        assert_eq!(
            next_step(90, t(0, 0, 80), 20, 10, Some(30)),
            Step::WaitUntil(100)
        );
        // A head arriving is never parked.
        assert_eq!(
            next_step(200, t(0, 150, 80), 500, 100, Some(30)),
            Step::WaitUntil(230)
        );
        assert_eq!(
            next_step(250, t(0, 150, 80), 500, 100, Some(30)),
            Step::HeaderTimeout
        );
    }

    #[test]
    fn activity_tracks_requests_and_heads() {
        let a = Arc::new(Activity::new(1));
        // A new connection waits for its first head.
        assert_eq!(a.step(5, 1000, 10, None), Step::WaitUntil(11));
        assert_eq!(a.step(11, 1000, 10, None), Step::HeaderTimeout);
        let g = a.begin(false);
        assert!(matches!(a.step(5, 1000, 10, None), Step::WaitUntil(_)));
        drop(g);
        // Idle now; the next bytes start a head.
        assert!(matches!(
            a.step(now_ms(), 1000, 10, None),
            Step::WaitUntil(_)
        ));
        a.on_read();
        assert_eq!(a.step(now_ms() + 10, 1000, 10, None), Step::HeaderTimeout);
    }

    #[test]
    fn http2_frames_between_requests_start_no_head() {
        let a = Arc::new(Activity::new(1));
        drop(a.begin(true));
        a.on_read();
        assert!(matches!(
            a.step(now_ms(), 1000, 10, None),
            Step::WaitUntil(_)
        ));
    }
}
