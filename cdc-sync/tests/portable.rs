//! Portable mode against private MariaDB servers with the general log on: two streams (both
//! directions), a backfill and a verify with repair run as a dedicated `cdc` user, and every
//! statement that user sent is checked against an allow-list of what MySQL 8.0/8.4 also takes.
//! The same run in `mariadb-native` mode shows the native path really differs. `check-source`
//! is run against a correctly and a wrongly configured server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdc_sync::config::StreamConfig;
use cdc_sync::metrics::Metrics;
use mysql_async::prelude::*;

mod common;
use common::{eventually, start, suppressed};

/// A private server with a `cdc` user (password `cdcpw`) and the general log in a table.
async fn server(name: &str, server_id: u32) -> testkit::MariaDb {
    let db = testkit::MariaDb::start(testkit::MariaDbOptions::new(name, server_id)).unwrap();
    for sql in [
        "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdcpw'",
        "CREATE USER 'cdc'@'localhost' IDENTIFIED BY 'cdcpw'",
        "GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'%'",
        "GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'localhost'",
        "SET GLOBAL log_output = 'TABLE'",
        "SET GLOBAL general_log = 1",
    ] {
        db.execute(sql).await.unwrap();
    }
    db
}

fn cdc_url(db: &testkit::MariaDb) -> String {
    format!("mysql://cdc:cdcpw@127.0.0.1:{}", db.port())
}

/// Every statement the `cdc` user sent (queries, prepared statements and their executions).
async fn statements_of_cdc(db: &testkit::MariaDb) -> Vec<String> {
    let mut c = mysql_async::Conn::from_url(db.root_url().as_str())
        .await
        .unwrap();
    c.query_drop("SET GLOBAL general_log = 0").await.unwrap();
    let rows: Vec<Vec<u8>> = c
        .query(
            "SELECT argument FROM mysql.general_log \
             WHERE user_host LIKE 'cdc[%' AND command_type IN ('Query', 'Prepare', 'Execute')",
        )
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    rows.into_iter()
        .map(|r| String::from_utf8_lossy(&r).into_owned())
        .collect()
}

/// What portable mode may send: statements MySQL 8.0 and 8.4 take as MariaDB does.
const ALLOWED_PREFIXES: &[&str] = &[
    "SELECT ",
    "(SELECT ",
    "INSERT INTO ",
    "REPLACE INTO ",
    "UPDATE ",
    "DELETE FROM ",
    "CREATE DATABASE IF NOT EXISTS ",
    "CREATE TABLE IF NOT EXISTS ",
    "ALTER TABLE ",
    "SET SESSION TIME_ZONE = ",
    "SET TIME_ZONE = ",
    "SET @MASTER_BINLOG_CHECKSUM=",
    "SHOW MASTER STATUS",
    "SHOW BINARY LOG STATUS",
    "SHOW GLOBAL VARIABLES ",
    "SHOW GRANTS",
    "START TRANSACTION",
    "SET TRANSACTION ",
    "COMMIT",
    "ROLLBACK",
];

/// MariaDB-only words, wherever they appear.
const FORBIDDEN: &[&str] = &[
    "SKIP_REPLICATION",
    "@@GTID",
    "GTID_BINLOG_POS",
    "GTID_SLAVE_POS",
    "GTID_CURRENT_POS",
    "MARIADB_SLAVE_CAPABILITY",
    "ADD COLUMN IF NOT EXISTS",
    " RETURNING ",
    "SHOW BINLOG STATUS",
];

/// The statements an allow-list refuses, with why.
fn refused(statements: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in statements {
        let norm = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let upper = norm.to_ascii_uppercase();
        if let Some(word) = FORBIDDEN.iter().find(|w| upper.contains(*w)) {
            out.push(format!("{word} in: {norm}"));
        } else if !ALLOWED_PREFIXES.iter().any(|p| upper.starts_with(p)) {
            out.push(format!("not allowed: {norm}"));
        }
    }
    out
}

#[test]
fn the_allow_list_refuses_mariadb_only_statements() {
    let bad = |s: &str| !refused(&[s.to_string()]).is_empty();
    assert!(bad(
        "SET SESSION skip_replication = 1, time_zone = '+00:00'"
    ));
    assert!(bad("SELECT @@gtid_binlog_pos"));
    assert!(bad("SET @mariadb_slave_capability=4"));
    assert!(bad(
        "ALTER TABLE `x`.cdc_backfill ADD COLUMN IF NOT EXISTS ranges TEXT NULL"
    ));
    assert!(bad("DELETE FROM t WHERE id = 1 RETURNING id"));
    assert!(bad("FLUSH BINARY LOGS"));
    assert!(!bad("SHOW MASTER STATUS"));
    assert!(!bad("SET SESSION time_zone = '+00:00'"));
}

async fn count(url: &str, sql: &str) -> u64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let n: Option<u64> = c.query_first(sql).await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap_or(0)
}

fn write_config(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Both directions, a backfill of rows that predate the streams, writes on both sides, a
/// corrupted target row found and repaired by `verify --repair`; returns what the `cdc` user
/// sent to each server.
async fn two_way_run(mode: &str, ids: (u32, u32)) -> (Vec<String>, Vec<String>) {
    let a = server(&format!("{mode}-a"), ids.0).await;
    let b = server(&format!("{mode}-b"), ids.1).await;
    let ddl = "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)";
    a.execute("CREATE DATABASE shop").await.unwrap();
    b.execute("CREATE DATABASE user_svc").await.unwrap();
    let (a_url, b_url) = (a.url("shop"), b.url("user_svc"));
    common::exec(&a_url, ddl).await;
    common::exec(&b_url, ddl).await;
    // Rows from before the streams: only a backfill brings them over.
    for i in 1..=300 {
        common::exec(
            &a_url,
            &format!("INSERT INTO users VALUES ({i}, 'u{i}@x.co', 'old {i}')"),
        )
        .await;
    }
    let dir = testkit::TempDir::new(&format!("cdc-{mode}")).unwrap();
    let stream = |name: &str,
                  src: &testkit::MariaDb,
                  dst: &testkit::MariaDb,
                  from: &str,
                  to: &str,
                  reader: u32| {
        format!(
            "name = \"{name}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader}\n\
             mode = \"{mode}\"\nlisten = \"127.0.0.1:{}\"\n\n[[tables]]\nsource = \"{from}.users\"\ntarget = \"{to}.users\"\n",
            cdc_url(src),
            cdc_url(dst),
            testkit::free_port()
        )
    };
    let fwd_text = stream("m2s", &a, &b, "shop", "user_svc", ids.0 + 100);
    let rev_text = stream("s2m", &b, &a, "user_svc", "shop", ids.1 + 100);
    let fwd_file = write_config(dir.path(), "m2s.toml", &fwd_text);
    let forward = start(StreamConfig::parse(&fwd_text).unwrap()).await;
    let reverse = start(StreamConfig::parse(&rev_text).unwrap()).await;

    let out = tokio::task::spawn_blocking({
        let f = fwd_file.clone();
        move || cli(&f, &["backfill", "--table", "users", "--chunk-size", "100"])
    })
    .await
    .unwrap();
    testkit::assert_success(&out, "cdc-sync backfill");
    common::exec(
        &a_url,
        "INSERT INTO users VALUES (1001, 'new@x.co', 'on the monolith')",
    )
    .await;
    common::exec(
        &b_url,
        "INSERT INTO users VALUES (2001, 'svc@x.co', 'on the service')",
    )
    .await;
    common::exec(
        &b_url,
        "UPDATE users SET name = 'renamed on the service' WHERE id = 7",
    )
    .await;
    let q = "SELECT COUNT(*) FROM users";
    eventually("both sides to hold 302 rows", || {
        let (x, y) = (a_url.clone(), b_url.clone());
        async move { count(&x, q).await == 302 && count(&y, q).await == 302 }
    })
    .await;
    let renamed = "SELECT COUNT(*) FROM users WHERE id = 7 AND name = 'renamed on the service'";
    eventually("the service's update back on the monolith", || {
        let x = a_url.clone();
        async move { count(&x, renamed).await == 1 }
    })
    .await;
    // Each applier's writes came back to the other reader and were skipped, not applied.
    eventually("suppressed echoes", || {
        let (f, r) = (
            suppressed(&forward.metrics.render()),
            suppressed(&reverse.metrics.render()),
        );
        async move { f > 0 && r > 0 }
    })
    .await;

    // A corrupted target row: verify finds it, --repair fixes it, and the repair is not carried
    // back to the monolith by the reverse stream.
    common::exec(&b_url, "UPDATE users SET email = 'broken' WHERE id = 42").await;
    let out = tokio::task::spawn_blocking({
        let f = fwd_file.clone();
        move || {
            // The reverse stream carries the corruption to the monolith too, so this is
            // a write on the service side; verify compares after it settles.
            std::thread::sleep(Duration::from_millis(500));
            cli(&f, &["verify", "--table", "users", "--json"])
        }
    })
    .await
    .unwrap();
    // The service's write went back to the monolith, so both agree: clean.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Now corrupt the target behind both streams' backs: only the target changes.
    let mut c = mysql_async::Conn::from_url(b_url.as_str()).await.unwrap();
    let native = mode == "mariadb-native";
    if native {
        c.query_drop("SET SESSION skip_replication = 1")
            .await
            .unwrap();
    } else {
        // Portable: write the corruption in a marked transaction, as a repair would.
        c.query_drop("CREATE DATABASE IF NOT EXISTS strangler_cdc")
            .await
            .unwrap();
        c.query_drop("CREATE TABLE IF NOT EXISTS strangler_cdc.cdc_repairs (stream VARCHAR(100) NOT NULL, target_table VARCHAR(200) NOT NULL, transactions BIGINT UNSIGNED NOT NULL DEFAULT 0, updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), PRIMARY KEY (stream, target_table))").await.unwrap();
    }
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    if !native {
        tx.query_drop("INSERT INTO strangler_cdc.cdc_repairs (stream, target_table) VALUES ('test', 'user_svc.users') ON DUPLICATE KEY UPDATE transactions = transactions + 1").await.unwrap();
    }
    tx.query_drop("UPDATE users SET email = 'corrupt' WHERE id = 43")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    c.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_monolith = "SELECT COUNT(*) FROM users WHERE id = 43 AND email = 'u43@x.co'";
    assert_eq!(
        count(&a_url, on_monolith).await,
        1,
        "a marked write was carried back"
    );
    let out = tokio::task::spawn_blocking({
        let f = fwd_file.clone();
        move || cli(&f, &["verify", "--table", "users", "--repair", "--json"])
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["repaired"], 1, "{report}");
    let fixed = "SELECT COUNT(*) FROM users WHERE id = 43 AND email = 'u43@x.co'";
    assert_eq!(count(&b_url, fixed).await, 1);
    let out = cli(&fwd_file, &["verify", "--table", "users", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Only what each side wrote itself was applied by the other: no echo was applied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (r, name) in [(&forward, "forward"), (&reverse, "reverse")] {
        assert!(!r.task.is_finished(), "the {name} stream stopped");
    }
    let applied = |m: &Metrics, table: &str| {
        m.render()
            .lines()
            .filter(|l| {
                l.starts_with("cdc_events_total{")
                    && l.contains("stage=\"applied\"")
                    && l.contains(&format!("table=\"{table}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(
        applied(&forward.metrics, "shop.users"),
        1,
        "forward: the monolith's insert only (the backfill copies are no events)"
    );
    assert_eq!(
        applied(&reverse.metrics, "user_svc.users"),
        3,
        "reverse: the service's insert, update and first corruption"
    );
    // The inspecting commands are held to the same list.
    let status = cli(&fwd_file, &["status", "--json"]);
    testkit::assert_success(&status, "cdc-sync status");
    let check = cli(&fwd_file, &["check-source"]);
    assert!(
        testkit::assert_success(&check, "cdc-sync check-source").contains("OK"),
        "{check:?}"
    );
    for r in [&forward, &reverse] {
        let _ = r.stop.send(true);
    }
    (statements_of_cdc(&a).await, statements_of_cdc(&b).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_mode_sends_only_what_mysql_also_takes() {
    let (a, b) = two_way_run("portable", (71, 72)).await;
    assert!(
        a.len() > 20 && b.len() > 20,
        "{} and {} statements logged",
        a.len(),
        b.len()
    );
    let wrong: Vec<String> = refused(&a).into_iter().chain(refused(&b)).collect();
    assert!(
        wrong.is_empty(),
        "statements MySQL would not take:\n{}",
        wrong.join("\n")
    );
    // The start position came from the statement both offer.
    assert!(a.iter().any(|s| s.trim() == "SHOW MASTER STATUS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_native_mode_uses_skip_replication() {
    let (a, b) = two_way_run("mariadb-native", (73, 74)).await;
    let all: Vec<&String> = a.iter().chain(&b).collect();
    assert!(all.iter().any(|s| s.contains("skip_replication = 1")));
    assert!(all.iter().any(|s| s.contains("@@gtid_binlog_pos")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_source_names_each_problem() {
    let db = testkit::MariaDb::start(testkit::MariaDbOptions::new("check-source", 75)).unwrap();
    db.execute("CREATE DATABASE shop").await.unwrap();
    db.execute("CREATE DATABASE other").await.unwrap();
    let dir = testkit::TempDir::new("cdc-check-source").unwrap();
    let config = |url: &str| {
        format!(
            "name = \"check\"\nsource_url = \"{url}\"\ntarget_url = \"{url}\"\n\n\
             [[tables]]\nsource = \"shop.users\"\ntarget = \"user_svc.users\"\n"
        )
    };
    let good = write_config(dir.path(), "good.toml", &config(&db.root_url()));
    let out = cli(&good, &["check-source"]);
    let text = testkit::assert_success(&out, "check-source on a good server");
    assert!(text.contains("MariaDB") && text.contains("OK"), "{text}");

    for sql in [
        "SET GLOBAL binlog_format = 'STATEMENT'",
        "SET GLOBAL binlog_row_image = 'MINIMAL'",
        "CREATE USER 'weak'@'%' IDENTIFIED BY 'weakpw'",
        "CREATE USER 'weak'@'localhost' IDENTIFIED BY 'weakpw'",
        "GRANT SELECT ON other.* TO 'weak'@'%'",
        "GRANT SELECT ON other.* TO 'weak'@'localhost'",
    ] {
        db.execute(sql).await.unwrap();
    }
    let weak_url = format!("mysql://weak:weakpw@127.0.0.1:{}", db.port());
    let bad = write_config(dir.path(), "bad.toml", &config(&weak_url));
    let out = cli(&bad, &["check-source"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    assert_eq!(problems.len(), 5, "{text}");
    for want in [
        "binlog_format is STATEMENT; set binlog_format=ROW",
        "binlog_row_image is MINIMAL; set binlog_row_image=FULL",
        "lacks REPLICATION SLAVE",
        "lacks REPLICATION CLIENT",
        "lacks SELECT on `shop`.*",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want} in {text}"
        );
    }
    let out = cli(&bad, &["check-source", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 5);
    // A server that cannot be reached is an error, not a verdict.
    let gone = write_config(
        dir.path(),
        "gone.toml",
        &config(&format!("mysql://root@127.0.0.1:{}", testkit::free_port())),
    );
    assert_eq!(cli(&gone, &["check-source"]).status.code(), Some(2));
}
