//! PROXY protocol on HTTP listeners: a `ServerApp` wrapper that reads the header before the
//! HTTP proxy sees the connection and records, by the socket's kernel cookie, the original
//! client and the VPC endpoint ID; berth's `ProxyHttp` takes the client address from there for
//! X-Forwarded-For, source-CIDR rules, hashing and logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::tcp::{accept_proxy_header, stream_addrs};
use crate::runtime::Shared;

/// What a connection's PROXY header said that requests need.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The original client.
    pub source: Option<SocketAddr>,
    /// The VPC endpoint ID.
    pub vpce_id: Option<String>,
}

/// Per connection (by kernel socket cookie): what its PROXY header said.
fn conn_map() -> &'static Mutex<HashMap<u64, ConnInfo>> {
    static MAP: OnceLock<Mutex<HashMap<u64, ConnInfo>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What the PROXY header of the connection with this socket cookie said.
pub fn conn_info(cookie: u64) -> Option<ConnInfo> {
    conn_map().lock().ok()?.get(&cookie).cloned()
}

fn cookie(stream: &Stream) -> Option<u64> {
    stream
        .get_socket_digest()
        .and_then(|d| d.socket_cookie().ok())
        .filter(|c| *c != 0)
}

/// Wraps an HTTP app with PROXY protocol acceptance.
#[derive(Debug)]
pub struct ProxyProtocolHttp<A> {
    /// The HTTP app.
    pub inner: Arc<A>,
    /// Listener name.
    pub listener: String,
    /// Shared state.
    pub shared: Arc<Shared>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyProtocolHttp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let key = cookie(&stream);
        let seen = key.is_some_and(|k| conn_map().lock().is_ok_and(|m| m.contains_key(&k)));
        if !seen {
            // A new connection (not a keep-alive reuse): it must start with a PROXY header.
            let snap = self.shared.snapshot.load_full();
            let listener = snap.listener(&self.listener)?;
            let (peer, _) = stream_addrs(&stream);
            let info = accept_proxy_header(listener, &self.listener, &mut stream, peer)
                .await
                .ok()?;
            let conn = ConnInfo {
                source: info.as_ref().and_then(|i| i.source),
                vpce_id: info.and_then(|i| i.vpce_id),
            };
            match (key, conn_map().lock()) {
                (Some(k), Ok(mut m)) => {
                    m.insert(k, conn);
                }
                _ => {
                    tracing::warn!(listener = %self.listener, "no socket cookie; PROXY header information dropped");
                }
            }
        }
        let next = self.inner.process_new(stream, shutdown).await;
        if next.is_none() {
            if let (Some(k), Ok(mut m)) = (key, conn_map().lock()) {
                m.remove(&k);
            }
        }
        next
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
