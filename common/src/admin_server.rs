//! The admin port's plumbing, the same for both binaries: an accept loop that serves each
//! connection on its own task ([`accept_loop`]), HTTP/1.1 on a connection with a request
//! handler ([`serve_http1`]), both together ([`serve`]), and plain responses ([`reply`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// An admin response: a whole body in memory.
pub type AdminResponse = Response<Full<Bytes>>;

/// How long the loop waits after a failed accept (out of file descriptors, say) before the
/// next, so a persistent error does not spin.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until `shutdown` completes, each served by `on_connection` on its own
/// task. Accept errors are logged and retried after [`ACCEPT_RETRY`].
pub async fn accept_loop<C, F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut on_connection: C,
) where
    C: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(on_connection(stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Serves HTTP/1.1 requests on `io` with `handler` until the connection ends.
pub async fn serve_http1<IO, H, F>(io: IO, handler: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = AdminResponse> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let answer = handler(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Serves HTTP/1.1 with `handler` on every connection `listener` accepts, until `shutdown`
/// completes.
pub async fn serve<H, F>(listener: TcpListener, shutdown: impl Future<Output = ()>, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = AdminResponse> + Send + 'static,
{
    accept_loop(listener, shutdown, |stream, _peer| {
        serve_http1(stream, handler.clone())
    })
    .await;
}

/// A response of `status` with a `Content-Type` (omitted when not a valid header value).
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_until_shutdown() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            async move {
                let _ = rx.await;
            },
            |req: Request<Incoming>| async move {
                reply(
                    StatusCode::OK,
                    "text/plain",
                    format!("path {}", req.uri().path()),
                )
            },
        ));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("content-type: text/plain\r\n"), "{answer}");
        assert!(answer.ends_with("path /x"), "{answer}");
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn reply_skips_an_invalid_content_type() {
        let r = reply(StatusCode::NOT_FOUND, "bad\nvalue", "nope");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers().get(hyper::header::CONTENT_TYPE).is_none());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "nope");
    }
}
