//! The `cdc-sync` config: one stream (a direction) per file — source and target servers, the
//! tables and their mapping, the transport, the status/metrics listener. TOML, unknown fields
//! refused, errors naming line and field.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::apply::mapping::TableMapping;

/// One replication stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream name: the offset key on the target and Debezium's `source.name` / topic prefix.
    pub name: String,
    /// Source server (no database in the URL), e.g. `mysql://root@127.0.0.1:13306`.
    pub source_url: String,
    /// Target server.
    pub target_url: String,
    /// Our replica `server_id` on the source; distinct from every server's own.
    #[serde(default = "default_reader_id")]
    pub reader_server_id: u32,
    /// Database on the target that holds `cdc_offsets`.
    #[serde(default = "default_offsets_db")]
    pub offsets_db: String,
    /// `direct` (in-process).
    #[serde(default)]
    pub transport: Transport,
    /// `/metrics` and `/healthz` of the running stream.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Tables and their mapping.
    pub tables: Vec<TableMapping>,
}

/// How events travel from the reader to the applier.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// In-process channel (the embedded default).
    #[default]
    Direct,
}

fn default_reader_id() -> u32 {
    4001
}
fn default_offsets_db() -> String {
    "strangler_cdc".into()
}
fn default_listen() -> SocketAddr {
    "127.0.0.1:9500".parse().expect("valid")
}

impl StreamConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: StreamConfig =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if c.name.is_empty() || c.name.len() > 100 {
            return Err("name must be 1 to 100 characters".into());
        }
        if c.tables.is_empty() {
            return Err("tables: give at least one table".into());
        }
        for (i, t) in c.tables.iter().enumerate() {
            t.validate().map_err(|e| format!("tables[{i}]: {e}"))?;
        }
        for url in [&c.source_url, &c.target_url] {
            mysql_async::Opts::from_url(url)
                .map_err(|e| format!("{url:?} is not a MariaDB URL: {e}"))?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"m2s\"\nsource_url = \"mysql://root@127.0.0.1:1\"\ntarget_url = \"mysql://root@127.0.0.1:2\"\n\n[[tables]]\nsource = \"shop.users\"\ntarget = \"user_svc.users\"\n";

    #[test]
    fn parses_and_names_bad_fields() {
        let c = StreamConfig::parse(GOOD).unwrap();
        assert_eq!(c.tables.len(), 1);
        assert_eq!(c.transport, Transport::Direct);
        let err = StreamConfig::parse(&GOOD.replace("target = ", "targt = ")).unwrap_err();
        assert!(err.contains("line 7") && err.contains("targt"), "{err}");
        let err = StreamConfig::parse(&GOOD.replace("shop.users", "users")).unwrap_err();
        assert!(err.contains("tables[0]"), "{err}");
        let err = StreamConfig::parse(&format!("transport = \"pigeon\"\n{GOOD}")).unwrap_err();
        assert!(err.contains("pigeon"), "{err}");
    }
}
