//! Active health checks, bounded by the check timeout: TCP (connect), HTTP or HTTPS (`GET
//! path`, status against the matcher; HTTP/2 for `http2` and `grpc` groups, so a target that
//! speaks only h2c is checkable) and gRPC (`grpc.health.v1.Health/Check`, see [`super::grpc`]).
//! They use hyper's client over the same [`upstream::dial`] as requests, with the group's TLS
//! settings. The group loop ([`crate::group_loop`]) runs them and feeds each result to its
//! target's state machine.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_config::model::{HealthCheck, HealthProtocol, TargetGroup};
use http::header::{self, HeaderValue};
use http::{Method, Request};

use crate::upstream::sender::{handshake, H2Stream, Handshaken};
use crate::upstream::{self, Sender, TargetTls, UpBody};

/// How a group's checks reach its targets: over TLS or not, in HTTP/2 or not.
#[derive(Debug, Clone)]
pub struct Via {
    /// TLS for `https` checks, and `grpc` checks of `https` groups.
    pub tls: Option<Arc<TargetTls>>,
    /// Whether HTTP checks speak HTTP/2 (the group's `protocol_version`).
    pub h2: bool,
}

impl Via {
    /// The way `group`'s checks go; an error when its TLS settings cannot be built.
    pub fn of(group: &TargetGroup) -> Result<Via, String> {
        let tls = upstream::tls::for_health_check(group).map_err(|e| e.to_string())?;
        Ok(Via {
            tls,
            h2: group.protocol_version.is_http2(),
        })
    }
}

/// Runs one check against `addr`; `Err` says why it failed.
pub async fn check(addr: SocketAddr, hc: &HealthCheck, via: &Via) -> Result<(), String> {
    let addr = match hc.port {
        Some(p) => SocketAddr::new(addr.ip(), p),
        None => addr,
    };
    match tokio::time::timeout(hc.timeout, probe(addr, hc, via)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", hc.timeout)),
    }
}

async fn probe(addr: SocketAddr, hc: &HealthCheck, via: &Via) -> Result<(), String> {
    let (tls, h2) = match hc.protocol {
        HealthProtocol::Tcp => {
            return tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("connect: {e}"));
        }
        HealthProtocol::Http => (None, via.h2),
        HealthProtocol::Https => (via.tls.as_deref(), via.h2),
        HealthProtocol::Grpc => (via.tls.as_deref(), true),
    };
    let io = upstream::dial(addr, tls, hc.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = match handshake(io, h2, addr).await.map_err(|e| e.to_string())? {
        Handshaken::H1(tx) => Sender::H1(tx),
        Handshaken::H2(tx, conn) => Sender::H2(H2Stream::new(tx, conn)),
    };
    let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
    if hc.protocol == HealthProtocol::Grpc {
        return super::grpc::check(&mut sender, &host, &hc.grpc_service, &hc.matcher).await;
    }
    let mut req = Request::new(UpBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = hc.path.parse().map_err(|e| format!("bad path: {e}"))?;
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(header::HOST, v);
    }
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("berth-health-check"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if !h2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let resp = sender
        .send(req)
        .await
        .map_err(|e| format!("request: {}", describe(e.error())))?;
    let code = resp.status().as_u16();
    if hc.matcher.matches(code) {
        Ok(())
    } else {
        Err(format!("status {code} does not match"))
    }
}

/// A hyper error with its causes, for the check's failure reason.
pub(super) fn describe(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::Matcher;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const PLAIN: Via = Via {
        tls: None,
        h2: false,
    };

    fn hc(protocol: HealthProtocol) -> HealthCheck {
        HealthCheck {
            enabled: true,
            protocol,
            grpc_service: String::new(),
            path: "/health".into(),
            host: None,
            port: None,
            matcher: Matcher(vec![(200, 299)]),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }

    async fn server(response: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    if !response.is_empty() {
                        let _ = s.write_all(response.as_bytes()).await;
                    } else {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_check_matches_status() {
        let ok = server("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert!(check(ok, &hc(HealthProtocol::Http), &PLAIN).await.is_ok());
        let bad = server("HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let e = check(bad, &hc(HealthProtocol::Http), &PLAIN)
            .await
            .unwrap_err();
        assert!(e.contains("503"), "{e}");
    }

    #[tokio::test]
    async fn hanging_target_times_out() {
        let hang = server("").await;
        let e = check(hang, &hc(HealthProtocol::Http), &PLAIN)
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn tcp_check_connects_and_refused_fails() {
        let ok = server("").await;
        assert!(check(ok, &hc(HealthProtocol::Tcp), &PLAIN).await.is_ok());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        assert!(check(closed, &hc(HealthProtocol::Tcp), &PLAIN)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn garbage_response_fails() {
        let g = server("SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(check(g, &hc(HealthProtocol::Http), &PLAIN).await.is_err());
    }

    #[tokio::test]
    async fn h2c_only_target_is_checked_in_http2() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let status = if req.version() == http::Version::HTTP_2 {
                                200
                            } else {
                                505
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        let h2 = Via {
            tls: None,
            h2: true,
        };
        check(addr, &hc(HealthProtocol::Http), &h2).await.unwrap();
        // The same target checked in HTTP/1.1 fails: it speaks only h2c.
        assert!(check(addr, &hc(HealthProtocol::Http), &PLAIN)
            .await
            .is_err());
    }
}
