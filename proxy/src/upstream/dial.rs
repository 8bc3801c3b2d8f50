//! [`dial`]: a TCP connection to a target, then TLS (SNI, verification, ALPN) for `https`
//! groups, within one connect timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TargetTls;
use super::ConnectError;

/// A connection to a target: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Plain TCP (`http` groups).
    Plain(TcpStream),
    /// Client TLS (`https` groups).
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// The protocol ALPN chose, if TLS negotiated one.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamIo::Plain(_) => None,
            UpstreamIo::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    /// Whether ALPN chose HTTP/2 (`h2`).
    pub fn is_h2(&self) -> bool {
        self.alpn() == Some(b"h2")
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamIo::Tls(_))
    }
}

/// Connects to `addr`, then, with `tls`, completes a TLS handshake: the connect and the
/// handshake share `timeout`. With TLS for an HTTP/2 group the target must choose `h2` by
/// ALPN; refusing it (or choosing nothing) is a [`ConnectError::Protocol`].
pub async fn dial(
    addr: SocketAddr,
    tls: Option<&TargetTls>,
    timeout: Duration,
) -> Result<UpstreamIo, ConnectError> {
    match tokio::time::timeout(timeout, dial_inner(addr, tls)).await {
        Err(_) => Err(ConnectError::Timeout(addr)),
        Ok(r) => r,
    }
}

async fn dial_inner(addr: SocketAddr, tls: Option<&TargetTls>) -> Result<UpstreamIo, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Io(addr, e))?;
    // Requests and responses are written whole by hyper; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(UpstreamIo::Plain(stream));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config());
    let s = connector
        .connect(tls.server_name(addr), stream)
        .await
        .map_err(|e| classify_tls_error(addr, e))?;
    let io = UpstreamIo::Tls(Box::new(s));
    if tls.wants_h2() && !io.is_h2() {
        return Err(ConnectError::Protocol(
            addr,
            "the target did not choose h2 by ALPN".into(),
        ));
    }
    Ok(io)
}

/// A failed handshake: refused ALPN is a protocol mismatch, any other TLS error (certificate,
/// alert, not TLS at all) a TLS failure; plain I/O errors a connect failure.
fn classify_tls_error(addr: SocketAddr, e: io::Error) -> ConnectError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol))
        | Some(rustls::Error::NoApplicationProtocol) => {
            ConnectError::Protocol(addr, "the target refused the offered ALPN protocol".into())
        }
        Some(t) => ConnectError::Tls(addr, t.to_string()),
        None => ConnectError::Io(addr, e),
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
