//! Which requests the proxy sends again, through the real proxy binary and raw TCP upstreams that
//! read a whole request and then die without answering (a process killed mid-request): reads and
//! requests with an `Idempotency-Key` are retried (on the service's fresh connection, or on the
//! monolith); any other write reaches the upstream once and the client gets a 502 that says it
//! was not retried, on a fresh or on a pooled connection, on either side.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Proxy, upstreams};
use flags::RouteMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ECHO: &str =
    "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";

/// An HTTP/1.1 keep-alive upstream that answers `200 <name>`, except that the next `die`
/// requests (health checks aside) are read whole and then met with a closed connection.
struct Raw {
    addr: SocketAddr,
    /// Request lines received (health checks aside), in order.
    seen: Arc<Mutex<Vec<String>>>,
    die: Arc<AtomicUsize>,
}

impl Raw {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let die = Arc::new(AtomicUsize::new(0));
        let (log, dying) = (seen.clone(), die.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (log, dying) = (log.clone(), dying.clone());
                tokio::spawn(async move {
                    while let Some(head) = common::read_head(&mut stream).await {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if !head.starts_with("GET /healthz") {
                            log.lock()
                                .unwrap()
                                .push(head.lines().next().unwrap_or_default().to_string());
                            let take =
                                dying.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                });
                            if take.is_ok() {
                                // Killed after reading the request: no answer, connection gone.
                                return;
                            }
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, seen, die }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, request_line_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|l| l.starts_with(request_line_prefix))
            .count()
    }
}

async fn send(
    proxy: &Proxy,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = proxy
        .client
        .request(method.parse().unwrap(), proxy.url(path))
        .header("x-user-id", "u1")
        .body("{\"n\":1}");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn says_not_retried(body: &serde_json::Value) -> bool {
    body["error"]["code"] == "upstream_failed"
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not retried") && m.contains("Idempotency-Key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_reads_and_keyed_writes_are_sent_again() {
    let monolith = Raw::start("monolith").await;
    let service = Raw::start("service").await;
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, ECHO),
        &["route.echo"],
    )
    .await;

    // On the monolith. A GET leaves a pooled connection; the PUT after it goes out on that
    // connection and the monolith dies reading it: never sent again, the client told so.
    assert_eq!(send(&proxy, "GET", "/echo/warm", None).await.0, 200);
    monolith.die.store(1, Ordering::SeqCst);
    let (status, body) = send(&proxy, "PUT", "/echo/profile", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(says_not_retried(&body), "{body}");
    assert_eq!(
        monolith.count("PUT /echo/profile"),
        1,
        "{:?}",
        monolith.seen()
    );
    // The same with an Idempotency-Key: sent again, and answered.
    assert_eq!(send(&proxy, "GET", "/echo/warm", None).await.0, 200);
    monolith.die.store(1, Ordering::SeqCst);
    let (status, body) = send(&proxy, "PUT", "/echo/keyed", Some("k-1")).await;
    assert_eq!((status, body.as_str()), (200, Some("monolith")));
    assert_eq!(monolith.count("PUT /echo/keyed"), 2);
    // A read is sent again too.
    monolith.die.store(1, Ordering::SeqCst);
    let (status, _) = send(&proxy, "GET", "/echo/read", None).await;
    assert_eq!(status, 200);
    assert_eq!(monolith.count("GET /echo/read"), 2);

    // On the service (it owns the writes).
    proxy.set_mode("route.echo", RouteMode::Service).await;
    // A POST on a pooled connection to a service that dies reading it: not sent again to the
    // service, and never to the monolith.
    assert_eq!(send(&proxy, "GET", "/echo/warm", None).await.1, "service");
    service.die.store(1, Ordering::SeqCst);
    let (status, body) = send(&proxy, "POST", "/echo/order", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(says_not_retried(&body), "{body}");
    assert_eq!(service.count("POST /echo/order"), 1, "{:?}", service.seen());
    assert_eq!(monolith.count("POST /echo/order"), 0);
    // On a fresh connection too (nothing pooled: the proxy was just told of a dead one).
    service.die.store(1, Ordering::SeqCst);
    let (status, body) = send(&proxy, "DELETE", "/echo/cart", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(says_not_retried(&body), "{body}");
    assert_eq!(service.count("DELETE /echo/cart"), 1);
    assert_eq!(monolith.count("DELETE /echo/cart"), 0);
    // With an Idempotency-Key the service gets it again, and only the service.
    assert_eq!(send(&proxy, "GET", "/echo/warm", None).await.1, "service");
    service.die.store(1, Ordering::SeqCst);
    let (status, body) = send(&proxy, "POST", "/echo/keyed-order", Some("k-2")).await;
    assert_eq!((status, body.as_str()), (200, Some("service")), "{body}");
    assert_eq!(service.count("POST /echo/keyed-order"), 2);
    assert_eq!(monolith.count("POST /echo/keyed-order"), 0);
    // A read the service dropped (on its pooled connection, then on a fresh one) is answered
    // by the monolith.
    service.die.store(2, Ordering::SeqCst);
    let (status, body) = send(&proxy, "GET", "/echo/page", None).await;
    assert_eq!((status, body.as_str()), (200, Some("monolith")));
}
