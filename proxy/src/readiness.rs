//! Readiness: the process reports ready (`GET /healthz` on the admin port) once every
//! listener's socket is in LISTEN state, read from the kernel's socket table.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::ProxyState;

/// How long pingora may take to put every listener in LISTEN state.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// Marks the process ready once every listener's socket is listening. Reads the kernel's socket
/// table rather than connecting, so the probe is not a client (it would count as a failed
/// PROXY header or a flow).
pub async fn wait_ready(shared: Arc<ProxyState>, binds: Vec<SocketAddr>) {
    let started = std::time::Instant::now();
    loop {
        let listening = listening_sockets();
        if binds.iter().all(|b| listening.contains(b)) {
            break;
        }
        if started.elapsed() > LISTEN_DEADLINE {
            // A listener that never reaches LISTEN (a port taken between berth's check and
            // its bind): a berth that serves only its admin port must not linger.
            let missing: Vec<String> = binds
                .iter()
                .filter(|b| !listening.contains(b))
                .map(ToString::to_string)
                .collect();
            tracing::error!(missing = ?missing, "listeners did not start listening; exiting");
            eprintln!("berth-proxy: listeners {missing:?} did not start listening within {LISTEN_DEADLINE:?}; exiting");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!("all listeners accept connections; ready");
}

/// Addresses of TCP sockets in LISTEN state, from /proc/net/tcp and /proc/net/tcp6.
fn listening_sockets() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_proc_net_line));
    }
    out
}

/// One line of /proc/net/tcp{,6}: the local address when the state is LISTEN (0A).
fn parse_proc_net_line(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let ip: std::net::IpAddr = match ip_hex.len() {
        8 => {
            let v = u32::from_str_radix(ip_hex, 16).ok()?;
            std::net::Ipv4Addr::from(v.swap_bytes()).into()
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip_hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            std::net::Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_listen_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_proc_net_line(v4),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let est = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_proc_net_line(&est), None);
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        assert_eq!(parse_proc_net_line(v6), Some("[::1]:80".parse().unwrap()));
    }
}
