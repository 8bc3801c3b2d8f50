//! `task-app --listen IP:PORT --mode graceful|abrupt --grace-ms N --name TASKID`: the
//! application inside a fake ECS task started by `tests/moto/launcher.py`.
//!
//! An HTTP/1.1 keep-alive server that answers every method and path with 200, `x-task: <name>`
//! and `x-backend: <name>` after reading the whole request body; the body is
//! `<name> <METHOD> received=<body bytes>`. `/health` answers 200. `?delay_ms=N` sleeps N ms
//! before answering (a request in flight when the task is stopped).
//!
//! On SIGTERM (what ECS sends when it stops a task):
//! - `graceful`: closes the listener at once, closes idle keep-alive connections, lets requests
//!   in flight finish (each connection closes after its current response) and exits 0 when none
//!   is left, or exits 0 anyway after `--grace-ms`;
//! - `abrupt`: exits 0 at once, dropping every connection and request in flight.
//!
//! Prints `LISTENING <addr>` on stdout once it accepts connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the app does on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Graceful,
    Abrupt,
}

/// Command line.
#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    mode: Mode,
    grace: Duration,
    name: String,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "task-app: {msg}\nusage: task-app --listen IP:PORT --mode graceful|abrupt \
         [--grace-ms N] [--name TASKID]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut listen = None;
    let mut mode = Mode::Graceful;
    let mut grace = Duration::from_secs(30);
    let mut name = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => {
                let v = value();
                listen = Some(
                    v.parse()
                        .unwrap_or_else(|_| usage(&format!("--listen: {v:?} is not IP:PORT"))),
                );
            }
            "--mode" => {
                mode = match value().as_str() {
                    "graceful" => Mode::Graceful,
                    "abrupt" => Mode::Abrupt,
                    other => usage(&format!("--mode: {other:?} is not graceful or abrupt")),
                }
            }
            "--grace-ms" => {
                let v = value();
                grace = Duration::from_millis(
                    v.parse()
                        .unwrap_or_else(|_| usage(&format!("--grace-ms: {v:?} is not a number"))),
                );
            }
            "--name" => name = Some(value()),
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen is required"));
    Args {
        listen,
        mode,
        grace,
        name: name.unwrap_or_else(|| listen.to_string()),
    }
}

/// The `delay_ms` query parameter, if any.
fn delay_of(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "delay_ms")
        .and_then(|(_, v)| v.parse().ok())
        .map(Duration::from_millis)
}

async fn handle(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let delay = delay_of(req.uri().query());
    let received = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(e) => {
            let body = format!("{name}: reading the body failed: {e}");
            return Ok(reply(&name, StatusCode::BAD_REQUEST, body));
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let body = if path == "/health" {
        "ok".to_string()
    } else {
        format!("{name} {method} received={received}")
    };
    Ok(reply(&name, StatusCode::OK, body))
}

fn reply(name: &str, status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(name) {
        r.headers_mut().insert("x-task", v.clone());
        r.headers_mut().insert("x-backend", v);
    }
    r
}

/// Serves one connection; on `stop`, asks hyper to finish the current response (if any) and
/// close, which closes an idle keep-alive connection at once.
async fn serve(stream: tokio::net::TcpStream, name: Arc<str>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| handle(name.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    let mut conn = pin!(conn);
    if !*stop.borrow() {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("task-app: cannot install the SIGTERM handler: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "task-app {}: cannot listen on {}: {e}",
                args.name, args.listen
            );
            std::process::exit(1);
        }
    };
    let name: Arc<str> = Arc::from(args.name.as_str());
    println!("LISTENING {}", args.listen);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, name.clone(), stop_rx.clone()));
                }
                Err(e) => eprintln!("task-app {name}: accept: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    if args.mode == Mode::Abrupt {
        eprintln!("task-app {name}: SIGTERM, abrupt: exiting now");
        std::process::exit(0);
    }
    // Graceful: no new connections, idle ones closed, in-flight requests finish.
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    let drained = tokio::time::timeout(args.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    eprintln!(
        "task-app {name}: SIGTERM, graceful: {open} connections {}",
        if drained {
            "finished"
        } else {
            "cut at the end of the grace period"
        }
    );
    std::process::exit(0);
}
