//! The bare Pingora proxy of the benchmark baselines: one fixed peer, no routing, no flags, no
//! metrics — the engine's own limit. Arguments: `LISTEN UPSTREAM THREADS`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

struct Bare(String);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.0.as_str(),
            false,
            String::new(),
        )))
    }
}

/// Runs the proxy until killed.
pub fn run() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = (args[1].clone(), args[2].clone());
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let mut server = Server::new_with_opt_and_conf(
        None,
        ServerConf {
            threads,
            ..ServerConf::default()
        },
    );
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare(upstream));
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
