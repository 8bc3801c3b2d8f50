//! gRPC for tests: a small echo service written by hand (prost messages and tonic's
//! `server::Grpc` / `client::Grpc` with `tonic_prost::ProstCodec`; no protoc, no generated code),
//! a target serving it over h2c on a loopback address, and a client speaking it over h2c or TLS
//! (h2 by ALPN).
//!
//! The target is served by hyper directly rather than by tonic's `Server`: it can then be
//! killed at once (every connection closed mid-call), and it does not enforce `grpc-timeout`
//! itself, so a deadline a test sees exceeded was enforced by berth.
//!
//! Service `berth.test.Echo`, one message type [`Msg`] for every method:
//! - `Unary`: waits `delay_ms`, then answers `fail_code` as a trailers-only error if it is not
//!   0, else echoes the message with `text` prefixed by the target's name;
//! - `ServerStream`: `count` messages (`seq` 0, 1, ...), `delay_ms` apart, then ends with
//!   `fail_code` (0: OK), with trailers `x-detail-bin` and `x-target` when `custom_trailers`;
//! - `ClientStream`: answers once, with `seq` = messages received and `text` = their `seq`s summed;
//! - `Bidi`: echoes each message as it comes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use http::uri::PathAndQuery;
use http::Uri;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::Service;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status, Streaming};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tonic_prost::ProstCodec;

/// The one message of the echo service; see the module doc for what each field asks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Free text (echoed with the target's name in front).
    #[prost(string, tag = "1")]
    pub text: String,
    /// A sequence number.
    #[prost(uint32, tag = "2")]
    pub seq: u32,
    /// `ServerStream`: how many messages to send.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// `Unary`: wait before answering; `ServerStream`: between messages.
    #[prost(uint64, tag = "4")]
    pub delay_ms: u64,
    /// The gRPC code to end the call with (0: OK).
    #[prost(int32, tag = "5")]
    pub fail_code: i32,
    /// `ServerStream`: end with custom trailers (a binary one included).
    #[prost(bool, tag = "6")]
    pub custom_trailers: bool,
}

/// The bytes of the `x-detail-bin` trailer `ServerStream` sends (not valid UTF-8 on purpose).
pub const DETAIL_BIN: &[u8] = &[0x00, 0xff, 0x10, 0x80, b'b', b'e', b'r', b't', b'h'];

/// The message of the error statuses the target answers with.
pub const FAIL_MESSAGE: &str = "target says no: 100% été";

const UNARY: &str = "/berth.test.Echo/Unary";
const SERVER_STREAM: &str = "/berth.test.Echo/ServerStream";
const CLIENT_STREAM: &str = "/berth.test.Echo/ClientStream";
const BIDI: &str = "/berth.test.Echo/Bidi";

type Codec = ProstCodec<Msg, Msg>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

type Answer<R> = tonic::codegen::BoxFuture<tonic::Response<R>, Status>;

/// One method of the service as tonic's `server::Grpc` wants it: a tower service, here a
/// function of the request and the target's name.
struct Handler<Req, R> {
    f: fn(tonic::Request<Req>, Arc<str>) -> Answer<R>,
    name: Arc<str>,
}

impl<Req, R> Service<tonic::Request<Req>> for Handler<Req, R> {
    type Response = tonic::Response<R>;
    type Error = Status;
    type Future = Answer<R>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Req>) -> Answer<R> {
        (self.f)(req, Arc::clone(&self.name))
    }
}

/// The status a call ends with: `fail_code`, with the custom trailers when asked.
fn end_status(m: &Msg, name: &str) -> Status {
    let mut md = MetadataMap::new();
    if m.custom_trailers {
        md.insert_bin("x-detail-bin", MetadataValue::from_bytes(DETAIL_BIN));
        if let Ok(v) = name.parse() {
            md.insert("x-target", v);
        }
    }
    let msg = if m.fail_code == 0 { "" } else { FAIL_MESSAGE };
    Status::with_metadata(Code::from(m.fail_code), msg, md)
}

/// `Unary`.
async fn unary(r: tonic::Request<Msg>, name: Arc<str>) -> Result<tonic::Response<Msg>, Status> {
    let m = r.into_inner();
    tokio::time::sleep(Duration::from_millis(m.delay_ms)).await;
    if m.fail_code != 0 {
        return Err(end_status(&m, &name));
    }
    let text = format!("{name}:{}", m.text);
    Ok(tonic::Response::new(Msg { text, ..m }))
}

/// `ServerStream`.
async fn server_stream(
    r: tonic::Request<Msg>,
    name: Arc<str>,
) -> Result<tonic::Response<MsgStream>, Status> {
    let m = r.into_inner();
    let delay = Duration::from_millis(m.delay_ms);
    let end = (m.fail_code != 0 || m.custom_trailers).then(|| end_status(&m, &name));
    let text = format!("{name}:{}", m.text);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for seq in 0..m.count {
            tokio::time::sleep(delay).await;
            let msg = Msg {
                text: text.clone(),
                seq,
                ..Msg::default()
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        if let Some(status) = end {
            let _ = tx.send(Err(status)).await;
        }
    });
    let s = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(tonic::Response::new(Box::pin(s) as MsgStream))
}

/// `ClientStream`.
async fn client_stream(
    r: tonic::Request<Streaming<Msg>>,
    _: Arc<str>,
) -> Result<tonic::Response<Msg>, Status> {
    let mut input = r.into_inner();
    let (mut n, mut sum) = (0u32, 0u64);
    while let Some(m) = input.message().await? {
        n += 1;
        sum += u64::from(m.seq);
    }
    Ok(tonic::Response::new(Msg {
        seq: n,
        text: sum.to_string(),
        ..Msg::default()
    }))
}

/// `Bidi`.
async fn bidi(
    r: tonic::Request<Streaming<Msg>>,
    name: Arc<str>,
) -> Result<tonic::Response<MsgStream>, Status> {
    let s = r.into_inner().map(move |m| {
        m.map(|m| Msg {
            text: format!("{name}:{}", m.text),
            ..m
        })
    });
    Ok(tonic::Response::new(Box::pin(s) as MsgStream))
}

type RouteFuture = Pin<Box<dyn Future<Output = http::Response<tonic::body::Body>> + Send>>;

/// Answers one request of the echo service or of `grpc.health.v1.Health`.
fn route(
    req: http::Request<Incoming>,
    name: Arc<str>,
    mut health: HealthServer<HealthService>,
) -> RouteFuture {
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(Codec::default());
        match req.uri().path() {
            p if p.starts_with("/grpc.health.v1.Health/") => match health.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
            UNARY => {
                let f = |r, n| Box::pin(unary(r, n)) as Answer<Msg>;
                grpc.unary(Handler { f, name }, req).await
            }
            SERVER_STREAM => {
                let f = |r, n| Box::pin(server_stream(r, n)) as Answer<MsgStream>;
                grpc.server_streaming(Handler { f, name }, req).await
            }
            CLIENT_STREAM => {
                let f = |r, n| Box::pin(client_stream(r, n)) as Answer<Msg>;
                grpc.client_streaming(Handler { f, name }, req).await
            }
            BIDI => {
                let f = |r, n| Box::pin(bidi(r, n)) as Answer<MsgStream>;
                grpc.streaming(Handler { f, name }, req).await
            }
            _ => Status::unimplemented("no such method").into_http(),
        }
    })
}

/// A gRPC target on a loopback address: the echo service over h2c (HTTP/2 with prior
/// knowledge), and the standard health service (serving at start). Killed on drop.
pub struct GrpcTarget {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    health: HealthReporter,
}

impl GrpcTarget {
    /// Starts target `name` (its name prefixes echoed texts) on a fresh loopback address.
    pub async fn spawn(name: &str) -> GrpcTarget {
        let l = TcpListener::bind(SocketAddr::new(crate::net::target_ip(), 0))
            .await
            .expect("bind gRPC target");
        let addr = l.local_addr().expect("local addr");
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let name: Arc<str> = Arc::from(name);
        let reporter = HealthReporter::new();
        let health = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let conns = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                let (name, health) = (Arc::clone(&name), health.clone());
                let svc = hyper::service::service_fn(move |req| {
                    let (name, health) = (Arc::clone(&name), health.clone());
                    async move { Ok::<_, Infallible>(route(req, name, health).await) }
                });
                let conn = tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
                lock(&conns).push(conn.abort_handle());
            }
        });
        lock(&tasks).push(accept.abort_handle());
        GrpcTarget {
            addr,
            tasks,
            health: reporter,
        }
    }

    /// Sets what `grpc.health.v1.Health/Check` answers for the server as a whole (service "").
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection at once, calls in flight included (their
    /// streams end without a status, as when a task is killed).
    pub fn kill(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

impl Drop for GrpcTarget {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One HTTP/2 connection as tonic's client wants it: a tower service sending requests.
#[derive(Clone)]
struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type H2Future =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = H2Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> H2Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A client of the echo service over one HTTP/2 connection, closed on drop.
pub struct GrpcClient {
    grpc: tonic::client::Grpc<H2>,
    conn: AbortHandle,
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl GrpcClient {
    /// Connects to `addr` with HTTP/2 prior knowledge (h2c).
    pub async fn h2c(addr: SocketAddr) -> Result<GrpcClient> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        Self::over(tcp, "http://grpc.test").await
    }

    /// Connects to `addr` over TLS with SNI `sni`, offering only `h2` by ALPN.
    pub async fn tls(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        sni: &str,
    ) -> Result<GrpcClient> {
        let tls = crate::tls::connect(cfg, addr, sni).await?;
        anyhow::ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            "ALPN did not choose h2"
        );
        Self::over(tls, &format!("https://{sni}")).await
    }

    async fn over<S>(io: S, origin: &str) -> Result<GrpcClient>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let origin: Uri = origin.parse()?;
        Ok(GrpcClient {
            grpc: tonic::client::Grpc::with_origin(H2(send), origin),
            conn: conn.abort_handle(),
        })
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))
    }

    /// `Unary`, with `grpc-timeout` when `timeout` is set.
    pub async fn unary(
        &mut self,
        m: Msg,
        timeout: Option<Duration>,
    ) -> Result<tonic::Response<Msg>, Status> {
        self.ready().await?;
        let mut req = tonic::Request::new(m);
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        let path = PathAndQuery::from_static(UNARY);
        self.grpc.unary(req, path, Codec::default()).await
    }

    /// `ServerStream`: the response stream.
    pub async fn server_stream(&mut self, m: Msg) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(SERVER_STREAM);
        let r = self
            .grpc
            .server_streaming(tonic::Request::new(m), path, Codec::default())
            .await?;
        Ok(r.into_inner())
    }

    /// `ClientStream` of `msgs`: the one answer.
    pub async fn client_stream(&mut self, msgs: Vec<Msg>) -> Result<Msg, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(CLIENT_STREAM);
        let req = tonic::Request::new(tokio_stream::iter(msgs));
        let r = self
            .grpc
            .client_streaming(req, path, Codec::default())
            .await?;
        Ok(r.into_inner())
    }

    /// `Bidi` with `input` as the request stream: the response stream.
    pub async fn bidi<S>(&mut self, input: S) -> Result<Streaming<Msg>, Status>
    where
        S: Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        let path = PathAndQuery::from_static(BIDI);
        let r = self
            .grpc
            .streaming(tonic::Request::new(input), path, Codec::default())
            .await?;
        Ok(r.into_inner())
    }
}

/// Reads a response stream to its end: the messages, then the status it ended with (OK with
/// its trailers, or the error).
pub async fn drain(mut s: Streaming<Msg>) -> (Vec<Msg>, Result<MetadataMap, Status>) {
    let mut out = Vec::new();
    loop {
        match s.message().await {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {
                let trailers = s.trailers().await.map(Option::unwrap_or_default);
                return (out, trailers);
            }
            Err(e) => return (out, Err(e)),
        }
    }
}
