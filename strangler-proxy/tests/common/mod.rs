//! Shared helpers for the proxy's integration tests: the real proxy binary on free ports, the
//! real legacy monolith as an upstream, small real HTTP upstreams for failure behaviour, and
//! flag changes through the embedded file store.
#![allow(dead_code)]

pub mod release;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use flags::RouteMode;
use flags::source::file::FileSource;
use testkit::{ProcessGuard, TempDir, free_port};

/// A real HTTP server in this test process.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(app: Router) -> Self {
        Self::start_on(app, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(app: Router, addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, task }
    }

    /// Stops accepting: new connections are refused.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// The real monolith over a fresh database on the given test server.
pub async fn monolith_on(
    server: &testkit::MariaDb,
    name: &str,
) -> (Upstream, legacy_monolith::AppState) {
    let db = server.create_database(name).await.unwrap();
    let config = legacy_monolith::Config {
        database_url: db.url,
        ..legacy_monolith::Config::default()
    };
    let state = legacy_monolith::prepare(config).await.unwrap();
    (
        Upstream::start(legacy_monolith::app(state.clone())).await,
        state,
    )
}

/// An upstream whose answers a test controls: healthy or failing (500), optionally slow,
/// echoing what it received, counting requests.
#[derive(Clone, Default)]
pub struct Switchboard {
    pub failing: Arc<AtomicBool>,
    pub slow_ms: Arc<AtomicU64>,
    pub hits: Arc<AtomicU64>,
}

impl Switchboard {
    pub fn app(&self, name: &'static str) -> Router {
        let s = self.clone();
        let handler = move |req: axum::extract::Request| {
            let s = s.clone();
            async move {
                use axum::response::IntoResponse;
                s.hits.fetch_add(1, Ordering::SeqCst);
                let slow = s.slow_ms.load(Ordering::SeqCst);
                if slow > 0 {
                    tokio::time::sleep(Duration::from_millis(slow)).await;
                }
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                let body = serde_json::json!({
                    "served_by": name,
                    "path": req.uri().path(),
                    "headers": headers,
                    "nanos": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos(),
                });
                let status = if s.failing.load(Ordering::SeqCst) {
                    500
                } else {
                    200
                };
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(body),
                )
                    .into_response()
            }
        };
        Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .fallback(handler)
    }
}

/// Reads one request or response head from a raw TCP stream, byte by byte (up to the blank line);
/// `None` when the peer closed.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tokio::io::AsyncReadExt::read(stream, &mut byte)
            .await
            .ok()?
            == 0
        {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8(head).expect("an ASCII head"))
}

/// The proxy binary with its config and flag files.
pub struct Proxy {
    pub port: u16,
    pub admin: u16,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub flags_path: PathBuf,
    process: ProcessGuard,
    pub client: reqwest::Client,
}

pub fn config_text(port: u16, admin: u16, flags: &Path, body: &str) -> String {
    let section = format!(
        "[flags]\nsource = \"file\"\npath = \"{}\"\npoll_ms = 50\n",
        flags.display()
    );
    config_text_with(port, admin, &flags.with_extension("sock"), &section, body)
}

/// A config with its own `[flags]` section.
pub fn config_text_with(port: u16, admin: u16, sock: &Path, flags: &str, body: &str) -> String {
    let user_key = if body.contains("[user_key]") {
        ""
    } else {
        "\n[user_key]\nheader = \"x-user-id\"\n"
    };
    // Tests of fallbacks and breakers make a service fail on purpose and expect traffic back
    // when it recovers; auto-rollback would (rightly) switch such a route off for good. Only
    // the tests that name `[auto_rollback]` get it.
    let rollback = if body.contains("[auto_rollback]") {
        ""
    } else {
        "\n[auto_rollback]\nenabled = false\n"
    };
    // Top-level keys of `body` (before its first table) must come before any table here.
    let split = body.find("\n[").map_or(0, |i| i + 1);
    let (top, body) = if body.starts_with('[') {
        ("", body)
    } else {
        body.split_at(split)
    };
    format!(
        "{top}listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nwatch_ms = 50\n\
         upgrade_sock = \"{}\"\ndebug_header = true\n\
         {flags}\n{body}{user_key}{rollback}",
        sock.display(),
    )
}

impl Proxy {
    /// Starts the proxy with `body` (upstreams, routes, …) and every route flag in `monolith`.
    pub async fn start(body: &str, flag_keys: &[&str]) -> Self {
        let dir = TempDir::new("proxy-test").unwrap();
        let flags_path = dir.path().join("flags.json");
        let source = FileSource::new(&flags_path);
        std::fs::write(&flags_path, "{\"flags\":{}}").unwrap();
        for key in flag_keys {
            source
                .put(RouteMode::Monolith.to_flag(key, 0, "salt"))
                .unwrap();
        }
        let port = free_port();
        let admin = free_port();
        let text = config_text(port, admin, &flags_path, body);
        Self::launch(dir, port, admin, &text).await
    }

    /// Starts the proxy with the MySQL flag source at `url` (flags seeded in `monolith` mode).
    pub async fn start_mysql(url: &str, body: &str, flag_keys: &[&str]) -> Self {
        let dir = TempDir::new("proxy-test").unwrap();
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, "{\"flags\":{}}").unwrap();
        for key in flag_keys {
            FileSource::new(&seed)
                .put(RouteMode::Monolith.to_flag(key, 0, key))
                .unwrap();
        }
        let port = free_port();
        let admin = free_port();
        let section = format!(
            "[flags]\nsource = \"mysql\"\nurl = \"{url}\"\npoll_ms = 20\nseed = \"{}\"\n",
            seed.display()
        );
        let text = config_text_with(port, admin, &dir.path().join("up.sock"), &section, body);
        Self::launch(dir, port, admin, &text).await
    }

    /// Starts the proxy binary with config `text` in `dir`.
    pub async fn launch(dir: TempDir, port: u16, admin: u16, text: &str) -> Self {
        let flags_path = dir.path().join("flags.json");
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, text).unwrap();
        let process = ProcessGuard::spawn_with_env(
            Path::new(env!("CARGO_BIN_EXE_strangler-proxy")),
            &["--config".into(), config_path.display().to_string()],
            &[("RUST_LOG", "info".into())],
            &dir.path().join("proxy.pid"),
            &dir.path().join("proxy.log"),
        )
        .unwrap();
        let proxy = Self {
            port,
            admin,
            dir,
            config_path,
            flags_path,
            process,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        proxy.wait_ready().await;
        proxy
    }

    pub async fn wait_ready(&self) {
        for _ in 0..300 {
            let ready = matches!(
                self.client.get(self.admin_url("/readyz")).send().await,
                Ok(r) if r.status() == 200
            );
            // The admin port must be this proxy's: one that found it taken keeps retrying the
            // bind, and whatever holds the port would answer in its place.
            if ready
                && self.log().contains("admin API listening")
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(self.process.is_alive(), "proxy exited:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy not ready:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn process(&self) -> &ProcessGuard {
        &self.process
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// GET an admin endpoint as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Sets a route flag and waits until the proxy reports the new mode.
    pub async fn set_mode(&self, flag: &str, mode: RouteMode) {
        FileSource::new(&self.flags_path)
            .put(mode.to_flag(flag, 0, "salt"))
            .unwrap();
        let (name, percent) = (mode.name(), mode.percent());
        let want = serde_json::json!({"mode": name, "percent": percent});
        for _ in 0..200 {
            let routes: serde_json::Value = self.admin_json("/admin/routes").await;
            if routes["routes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["flag"] == flag)
                .all(|r| r["mode"] == want["mode"] && r["percent"] == want["percent"])
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("flag {flag} never reached {want}");
    }

    /// GET with an `x-user-id`; returns (status, backend header, body).
    pub async fn get_as(&self, path: &str, user: &str) -> (u16, String, serde_json::Value) {
        let r = self
            .client
            .get(self.url(path))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let backend = r
            .headers()
            .get("x-strangler-backend")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, backend, body)
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line of /metrics, 0 when absent.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Upstream and route sections for one route family.
pub fn upstreams(monolith: SocketAddr, service: SocketAddr, extra: &str) -> String {
    format!(
        "[upstreams.monolith]\nbackends = [\"{monolith}\"]\nhealth_interval_ms = 100\n\n\
         [upstreams.svc]\nbackends = [\"{service}\"]\nhealth_interval_ms = 100\nread_timeout_ms = 500\nconnect_timeout_ms = 300\n\n{extra}"
    )
}
