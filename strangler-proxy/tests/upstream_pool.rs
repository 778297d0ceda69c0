//! Pooled upstream connections, through the real proxy binary and a raw TCP upstream that shows
//! each connection it accepts and when it closes: connections are reused; one the upstream closes
//! while idle leaves the pool at once (a POST after it, never replayed, still succeeds); the
//! proxy's own idle timeout closes them when it is set; keep-alive probes are armed by default;
//! a service that dies with several connections pooled sends its reads to the monolith.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proxy, upstreams};
use flags::RouteMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUTE: &str =
    "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";

/// What the upstream saw of one connection that carried requests (health checks are left out).
#[derive(Clone, Debug)]
struct Seen {
    /// The proxy's end of the connection.
    peer: SocketAddr,
    requests: usize,
    /// When the proxy closed it (the upstream read end of file), if it did.
    closed_by_proxy: Option<Instant>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads one request head and its body (by Content-Length); `None` when the peer closed.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let head = common::read_head(stream).await?;
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(head)
}

/// An HTTP/1.1 keep-alive upstream; with `close_idle_after`, it closes a connection that has
/// waited that long for its next request, as nginx's `keepalive_timeout` does.
async fn upstream(close_idle_after: Option<Duration>) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let kept = log.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, peer) = listener.accept().await.unwrap();
            let log = kept.clone();
            tokio::spawn(async move {
                let mut index: Option<usize> = None;
                loop {
                    let next = read_request(&mut stream);
                    let head = match close_idle_after {
                        Some(idle) if index.is_some() => {
                            match tokio::time::timeout(idle, next).await {
                                Ok(head) => head,
                                // Idle too long: the upstream closes the connection.
                                Err(_) => return,
                            }
                        }
                        _ => next.await,
                    };
                    let Some(head) = head else {
                        if let Some(i) = index {
                            log.lock().unwrap()[i].closed_by_proxy = Some(Instant::now());
                        }
                        return;
                    };
                    if !head.starts_with("GET /healthz") {
                        let mut log = log.lock().unwrap();
                        let i = *index.get_or_insert_with(|| {
                            log.push(Seen {
                                peer,
                                requests: 0,
                                closed_by_proxy: None,
                            });
                            log.len() - 1
                        });
                        log[i].requests += 1;
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

async fn start(addr: SocketAddr, upstream_keys: &str) -> Proxy {
    // Both groups are this upstream; the options go to the monolith group, which serves the
    // route in its default `monolith` mode.
    let body = upstreams(addr, addr, ROUTE).replacen(
        "health_interval_ms = 100\n",
        &format!("health_interval_ms = 100\n{upstream_keys}"),
        1,
    );
    Proxy::start(&body, &["route.echo"]).await
}

async fn post(proxy: &Proxy, n: usize) {
    for i in 0..n {
        let r = proxy
            .client
            .post(proxy.url("/echo"))
            .body(format!("order {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", proxy.log());
        assert_eq!(r.text().await.unwrap(), "ok");
    }
}

/// The kernel's view of our end of a connection to `upstream` from local `port`: the timer
/// field of `/proc/net/tcp` (`2`: the keep-alive timer is armed) and its seconds to expiry.
fn timer_of(port: u16, upstream: SocketAddr) -> (u8, f64) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    let remote = format!(":{:04X}", upstream.port());
    let line = table
        .lines()
        .skip(1)
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[1].ends_with(&local) && f[2].ends_with(&remote)
        })
        .unwrap_or_else(|| panic!("no socket {port} -> {upstream} in\n{table}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (active, jiffies) = fields[5].split_once(':').unwrap();
    let ticks = u64::from_str_radix(jiffies, 16).unwrap();
    // USER_HZ is 100 on Linux.
    (active.parse().unwrap(), ticks as f64 / 100.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closes_leaves_the_pool_before_a_post_needs_it() {
    let (addr, log) = upstream(Some(Duration::from_millis(300))).await;
    let proxy = start(addr, "").await;
    post(&proxy, 5).await;
    let first = seen(&log);
    assert_eq!(
        first.len(),
        1,
        "five requests in a row share one connection: {first:?}"
    );
    assert_eq!(first[0].requests, 5);
    // Keep-alive probes are armed on it by default: the first after 60 s of silence.
    let (timer, secs) = timer_of(first[0].peer.port(), addr);
    assert_eq!(timer, 2, "no keep-alive timer on the upstream connection");
    assert!(
        secs > 30.0 && secs <= 60.0,
        "keep-alive timer due in {secs} s"
    );
    // The runbook's check shows the same.
    let ss = std::process::Command::new("ss")
        .args(["-tno", "state", "established", "dport", "="])
        .arg(format!(":{}", addr.port()))
        .output()
        .expect("ss (iproute2)");
    let ss = testkit::assert_success(&ss, "ss");
    let ours = format!("127.0.0.1:{}", first[0].peer.port());
    assert!(
        ss.lines()
            .any(|l| l.contains(&ours) && l.contains("timer:(keepalive")),
        "{ss}"
    );

    // The upstream closes the idle connection. The pool sees its end of file and drops it: the
    // POSTs after that (which a proxy must never replay) go out on a new connection.
    tokio::time::sleep(Duration::from_millis(800)).await;
    post(&proxy, 5).await;
    let after = seen(&log);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1].requests, 5, "{after:?}");
    assert!(
        after[0].closed_by_proxy.is_none(),
        "the upstream, not the proxy, closed the first connection: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_pooled_unless_an_idle_timeout_is_set() {
    let (addr, log) = upstream(None).await;

    // Default: no idle timer; the connection waits in the pool and serves the next request.
    let proxy = start(addr, "").await;
    post(&proxy, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    post(&proxy, 1).await;
    let pooled = seen(&log);
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    assert_eq!(pooled[0].requests, 2);
    assert!(pooled[0].closed_by_proxy.is_none(), "{pooled:?}");
    drop(proxy);

    // With `idle_timeout_ms`, the proxy closes an idle pooled connection itself; and without
    // keep-alive probes, no timer is armed on it.
    let (addr, log) = upstream(None).await;
    let proxy = start(addr, "idle_timeout_ms = 300\ntcp_keepalive_ms = 0\n").await;
    post(&proxy, 1).await;
    let released = Instant::now();
    let conn = seen(&log)[0].clone();
    assert_eq!(
        timer_of(conn.peer.port(), addr).0,
        0,
        "keep-alive armed anyway"
    );
    let mut closed = None;
    for _ in 0..100 {
        closed = seen(&log)[0].closed_by_proxy;
        if closed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = closed.expect("the proxy never closed the idle connection") - released;
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(3),
        "closed {after:?} after the request"
    );
    post(&proxy, 1).await;
    assert_eq!(
        seen(&log).len(),
        2,
        "a new connection after the idle one closed"
    );
}

/// A service that answers slowly (so concurrent requests open several connections) until
/// `dead` is set; then it closes every connection a request arrives on without answering, as a
/// process killed a moment ago looks to a pool that has not yet seen the closes. Health checks
/// still pass, so only the requests' own failures can send them elsewhere.
async fn dying_service() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dead = Arc::new(AtomicBool::new(false));
    let flag = dead.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let dead = flag.clone();
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut stream).await {
                    let health = head.starts_with("GET /healthz");
                    if dead.load(Ordering::SeqCst) && !health {
                        return;
                    }
                    if !health {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nservice";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_goes_to_the_monolith_when_every_pooled_service_connection_is_dead() {
    let (monolith, _) = upstream(None).await;
    let (service, dead) = dying_service().await;
    let proxy = Proxy::start(&upstreams(monolith, service, ROUTE), &["route.echo"]).await;
    proxy.set_mode("route.echo", RouteMode::Service).await;
    // Three reads at once leave three connections to the service in the pool.
    let reads = (0..3).map(|_| proxy.client.get(proxy.url("/echo")).send());
    for r in futures_util::future::join_all(reads).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "service");
    }
    dead.store(true, Ordering::SeqCst);
    // The first stale connection is retried on the service, the second sends the read to the
    // monolith: it never fails for want of attempts.
    let r = proxy.client.get(proxy.url("/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.log());
    assert_eq!(
        r.headers()["x-strangler-backend"],
        "monolith; fallback=service_error"
    );
    assert_eq!(r.text().await.unwrap(), "ok");
}
