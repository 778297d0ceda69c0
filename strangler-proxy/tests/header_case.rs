//! Header names on the wire, through the real proxy binary between a raw TCP client and a raw TCP
//! upstream (HTTP libraries lower-case names, so only raw bytes show what was sent): normalised
//! by default, as they came with `preserve_header_case = true`; the added headers arrive either way.

mod common;

use std::sync::{Arc, Mutex};

use common::{Proxy, upstreams};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const ROUTE: &str =
    "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";

/// An HTTP/1.1 upstream that keeps the head of every request but health checks, and answers
/// each with a body of two bytes and a header whose name has capitals.
async fn raw_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            tokio::spawn(async move {
                while let Some(head) = common::read_head(&mut stream).await {
                    if !head.starts_with("GET /healthz") {
                        kept.lock().unwrap().push(head);
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream-Flavor: vanilla\r\n\r\nok";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Sends one request with a capitalised custom header through the proxy; returns the response
/// head the client got and the request head the upstream got.
async fn round_trip(top: &str) -> (String, String) {
    let (upstream, seen) = raw_upstream().await;
    let proxy = Proxy::start(
        &format!("{top}{}", upstreams(upstream, upstream, ROUTE)),
        &["route.echo"],
    )
    .await;
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    client
        .write_all(b"GET /echo/1 HTTP/1.1\r\nHost: shop.example\r\nX-Legacy-Token: t1\r\n\r\n")
        .await
        .unwrap();
    let response = common::read_head(&mut client).await.expect("a response");
    let request = seen
        .lock()
        .unwrap()
        .pop()
        .expect("the upstream saw the request");
    (response, request)
}

fn has_line(head: &str, prefix: &str) -> bool {
    head.split("\r\n").any(|line| line.starts_with(prefix))
}

/// The headers the proxy adds, written the same way whatever the setting.
fn assert_added(request: &str, response: &str) {
    for added in [
        "x-request-id: ",
        "traceparent: 00-",
        "x-forwarded-for: 127.0.0.1",
    ] {
        assert!(has_line(request, added), "{added} in {request}");
    }
    for added in ["x-request-id: ", "x-strangler-backend: monolith"] {
        assert!(has_line(response, added), "{added} in {response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_are_normalised_unless_their_case_is_kept() {
    let (response, request) = round_trip("").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(has_line(&request, "Host: shop.example"), "{request}");
    assert!(has_line(&request, "x-legacy-token: t1"), "{request}");
    assert!(
        has_line(&response, "x-upstream-flavor: vanilla"),
        "{response}"
    );
    assert!(has_line(&response, "Content-Length: 2"), "{response}");
    assert_added(&request, &response);

    let (response, request) = round_trip("preserve_header_case = true\n").await;
    assert!(has_line(&request, "X-Legacy-Token: t1"), "{request}");
    assert!(
        has_line(&response, "X-Upstream-Flavor: vanilla"),
        "{response}"
    );
    assert_added(&request, &response);
}
