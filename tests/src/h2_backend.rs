//! A target that speaks HTTP/1.1 or HTTP/2 (h2c, or h2 over TLS), for the tests of berth's
//! connections to targets: hyper servers over plain TCP or tokio-rustls, on loopback.
//!
//! Paths: `/` (and any other path not below) answers 200 with the backend's name and
//! `x-version` (the HTTP version it received), `x-te` (the `te` header it got) and `x-seen-uri`
//! (the request URI, with the `:authority` on HTTP/2); `/health` answers 200; `/echo` streams the
//! request body back frame by frame as it arrives and ends with trailers `x-trailer: done`
//! and `x-request-trailer` (the request's `x-client-trailer` trailer, if any); `/reset` resets
//! the stream (RST_STREAM); `/goaway` sends GOAWAY and closes the connection under the
//! request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;

/// How the backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (h2c with prior knowledge, or h2 by ALPN over TLS).
    Http2,
}

/// A running backend; it stops when dropped.
pub struct H2Backend {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

/// What the backend saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received in HTTP/2.
    pub http2: AtomicU64,
    /// Requests received in HTTP/1.x.
    pub http1: AtomicU64,
    /// Connections accepted (TLS handshakes included or not).
    pub connections: AtomicU64,
    /// TLS handshakes that completed.
    pub handshakes: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

impl H2Backend {
    /// Starts a backend on a loopback port: plain when `tls` is `None`, else TLS with this
    /// PEM certificate chain and key (ALPN `h2` or `http/1.1` as `speaks` says).
    pub async fn start(name: &str, speaks: Speaks, tls: Option<(&str, &str)>) -> H2Backend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let acceptor = tls.map(|(cert, key)| acceptor(cert, key, speaks));
        let stats = Arc::new(Stats::default());
        let name: Arc<str> = Arc::from(name);
        let st = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                st.connections.fetch_add(1, Ordering::Relaxed);
                let (acceptor, st, name) = (acceptor.clone(), Arc::clone(&st), Arc::clone(&name));
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(tcp, speaks, st, name).await,
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                st.handshakes.fetch_add(1, Ordering::Relaxed);
                                serve(s, speaks, st, name).await
                            }
                        }
                    }
                });
            }
        });
        H2Backend { addr, stats, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it saw so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn acceptor(cert: &str, key: &str, speaks: Speaks) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    cfg.alpn_protocols = match speaks {
        Speaks::Http1 => vec![b"http/1.1".to_vec()],
        Speaks::Http2 => vec![b"h2".to_vec()],
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

async fn serve<S>(io: S, speaks: Speaks, st: Arc<Stats>, name: Arc<str>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let goaway = Arc::new(Notify::new());
    let g = Arc::clone(&goaway);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (st, name, g) = (Arc::clone(&st), Arc::clone(&name), Arc::clone(&g));
        async move { handle(req, &st, &name, &g).await }
    });
    match speaks {
        Speaks::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .await;
        }
        Speaks::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = goaway.notified() => {
                    // GOAWAY, then close under the request still held: drive the connection
                    // until the GOAWAY is out, and drop it.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_millis(300), conn.as_mut()).await;
                }
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    st: &Stats,
    name: &str,
    goaway: &Notify,
) -> Result<Response<Body>, std::io::Error> {
    let version = req.version();
    if version == http::Version::HTTP_2 {
        st.http2.fetch_add(1, Ordering::Relaxed);
    } else {
        st.http1.fetch_add(1, Ordering::Relaxed);
    }
    let te = req
        .headers()
        .get("te")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match req.uri().path() {
        "/reset" => Err(std::io::Error::other("reset this stream")),
        "/goaway" => {
            goaway.notify_one();
            std::future::pending::<()>().await;
            Err(std::io::Error::other("unreachable"))
        }
        "/echo" => Ok(echo(req.into_body())),
        _ => Ok(Response::builder()
            .header("x-version", format!("{version:?}"))
            .header("x-te", te)
            .header("x-seen-uri", req.uri().to_string())
            .header("x-backend", name)
            .body(Full::new(Bytes::from(name.to_string())).boxed())
            .expect("response")),
    }
}

/// Streams the body back as it arrives, then trailers.
fn echo(mut body: Incoming) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let mut request_trailer = None;
        while let Some(Ok(f)) = body.frame().await {
            match f.into_data() {
                Ok(d) => {
                    if tx.send(Ok(Frame::data(d))).await.is_err() {
                        return;
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        request_trailer = t.get("x-client-trailer").cloned();
                    }
                }
            }
        }
        let mut t = HeaderMap::new();
        t.insert("x-trailer", HeaderValue::from_static("done"));
        if let Some(v) = request_trailer {
            t.insert("x-request-trailer", v);
        }
        let _ = tx.send(Ok(Frame::trailers(t))).await;
    });
    Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed())
}
