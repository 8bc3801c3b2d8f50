//! HTTP clients: [`Http`] (hyper-util's pooled client; any method, Host, headers and source
//! address) and [`raw_request`] for bytes that are not valid HTTP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as (lossy) UTF-8.
    pub body: String,
}

impl Resp {
    /// A header's value as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `x-backend` header: which backend answered.
    pub fn backend(&self) -> &str {
        self.header("x-backend")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A pooled HTTP/1.1 client with a per-request timeout.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A keep-alive client with a 10 s request timeout.
    pub fn new() -> Http {
        Self::build(None, true)
    }

    /// A client that opens a new connection for every request.
    pub fn no_pool() -> Http {
        Self::build(None, false)
    }

    /// A client whose connections come from `source` (a loopback address).
    pub fn from_source(source: IpAddr) -> Http {
        Self::build(Some(source), false)
    }

    fn build(source: Option<IpAddr>, pool: bool) -> Http {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_local_address(source);
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut b = Client::builder(TokioExecutor::new());
        if !pool {
            b.pool_max_idle_per_host(0);
        } else {
            b.pool_idle_timeout(Duration::from_secs(5));
        }
        Http {
            client: b.build(conn),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Http {
        self.timeout = timeout;
        self
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Resp> {
        self.request(Method::GET, url, &[]).await
    }

    /// `GET url` with extra headers (a `host` header overrides the URL's).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.request(Method::GET, url, headers).await
    }

    /// Any method, any headers, empty body.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Resp> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).context("build request")?;
        let fut = async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Resp {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).to_string(),
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| anyhow!("timed out after {:?}: {url}", self.timeout))?
            .with_context(|| format!("request to {url}"))
    }
}

/// Sends `bytes` on a new connection to `addr` and returns what came back until the response
/// head is complete (plus any body bytes already read), the peer closes, or 5 s pass.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Err(e)) if buf.is_empty() => return Err(e.into()),
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).to_string())
}

/// The status code of a raw HTTP/1.x response text (`HTTP/1.1 400 Bad Request...`).
pub fn raw_status(text: &str) -> Option<u16> {
    let line = text.lines().next()?;
    let mut it = line.split_whitespace();
    let proto = it.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    it.next()?.parse().ok()
}

/// Opens a TCP connection to `addr` from `source`.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    Ok(sock.connect(addr).await?)
}
