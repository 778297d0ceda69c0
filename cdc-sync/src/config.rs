//! The `cdc-sync` config: one stream (a direction) per file — source and target servers, the
//! tables and their mapping, the transport, the status/metrics listener. TOML, unknown fields
//! refused, errors naming line and field. Data only: nothing here opens a connection.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::model::mapping::TableMapping;
use crate::model::transaction::parse_position;

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
    /// Where to start reading (`binlog-file:position`) when no offset is stored yet; without it
    /// the stream starts at the source's current position. Backfills hand over at such a point.
    #[serde(default)]
    pub start_position: Option<String>,
    /// Which side owns writes for these tables: it wins when a row changed on both sides in the
    /// same window. `source` for the direction leaving the owner, `target` for the way back.
    #[serde(default)]
    pub owner: Owner,
    /// Compare each target row with the event's `before` image to detect conflicts (one locked
    /// read per row); off applies blindly (the source always wins, nothing is counted).
    #[serde(default = "default_true")]
    pub detect_conflicts: bool,
    /// `portable` (the default) uses only what MySQL 8.0/8.4 and MariaDB both offer: loop
    /// prevention by marker rows, positions from `SHOW MASTER STATUS` / `SHOW BINARY LOG
    /// STATUS`. `mariadb-native` adds MariaDB's own features (`skip_replication`, MariaDB GTIDs
    /// via `@@gtid_binlog_pos`) and refuses a MySQL server.
    #[serde(default)]
    pub mode: ServerMode,
    /// Kafka settings when `transport = "kafka"`.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Per-user write ownership of a write canary (tables with `owner_key`).
    #[serde(default)]
    pub ownership: Option<OwnershipConfig>,
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
    /// Through Kafka topics `<prefix>.<db>.<table>` and `<prefix>.transaction`.
    Kafka,
}

/// Which server features a stream may use. See [`StreamConfig::mode`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerMode {
    #[default]
    Portable,
    MariadbNative,
}

impl ServerMode {
    /// The session settings of a connection that writes cdc-sync's own transactions (applied,
    /// copied): UTC, and in `mariadb-native` mode the `skip_replication` mark.
    pub fn writer_session_sql(self) -> &'static str {
        match self {
            ServerMode::Portable => "SET SESSION time_zone = '+00:00'",
            ServerMode::MariadbNative => "SET SESSION skip_replication = 1, time_zone = '+00:00'",
        }
    }
}

/// The side whose version of a row stands in a conflict.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// The server this stream reads from.
    #[default]
    Source,
    /// The server this stream writes to.
    Target,
}

/// Kafka transport settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Topic prefix (Debezium's `topic.prefix`); defaults to the stream name.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// The applier's consumer group; defaults to `cdc-sync.<name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Partitions of each table topic created by cdc-sync.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Where a (re)started applier reads from: the group's committed offsets, or the start of
    /// every partition (what it applied already is skipped by source offset). `earliest` is for
    /// brokers that cannot fetch from inside a record batch, such as tansu 0.6.
    #[serde(default)]
    pub resume_from: ResumeFrom,
    /// Compression of produced record batches (librdkafka's `compression.type`; the bundled
    /// librdkafka is built with LZ4 and Snappy): every event carries its table's schema, which
    /// compresses well.
    #[serde(default)]
    pub compression: Compression,
}

/// See [`KafkaConfig::compression`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Snappy,
    #[default]
    Lz4,
}

impl Compression {
    /// librdkafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// See [`KafkaConfig::resume_from`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFrom {
    #[default]
    Committed,
    Earliest,
}

fn default_partitions() -> i32 {
    1
}
fn default_true() -> bool {
    true
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
    /// The Kafka topic prefix (Debezium's `topic.prefix`).
    pub fn topic_prefix(&self) -> &str {
        self.kafka
            .as_ref()
            .and_then(|k| k.topic_prefix.as_deref())
            .unwrap_or(&self.name)
    }

    /// Reads a config file, expands `${NAME}` from the environment (`$${` for a literal `${`),
    /// and validates it.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// [`Self::load`] with the environment given as a lookup.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let text =
            config_env::expand(&text, env).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: StreamConfig =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if c.name.is_empty() || c.name.len() > 100 {
            return Err("name must be 1 to 100 characters".into());
        }
        if c.offsets_db.is_empty()
            || c.offsets_db.len() > 64
            || !c
                .offsets_db
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "offsets_db {:?} must be a database name (letters, digits, _)",
                c.offsets_db
            ));
        }
        if c.tables.is_empty() {
            return Err("tables: give at least one table".into());
        }
        for (i, t) in c.tables.iter().enumerate() {
            t.validate().map_err(|e| format!("tables[{i}]: {e}"))?;
        }
        if let Some(p) = &c.start_position {
            parse_position(p)?;
        }
        let owned = c.tables.iter().any(|t| t.owner_key.is_some());
        // A table's owner_key without [ownership] is inert: the stream applies every change as
        // it comes (outside a write canary one side owns all writes anyway).
        if let Some(o) = &c.ownership {
            mysql_async::Opts::from_url(&o.flags_url)
                .map_err(|e| format!("ownership.flags_url is not a MariaDB URL: {e}"))?;
            if !owned {
                return Err("[ownership] is set but no table names an owner_key".into());
            }
            if let Some(t) = c
                .tables
                .iter()
                .find(|t| t.owner_key.is_some() && t.owner_flag.is_none() && o.flag.is_none())
            {
                return Err(format!(
                    "{}: owner_key needs the flag that splits its users (owner_flag, or [ownership] flag)",
                    t.source
                ));
            }
        }
        match (c.transport, &c.kafka) {
            (Transport::Kafka, None) => {
                return Err(
                    "transport = \"kafka\" needs a [kafka] section with bootstrap_servers".into(),
                );
            }
            (Transport::Kafka, Some(k)) => {
                if k.bootstrap_servers.trim().is_empty() {
                    return Err("kafka.bootstrap_servers is empty".into());
                }
                if !(1..=1000).contains(&k.partitions) {
                    return Err("kafka.partitions must be 1 to 1000".into());
                }
                let prefix = k.topic_prefix.as_deref().unwrap_or(&c.name);
                if prefix.is_empty()
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(format!(
                        "kafka topic prefix {prefix:?} may hold only letters, digits, '.', '_' and '-'"
                    ));
                }
            }
            (Transport::Direct, _) => {}
        }
        for url in [&c.source_url, &c.target_url] {
            mysql_async::Opts::from_url(url)
                .map_err(|e| format!("{url:?} is not a MariaDB URL: {e}"))?;
        }
        Ok(c)
    }
}

/// A side of the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Monolith,
    Service,
}

/// `[ownership]` of a stream: where the proxy's flag is and which side the stream reads. The
/// flag's mode says where each user's writes go: all to the monolith (monolith, shadow, a read
/// canary), all to the service (service), or by the user's bucket (a write canary).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnershipConfig {
    /// The database of the proxy's flag table (`mysql://…/strangler`).
    pub flags_url: String,
    #[serde(default = "default_flag_table")]
    pub flag_table: String,
    /// The flag of tables that name no `owner_flag` (`route.orders`).
    #[serde(default)]
    pub flag: Option<String>,
    /// The side this stream reads from.
    pub source_side: Side,
}

fn default_flag_table() -> String {
    "strangler_flags".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"m2s\"\nsource_url = \"mysql://root@127.0.0.1:1\"\ntarget_url = \"mysql://root@127.0.0.1:2\"\n\n[[tables]]\nsource = \"shop.users\"\ntarget = \"user_svc.users\"\n";

    #[test]
    fn secrets_come_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("cdc-config-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdc-sync.toml");
        let text = GOOD.replace(
            "mysql://root@127.0.0.1:1",
            "mysql://cdc:${CDC_SOURCE_PASSWORD}@127.0.0.1:1",
        );
        std::fs::write(&path, &text).unwrap();
        let env = |n: &str| (n == "CDC_SOURCE_PASSWORD").then(|| "s3cret".to_string());
        let c = StreamConfig::load_with_env(&path, env).unwrap();
        assert_eq!(c.source_url, "mysql://cdc:s3cret@127.0.0.1:1");
        let err = StreamConfig::load_with_env(&path, |_| None).unwrap_err();
        assert!(
            err.ends_with("line 2: environment variable CDC_SOURCE_PASSWORD is not set"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ownership_needs_both_the_flag_and_an_owner_key() {
        let keyed = GOOD.replace(
            "target = \"user_svc.users\"\n",
            "target = \"user_svc.users\"\nowner_key = \"id\"\n",
        );
        // Without [ownership] an owner_key is inert.
        assert!(StreamConfig::parse(&keyed).is_ok());
        let flagless = "[ownership]\nflags_url = \"mysql://root@127.0.0.1:3/strangler\"\nsource_side = \"monolith\"\n\n";
        let (head, tables) = keyed.split_at(keyed.find("[[tables]]").unwrap());
        let err = StreamConfig::parse(&format!("{head}{flagless}{tables}")).unwrap_err();
        assert!(err.contains("owner_key needs the flag"), "{err}");
        let own_flag = tables.replace(
            "owner_key = \"id\"\n",
            "owner_key = \"id\"\nowner_flag = \"route.users\"\n",
        );
        assert!(StreamConfig::parse(&format!("{head}{flagless}{own_flag}")).is_ok());
        let section = "[ownership]\nflags_url = \"mysql://root@127.0.0.1:3/strangler\"\nflag = \"route.users\"\nsource_side = \"monolith\"\n\n";
        let (head, tables) = GOOD.split_at(GOOD.find("[[tables]]").unwrap());
        let err = StreamConfig::parse(&format!("{head}{section}{tables}")).unwrap_err();
        assert!(err.contains("no table names an owner_key"), "{err}");
        let (head, tables) = keyed.split_at(keyed.find("[[tables]]").unwrap());
        let c = StreamConfig::parse(&format!("{head}{section}{tables}")).unwrap();
        assert_eq!(c.tables[0].owner_key.as_deref(), Some("id"));
        let bad = section.replace("monolith\"", "both\"");
        assert!(StreamConfig::parse(&format!("{head}{bad}{tables}")).is_err());
    }

    #[test]
    fn modes_and_reserved_names() {
        assert_eq!(
            StreamConfig::parse(GOOD).unwrap().mode,
            ServerMode::Portable
        );
        let native = StreamConfig::parse(&format!("mode = \"mariadb-native\"\n{GOOD}")).unwrap();
        assert_eq!(native.mode, ServerMode::MariadbNative);
        let err = StreamConfig::parse(&format!("mode = \"mysql-ish\"\n{GOOD}")).unwrap_err();
        assert!(err.contains("mysql-ish"), "{err}");
        let err = StreamConfig::parse(&format!("offsets_db = \"x`; DROP\"\n{GOOD}")).unwrap_err();
        assert!(err.contains("offsets_db"), "{err}");
        let err = StreamConfig::parse(&GOOD.replace("user_svc.users", "user_svc.cdc_offsets"))
            .unwrap_err();
        assert!(err.contains("keeps for its own tables"), "{err}");
    }

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
        let err = StreamConfig::parse(&format!("start_position = \"binlog.000001\"\n{GOOD}"))
            .unwrap_err();
        assert!(err.contains("binlog-file:position"), "{err}");
        let ok = StreamConfig::parse(&format!("start_position = \"binlog.000001:328\"\n{GOOD}"))
            .unwrap();
        assert_eq!(
            parse_position(ok.start_position.as_deref().unwrap())
                .unwrap()
                .pos,
            328
        );
        let err = StreamConfig::parse(&format!("transport = \"kafka\"\n{GOOD}")).unwrap_err();
        assert!(err.contains("[kafka]"), "{err}");
        let k = StreamConfig::parse(&format!(
            "transport = \"kafka\"\nowner = \"target\"\n{GOOD}\n[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n"
        ))
        .unwrap();
        assert_eq!((k.topic_prefix(), k.owner), ("m2s", Owner::Target));
        let err = StreamConfig::parse(&format!(
            "transport = \"kafka\"\n{GOOD}\n[kafka]\nbootstrap_servers = \"b:1\"\ntopic_prefix = \"a b\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("prefix"), "{err}");
    }
}
