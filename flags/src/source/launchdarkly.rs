//! LaunchDarkly as the flag source: the real SDK (`launchdarkly-server-sdk`) streams the flags
//! from LaunchDarkly or a relay and evaluates them; a mirror of the definitions feeds route modes
//! and the admin API, and the stream's health is tracked for logs and metrics.
//!
//! Unreachable at start: every evaluation serves the caller's default (the monolith) until the
//! first full state arrives. Unreachable later: the SDK keeps the last known flags and reconnects
//! with backoff; a stream silent for longer than the read timeout is dropped and reopened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, HyperTransport, ResponseFuture, TransportError,
};
use launchdarkly_server_sdk::{
    AllData, Client, ConfigBuilder, ContextBuilder, DataKind, NullEventProcessorBuilder,
    PersistentDataStore, PersistentDataStoreBuilder, PersistentDataStoreFactory,
    PersistentStoreError, SerializedItem, ServiceEndpointsBuilder, StreamingDataSourceBuilder,
};

use crate::error::FlagError;
use crate::model::Flag;
use crate::store::{FlagSet, FlagStore};

/// How to reach LaunchDarkly.
#[derive(Debug, Clone, PartialEq)]
pub struct LdSettings {
    pub sdk_key: String,
    /// A relay proxy or private instance serving the streaming protocol (all three endpoints);
    /// `None` is LaunchDarkly's own service.
    pub base_url: Option<String>,
    /// A stream silent for longer than this (no event, no heartbeat) is dropped and reopened.
    pub read_timeout: Duration,
    /// First reconnect delay (the SDK backs off from there).
    pub reconnect_delay: Duration,
    pub connect_timeout: Duration,
}

/// What the stream is doing, for logs, metrics and the admin API.
#[derive(Debug, Default)]
pub struct StreamHealth {
    connected: AtomicBool,
    connects: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`StreamHealth`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStatus {
    pub connected: bool,
    /// Streams opened since start (a reconnect adds one).
    pub connects: u64,
    /// Streams that failed to open or broke off.
    pub failures: u64,
    pub last_error: Option<String>,
}

impl StreamHealth {
    fn up(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!("LaunchDarkly stream connected");
        }
    }

    fn down(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let was = self.connected.swap(false, Ordering::Relaxed);
        if was {
            tracing::error!(error = %error, "LaunchDarkly stream lost; routing keeps the last known flags while reconnecting");
        } else {
            tracing::warn!(error = %error, "LaunchDarkly unreachable; routes without known flags stay on the monolith");
        }
        *self.last_error.lock().expect("health lock") = Some(error);
    }

    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            connected: self.connected.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("health lock").clone(),
        }
    }
}

/// A transport that reports the streaming connection's life to [`StreamHealth`].
#[derive(Clone)]
struct Watched<T> {
    inner: T,
    health: Arc<StreamHealth>,
}

impl<T: HttpTransport> HttpTransport for Watched<T> {
    fn request(&self, request: http::Request<Option<Bytes>>) -> ResponseFuture {
        let streaming = request.uri().path().ends_with("/all");
        let future = self.inner.request(request);
        if !streaming {
            return future;
        }
        let health = self.health.clone();
        Box::pin(async move {
            match future.await {
                Ok(response) if response.status().is_success() => {
                    health.up();
                    let (parts, body) = response.into_parts();
                    let body: ByteStream = Box::pin(WatchedBody {
                        inner: body,
                        health,
                        done: false,
                    });
                    Ok(http::Response::from_parts(parts, body))
                }
                Ok(response) => {
                    health.down(format!("stream answered {}", response.status()));
                    Ok(response)
                }
                Err(e) => {
                    health.down(e.to_string());
                    Err(e)
                }
            }
        })
    }
}

struct WatchedBody {
    inner: ByteStream,
    health: Arc<StreamHealth>,
    done: bool,
}

impl Stream for WatchedBody {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if !self.done {
            match &polled {
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.health.down(e.to_string());
                }
                Poll::Ready(None) => {
                    self.done = true;
                    self.health.down("stream closed by the server".into());
                }
                _ => {}
            }
        }
        polled
    }
}

/// The SDK's store, kept in memory, mirroring every change into a [`FlagStore`] so route modes
/// can be read from the same definitions the SDK evaluates.
struct Mirror {
    flags: HashMap<String, SerializedItem>,
    segments: HashMap<String, SerializedItem>,
    initialized: bool,
    store: Arc<FlagStore>,
}

impl Mirror {
    fn publish(&self) {
        let mut parsed = Vec::new();
        for (key, item) in &self.flags {
            if item.deleted {
                continue;
            }
            match Flag::from_json(&format!("launchdarkly[{key}]"), &item.serialized_item) {
                Ok(mut f) => {
                    f.version = item.version;
                    parsed.push(f);
                }
                // Routing still evaluates it through the SDK; only its description is missing.
                Err(e) => {
                    tracing::warn!(flag = %key, error = %e, "flag from LaunchDarkly not understood by the route view")
                }
            }
        }
        match FlagSet::new(parsed) {
            Ok(set) => self.store.install(set),
            Err(e) => self.store.refuse(&e),
        }
    }
}

impl PersistentDataStore for Mirror {
    fn init(
        &mut self,
        all: AllData<SerializedItem, SerializedItem>,
    ) -> Result<(), PersistentStoreError> {
        self.flags = all.flags;
        self.segments = all.segments;
        self.initialized = true;
        self.publish();
        Ok(())
    }

    fn flag(&self, key: &str) -> Result<Option<SerializedItem>, PersistentStoreError> {
        Ok(self.flags.get(key).cloned())
    }

    fn segment(&self, key: &str) -> Result<Option<SerializedItem>, PersistentStoreError> {
        Ok(self.segments.get(key).cloned())
    }

    fn all_flags(&self) -> Result<HashMap<String, SerializedItem>, PersistentStoreError> {
        Ok(self.flags.clone())
    }

    fn upsert(
        &mut self,
        kind: DataKind,
        key: &str,
        item: SerializedItem,
    ) -> Result<bool, PersistentStoreError> {
        let map = match kind {
            DataKind::Flag => &mut self.flags,
            DataKind::Segment => &mut self.segments,
        };
        if map.get(key).is_some_and(|old| old.version >= item.version) {
            return Ok(false);
        }
        map.insert(key.to_string(), item);
        if matches!(kind, DataKind::Flag) {
            self.publish();
        }
        Ok(true)
    }

    fn is_initialized(&self) -> bool {
        self.initialized
    }
}

struct MirrorFactory {
    store: Arc<FlagStore>,
}

impl PersistentDataStoreFactory for MirrorFactory {
    fn create_persistent_data_store(&self) -> Result<Box<dyn PersistentDataStore>, std::io::Error> {
        Ok(Box::new(Mirror {
            flags: HashMap::new(),
            segments: HashMap::new(),
            initialized: false,
            store: self.store.clone(),
        }))
    }
}

/// A running LaunchDarkly client.
pub struct LaunchDarkly {
    client: Client,
    health: Arc<StreamHealth>,
}

impl LaunchDarkly {
    /// Builds and starts the client (inside a tokio runtime); definitions are mirrored into
    /// `mirror`. Returns at once: see [`LaunchDarkly::wait_initialized`].
    pub fn start(settings: &LdSettings, mirror: Arc<FlagStore>) -> Result<Self, FlagError> {
        let invalid = |message: String| FlagError::Invalid {
            key: "launchdarkly".into(),
            message,
        };
        if settings.sdk_key.trim().is_empty() {
            return Err(invalid("sdk_key is empty".into()));
        }
        let health = Arc::new(StreamHealth::default());
        let transport = Watched {
            inner: HyperTransport::builder()
                .connect_timeout(settings.connect_timeout)
                .read_timeout(settings.read_timeout)
                .build_https()
                .map_err(|e| invalid(format!("HTTP transport: {e}")))?,
            health: health.clone(),
        };
        let mut endpoints = ServiceEndpointsBuilder::new();
        if let Some(url) = &settings.base_url {
            endpoints.relay_proxy(url.trim_end_matches('/'));
        }
        let mut stream = StreamingDataSourceBuilder::new();
        stream
            .initial_reconnect_delay(settings.reconnect_delay)
            .transport(transport);
        let mut store = PersistentDataStoreBuilder::new(Arc::new(MirrorFactory { store: mirror }));
        store.cache_forever();
        let config = ConfigBuilder::new(&settings.sdk_key)
            .service_endpoints(&endpoints)
            .data_source(&stream)
            .data_store(&store)
            // Per-request evaluations would flood the events service; the proxy has metrics.
            .event_processor(&NullEventProcessorBuilder::new())
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let client = Client::build(config).map_err(|e| invalid(e.to_string()))?;
        client.start_with_default_executor();
        Ok(Self { client, health })
    }

    /// Waits up to `timeout` for the first full flag state; false if it did not come.
    pub async fn wait_initialized(&self, timeout: Duration) -> bool {
        self.client.wait_for_initialization(timeout).await == Some(true)
    }

    /// Whether the client has received flags at least once.
    pub fn initialized(&self) -> bool {
        self.client.initialized()
    }

    /// The stream's health.
    pub fn stream_status(&self) -> StreamStatus {
        self.health.status()
    }

    /// Evaluates `flag_key` for the user `user_key` through the SDK; `default` when the flag is
    /// unknown, not a string, or no flags arrived yet.
    pub fn variation(&self, flag_key: &str, user_key: &str, default: &str) -> String {
        let Ok(context) = ContextBuilder::new(user_key).build() else {
            return default.to_string();
        };
        self.client
            .str_variation(&context, flag_key, default.to_string())
    }

    /// Stops the stream.
    pub fn close(&self) {
        self.client.close();
    }
}
