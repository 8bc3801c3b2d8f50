//! The smallest hyper 1.x HTTP/1.1 reverse proxy: one upstream, a pooled keep-alive client, no
//! rules, no metrics. The benchmark runs it beside berth as the reference for what hyper itself
//! costs, and (`--pingora`) the same hyper service served from a pingora `ServerApp` with one
//! thread, to measure what pingora's runtime and listener cost hyper.
//!
//! Usage: `minimal_hyper LISTEN UPSTREAM [--pingora]`
//!
//! Default mode: one tokio current-thread runtime, a `SO_REUSEPORT` listener, hyper's HTTP/1
//! server per connection, every request forwarded through hyper-util's legacy `Client`
//! (keep-alive pool, no idle limit). Upstream failures answer 502.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const USAGE: &str = "usage: minimal_hyper LISTEN UPSTREAM [--pingora]
  LISTEN    ip:port to accept HTTP/1.1 on
  UPSTREAM  ip:port every request is forwarded to
  --pingora serve the same hyper service from a pingora ServerApp (one thread)";

type Body = Either<Incoming, Empty<Bytes>>;

/// The forwarding logic shared by both modes.
#[derive(Clone)]
struct Forward {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
}

impl Forward {
    fn new(upstream: SocketAddr) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let authority = Authority::try_from(upstream.to_string())
            .map_err(|e| format!("bad upstream {upstream}: {e}"))?;
        Ok(Forward { client, authority })
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let (mut parts, body) = req.into_parts();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
        };
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => Ok(resp.map(Either::Left)),
            Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
        }
    }

    /// Serves one client connection until it closes.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req| {
            let f = self.clone();
            async move { f.handle(req).await }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Either::Right(Empty::new()));
    *r.status_mut() = code;
    r
}

/// Default mode: hyper on its own current-thread runtime.
fn run_alone(listen: SocketAddr, forward: Forward) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuseaddr(true)
            .and_then(|_| socket.set_reuseport(true))
            .map_err(|e| format!("setsockopt: {e}"))?;
        socket
            .bind(listen)
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let listener = socket
            .listen(4096)
            .map_err(|e| format!("listen {listen}: {e}"))?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(forward.clone().serve(stream));
        }
    })
}

/// `--pingora` mode: the same service as a pingora `ServerApp`.
struct HyperApp(Forward);

#[async_trait]
impl pingora::apps::ServerApp for HyperApp {
    async fn process_new(
        self: &Arc<Self>,
        session: pingora::protocols::Stream,
        _shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        self.0.clone().serve(session).await;
        None
    }
}

fn run_in_pingora(listen: SocketAddr, forward: Forward) -> Result<(), String> {
    use pingora::listeners::ListenerConfig;
    use pingora::protocols::l4::stream::L4BufferSettings;
    use pingora::server::configuration::ServerConf;
    use pingora::server::Server;
    use pingora::services::listening::Service;

    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut svc = Service::new("minimal hyper".to_string(), HyperApp(forward));
    // As berth's TCP listeners: hyper has its own buffers.
    svc.add_listener(
        ListenerConfig::tcp(listen.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
    );
    svc.threads = Some(1);
    server.add_service(svc);
    server.run_forever()
}

fn main() -> ExitCode {
    let mut pingora = false;
    let mut positional = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--pingora" => pingora = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => positional.push(arg),
        }
    }
    let addrs: Option<(SocketAddr, SocketAddr)> = match positional.as_slice() {
        [l, u] => l.parse().ok().zip(u.parse().ok()),
        _ => None,
    };
    let Some((listen, upstream)) = addrs else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = Forward::new(upstream).and_then(|forward| {
        if pingora {
            run_in_pingora(listen, forward)
        } else {
            run_alone(listen, forward)
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal_hyper: {e}");
            ExitCode::FAILURE
        }
    }
}
