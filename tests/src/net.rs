//! Loopback address allocation.
//!
//! Targets (backends) live on `127.0.0.2..=127.0.0.250`, one address per backend as far as the
//! range allows; the proxy's own listeners live on `127.0.1.0/24`..`127.0.9.0/24`. Outgoing
//! connections to `127.0.0.x` take their source port on `127.0.0.1`, so a port picked for a
//! listener on another address can never be taken by them before the proxy binds it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_TARGET_IP: AtomicU32 = AtomicU32::new(0);
static NEXT_LISTEN_IP: AtomicU32 = AtomicU32::new(0);

/// A loopback address for a fake target: `127.0.0.2`..=`127.0.0.250`, a different one per call
/// until the range wraps (ports are picked by the kernel, so wrapping is harmless).
pub fn target_ip() -> IpAddr {
    let n = NEXT_TARGET_IP.fetch_add(1, Ordering::Relaxed) % 249;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n as u8))
}

/// A free `ip:port` for a proxy listener (client-facing or admin), on an address used by no other
/// allocation in this process, with a port below the kernel's ephemeral range (32768+) so that
/// no outgoing connection can take it between now and the proxy binding it.
pub fn listen_addr() -> SocketAddr {
    let n = NEXT_LISTEN_IP.fetch_add(1, Ordering::Relaxed) % (9 * 250);
    let ip = IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (n / 250) as u8,
        1,
        1 + (n % 250) as u8,
    ));
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(n * 131);
    for i in 0..1000 {
        let port = 20000 + (seed.wrapping_add(i * 37) % 12000) as u16;
        let addr = SocketAddr::new(ip, port);
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    free_port(ip)
}

/// A port free right now on `ip` (kernel-chosen), returned with it.
pub fn free_port(ip: IpAddr) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind a loopback port");
    l.local_addr().expect("local addr")
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit and returns the soft limit
/// now in force. Children spawned afterwards (berth) inherit it.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid, initialised struct.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
    }
    lim.rlim_cur
}
