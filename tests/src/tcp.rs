//! TCP-level pieces of the L4 tests: an echo target that can read a PROXY v2 header, the
//! PROXY v2 encoder a test client uses, and one-shot round trips through a listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::net;

/// A TCP echo target. In `proxy_aware` mode it first reads a PROXY v2 header and answers
/// `source=<ip:port>;vpce=<id>\n` before echoing.
pub struct Echo {
    /// Where the target listens (a fresh address from [`net::target_ip`]).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<AtomicU64>,
}

impl Echo {
    /// Starts a target; with `proxy_aware` every connection must begin with a PROXY v2 header.
    pub async fn start(proxy_aware: bool) -> Echo {
        let ip = net::target_ip();
        let l = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind echo");
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicU64::new(0));
        let c2 = conns.clone();
        let task = tokio::spawn(async move {
            let mut handlers = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                handlers.spawn(async move {
                    if proxy_aware {
                        match read_v2(&mut s).await {
                            Some((src, vpce)) => {
                                let line =
                                    format!("source={src};vpce={}\n", vpce.unwrap_or_default());
                                if s.write_all(line.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Echo { addr, task, conns }
    }

    /// Closes the listener and every connection, as a killed process would.
    pub fn kill(&self) {
        // Aborting the accept loop drops the listener and every handler's socket.
        self.task.abort();
    }

    /// Connections accepted so far (forwarded flows and TCP health checks alike).
    pub fn accepted(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a PROXY v2 header: the IPv4 source and the AWS VPC endpoint TLV; `None` when the
/// connection does not start with a v2 IPv4 header.
pub async fn read_v2(s: &mut TcpStream) -> Option<(SocketAddr, Option<String>)> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await.ok()?;
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" || head[13] != 0x11 {
        return None;
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    let src = SocketAddr::from((
        [body[0], body[1], body[2], body[3]],
        u16::from_be_bytes([body[8], body[9]]),
    ));
    let mut vpce = None;
    let mut i = 12;
    while i + 3 <= body.len() {
        let kind = body[i];
        let l = u16::from_be_bytes([body[i + 1], body[i + 2]]) as usize;
        let v = body.get(i + 3..i + 3 + l)?;
        if kind == 0xEA && v.first() == Some(&1) {
            vpce = Some(String::from_utf8_lossy(&v[1..]).into_owned());
        }
        i += 3 + l;
    }
    Some((src, vpce))
}

/// A PROXY v2 header (IPv4, TCP) with an optional AWS VPC endpoint TLV.
pub fn v2_header(src: SocketAddr, dst: SocketAddr, vpce: Option<&str>) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("ipv4 only");
    };
    let mut body = Vec::new();
    body.extend_from_slice(&s.ip().octets());
    body.extend_from_slice(&d.ip().octets());
    body.extend_from_slice(&s.port().to_be_bytes());
    body.extend_from_slice(&d.port().to_be_bytes());
    if let Some(id) = vpce {
        body.push(0xEA);
        body.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
        body.push(0x01);
        body.extend_from_slice(id.as_bytes());
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// Sends `prefix` then `payload` to `addr`, half-closes, and reads until the peer closes.
pub async fn roundtrip(
    addr: SocketAddr,
    prefix: &[u8],
    payload: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(prefix).await?;
    s.write_all(payload).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}
