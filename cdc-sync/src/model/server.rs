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

/// Which side of a key a range bound keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBound {
    /// Keys strictly after the bound (a chunk's start).
    After,
    /// Keys up to and including the bound (a chunk's end).
    AtMost,
}

/// A comparison of the (quoted) key columns `cols` with a key, as SQL with `?` placeholders and
/// which key part each placeholder takes. Written out (`a >= ? AND (a > ? OR (a = ? AND b > ?))`)
/// rather than as a row comparison `(a, b) > (?, ?)`, which MariaDB does not turn into an index
/// range: on a composite key every chunk would scan from the start of the table.
pub fn key_bound_sql(cols: &[String], bound: KeyBound) -> (String, Vec<usize>) {
    let (strict, loose) = match bound {
        KeyBound::After => (">", ">="),
        KeyBound::AtMost => ("<", "<="),
    };
    let last = cols.len().saturating_sub(1);
    let mut sql = match bound {
        KeyBound::After => format!("{} > ?", cols[last]),
        KeyBound::AtMost => format!("{} <= ?", cols[last]),
    };
    let mut params = vec![last];
    for i in (0..last).rev() {
        sql = format!("({c} {strict} ? OR ({c} = ? AND {sql}))", c = cols[i]);
        params.splice(0..0, [i, i]);
    }
    if last > 0 {
        sql = format!("{} {loose} ? AND {sql}", cols[0]);
        params.insert(0, 0);
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bounds_are_written_out_for_an_index_range() {
        let one = vec!["`id`".to_string()];
        assert_eq!(
            key_bound_sql(&one, KeyBound::After),
            ("`id` > ?".to_string(), vec![0])
        );
        let three: Vec<String> = ["`a`", "`b`", "`c`"].map(String::from).to_vec();
        assert_eq!(
            key_bound_sql(&three, KeyBound::After),
            (
                "`a` >= ? AND (`a` > ? OR (`a` = ? AND (`b` > ? OR (`b` = ? AND `c` > ?))))"
                    .to_string(),
                vec![0, 0, 0, 1, 1, 2]
            )
        );
        let (sql, params) = key_bound_sql(&three[..2], KeyBound::AtMost);
        assert_eq!(sql, "`a` <= ? AND (`a` < ? OR (`a` = ? AND `b` <= ?))");
        assert_eq!(params, [0, 0, 0, 1]);
    }

    /// The written-out form means the same as the row comparison, on every pair of small keys.
    #[test]
    fn key_bounds_mean_the_row_comparison() {
        let cols: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let keys: Vec<[i32; 3]> = (0..27).map(|i| [i / 9, (i / 3) % 3, i % 3]).collect();
        for bound in [KeyBound::After, KeyBound::AtMost] {
            let (sql, params) = key_bound_sql(&cols, bound);
            for k in &keys {
                for v in &keys {
                    let values: Vec<i32> = params.iter().map(|&i| v[i]).collect();
                    let expected = match bound {
                        KeyBound::After => k > v,
                        KeyBound::AtMost => k <= v,
                    };
                    assert_eq!(eval(&sql, k, &values), expected, "{k:?} vs {v:?}: {sql}");
                }
            }
        }
    }

    /// Evaluates the generated SQL over columns a, b, c = `row`, placeholders = `values`.
    fn eval(sql: &str, row: &[i32; 3], values: &[i32]) -> bool {
        let mut n = 0;
        let mut text = String::new();
        for ch in sql.chars() {
            if ch == '?' {
                text.push_str(&values[n].to_string());
                n += 1;
            } else {
                text.push(ch);
            }
        }
        let text = text
            .replace('a', &row[0].to_string())
            .replace('b', &row[1].to_string())
            .replace('c', &row[2].to_string());
        let tokens: Vec<String> = text
            .replace('(', " ( ")
            .replace(')', " ) ")
            .split_whitespace()
            .map(String::from)
            .collect();
        let mut pos = 0;
        or(&tokens, &mut pos)
    }

    fn or(t: &[String], p: &mut usize) -> bool {
        let mut v = and(t, p);
        while *p < t.len() && t[*p] == "OR" {
            *p += 1;
            let r = and(t, p);
            v = v || r;
        }
        v
    }

    fn and(t: &[String], p: &mut usize) -> bool {
        let mut v = atom(t, p);
        while *p < t.len() && t[*p] == "AND" {
            *p += 1;
            let r = atom(t, p);
            v = v && r;
        }
        v
    }

    fn atom(t: &[String], p: &mut usize) -> bool {
        if t[*p] == "(" {
            *p += 1;
            let v = or(t, p);
            *p += 1; // ")"
            return v;
        }
        let (l, op, r): (i32, &str, i32) = (
            t[*p].parse().unwrap(),
            t[*p + 1].as_str(),
            t[*p + 2].parse().unwrap(),
        );
        *p += 3;
        match op {
            ">" => l > r,
            ">=" => l >= r,
            "<" => l < r,
            "<=" => l <= r,
            "=" => l == r,
            other => panic!("{other}"),
        }
    }

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
