//! WebSocket through HTTP listeners: the HTTP/1.1 `Upgrade: websocket` hand-off and the byte
//! tunnel that follows it.
//!
//! How an upgrade goes:
//!
//! 1. [`requested`] recognises the client's upgrade request (HTTP/1.1, `Upgrade: websocket`,
//!    `Connection: upgrade`) sent to a target group that speaks HTTP/1.1; the proxy picks a
//!    target as for any request, and [`open`] makes a dedicated connection to it, over TLS for
//!    an `https` group (never pooled: it becomes the tunnel).
//! 2. The request goes with its `Upgrade` and `Connection` headers put back ([`prepare`]) and its
//!    `Sec-WebSocket-*` headers as sent. [`ask`] waits (the group's `read` timeout) for the
//!    answer: a `101` hands over the target's upgraded I/O; a 4xx or 5xx (an authentication
//!    refusal, say) passes through to the client as it is; any other answer is not an upgrade
//!    and the client gets a 502 (`upgrade_failed`).
//! 3. On a `101` the target's I/O waits in the client connection's [`Slot`] while hyper writes
//!    the `101` (with the target's headers) to the client. The listener's serving loop then
//!    finds the slot filled and runs [`relay`] in the connection's own task: the connection
//!    stays counted in `berth_active_connections` until the tunnel ends.
//!
//! The tunnel relays bytes both ways, without looking at WebSocket frames, until both sides
//! have closed (a side's close is passed on as a half-close), an error, the listener's
//! `idle_timeout` with no byte either way (ALB's behaviour: the target group's `read` timeout
//! does not apply), or the end of a draining target's deregistration delay. On SIGTERM tunnels
//! keep relaying through `proxy.grace_period` and close when the process exits at its end.
//!
//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) is not supported: such requests are
//! forwarded as ordinary requests.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::conn::ClientConn;
use crate::metrics as m;
use crate::target::{now_ms, InFlight};
use crate::upstream::{dial, ConnectError, TargetTls, UpBody};

/// How long closing a tunnel's streams (TLS close_notify, FIN) may take once it is over.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `Upgrade` value of a WebSocket upgrade request: an HTTP/1.1 `GET` with `Upgrade:
/// websocket` and `Connection: upgrade` (tokens compared case-insensitively). `None` for any
/// other request, HTTP/2 ones included.
pub fn requested(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11
        || parts.method != Method::GET
        || !has_token(&parts.headers, header::UPGRADE, "websocket")
        || !has_token(&parts.headers, header::CONNECTION, "upgrade")
    {
        return None;
    }
    parts.headers.get(header::UPGRADE).cloned()
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Puts back the headers that ask the target to switch protocols (the proxy's header
/// preparation removes them with the other hop-by-hop headers): `Connection: upgrade` and the
/// client's `Upgrade` value.
pub fn prepare(h: &mut HeaderMap, upgrade: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, upgrade);
}

/// A dedicated connection to a target, able to switch protocols.
pub type UpgradeSender = SendRequest<UpBody>;

/// Opens a dedicated HTTP/1.1 connection to `addr` (over TLS with `tls`: an `https` group) for
/// one upgrade request; its task runs until the response (and, on a `101`, the hand-over of its
/// I/O) is done.
pub async fn open(
    addr: SocketAddr,
    tls: Option<&TargetTls>,
    timeout: Duration,
) -> Result<UpgradeSender, ConnectError> {
    // `dial` sets TCP_NODELAY: each WebSocket frame goes out when written.
    let stream = dial(addr, tls, timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, UpBody>(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(target = %addr, error = %e, "upgrade connection ended with an error");
        }
    });
    Ok(sender)
}

/// How a target answered an upgrade request.
#[derive(Debug)]
pub enum Answer {
    /// `101 Switching Protocols`: the response head for the client and the target's I/O.
    Switched(http::response::Parts, Upgraded),
    /// A 4xx or 5xx: passed through to the client as it is.
    Refused(Response<Incoming>),
    /// Any other status (2xx, 3xx, another 1xx): the target did not switch.
    NotSwitched(StatusCode),
}

/// Why an upgrade request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No response head within the group's read timeout.
    #[error("no answer to the upgrade within {0:?}")]
    Timeout(Duration),
    /// The connection failed before a response.
    #[error("upgrade request failed: {0}")]
    Failed(hyper::Error),
    /// The target answered `101` but its connection could not be taken over.
    #[error("target switched protocols but its connection was lost: {0}")]
    Lost(hyper::Error),
}

/// Sends the upgrade request on a dedicated connection and waits up to `read` for the answer
/// (and, on a `101`, for the connection to be handed over).
pub async fn ask(
    mut sender: UpgradeSender,
    req: Request<UpBody>,
    read: Duration,
) -> Result<Answer, AskError> {
    let deadline = tokio::time::Instant::now() + read;
    let mut resp = match tokio::time::timeout_at(deadline, sender.send_request(req)).await {
        Err(_) => return Err(AskError::Timeout(read)),
        Ok(Err(e)) => return Err(AskError::Failed(e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let on = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        return match tokio::time::timeout_at(deadline, on).await {
            Err(_) => Err(AskError::Timeout(read)),
            Ok(Err(e)) => Err(AskError::Lost(e)),
            Ok(Ok(io)) => Ok(Answer::Switched(parts, io)),
        };
    }
    if status.is_client_error() || status.is_server_error() {
        return Ok(Answer::Refused(resp));
    }
    Ok(Answer::NotSwitched(status))
}

/// A switched target connection waiting for the client's `101` to be written.
pub struct Pending {
    target_io: Upgraded,
    client: Option<OnUpgrade>,
    group: String,
    deregistration: Duration,
    target: InFlight,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("group", &self.group)
            .field("target", &self.target.0.label)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The target side of a tunnel: its I/O after the `101`; `client`, the client's side as
    /// hyper hands it over on connections served with upgrade support (taken from the
    /// request's extensions); the target group (a metric label) and its deregistration delay;
    /// the target, counted as busy while the tunnel lasts.
    pub fn new(
        target_io: Upgraded,
        client: Option<OnUpgrade>,
        group: &str,
        deregistration: Duration,
        target: InFlight,
    ) -> Pending {
        Pending {
            target_io,
            client,
            group: group.to_string(),
            deregistration,
            target,
        }
    }

    /// The client's side as hyper hands it over (connections served with hyper's upgrade
    /// support), once hyper has written the `101`.
    pub fn take_client(&mut self) -> Option<OnUpgrade> {
        self.client.take()
    }
}

/// Where a switched target connection waits, on its client connection, for the serving loop.
#[derive(Default)]
pub struct Slot(Mutex<Option<Pending>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Slot {
    /// Leaves a switched connection for the serving loop (replacing any earlier one).
    pub fn put(&self, p: Pending) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
    }

    /// The switched connection, if the last request was upgraded.
    pub fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Why a tunnel ended (the `reason` of `berth_upgraded_connection_closes_total`).
/// A TLS peer that closes its connection without a `close_notify` (most WebSocket clients,
/// once the WebSocket close handshake is done) ends with `UnexpectedEof`: a close all the same.
fn close_reason(r: &io::Result<(u64, u64)>) -> &'static str {
    match r {
        Ok(_) => "closed",
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => "closed",
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            "reset"
        }
        Err(_) => "error",
    }
}

/// Relays the tunnel of `client` (the client connection's stream after the `101`; `early`:
/// bytes of it hyper had already read) and the target's side in `p`, until it ends (see the
/// module doc); `idle` is the listener's idle timeout.
pub async fn relay<C>(client: C, early: Bytes, p: Pending, idle: Duration, conn: &ClientConn)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Pending {
        target_io,
        group,
        deregistration,
        target,
        ..
    } = p;
    let labels = [
        ("listener", conn.listener.clone()),
        ("target_group", group.clone()),
    ];
    metrics::counter!(m::UPGRADED_CONNECTIONS, &labels).increment(1);
    let open = metrics::gauge!(m::ACTIVE_UPGRADED_CONNECTIONS, &labels);
    open.increment(1.0);
    let last = AtomicU64::new(now_ms());
    let mut c = Metered {
        inner: client,
        last: &last,
        bytes: &conn.metrics.bytes_in,
    };
    let mut t = Metered {
        inner: TokioIo::new(target_io),
        last: &last,
        bytes: &conn.metrics.bytes_out,
    };
    let watchdog = async {
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let idle_ms = idle.as_millis() as u64;
        let dereg_ms = deregistration.as_millis() as u64;
        loop {
            tokio::time::sleep(tick).await;
            let now = now_ms();
            if now.saturating_sub(last.load(Ordering::Relaxed)) >= idle_ms {
                return "idle_timeout";
            }
            let t = &target.0;
            if t.is_draining() && now.saturating_sub(t.drain_started_ms()) >= dereg_ms {
                return "deregistered";
            }
        }
    };
    let reason = tokio::select! {
        r = async {
            // What the client sent right behind its upgrade request goes first.
            if !early.is_empty() {
                t.inner.write_all(&early).await?;
                t.inner.flush().await?;
                conn.metrics.bytes_in.increment(early.len() as u64);
            }
            tokio::io::copy_bidirectional(&mut c, &mut t).await
        } => close_reason(&r),
        why = watchdog => {
            // Over on berth's side: both streams are closed properly (TLS close_notify, FIN).
            let _ = tokio::time::timeout(CLOSE_GRACE, c.inner.shutdown()).await;
            let _ = tokio::time::timeout(CLOSE_GRACE, t.inner.shutdown()).await;
            why
        }
    };
    open.decrement(1.0);
    let reason_label = [
        ("listener", conn.listener.clone()),
        ("target_group", group.clone()),
        ("reason", reason.to_string()),
    ];
    metrics::counter!(m::UPGRADED_CLOSES, &reason_label).increment(1);
    tracing::debug!(listener = %conn.listener, target_group = %group, target = %target.0.label, reason, "upgraded connection closed");
}

/// A tunnel stream that counts the bytes read from it and notes when bytes last moved.
struct Metered<'a, S> {
    inner: S,
    last: &'a AtomicU64,
    bytes: &'a metrics::Counter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.store(now_ms(), Ordering::Relaxed);
            self.bytes.increment(n as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = Request::get("/ws").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        let p = parts(
            Version::HTTP_11,
            &[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive, Upgrade"),
            ],
        );
        assert_eq!(requested(&p).unwrap(), "WebSocket");
        // Without `Connection: upgrade`, another protocol, or over HTTP/2: not an upgrade.
        let p = parts(Version::HTTP_11, &[("upgrade", "websocket")]);
        assert!(requested(&p).is_none());
        let p = parts(
            Version::HTTP_11,
            &[("upgrade", "h2c"), ("connection", "upgrade")],
        );
        assert!(requested(&p).is_none());
        let mut p = parts(
            Version::HTTP_11,
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        );
        p.method = Method::POST;
        assert!(
            requested(&p).is_none(),
            "WebSocket upgrades are GET requests"
        );
        let p = parts(
            Version::HTTP_2,
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        );
        assert!(requested(&p).is_none());
    }

    #[test]
    fn prepare_puts_back_the_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        prepare(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn close_reasons() {
        assert_eq!(close_reason(&Ok((1, 2))), "closed");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(close_reason(&Err(reset)), "reset");
        let no_close_notify = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(close_reason(&Err(no_close_notify)), "closed");
        assert_eq!(close_reason(&Err(io::Error::other("x"))), "error");
    }
}
