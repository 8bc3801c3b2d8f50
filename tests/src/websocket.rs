//! WebSocket for the end-to-end tests: a loopback target that upgrades with tungstenite's
//! handshake rules and echoes every message, and clients (plain and TLS) made with
//! `tokio_tungstenite::client_async`.
//!
//! The target is a hyper HTTP/1.1 server (over TLS for an `https` group with
//! [`EchoTarget::spawn_tls`]), so it also answers berth's health checks (`GET
//! /health`: 200). An upgrade request with a `Sec-WebSocket-Key` gets `101` with the accept key
//! from `tungstenite::handshake::derive_accept_key` and the first offered subprotocol; the
//! connection is then a tungstenite [`WebSocketStream`] echoing text and binary messages back
//! until the client closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

use crate::tls::ServerCert;

/// The subprotocol test clients offer (the echo target accepts it, so it shows that
/// `Sec-WebSocket-Protocol` went both ways).
pub const SUBPROTOCOL: &str = "berth-echo";

/// What the echo target counts.
#[derive(Debug, Default)]
struct State {
    upgrades: AtomicU64,
    open: AtomicI64,
    messages: AtomicU64,
    last_headers: Mutex<Option<HeaderMap>>,
}

/// A WebSocket echo target on a loopback address; stops when dropped.
#[derive(Debug)]
pub struct EchoTarget {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl EchoTarget {
    /// Starts the target on a fresh loopback address.
    pub async fn spawn() -> EchoTarget {
        Self::start(None).await
    }

    /// Starts the target on a fresh loopback address, serving TLS with `cert` (an `https`
    /// target; ALPN `http/1.1`).
    pub async fn spawn_tls(cert: &ServerCert) -> EchoTarget {
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start(Some(TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> EchoTarget {
        let ip = crate::net::target_ip();
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind the WebSocket target");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, tls, Arc::clone(&state)));
        EchoTarget { addr, state, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `[{ address = "ip:port" }]` for a static source.
    pub fn targets_toml(&self) -> String {
        format!("[{{ address = \"{}\" }}]", self.addr)
    }

    /// Upgrades accepted so far.
    pub fn upgrades(&self) -> u64 {
        self.state.upgrades.load(Ordering::SeqCst)
    }

    /// WebSocket connections open now.
    pub fn open(&self) -> i64 {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Text and binary messages echoed so far.
    pub fn messages(&self) -> u64 {
        self.state.messages.load(Ordering::SeqCst)
    }

    /// The headers of the last upgrade request the target received.
    pub fn last_upgrade_headers(&self) -> Option<HeaderMap> {
        self.state
            .last_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for EchoTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(stream, state).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        serve(s, state).await;
                    }
                }
            }
        });
    }
}

async fn serve<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| answer(Arc::clone(&state), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// `/health` and other plain requests: 200; upgrade requests: 101, then the echo loop.
async fn answer(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key.filter(|_| req.headers().contains_key(http::header::UPGRADE)) else {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    };
    *state
        .last_headers
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(req.headers().clone());
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        st.upgrades.fetch_add(1, Ordering::SeqCst);
        st.open.fetch_add(1, Ordering::SeqCst);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                st.messages.fetch_add(1, Ordering::SeqCst);
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
        }
        st.open.fetch_sub(1, Ordering::SeqCst);
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", v);
    }
    Ok(resp)
}

/// The handshake response a client got.
pub type HandshakeResponse = tokio_tungstenite::tungstenite::handshake::client::Response;

/// Opens a WebSocket to `url` (`ws://host:port/path` or `wss://...`; the host becomes the
/// `Host` header) over `stream`, offering [`SUBPROTOCOL`].
pub async fn handshake<S>(url: &str, stream: S) -> Result<(WebSocketStream<S>, HandshakeResponse)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = url.into_client_request().context("WebSocket request")?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(client_async(req, stream).await?)
}

/// Opens a WebSocket to `path` through the plain listener at `addr`.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
) -> Result<(WebSocketStream<TcpStream>, HandshakeResponse)> {
    let tcp = TcpStream::connect(addr).await?;
    handshake(&format!("ws://{addr}{path}"), tcp).await
}

/// Opens a WebSocket to `path` through the https listener at `addr` with SNI (and `Host`)
/// `sni`, over TLS with `cfg`.
pub async fn connect_tls(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    path: &str,
) -> Result<(WebSocketStream<TlsStream<TcpStream>>, HandshakeResponse)> {
    let tls = crate::tls::connect(cfg, addr, sni).await?;
    handshake(&format!("wss://{sni}:{}{path}", addr.port()), tls).await
}

/// The status of a refused handshake (the proxy or the target answered without switching).
pub fn refused_status(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// Sends `msg` and returns the next text or binary message, within `timeout`.
pub async fn echo<S>(
    ws: &mut WebSocketStream<S>,
    msg: Message,
    timeout: Duration,
) -> Result<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(msg).await?;
    tokio::time::timeout(timeout, next_data(ws))
        .await
        .map_err(|_| anyhow!("no echo within {timeout:?}"))?
}

/// The next text or binary message; an error when the connection ends first.
pub async fn next_data<S>(ws: &mut WebSocketStream<S>) -> Result<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(m)) if m.is_text() || m.is_binary() => return Ok(m),
            Some(Ok(Message::Close(c))) => bail!("closed by the peer: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Waits up to `timeout` for the connection to end (a close frame, an error or the end of the
/// stream); false if it is still open then. Messages arriving meanwhile are an error.
pub async fn ended<S>(ws: &mut WebSocketStream<S>, timeout: Duration) -> Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, ws.next()).await {
        Err(_) => Ok(false),
        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => Ok(true),
        Ok(Some(Ok(m))) => bail!("unexpected message while waiting for the end: {m:?}"),
    }
}

/// Closes the WebSocket from the client side and reads until the peer's close arrives.
pub async fn close<S>(mut ws: WebSocketStream<S>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.close(None).await?;
    while let Some(m) = ws.next().await {
        if m.is_err() {
            break;
        }
    }
    Ok(())
}
