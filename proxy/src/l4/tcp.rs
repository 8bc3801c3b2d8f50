//! The TCP proxy (NLB role) of one tcp/tls listener, fed by the engine's worker
//! threads. Each connection may start with a PROXY header (from trusted peers only), is optionally TLS-terminated, then
//! relayed to a target chosen by the group's balancer, with a connect timeout, retries on
//! connect failure, an idle timeout, half-close in both directions, and an end when a draining
//! target's deregistration delay is over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_config::model::{HashOn, Listener};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::conn::limit::{Admitted, ConnectionLimit};
use crate::conn::proxy_header::accept_proxy_header;
use crate::conn::proxy_protocol;
use crate::forward::{forward_groups, pick_group};
use crate::group::{Group, SelectInput};
use crate::metrics as m;
use crate::runtime::ProxyState;
use crate::target::{fnv1a, now_ms, InFlight, Target};
use crate::tls::LiveAcceptor;

use super::flow_log::{note, FlowLog};

/// Relay buffer per direction.
const BUF: usize = 16 * 1024;

/// The L4 proxy of one tcp/tls listener.
pub struct TcpProxy {
    /// The name of the listener it serves (a metric label).
    pub listener: String,
    /// ProxyState state.
    pub shared: Arc<ProxyState>,
    /// The live TLS acceptor of a `tls` listener (its certificates reload live).
    pub tls: Option<Arc<LiveAcceptor>>,
    limit: ConnectionLimit,
    metrics: FlowMetrics,
}

/// A tcp/tls listener's per-flow metric handles, registered once rather than per flow.
struct FlowMetrics {
    new_flows: metrics::Counter,
    active_flows: metrics::Gauge,
    over_limit: metrics::Counter,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
}

impl FlowMetrics {
    fn new(listener: &str) -> FlowMetrics {
        let l = || listener.to_string();
        FlowMetrics {
            new_flows: metrics::counter!(m::L4_NEW_FLOWS, "listener" => l()),
            active_flows: metrics::gauge!(m::L4_ACTIVE_FLOWS, "listener" => l()),
            over_limit: metrics::counter!(m::L4_REFUSED, "listener" => l(), "reason" => "connection_limit"),
            bytes_in: metrics::counter!(m::L4_BYTES, "listener" => l(), "direction" => "in"),
            bytes_out: metrics::counter!(m::L4_BYTES, "listener" => l(), "direction" => "out"),
        }
    }
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl TcpProxy {
    /// A proxy for listener `listener`.
    pub fn new(listener: String, shared: Arc<ProxyState>, tls: Option<Arc<LiveAcceptor>>) -> Self {
        TcpProxy {
            metrics: FlowMetrics::new(&listener),
            listener,
            shared,
            tls,
            limit: ConnectionLimit::default(),
        }
    }
}

/// Keeps a flow's place under the listener's limit and in the active-flows gauge.
struct ActiveGuard<'a> {
    _admitted: Admitted<'a>,
    gauge: metrics::Gauge,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

impl TcpProxy {
    /// Relays one accepted connection until either side ends it.
    pub async fn handle(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let snap = self.shared.current.load_full();
        let Some(listener) = snap.listener(&self.listener) else {
            return;
        };
        let name = self.listener.as_str();
        let Some(admitted) = self.limit.admit(listener.max_connections) else {
            self.metrics.over_limit.increment(1);
            return;
        };
        let gauge = self.metrics.active_flows.clone();
        gauge.increment(1.0);
        let _active = ActiveGuard {
            _admitted: admitted,
            gauge,
        };
        self.metrics.new_flows.increment(1);
        let mut flow = FlowLog::begin(&snap, name, self.tls.is_some());
        note(&mut flow, |f| f.client = Some(peer));

        let _ = stream.set_nodelay(true);
        let (peer, local) = (Some(peer), stream.local_addr().ok());
        let info = match accept_proxy_header(listener, name, &mut stream, peer).await {
            Ok(i) => i,
            Err(_) => {
                note(&mut flow, |f| f.end_reason = "proxy_header");
                return;
            }
        };
        let client = info.as_ref().and_then(|i| i.source).or(peer);
        note(&mut flow, |f| f.client = client);
        let destination = info.as_ref().and_then(|i| i.destination).or(local);

        let Some(group) = forward_groups(&listener.default_action)
            .map(pick_group)
            .and_then(|g| snap.groups.get(g))
        else {
            note(&mut flow, |f| f.end_reason = "no_target");
            return;
        };
        note(&mut flow, |f| f.group = Some(group.name.clone()));
        let Some((upstream, inflight)) = self.connect(group, listener, client).await else {
            note(&mut flow, |f| f.end_reason = "no_target");
            return;
        };
        note(&mut flow, |f| {
            f.target = Some(inflight.0.address);
            f.connected_at = Some(std::time::Instant::now());
        });
        let mut upstream = upstream;
        let cfg = group.config.load_full();
        if cfg.proxy_protocol_v2 {
            if let (Some(src), Some(dst)) = (client, destination) {
                let tlvs = info.as_ref().map(|i| i.tlvs.clone()).unwrap_or_default();
                match proxy_protocol::encode_v2(src, dst, &tlvs) {
                    Ok(h) => {
                        if upstream.write_all(&h).await.is_err() {
                            note(&mut flow, |f| f.end_reason = "target_error");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "cannot encode PROXY v2 header");
                        return;
                    }
                }
            }
        }
        let limits = Limits {
            idle: listener.idle_timeout,
            dereg: cfg.deregistration_delay,
        };
        let ended = match &self.tls {
            Some(live) => match Box::pin(live.current().accept(stream)).await {
                Ok(tls) => {
                    if flow.is_some() {
                        let facts = crate::access_log::TlsFacts::of(tls.get_ref().1);
                        note(&mut flow, |f| f.tls = Some(facts));
                    }
                    // TLS has its own buffers: the client side is read through them.
                    let (cr, cw) = tokio::io::split(tls);
                    let c2u = Buffered(cr);
                    self.relay(c2u, cw, upstream, &inflight.0, limits).await
                }
                Err(e) => {
                    note(&mut flow, |f| f.end_reason = "tls_handshake");
                    metrics::counter!(m::L4_REFUSED, "listener" => name.to_string(), "reason" => "tls_handshake")
                        .increment(1);
                    tracing::debug!(listener = name, error = %e, "TLS handshake failed");
                    return;
                }
            },
            None => {
                let (cr, cw) = stream.into_split();
                self.relay(cr, cw, upstream, &inflight.0, limits).await
            }
        };
        note(&mut flow, |f| {
            f.end_reason = ended.reason;
            f.received = ended.received;
            f.sent = ended.sent;
        });
    }

    /// Connects to a target, trying others when a connect fails.
    async fn connect(
        &self,
        group: &Arc<Group>,
        listener: &Listener,
        client: Option<SocketAddr>,
    ) -> Option<(TcpStream, InFlight)> {
        let cfg = group.config.load_full();
        let hash_key = match &cfg.algorithm {
            berth_config::model::Algorithm::ConsistentHash(HashOn::SourceIp) => {
                client.map(|c| fnv1a(c.ip().to_string().as_bytes()))
            }
            berth_config::model::Algorithm::ConsistentHash(_) => {
                client.map(|c| fnv1a(c.ip().to_string().as_bytes()))
            }
            _ => None,
        };
        let mut tried: Vec<SocketAddr> = Vec::new();
        for _ in 0..=cfg.retry.attempts {
            let sel = group.select(&SelectInput {
                hash_key,
                sticky_id: None,
                exclude: &tried,
            })?;
            let target = sel.target;
            tried.push(target.address);
            let inflight = InFlight::new(Arc::clone(&target));
            match tokio::time::timeout(listener.connect_timeout, TcpStream::connect(target.address))
                .await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    target.count_request(&group.name);
                    return Some((s, inflight));
                }
                Ok(Err(e)) => {
                    tracing::debug!(target_group = %group.name, target = %target.label, error = %e, "connect failed")
                }
                Err(_) => {
                    tracing::debug!(target_group = %group.name, target = %target.label, "connect timed out")
                }
            }
            metrics::counter!(m::L4_CONNECT_ERRORS, "target_group" => group.name.clone())
                .increment(1);
            if target.observe_connect_failure(cfg.outlier.consecutive_connect_failures) {
                group.try_eject(&target, "connect");
            }
        }
        None
    }

    async fn relay<CR, CW>(
        &self,
        client_read: CR,
        mut client_write: CW,
        upstream: TcpStream,
        target: &Arc<Target>,
        limits: Limits,
    ) -> FlowEnd
    where
        CR: Source,
        CW: AsyncWrite + Unpin,
    {
        let name = self.listener.clone();
        let (bytes_in, bytes_out) = (&self.metrics.bytes_in, &self.metrics.bytes_out);
        let last = AtomicU64::new(now_ms());
        let (received, sent) = (AtomicU64::new(0), AtomicU64::new(0));
        let (ur, mut uw) = upstream.into_split();
        let c2u = copy_half(client_read, &mut uw, &last, (bytes_in, &received));
        let u2c = copy_half(ur, &mut client_write, &last, (bytes_out, &sent));
        let watchdog = async {
            let tick = (limits.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            loop {
                tokio::time::sleep(tick).await;
                let now = now_ms();
                if now.saturating_sub(last.load(Ordering::Relaxed))
                    >= limits.idle.as_millis() as u64
                {
                    return "idle";
                }
                if target.is_draining()
                    && now.saturating_sub(target.drain_started_ms())
                        >= limits.dereg.as_millis() as u64
                {
                    return "deregistered";
                }
            }
        };
        let reason = tokio::select! {
            (a, b) = async { tokio::join!(c2u, u2c) } => {
                if is_reset(&a) || is_reset(&b) {
                    metrics::counter!(m::L4_RESETS, "listener" => name).increment(1);
                    "reset"
                } else {
                    "closed"
                }
            }
            why = watchdog => {
                tracing::debug!(listener = %name, target = %target.label, why, "flow closed");
                why
            }
        };
        FlowEnd {
            reason,
            received: received.load(Ordering::Relaxed),
            sent: sent.load(Ordering::Relaxed),
        }
    }
}

/// One direction's read side of a flow.
trait Source: Send {
    /// Resolves when bytes (or the end) can be read; waits without holding a buffer where the
    /// stream allows it.
    fn ready(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Reads into `buf`: `None` when nothing is there right now.
    fn read_some(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl std::future::Future<Output = std::io::Result<Option<usize>>> + Send;
}

impl Source for OwnedReadHalf {
    async fn ready(&mut self) -> std::io::Result<()> {
        self.readable().await
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
        match self.try_read_buf(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A stream read through its own buffering (TLS): it is read with a buffer in hand.
struct Buffered<R>(R);

impl<R: AsyncRead + Unpin + Send> Source for Buffered<R> {
    async fn ready(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
        self.0.read_buf(buf).await.map(Some)
    }
}

/// How a relayed flow ended, and the bytes it carried each way.
struct FlowEnd {
    reason: &'static str,
    received: u64,
    sent: u64,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    dereg: Duration,
}

fn is_reset(r: &std::io::Result<()>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe))
}

/// Copies one direction until EOF, then half-closes the other side. A relay buffer exists only
/// while bytes flow: an idle flow waits for its next bytes without one.
async fn copy_half<S, W>(
    mut src: S,
    w: &mut W,
    last: &AtomicU64,
    (bytes, flow): (&metrics::Counter, &AtomicU64),
) -> std::io::Result<()>
where
    S: Source,
    W: AsyncWrite + Unpin,
{
    loop {
        src.ready().await?;
        // Uninitialised capacity: pages are touched only as far as reads fill them.
        let mut buf = BytesMut::with_capacity(BUF);
        loop {
            buf.clear();
            let n = match src.read_some(&mut buf).await? {
                // Drained: let go of the buffer and wait for more.
                None => break,
                Some(0) => return w.shutdown().await,
                Some(n) => n,
            };
            w.write_all(&buf[..n]).await?;
            // TLS buffers writes; interactive protocols (a one-byte answer awaited by the
            // peer) stall unless each chunk is pushed out.
            w.flush().await?;
            last.store(now_ms(), Ordering::Relaxed);
            bytes.increment(n as u64);
            flow.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
