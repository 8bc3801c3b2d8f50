//! Accepting a PROXY protocol header on a connection: trust of the sender, one bounded read,
//! the VPC endpoint allow-list, and the count and log of each refusal. Used by TCP, HTTP and
//! admin listeners alike.

use std::net::SocketAddr;

use berth_config::model::{Listener, ProxyProtocolIn};
use tokio::io::AsyncRead;

use super::proxy_protocol::{self, ProxyHeaderError, ProxyInfo};
use crate::metrics as m;

/// Checks trust, reads the PROXY header and applies the VPC endpoint allow-list; counts and
/// logs refusals. `Ok(None)` when the listener does not take PROXY headers.
pub async fn accept_proxy_header<S: AsyncRead + Unpin>(
    listener: &Listener,
    name: &str,
    stream: &mut S,
    peer: Option<SocketAddr>,
) -> Result<Option<ProxyInfo>, ProxyHeaderError> {
    match &listener.proxy_protocol {
        Some(pp) => accept_header(pp, name, stream, peer).await.map(Some),
        None => Ok(None),
    }
}

/// [`accept_proxy_header`] for any settings (also the admin port's `[admin.proxy_protocol]`,
/// counted under listener `name`): refuses untrusted peers before reading from `stream`, then
/// reads one header within `pp.header_timeout` (the admin port has already looked at the first
/// bytes, to tell a header from plain HTTP, and hands them back through `stream`).
pub async fn accept_header<S: AsyncRead + Unpin>(
    pp: &ProxyProtocolIn,
    name: &str,
    stream: &mut S,
    peer: Option<SocketAddr>,
) -> Result<ProxyInfo, ProxyHeaderError> {
    let result = async {
        let peer_ip = peer.map(|p| p.ip());
        if !peer_ip.is_some_and(|ip| pp.trusted_cidrs.iter().any(|n| n.contains(&ip))) {
            return Err(ProxyHeaderError::Untrusted(
                peer.map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            ));
        }
        let info = proxy_protocol::read_header(stream, pp.header_timeout).await?;
        if !pp.allowed_vpc_endpoints.is_empty()
            && !info
                .vpce_id
                .as_ref()
                .is_some_and(|id| pp.allowed_vpc_endpoints.contains(id))
        {
            return Err(ProxyHeaderError::VpceNotAllowed(info.vpce_id.clone()));
        }
        Ok(info)
    }
    .await;
    match result {
        Ok(info) => Ok(info),
        Err(e) => {
            metrics::counter!(m::PROXY_PROTOCOL_REJECTED, "listener" => name.to_string(), "reason" => e.reason())
                .increment(1);
            tracing::info!(listener = name, peer = ?peer, error = %e, "connection refused");
            Err(e)
        }
    }
}
