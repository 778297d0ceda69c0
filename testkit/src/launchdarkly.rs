//! A local server speaking LaunchDarkly's streaming protocol (FDv1: `GET /all` answering
//! `text/event-stream` with `put`, `patch`, `delete` and `:` heartbeats), so the real SDK can be
//! tested without the internet. A test can silence the open streams or stop the server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Clone, Debug)]
enum Frame {
    Event { name: &'static str, data: Value },
    Close,
}

struct Shared {
    sdk_key: String,
    flags: Mutex<BTreeMap<String, Value>>,
    events: broadcast::Sender<Frame>,
    connections: AtomicU64,
    /// Streams opened up to this number get nothing more, not even heartbeats.
    silenced_up_to: AtomicU64,
    heartbeat: Duration,
    stopped: AtomicBool,
}

/// The server.
pub struct LdServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// A flag in LaunchDarkly's wire shape: the fields the SDK requires are filled in when missing.
pub fn wire_flag(flag: &Value) -> Value {
    let mut f = flag.clone();
    let obj = f.as_object_mut().expect("a flag is an object");
    for (field, default) in [
        ("prerequisites", json!([])),
        ("targets", json!([])),
        ("rules", json!([])),
        ("deleted", json!(false)),
        ("trackEvents", json!(false)),
        ("salt", json!("")),
    ] {
        obj.entry(field).or_insert(default);
    }
    f
}

impl LdServer {
    /// Starts on `addr` (port 0: any) serving `flags` (LaunchDarkly flag JSON objects) to
    /// clients presenting `sdk_key`; heartbeats every `heartbeat`.
    pub async fn start(
        addr: SocketAddr,
        sdk_key: &str,
        flags: Vec<Value>,
        heartbeat: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            sdk_key: sdk_key.to_string(),
            flags: Mutex::new(
                flags
                    .iter()
                    .map(|f| {
                        (
                            f["key"].as_str().expect("flag key").to_string(),
                            wire_flag(f),
                        )
                    })
                    .collect(),
            ),
            events: broadcast::channel(256).0,
            connections: AtomicU64::new(0),
            silenced_up_to: AtomicU64::new(0),
            heartbeat,
            stopped: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/all", axum::routing::get(stream))
            .route("/sdk/latest-all", axum::routing::get(latest_all))
            .route(
                "/bulk",
                axum::routing::post(|| async { StatusCode::ACCEPTED }),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The base URL to give the SDK (its relay-proxy setting).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Streams opened so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stores `flag` and sends it as a `patch` to every listening client.
    pub fn patch(&self, flag: Value) {
        let flag = wire_flag(&flag);
        let key = flag["key"].as_str().expect("flag key").to_string();
        self.shared
            .flags
            .lock()
            .expect("flags lock")
            .insert(key.clone(), flag.clone());
        let _ = self.shared.events.send(Frame::Event {
            name: "patch",
            data: json!({"path": format!("/flags/{key}"), "data": flag}),
        });
    }

    /// Deletes flag `key` at `version` and tells every listening client.
    pub fn delete(&self, key: &str, version: u64) {
        self.shared.flags.lock().expect("flags lock").remove(key);
        let _ = self.shared.events.send(Frame::Event {
            name: "delete",
            data: json!({"path": format!("/flags/{key}"), "version": version}),
        });
    }

    /// The streams open now go silent (no events, no heartbeats) while staying open; streams
    /// opened later behave.
    pub fn silence_open_streams(&self) {
        self.shared
            .silenced_up_to
            .store(self.connections(), Ordering::SeqCst);
    }

    /// Closes every stream and stops listening.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = self.shared.events.send(Frame::Close);
        self.task.abort();
    }
}

impl Drop for LdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == shared.sdk_key)
}

fn all_data(shared: &Shared) -> Value {
    let flags: serde_json::Map<String, Value> = shared
        .flags
        .lock()
        .expect("flags lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({"flags": flags, "segments": {}})
}

async fn latest_all(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(all_data(&shared)).into_response()
}

async fn stream(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if shared.stopped.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let events = shared.events.subscribe();
    let put = format!(
        "event: put\ndata: {}\n\n",
        json!({"path": "/", "data": all_data(&shared)})
    );
    let mut tick = tokio::time::interval(shared.heartbeat);
    tick.reset();
    let state = (shared, events, tick, Some(put));
    let body = futures_util::stream::unfold(
        state,
        move |(shared, mut events, mut tick, first)| async move {
            if let Some(put) = first {
                return Some((
                    Ok::<_, Infallible>(Bytes::from(put)),
                    (shared, events, tick, None),
                ));
            }
            loop {
                // Read again after every wake-up: a stream may be silenced while it waits.
                let silent = || id <= shared.silenced_up_to.load(Ordering::SeqCst);
                tokio::select! {
                    _ = tick.tick() => {
                        if !silent() {
                            return Some((Ok(Bytes::from_static(b":\n\n")), (shared, events, tick, None)));
                        }
                    }
                    frame = events.recv() => match frame {
                        Ok(Frame::Event { name, data }) if !silent() => {
                            let text = format!("event: {name}\ndata: {data}\n\n");
                            return Some((Ok(Bytes::from(text)), (shared, events, tick, None)));
                        }
                        Ok(Frame::Event { .. }) => {}
                        Ok(Frame::Close) | Err(broadcast::error::RecvError::Closed) => return None,
                        Err(broadcast::error::RecvError::Lagged(_)) => return None,
                    },
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .expect("valid response")
}
