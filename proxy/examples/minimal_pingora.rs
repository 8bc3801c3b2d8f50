//! The smallest pingora HTTP proxy: one upstream, no rules, no metrics. The benchmark runs it
//! beside berth so that the cost berth adds on top of pingora itself is visible in the same run.
//!
//! Usage: `minimal_pingora LISTEN UPSTREAM THREADS`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

struct Minimal(SocketAddr);

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: minimal_pingora LISTEN UPSTREAM [THREADS]");
    };
    let threads: usize = args.get(3).map(|t| t.parse()).transpose()?.unwrap_or(1);
    let conf = ServerConf {
        threads,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut svc = http_proxy_service(&server.configuration, Minimal(upstream.parse()?));
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
