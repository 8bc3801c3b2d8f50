//! The body of a response to a client: either berth's own (a fixed response, a redirect, an
//! error) or a target's, streamed through with a read timeout per frame. When the body ends —
//! read to its end, failed, or dropped because the client went away — its [`OnEnd`] runs once:
//! that is where a request is counted and its upstream connection goes back to the pool.
//!
//! Trailers pass through untouched, and are shown to the [`OnEnd`] first (a gRPC call's status
//! is in them). The body of a gRPC call ([`DownBody::ending_grpc_calls`]) does not fail when the
//! target's body does: it ends with trailers of its own, `grpc-status: 14` (`UNAVAILABLE`) and
//! what berth saw, so that the client sees a status it may retry instead of a reset stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// What runs once when a response body ends.
pub trait OnEnd: Send {
    /// `complete`: the body was sent whole; `body_bytes`: data bytes passed to the client.
    fn ended(self: Box<Self>, complete: bool, body_bytes: u64);

    /// A trailer section on its way to the client, before [`OnEnd::ended`] (default: nothing
    /// to do).
    fn trailers(&mut self, _trailers: &HeaderMap) {}
}

/// Why a response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The target's body failed (reset, closed early, malformed).
    #[error("target response body: {0}")]
    Upstream(#[from] hyper::Error),
    /// The target sent nothing for the read timeout.
    #[error("target response body: nothing read for {0:?}")]
    Timeout(Duration),
}

enum Source {
    Full(Option<Bytes>),
    Upstream {
        inner: Incoming,
        read_timeout: Duration,
        // Armed only when the target makes us wait: a body that is ready costs no timer.
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

/// A response body to a client.
pub struct DownBody {
    source: Source,
    bytes: u64,
    on_end: Option<Box<dyn OnEnd>>,
    /// A gRPC call: a failed target body ends with `UNAVAILABLE` trailers instead of an error.
    grpc: bool,
}

impl std::fmt::Debug for DownBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl DownBody {
    /// A body berth wrote itself.
    pub fn full(bytes: Bytes, on_end: Box<dyn OnEnd>) -> DownBody {
        DownBody {
            source: Source::Full((!bytes.is_empty()).then_some(bytes)),
            bytes: 0,
            on_end: Some(on_end),
            grpc: false,
        }
    }

    /// A target's body, failing when no frame arrives for `read_timeout`.
    pub fn upstream(inner: Incoming, read_timeout: Duration, on_end: Box<dyn OnEnd>) -> DownBody {
        DownBody {
            source: Source::Upstream {
                inner,
                read_timeout,
                sleep: None,
            },
            bytes: 0,
            on_end: Some(on_end),
            grpc: false,
        }
    }

    /// The body of a gRPC call: should the target's body fail (reset, closed early, silent for
    /// the read timeout), it ends with trailers `grpc-status: 14` and `grpc-message` saying
    /// why, instead of failing the client's stream.
    pub fn ending_grpc_calls(mut self) -> DownBody {
        self.grpc = true;
        self
    }

    fn end(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f.ended(complete, self.bytes);
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.end(complete);
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream {
                inner,
                read_timeout,
                sleep,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(r) => {
                    *sleep = None;
                    Poll::Ready(r.map(|r| r.map_err(BodyError::from)))
                }
                Poll::Pending => {
                    let timer =
                        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*read_timeout)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err(BodyError::Timeout(*read_timeout))))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
        };
        if let Poll::Ready(Some(Err(e))) = &polled {
            if this.grpc {
                // The HTTP status is sent already: the call ends with berth's trailers instead,
                // counted, and the response ends there, not whole (its connection is not kept).
                let t = super::grpc::failure_trailers(&format!("berth: {e}"));
                tracing::debug!(error = %e, "gRPC call ended with UNAVAILABLE: target body failed");
                this.source = Source::Full(None);
                if let Some(on_end) = this.on_end.as_mut() {
                    on_end.trailers(&t);
                }
                this.end(false);
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                } else if let Some(t) = f.trailers_ref() {
                    if let Some(on_end) = this.on_end.as_mut() {
                        on_end.trailers(t);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(false),
            Poll::Ready(None) => this.end(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(b) => b.is_none(),
            Source::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct Record(Arc<AtomicU64>);
    impl OnEnd for Record {
        fn ended(self: Box<Self>, complete: bool, body_bytes: u64) {
            self.0
                .store(body_bytes * 2 + u64::from(complete), Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn full_body_ends_once_with_its_length() {
        use http_body_util::BodyExt;
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let body = DownBody::full(Bytes::from_static(b"hello"), Box::new(Record(seen.clone())));
        assert_eq!(body.size_hint().exact(), Some(5));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        assert_eq!(seen.load(Ordering::SeqCst), 5 * 2 + 1);
    }

    #[test]
    fn dropped_unsent_body_ends_incomplete() {
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        drop(DownBody::full(
            Bytes::from_static(b"x"),
            Box::new(Record(seen.clone())),
        ));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    /// A target's response body that sends `hello`, then fails (its connection is cut) when
    /// told to.
    struct Broken(bool, tokio::sync::oneshot::Receiver<()>);
    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if !self.0 {
                self.0 = true;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"hello")))));
            }
            Pin::new(&mut self.1)
                .poll(cx)
                .map(|_| Some(Err(std::io::Error::other("target died"))))
        }
    }

    /// What a gRPC call's [`OnEnd`] saw: the trailers' `grpc-status`, and how it ended.
    struct Seen(Arc<std::sync::Mutex<(Option<String>, Option<bool>)>>);
    impl OnEnd for Seen {
        fn ended(self: Box<Self>, complete: bool, _body_bytes: u64) {
            self.0.lock().unwrap().1 = Some(complete);
        }
        fn trailers(&mut self, t: &HeaderMap) {
            let status = t
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string());
            self.0.lock().unwrap().0 = status;
        }
    }

    #[tokio::test]
    async fn a_grpc_call_whose_target_body_fails_ends_with_unavailable_trailers() {
        use http_body_util::BodyExt;
        use hyper_util::rt::TokioIo;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (die, dying) = tokio::sync::oneshot::channel::<()>();
        let dying = std::sync::Mutex::new(Some(dying));
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |_req| {
                let rx = dying.lock().unwrap().take().unwrap();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Broken(false, rx))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::new(http_body_util::Empty::<Bytes>::new());
        let resp = send.send_request(req).await.unwrap();
        let seen = Arc::new(std::sync::Mutex::new((None, None)));
        let on_end = Box::new(Seen(Arc::clone(&seen)));
        let mut body = DownBody::upstream(resp.into_body(), Duration::from_secs(5), on_end)
            .ending_grpc_calls();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"hello"[..]));
        drop(die);
        // The failure becomes trailers, not an error; then the body is over.
        let last = body.frame().await.unwrap().expect("trailers, not an error");
        let t = last.trailers_ref().expect("a trailers frame");
        assert_eq!(t["grpc-status"], "14");
        let message = t["grpc-message"].to_str().unwrap();
        assert!(
            message.starts_with("berth: target response body"),
            "{message}"
        );
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        assert_eq!(*seen.lock().unwrap(), (Some("14".to_string()), Some(false)));
    }
}
