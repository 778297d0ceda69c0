//! The proxy's control state: the routing table and the flags, both swapped atomically; config
//! reloads (file change or admin call) that either apply whole or are refused with the reason
//! while the old table keeps serving; the flag source behind the embedded store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use flags::FlagStore;
use flags::source::file::FileSource;
use flags::source::launchdarkly::{LaunchDarkly, LdSettings};
use flags::source::mysql::MysqlSource;

use crate::config::{FlagSourceConfig, ProxyConfig};
use crate::metrics::Metrics;
use crate::routing::RoutingTable;

/// Shared by the data plane, the admin API and the watchers.
pub struct Control {
    pub config_path: PathBuf,
    /// The config the process started with (listeners, flag source).
    pub boot: ProxyConfig,
    pub table: ArcSwap<RoutingTable>,
    pub flags: Arc<FlagStore>,
    pub metrics: Metrics,
    versions: AtomicU64,
    last_error: Mutex<Option<String>>,
    reload_lock: Mutex<()>,
    /// The MySQL flag table, once the runtime runs (route changes and the audit log need it).
    pub(crate) writer: OnceLock<MysqlSource>,
    /// user-service's public keys, kept across config reloads.
    pub jwks: crate::jwks::JwksKeys,
    /// The LaunchDarkly client, once the runtime runs (with that flag source).
    pub launchdarkly: OnceLock<LaunchDarkly>,
    /// Flags switched off on this replica only, by key, at the version seen: auto-rollback's
    /// last resort when the change cannot be stored at the source (LaunchDarkly, store down).
    pub local_off: ArcSwap<std::collections::HashMap<String, u64>>,
    /// Per flag: the version auto-rollback last saw and the second it saw it change.
    pub(crate) slo_seen: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Write holds per flag (ownership switches).
    pub holds: crate::hold::Holds,
    /// The admin API's client to the phase controller.
    pub http: reqwest::Client,
    /// The other replicas' live figures (with a shared flag database).
    pub fleet: Arc<crate::fleet::Fleet>,
    /// Flags whose routes have no monolith side any more (decommissioned domains).
    pub retired: Arc<crate::retired::Retired>,
}

impl Control {
    /// Builds the first table (and, for a file source, loads the flags) from `config`.
    pub fn new(
        config_path: PathBuf,
        config: ProxyConfig,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let table = RoutingTable::build(&config.routing(), 1)?;
        let flags = match &config.flags {
            FlagSourceConfig::File { path, .. } => {
                FlagStore::new(FileSource::new(path).load().map_err(|e| e.to_string())?)
            }
            // Loaded by the watcher once the runtime runs; until then every route is `monolith`.
            FlagSourceConfig::Mysql { .. } | FlagSourceConfig::Launchdarkly { .. } => {
                FlagStore::default()
            }
        };
        metrics.config_version.set(1);
        Ok(Self {
            config_path,
            boot: config,
            table: ArcSwap::from_pointee(table),
            flags: Arc::new(flags),
            metrics,
            versions: AtomicU64::new(1),
            last_error: Mutex::new(None),
            reload_lock: Mutex::new(()),
            writer: OnceLock::new(),
            launchdarkly: OnceLock::new(),
            jwks: Default::default(),
            local_off: ArcSwap::default(),
            slo_seen: Mutex::default(),
            holds: Default::default(),
            http: reqwest::Client::new(),
            fleet: Default::default(),
            retired: Default::default(),
        })
    }

    /// Re-reads the config file and swaps in the new routing table; on any error the old table
    /// keeps serving and the error is returned (and kept for `/admin/status`).
    pub fn reload_config(&self) -> Result<u64, String> {
        let _serial = self.reload_lock.lock().expect("reload lock");
        let result = ProxyConfig::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                if config.listen != self.boot.listen
                    || config.admin_listen != self.boot.admin_listen
                    || config.threads != self.boot.threads
                    || config.flags != self.boot.flags
                {
                    tracing::warn!("listen, admin_listen, threads and flags take effect only after a restart or upgrade");
                }
                let version = self.versions.load(Ordering::SeqCst) + 1;
                let previous = self.table.load();
                let table = RoutingTable::build_from(&config.routing(), version, Some(&previous))?;
                Ok((version, table))
            });
        match result {
            Ok((version, table)) => {
                let groups: Vec<_> = table.groups.values().cloned().collect();
                self.table.store(Arc::new(table));
                self.versions.store(version, Ordering::SeqCst);
                *self.last_error.lock().expect("error lock") = None;
                self.metrics.config_version.set(version as i64);
                self.metrics
                    .config_reloads
                    .with_label_values(&["applied"])
                    .inc();
                if tokio::runtime::Handle::try_current().is_ok() {
                    crate::upstream::spawn_health_checks(&groups, &self.metrics);
                }
                tracing::info!(version, "routing config applied");
                Ok(version)
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["refused"])
                    .inc();
                tracing::error!(error = %e, "routing config refused; the previous config keeps serving");
                *self.last_error.lock().expect("error lock") = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The last refused reload, if the newest attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    /// Reloads flags from their source now.
    pub async fn reload_flags(&self) -> Result<(), String> {
        match &self.boot.flags {
            FlagSourceConfig::File { path, .. } => FileSource::new(path)
                .reload(&self.flags)
                .map_err(|e| e.to_string()),
            FlagSourceConfig::Mysql { .. } if self.writer.get().is_some() => self
                .writer
                .get()
                .expect("checked")
                .reload(&self.flags)
                .await
                .map_err(|e| e.to_string()),
            // Streamed: nothing to fetch.
            FlagSourceConfig::Launchdarkly { .. } => Ok(()),
            FlagSourceConfig::Mysql { url, table, .. } => {
                let pool = mysql_async::Pool::new(
                    mysql_async::Opts::from_url(url).map_err(|e| e.to_string())?,
                );
                let result = MysqlSource::new(pool.clone(), table)
                    .reload(&self.flags)
                    .await
                    .map_err(|e| e.to_string());
                let _ = pool.disconnect().await;
                result
            }
        }
    }

    /// Starts the flag watcher for the configured source.
    pub async fn watch_flags(self: &Arc<Self>) -> Result<(), String> {
        match &self.boot.flags {
            FlagSourceConfig::File { path, poll_ms } => {
                FileSource::new(path).watch(self.flags.clone(), Duration::from_millis(*poll_ms));
            }
            FlagSourceConfig::Mysql {
                url,
                table,
                poll_ms,
                seed,
            } => {
                let opts = mysql_async::Opts::from_url(url).map_err(|e| e.to_string())?;
                let source = MysqlSource::new(mysql_async::Pool::new(opts), table);
                match source.ensure_table().await {
                    Ok(()) => {
                        if let Some(path) = seed {
                            match FileSource::new(path).load() {
                                Ok(set) => match source.seed(&set, "strangler-proxy").await {
                                    Ok(added) if !added.is_empty() => {
                                        tracing::info!(?added, "seeded the flag table")
                                    }
                                    Ok(_) => {}
                                    Err(e) => tracing::error!(error = %e, "seeding flags failed"),
                                },
                                Err(e) => tracing::error!(error = %e, "seed file refused"),
                            }
                        }
                        if let Err(e) = source.reload(&self.flags).await {
                            tracing::error!(error = %e, "first flag load failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "flag table not reachable yet; routes stay on the monolith")
                    }
                }
                let _ = self.writer.set(source.clone());
                let control = self.clone();
                self.fleet.exchange_every_second(
                    source.pool().clone(),
                    source.table(),
                    move || control.table.load_full(),
                );
                self.retired.watch(source.pool().clone(), source.table());
                source.watch(self.flags.clone(), Duration::from_millis(*poll_ms));
            }
            FlagSourceConfig::Launchdarkly {
                sdk_key,
                base_url,
                read_timeout_ms,
                reconnect_ms,
                connect_timeout_ms,
                start_wait_ms,
            } => {
                let settings = LdSettings {
                    sdk_key: sdk_key.clone(),
                    base_url: base_url.clone(),
                    read_timeout: Duration::from_millis(*read_timeout_ms),
                    reconnect_delay: Duration::from_millis(*reconnect_ms),
                    connect_timeout: Duration::from_millis(*connect_timeout_ms),
                };
                let ld = LaunchDarkly::start(&settings, self.flags.clone())
                    .map_err(|e| e.to_string())?;
                if ld
                    .wait_initialized(Duration::from_millis(*start_wait_ms))
                    .await
                {
                    tracing::info!("flags received from LaunchDarkly");
                } else {
                    tracing::error!(
                        waited_ms = start_wait_ms,
                        "no flags from LaunchDarkly yet: every route serves the monolith until they arrive"
                    );
                }
                let _ = self.launchdarkly.set(ld);
            }
        }
        Ok(())
    }

    /// Polls the config file and reloads when it changes.
    pub fn watch_config(self: &Arc<Self>) {
        let control = self.clone();
        let interval = Duration::from_millis(self.boot.watch_ms.max(10));
        tokio::spawn(async move {
            let stamp = |p: &PathBuf| {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len(), m.ino()))
            };
            let mut last = stamp(&control.config_path);
            loop {
                tokio::time::sleep(interval).await;
                let now = stamp(&control.config_path);
                if now != last {
                    last = now;
                    let _ = control.reload_config();
                }
            }
        });
    }

    /// Where `flag_key` sends `user` in LaunchDarkly mode: the SDK's answer, unless auto-rollback
    /// switched the flag off on this replica and nobody changed it since.
    pub fn launchdarkly_decision(
        &self,
        ld: &LaunchDarkly,
        flag_key: &str,
        version: Option<u64>,
        user: &str,
    ) -> String {
        if let Some(off_at) = self.local_off.load().get(flag_key)
            && version.is_none_or(|v| v <= *off_at)
        {
            return "monolith".into();
        }
        ld.variation(flag_key, user, "monolith")
    }

    /// Copies store and breaker state into gauges (before each scrape).
    pub fn refresh_gauges(&self) {
        if let Some(ld) = self.launchdarkly.get() {
            let s = ld.stream_status();
            self.metrics
                .flag_source_connected
                .set(i64::from(s.connected));
            self.metrics.flag_source_connects.set(s.connects as i64);
            self.metrics.flag_source_failures.set(s.failures as i64);
            self.metrics
                .flag_source_initialized
                .set(i64::from(ld.initialized()));
        }
        let status = self.flags.status();
        self.metrics.flags_generation.set(status.generation as i64);
        self.metrics
            .flag_reload_failures
            .set(status.failed_reloads as i64);
        for r in &self.table.load().routes {
            self.metrics
                .circuit
                .with_label_values(&[&r.name])
                .set(r.breaker.state() as i64);
        }
    }
}
