//! PROXY protocol on HTTP listeners: a `ServerApp` wrapper that reads the header before the
//! HTTP proxy sees the connection, makes the header's source the connection's peer address
//! (so pingora and berth's `ProxyHttp` see the original client), and records the VPC endpoint
//! ID for rules and the upstream header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::tcp::{accept_proxy_header, stream_addrs};
use crate::runtime::Shared;

/// Per connection (by kernel socket cookie): the VPC endpoint ID of its PROXY header.
fn vpce_map() -> &'static Mutex<HashMap<u64, Option<String>>> {
    static MAP: OnceLock<Mutex<HashMap<u64, Option<String>>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The VPC endpoint ID of the connection with this socket cookie, if its PROXY header had one.
pub fn vpce_of(cookie: u64) -> Option<String> {
    vpce_map().lock().ok()?.get(&cookie).cloned().flatten()
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
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let key = cookie(&stream);
        let seen = key.is_some_and(|k| vpce_map().lock().is_ok_and(|m| m.contains_key(&k)));
        if !seen {
            // A new connection (not a keep-alive reuse): it must start with a PROXY header.
            let snap = self.shared.snapshot.load_full();
            let listener = snap.listener(&self.listener)?;
            let (peer, _) = stream_addrs(&stream);
            let info = accept_proxy_header(listener, &self.listener, &mut stream, peer)
                .await
                .ok()?;
            if let (Some(info), Some(d)) = (&info, stream.get_socket_digest()) {
                if let Some(src) = info.source {
                    if d.peer_addr.set(Some(PingoraAddr::Inet(src))).is_err() {
                        tracing::warn!(listener = %self.listener, "peer address already read; PROXY source not applied");
                    }
                }
            }
            if let (Some(k), Ok(mut m)) = (key, vpce_map().lock()) {
                m.insert(k, info.and_then(|i| i.vpce_id));
            }
        }
        let next = self.inner.process_new(stream, shutdown).await;
        if next.is_none() {
            if let (Some(k), Ok(mut m)) = (key, vpce_map().lock()) {
                m.remove(&k);
            }
        }
        next
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
