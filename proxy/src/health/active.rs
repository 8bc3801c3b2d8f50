//! Active health checks: HTTP (`GET path`, status against a matcher) or TCP (connect), each
//! bounded by the check timeout. The group loop ([`crate::group_loop`]) runs them and feeds
//! each result to its target's state machine.

use std::net::SocketAddr;

use berth_config::model::{HealthCheck, HealthProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest health check response head read, in bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Runs one check against `addr`; `Err` says why it failed.
pub async fn check(addr: SocketAddr, hc: &HealthCheck) -> Result<(), String> {
    let addr = match hc.port {
        Some(p) => SocketAddr::new(addr.ip(), p),
        None => addr,
    };
    match tokio::time::timeout(hc.timeout, probe(addr, hc)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", hc.timeout)),
    }
}

async fn probe(addr: SocketAddr, hc: &HealthCheck) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if hc.protocol == HealthProtocol::Tcp {
        return Ok(());
    }
    let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        hc.path
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let code = resp.code.unwrap_or(0);
                return if hc.matcher.matches(code) {
                    Ok(())
                } else {
                    Err(format!("status {code} does not match"))
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("invalid response: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::Matcher;
    use std::time::Duration;
    use tokio::net::TcpListener;

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
        assert!(check(ok, &hc(HealthProtocol::Http)).await.is_ok());
        let bad = server("HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let e = check(bad, &hc(HealthProtocol::Http)).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
    }

    #[tokio::test]
    async fn hanging_target_times_out() {
        let hang = server("").await;
        let e = check(hang, &hc(HealthProtocol::Http)).await.unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn tcp_check_connects_and_refused_fails() {
        let ok = server("").await;
        assert!(check(ok, &hc(HealthProtocol::Tcp)).await.is_ok());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        assert!(check(closed, &hc(HealthProtocol::Tcp)).await.is_err());
    }

    #[tokio::test]
    async fn garbage_response_fails() {
        let g = server("SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(check(g, &hc(HealthProtocol::Http)).await.is_err());
    }
}
