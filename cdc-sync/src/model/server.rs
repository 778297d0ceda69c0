//! The database server on either side: MySQL or MariaDB and its version, read from the version
//! string, and the statements that differ between them. Portable mode uses only what both offer.

/// Which server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

/// A server's family and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: (u16, u16, u16),
}

impl ServerInfo {
    /// From `SELECT VERSION()`: `8.4.3`, `8.0.36-log`, `10.11.6-MariaDB-0+deb12u1-log`, or the
    /// `5.5.5-` prefix some MariaDB releases still send.
    pub fn parse(version: &str) -> Result<Self, String> {
        let flavor = if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let text = version.strip_prefix("5.5.5-").unwrap_or(version);
        let numbers: Vec<u16> = text
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or_default()
            .split('.')
            .map_while(|n| n.parse().ok())
            .collect();
        match numbers.as_slice() {
            [a, b, c, ..] => Ok(Self {
                flavor,
                version: (*a, *b, *c),
            }),
            [a, b] => Ok(Self {
                flavor,
                version: (*a, *b, 0),
            }),
            _ => Err(format!("unrecognised server version {version:?}")),
        }
    }

    /// The statement giving the current binlog file and position: MySQL 8.2 renamed it to
    /// `SHOW BINARY LOG STATUS` (8.4 removed the old name); MariaDB and MySQL 8.0 take the old.
    pub fn binlog_status_sql(&self) -> &'static str {
        match (self.flavor, self.version) {
            (Flavor::MySql, v) if v >= (8, 2, 0) => "SHOW BINARY LOG STATUS",
            _ => "SHOW MASTER STATUS",
        }
    }

    /// `MySQL 8.4.3` or `MariaDB 10.11.6`.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.version;
        let name = match self.flavor {
            Flavor::MySql => "MySQL",
            Flavor::MariaDb => "MariaDB",
        };
        format!("{name} {a}.{b}.{c}")
    }
}

/// Tables cdc-sync writes first in every transaction it applies, copies or repairs (in the
/// writing stream's `offsets_db`, whatever its name): a transaction holding a row of one is
/// cdc-sync's own, and no stream reads it back (loop prevention without `skip_replication`,
/// through any pooler). Mapped tables may not bear these names.
pub const MARKER_TABLES: [&str; 3] = ["cdc_offsets", "cdc_backfill", "cdc_repairs"];

/// Whether a row of `table` marks its transaction as cdc-sync's own.
pub fn is_marker(table: &str) -> bool {
    MARKER_TABLES.contains(&table)
}

/// Quotes one identifier for MySQL/MariaDB: in backticks, a backtick inside doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes `db.table` (split at the first dot: names from config never hold one).
pub fn quote_qualified(qualified: &str) -> String {
    match qualified.split_once('.') {
        Some((db, table)) => format!("{}.{}", quote_ident(db), quote_ident(table)),
        None => quote_ident(qualified),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_both_families() {
        let m = ServerInfo::parse("8.4.3").unwrap();
        assert_eq!((m.flavor, m.version), (Flavor::MySql, (8, 4, 3)));
        assert_eq!(m.binlog_status_sql(), "SHOW BINARY LOG STATUS");
        let m80 = ServerInfo::parse("8.0.36-log").unwrap();
        assert_eq!(m80.binlog_status_sql(), "SHOW MASTER STATUS");
        let maria = ServerInfo::parse("10.11.6-MariaDB-0+deb12u1-log").unwrap();
        assert_eq!(
            (maria.flavor, maria.version),
            (Flavor::MariaDb, (10, 11, 6))
        );
        assert_eq!(maria.binlog_status_sql(), "SHOW MASTER STATUS");
        let old = ServerInfo::parse("5.5.5-10.6.12-MariaDB").unwrap();
        assert_eq!(old.version, (10, 6, 12));
        assert_eq!(old.describe(), "MariaDB 10.6.12");
        assert!(ServerInfo::parse("banana").is_err());
    }

    #[test]
    fn identifiers_are_quoted_with_backticks_doubled() {
        assert_eq!(quote_ident("note"), "`note`");
        assert_eq!(
            quote_ident("x` = 1; DROP TABLE t; -- "),
            "`x`` = 1; DROP TABLE t; -- `"
        );
        assert_eq!(quote_qualified("shop.order`s"), "`shop`.`order``s`");
        assert!(is_marker("cdc_offsets") && is_marker("cdc_repairs"));
        assert!(!is_marker("cdc_signal") && !is_marker("orders"));
    }
}
