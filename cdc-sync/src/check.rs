//! `cdc-sync check-source`: reads a live source server's settings and the stream user's grants
//! and names every problem that would stop or corrupt a stream, one line each, for MySQL 8.0/8.4
//! and MariaDB alike.

use std::collections::BTreeMap;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use serde::Serialize;

use crate::config::{ServerMode, StreamConfig};
use crate::error::CdcError;
use crate::model::server::{Flavor, ServerInfo};
use crate::source::binlog::BinlogSource;

/// One setting or grant that is not as cdc-sync needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The variable or privilege, e.g. `binlog_format` or `REPLICATION SLAVE`.
    pub setting: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What `check-source` found.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `MySQL 8.4.3` or `MariaDB 10.11.6`.
    pub server: String,
    pub problems: Vec<Problem>,
}

/// Privileges on `*.*` a stream's user needs: (name, names that also grant it).
const PRIVILEGES: [(&str, &[&str]); 2] = [
    ("REPLICATION SLAVE", &["REPLICATION SLAVE"]),
    // MariaDB 10.5 split it out and shows it as BINLOG MONITOR.
    (
        "REPLICATION CLIENT",
        &["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"],
    ),
];

/// Checks the source of `config` (its server, its user, the databases of its tables).
pub async fn check_source(config: &StreamConfig) -> Result<SourceReport, CdcError> {
    let opts = Opts::from_url(&config.source_url)
        .map_err(|e| CdcError::Config(format!("source url: {e}")))?;
    let mut conn = Conn::new(opts).await?;
    // Portable: a native-mode stream on MySQL is a problem to report, not an error here.
    let server = BinlogSource::server(&mut conn, ServerMode::Portable).await?;
    let vars: BTreeMap<String, String> = conn
        .query::<(String, String), _>(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'server_id', 'gtid_mode', \
             'enforce_gtid_consistency', 'binlog_transaction_compression')",
        )
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    conn.disconnect().await?;
    let dbs: Vec<&str> = config
        .tables
        .iter()
        .filter_map(|t| t.source.split_once('.').map(|(d, _)| d))
        .collect();
    Ok(SourceReport {
        server: server.describe(),
        problems: problems(&server, config.mode, &vars, &grants, &dbs),
    })
}

/// The problems in a server's variables and the user's grants (pure, for tests).
pub fn problems(
    server: &ServerInfo,
    mode: ServerMode,
    vars: &BTreeMap<String, String>,
    grants: &[String],
    dbs: &[&str],
) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut want = |name: &str, expected: &str, why: &str| {
        let got = vars.get(name).map(String::as_str).unwrap_or("(not set)");
        if !got.eq_ignore_ascii_case(expected) {
            out.push(Problem {
                setting: name.to_string(),
                message: format!("{name} is {got}; set {name}={expected} ({why})"),
            });
        }
    };
    want("log_bin", "ON", "cdc-sync reads the binary log");
    want(
        "binlog_format",
        "ROW",
        "only row events carry the changed rows",
    );
    want(
        "binlog_row_image",
        "FULL",
        "every column of before and after images",
    );
    if server.flavor == Flavor::MySql {
        want(
            "binlog_row_metadata",
            "FULL",
            "column names and keys in the table map",
        );
        want("gtid_mode", "ON", "offsets carry GTIDs");
        want(
            "enforce_gtid_consistency",
            "ON",
            "required with gtid_mode=ON",
        );
        if vars.contains_key("binlog_transaction_compression") {
            want(
                "binlog_transaction_compression",
                "OFF",
                "compressed transaction payloads are not decoded",
            );
        }
    }
    if vars.get("server_id").is_some_and(|v| v == "0") {
        out.push(Problem {
            setting: "server_id".into(),
            message: "server_id is 0; give the server a non-zero server_id".into(),
        });
    }
    if mode == ServerMode::MariadbNative && server.flavor != Flavor::MariaDb {
        out.push(Problem {
            setting: "mode".into(),
            message: format!(
                "mode = \"mariadb-native\" needs MariaDB; this is {}: use mode = \"portable\"",
                server.describe()
            ),
        });
    }
    let privileges = granted(grants);
    let all = |on: &str| {
        privileges
            .get(on)
            .is_some_and(|p| p.iter().any(|x| x == "ALL PRIVILEGES" || x == "ALL"))
    };
    for (name, any_of) in PRIVILEGES {
        let has = all("*.*")
            || privileges
                .get("*.*")
                .is_some_and(|p| p.iter().any(|x| any_of.contains(&x.as_str())));
        if !has {
            out.push(Problem {
                setting: name.into(),
                message: format!("the user lacks {name} ON *.*; GRANT {name} ON *.* TO it"),
            });
        }
    }
    let select_on = |on: &str| {
        all(on)
            || privileges
                .get(on)
                .is_some_and(|p| p.iter().any(|x| x == "SELECT"))
    };
    let mut seen = Vec::new();
    for db in dbs {
        if seen.contains(db) {
            continue;
        }
        seen.push(*db);
        if !select_on("*.*") && !select_on(&format!("`{db}`.*")) {
            out.push(Problem {
                setting: "SELECT".into(),
                message: format!(
                    "the user lacks SELECT on `{db}`.* (schemas, backfill, verify); GRANT SELECT ON `{db}`.* TO it"
                ),
            });
        }
    }
    out
}

/// Privileges by object (`*.*`, `` `db`.* ``) from `SHOW GRANTS` lines, upper-case.
fn granted(grants: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in grants {
        let Some(rest) = g.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, tail)) = rest.split_once(" ON ") else {
            continue;
        };
        let on = tail.split(" TO ").next().unwrap_or_default().trim();
        out.entry(on.to_string()).or_default().extend(
            privs
                .split(',')
                .map(|p| p.trim().to_ascii_uppercase())
                .filter(|p| !p.is_empty()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_mysql_8_4_server_needs_gtids_and_full_metadata() {
        let server = ServerInfo::parse("8.4.3").unwrap();
        let good = vars(&[
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("server_id", "1"),
            ("gtid_mode", "ON"),
            ("enforce_gtid_consistency", "ON"),
            ("binlog_transaction_compression", "OFF"),
        ]);
        let grants = vec![
            "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`".to_string(),
        ];
        assert_eq!(
            problems(&server, ServerMode::Portable, &good, &grants, &["shop"]),
            vec![]
        );
        let mut bad = good.clone();
        bad.insert("binlog_row_metadata".into(), "MINIMAL".into());
        bad.insert("gtid_mode".into(), "OFF_PERMISSIVE".into());
        let weak = vec![
            "GRANT USAGE ON *.* TO `cdc`@`%`".to_string(),
            "GRANT SELECT ON `shop`.* TO `cdc`@`%`".to_string(),
        ];
        let found = problems(&server, ServerMode::MariadbNative, &bad, &weak, &["shop"]);
        let settings: Vec<&str> = found.iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            settings,
            [
                "binlog_row_metadata",
                "gtid_mode",
                "mode",
                "REPLICATION SLAVE",
                "REPLICATION CLIENT"
            ]
        );
        assert!(found[0].message.contains("binlog_row_metadata=FULL"));
    }

    #[test]
    fn mariadb_grants_in_its_own_words() {
        let server = ServerInfo::parse("10.11.6-MariaDB").unwrap();
        let ok = vars(&[
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("server_id", "2"),
        ]);
        let grants = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`localhost`".to_string(),
            "GRANT SELECT ON `orders`.* TO `cdc`@`localhost`".to_string(),
        ];
        let found = problems(
            &server,
            ServerMode::Portable,
            &ok,
            &grants,
            &["orders", "shop"],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("SELECT on `shop`.*"));
        let root =
            vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".into()];
        assert!(problems(&server, ServerMode::MariadbNative, &ok, &root, &["shop"]).is_empty());
    }
}
