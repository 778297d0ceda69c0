//! The proxy's one config struct, from a TOML file: listeners and the flag source (fixed for the
//! process) and the routing part — upstreams, routes, user-key rules, limits — which is hot
//! reloaded. Errors name the file, line, column and field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The proxy's configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where end users connect (restart to change).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin API: `/metrics`, `/healthz`, `/readyz`, `/admin/…` (restart to change).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Pingora worker threads (restart to change).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// A single operator token (named `admin`); prefer `[control] tokens`.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Who may use the admin API, with which role (restart to change).
    #[serde(default)]
    pub control: ControlConfig,
    /// The phase controller (`strangler serve`) that `/admin/phases…` is forwarded to (restart
    /// to change).
    #[serde(default)]
    pub phases: PhasesConfig,
    /// Pingora's upgrade socket, shared by the old and new process in `--upgrade`.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: PathBuf,
    /// Where flags come from (restart to change).
    #[serde(default)]
    pub flags: FlagSourceConfig,
    /// How often the config file is checked for changes, in milliseconds.
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    // Everything below is reloaded on file change or `POST /admin/reload`.
    /// Upstream groups by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// What to do with requests no route matches.
    #[serde(default)]
    pub unknown_routes: UnknownRoutes,
    /// How a user is recognised for sticky rollouts.
    #[serde(default)]
    pub user_key: UserKeyConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Add `x-strangler-backend` to responses (debugging).
    #[serde(default)]
    pub debug_header: bool,
    /// Keep the letter case of every header name as it came, for an upstream or client that
    /// (wrongly) matches names case-sensitively. Off: names are sent normalised, standard ones
    /// titled (`Content-Type`) and others lower case, as Envoy does; it costs less per request.
    #[serde(default)]
    pub preserve_header_case: bool,
    /// Circuit breaker for services.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Shadow traffic.
    #[serde(default)]
    pub shadow: ShadowConfig,
    /// Automatic rollback: the SLO every canary or service route must keep (routes may override).
    #[serde(default)]
    pub auto_rollback: SloConfig,
}

/// The hot-reloadable part of [`ProxyConfig`], swapped in as one piece.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// Upstream groups by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub unknown_routes: UnknownRoutes,
    pub user_key: UserKeyConfig,
    pub limits: LimitsConfig,
    pub debug_header: bool,
    pub preserve_header_case: bool,
    pub breaker: BreakerConfig,
    pub shadow: ShadowConfig,
    pub auto_rollback: SloConfig,
}

/// Where the migration's phase controller listens.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PhasesConfig {
    /// `http://host:port` of `strangler serve`; none: `/admin/phases` answers 503.
    pub controller: Option<String>,
    /// The controller's `api_token`, sent with every forwarded request.
    pub token: Option<String>,
}

/// Admin API access. Without any token the API is open, which is allowed on loopback only.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One admin API token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded in the audit log as the actor.
    pub name: String,
    /// The bearer token itself (at least 16 characters).
    pub token: String,
    pub role: Role,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read routes, figures, status and the audit log.
    Viewer,
    /// Also change routes, kill services and reload.
    Operator,
}

/// A route's service-level objective, checked continuously while the route sends users to its
/// service (canary or service mode); a route that burns it goes back to the monolith.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    pub enabled: bool,
    /// Seconds of figures judged (at most 60).
    pub window_secs: u64,
    /// Fewer service requests than this in the window: no verdict.
    pub min_requests: u64,
    /// Fewer service requests than this: no verdict on latency (the p99 of a few dozen
    /// requests is their slowest one; one busy moment would roll a healthy route back).
    pub min_latency_requests: u64,
    /// Highest tolerated share of failed service requests (5xx, errors, fallbacks).
    pub max_error_rate: f64,
    /// Highest tolerated service p99 as a multiple of the monolith's p99 over the same window.
    pub max_p99_ratio: f64,
    /// Highest tolerated service p99 in milliseconds, used when the monolith had too few requests
    /// in the window to compare with.
    pub max_p99_ms: f64,
    /// A service p99 below this never counts as slow, whatever the monolith does.
    pub p99_floor_ms: f64,
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 30,
            min_requests: 20,
            min_latency_requests: 100,
            max_error_rate: 0.05,
            max_p99_ratio: 3.0,
            max_p99_ms: 2000.0,
            p99_floor_ms: 50.0,
        }
    }
}

/// Per-route overrides of [`SloConfig`].
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SloOverride {
    pub enabled: Option<bool>,
    pub window_secs: Option<u64>,
    pub min_requests: Option<u64>,
    pub min_latency_requests: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub p99_floor_ms: Option<f64>,
}

impl SloConfig {
    /// These defaults with a route's overrides applied, checked.
    pub fn with(&self, o: &SloOverride) -> Result<SloConfig, String> {
        let slo = SloConfig {
            enabled: o.enabled.unwrap_or(self.enabled),
            window_secs: o.window_secs.unwrap_or(self.window_secs),
            min_requests: o.min_requests.unwrap_or(self.min_requests),
            min_latency_requests: o.min_latency_requests.unwrap_or(self.min_latency_requests),
            max_error_rate: o.max_error_rate.unwrap_or(self.max_error_rate),
            max_p99_ratio: o.max_p99_ratio.unwrap_or(self.max_p99_ratio),
            max_p99_ms: o.max_p99_ms.unwrap_or(self.max_p99_ms),
            p99_floor_ms: o.p99_floor_ms.unwrap_or(self.p99_floor_ms),
        };
        slo.check()?;
        Ok(slo)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.window_secs) {
            return Err(format!(
                "window_secs must be 1 to 60, got {}",
                self.window_secs
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(format!(
                "max_error_rate must be between 0 and 1, got {}",
                self.max_error_rate
            ));
        }
        if self.max_p99_ratio.is_nan() || self.max_p99_ratio < 1.0 {
            return Err(format!(
                "max_p99_ratio must be at least 1, got {}",
                self.max_p99_ratio
            ));
        }
        if self.max_p99_ms.is_nan() || self.max_p99_ms <= 0.0 {
            return Err(format!(
                "max_p99_ms must be positive, got {}",
                self.max_p99_ms
            ));
        }
        if self.p99_floor_ms.is_nan() || self.p99_floor_ms < 0.0 {
            return Err(format!(
                "p99_floor_ms must not be negative, got {}",
                self.p99_floor_ms
            ));
        }
        Ok(())
    }
}

/// An upstream group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of each backend; round robin over the healthy ones.
    pub backends: Vec<String>,
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_ms")]
    pub read_timeout_ms: u64,
    /// How long a pooled connection may wait idle before the proxy closes it. Unset (the
    /// default, Pingora's own): no timer per request; an idle connection leaves the pool when
    /// the upstream closes it, when keep-alive probes find it dead, or when the pool is full.
    /// Set it below the upstream's own keep-alive timeout when that is long and the upstream
    /// drops idle connections without closing them.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// TCP keep-alive on connections to the upstream: the first probe after this much silence,
    /// then one every 10 s; three unanswered probes close the connection. `0`: no probes.
    #[serde(default = "default_tcp_keepalive_ms")]
    pub tcp_keepalive_ms: u64,
    /// Path of the active health check (HTTP GET, 2xx is healthy).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    #[serde(default = "default_health_ms")]
    pub health_interval_ms: u64,
}

/// A route: a match, the flag that decides, and the service that takes over.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and the admin API.
    pub name: String,
    /// Methods matched (all when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host matched (any when absent), without port.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path or pattern with `{param}` segments, e.g. `/api/users/{id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix, e.g. `/api/products`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Flag deciding this route's mode.
    pub flag: String,
    /// Upstream group of the new service.
    pub service: String,
    /// Upstream group of the monolith.
    #[serde(default = "default_monolith")]
    pub monolith: String,
    /// Mirror writes (POST/PUT/PATCH/DELETE) in shadow mode too.
    #[serde(default)]
    pub shadow_writes: bool,
    /// JSON fields (dotted paths, `*` for any array index) left out of shadow comparison.
    #[serde(default)]
    pub shadow_ignore: Vec<String>,
    /// Overrides of `[auto_rollback]` for this route.
    #[serde(default)]
    pub slo: SloOverride,
}

/// Requests that match no route.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownRoutes {
    /// Pass them to the monolith (default: the monolith still owns everything unlisted).
    #[default]
    Monolith,
    /// Answer 404.
    NotFound,
}

/// Where the user key comes from, in order: JWT `sub`, session cookie, header, anonymous cookie.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UserKeyConfig {
    /// HS256 secret; when set, only tokens that verify give a `sub`.
    pub jwt_secret: Option<String>,
    /// Required `iss` when verifying.
    pub jwt_issuer: Option<String>,
    /// Required `aud` when verifying.
    pub jwt_audience: Option<String>,
    /// user-service's JWKS: EdDSA tokens are verified with its keys (by `kid`).
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again, in milliseconds (an unknown `kid` fetches early).
    pub jwks_refresh_ms: u64,
    /// Session cookie name.
    pub session_cookie: Option<String>,
    /// Header carrying a user id.
    pub header: Option<String>,
    /// Cookie the proxy sets for anonymous users.
    pub anonymous_cookie: String,
}

/// Request limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Total request header bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Request body bytes; larger gets 413.
    pub max_body_bytes: usize,
}

/// Circuit breaker per route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive service failures that open the circuit.
    pub failures: u32,
    /// How long it stays open before one trial request, in milliseconds.
    pub open_ms: u64,
}

/// Shadow traffic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Largest response body compared, in bytes.
    pub max_body_bytes: usize,
    /// Shadow requests in flight at most; more are dropped (and counted).
    pub max_in_flight: usize,
    /// Timeout of a shadow request, in milliseconds.
    pub timeout_ms: u64,
    /// Headers compared besides the status and body.
    pub compare_headers: Vec<String>,
    /// Log at most this many mismatch samples per route per minute.
    pub log_samples_per_minute: u32,
}

/// Where flags live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "snake_case")]
pub enum FlagSourceConfig {
    /// A JSON file (LaunchDarkly's `{"flags": {...}}` shape), watched.
    File {
        path: PathBuf,
        #[serde(default = "default_flag_poll_ms")]
        poll_ms: u64,
    },
    /// A MySQL table shared by every replica, polled; changes through the admin API are stored
    /// there with their audit record.
    Mysql {
        url: String,
        #[serde(default = "default_flag_table")]
        table: String,
        #[serde(default = "default_flag_poll_ms")]
        poll_ms: u64,
        /// A flag file whose flags are stored when the table does not have them yet.
        #[serde(default)]
        seed: Option<PathBuf>,
    },
    /// LaunchDarkly (or a relay proxy): flags streamed and evaluated by its SDK; changes are
    /// made in LaunchDarkly, so the admin API is read only. Until the first flags arrive every
    /// route serves the monolith; when the stream is lost the last known flags keep serving.
    Launchdarkly {
        sdk_key: String,
        /// Base URL of a relay proxy or private instance; LaunchDarkly's service when absent.
        #[serde(default)]
        base_url: Option<String>,
        /// A stream silent this long (no event, no heartbeat) is reopened.
        #[serde(default = "default_ld_read_timeout_ms")]
        read_timeout_ms: u64,
        #[serde(default = "default_ld_reconnect_ms")]
        reconnect_ms: u64,
        #[serde(default = "default_ld_connect_timeout_ms")]
        connect_timeout_ms: u64,
        /// How long start-up waits for the first flags before serving with safe defaults.
        #[serde(default = "default_ld_start_wait_ms")]
        start_wait_ms: u64,
    },
}

impl Default for FlagSourceConfig {
    fn default() -> Self {
        Self::File {
            path: PathBuf::from("flags.json"),
            poll_ms: default_flag_poll_ms(),
        }
    }
}

impl Default for UserKeyConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwks_url: None,
            jwks_refresh_ms: 60_000,
            session_cookie: None,
            header: None,
            anonymous_cookie: "strangler_uid".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_ms: 10_000,
        }
    }
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_in_flight: 64,
            timeout_ms: 2000,
            compare_headers: vec!["content-type".into()],
            log_samples_per_minute: 6,
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8000".parse().expect("valid")
}
fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:8001".parse().expect("valid")
}
fn default_threads() -> usize {
    1
}
fn default_upgrade_sock() -> PathBuf {
    PathBuf::from("/tmp/strangler-proxy-upgrade.sock")
}
fn default_watch_ms() -> u64 {
    500
}
fn default_connect_ms() -> u64 {
    1000
}
fn default_read_ms() -> u64 {
    10_000
}
fn default_tcp_keepalive_ms() -> u64 {
    60_000
}
fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_ms() -> u64 {
    1000
}
fn default_monolith() -> String {
    "monolith".into()
}
fn default_flag_poll_ms() -> u64 {
    200
}
fn default_ld_read_timeout_ms() -> u64 {
    300_000
}
fn default_ld_reconnect_ms() -> u64 {
    1000
}
fn default_ld_connect_timeout_ms() -> u64 {
    5000
}
fn default_ld_start_wait_ms() -> u64 {
    5000
}
fn default_flag_table() -> String {
    "strangler_flags".into()
}

/// A config file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ProxyConfig {
    /// Reads the file, expands `${NAME}` from the environment, parses and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = config_env::expand(&text, |name| std::env::var(name).ok()).map_err(invalid)?;
        Self::parse(&text).map_err(invalid)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: ProxyConfig =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.control.tokens.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(format!(
                    "control.tokens[{i}].name must be non-empty and unique"
                ));
            }
            if t.token.len() < 16 {
                return Err(format!(
                    "control.tokens[{i}] ({}): token must be at least 16 characters",
                    t.name
                ));
            }
        }
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("admin_token must be at least 16 characters".into());
        }
        if !self.admin_listen.ip().is_loopback()
            && self.control.tokens.is_empty()
            && self.admin_token.is_none()
        {
            return Err(format!(
                "admin_listen {} is not loopback: configure [control] tokens",
                self.admin_listen
            ));
        }
        crate::routing::RoutingTable::build(&self.routing(), 0).map(|_| ())
    }

    /// The hot-reloadable part.
    pub fn routing(&self) -> RoutingConfig {
        RoutingConfig {
            upstreams: self.upstreams.clone(),
            routes: self.routes.clone(),
            unknown_routes: self.unknown_routes,
            user_key: self.user_key.clone(),
            limits: self.limits.clone(),
            debug_header: self.debug_header,
            preserve_header_case: self.preserve_header_case,
            breaker: self.breaker.clone(),
            shadow: self.shadow.clone(),
            auto_rollback: self.auto_rollback.clone(),
        }
    }
}
