//! cdc-sync streaming against two real MariaDB servers: every change kind and column type
//! arrives intact through a mapping, both directions run at once without loops, a crash of the
//! process mid-burst loses and duplicates nothing, and an incompatible schema change stops the
//! stream at a known offset.

mod common;
use common::{eventually, start, suppressed};

use std::time::Duration;

use cdc_sync::config::StreamConfig;
use cdc_sync::metrics::Metrics;
use mysql_async::prelude::*;

fn config(
    name: &str,
    src: &testkit::MariaDb,
    dst: &testkit::MariaDb,
    tables: &str,
    reader_id: u32,
) -> StreamConfig {
    StreamConfig::parse(&format!(
        "name = \"{name}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader_id}\noffsets_db = \"cdc_{name}\"\n\n{tables}",
        src.root_url(),
        dst.root_url()
    ))
    .unwrap()
}

/// A stream of one table, `a.<table>` → `b.<table>`, whose conflicts `owner` wins.
fn one_table(
    name: &str,
    (a, b): (&testkit::TestDatabase, &testkit::TestDatabase),
    table: &str,
    reader_id: u32,
    owner: cdc_sync::config::Owner,
) -> StreamConfig {
    let mut cfg = config(
        name,
        testkit::monolith_server(),
        testkit::services_server(),
        &format!(
            "[[tables]]\nsource = \"{}.{table}\"\ntarget = \"{}.{table}\"\n",
            a.name, b.name
        ),
        reader_id,
    );
    cfg.owner = owner;
    cfg
}

async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.disconnect().await.unwrap();
}

async fn rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i).flatten())
                .collect()
        })
        .collect()
}

const TYPES_TABLE: &str = "CREATE TABLE t (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  small TINYINT UNSIGNED NULL,
  name VARCHAR(100) NULL,
  price DECIMAL(12,2) NULL,
  born DATE NULL,
  seen DATETIME(3) NULL,
  precise DATETIME(6) NULL,
  stamp TIMESTAMP(3) NULL DEFAULT NULL,
  dur TIME(6) NULL,
  status ENUM('pending','paid','cancelled') NULL,
  tags SET('a','b','c') NULL,
  doc JSON NULL,
  raw BLOB NULL,
  ratio DOUBLE NULL,
  yr YEAR NULL
)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_kind_and_type_arrives_intact() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("cdc_src").await.unwrap();
    let dst = s.create_database("cdc_dst").await.unwrap();
    exec(&src.url, TYPES_TABLE).await;
    exec(
        &dst.url,
        &TYPES_TABLE
            .replace("name VARCHAR(100) NULL", "title VARCHAR(100) NULL")
            .replace("yr YEAR NULL", "yr YEAR NULL, origin VARCHAR(20) NOT NULL"),
    )
    .await;
    let tables = format!(
        "[[tables]]\nsource = \"{}.t\"\ntarget = \"{}.t\"\nrename = {{ name = \"title\" }}\ndefaults = {{ origin = \"monolith\" }}\n",
        src.name, dst.name
    );
    let run = start(config(
        &format!("types{}", std::process::id()),
        m,
        s,
        &tables,
        4101,
    ))
    .await;
    exec(&src.url, "SET time_zone = '+00:00'; INSERT INTO t VALUES
      (1, 200, 'Kettle', 19.99, '2024-02-29', '2024-01-01 10:00:00.123', '2024-01-01 10:00:00.123456', '2024-01-01 10:00:00.250', '-26:00:00.000005', 'paid', 'a,c', '{\"k\": [1, 2]}', X'00FF10', 0.5, 2024),
      (18446744073709551615, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)").await;
    exec(
        &src.url,
        "UPDATE t SET name = 'Steel kettle', price = 21.00, status = 'cancelled' WHERE id = 1",
    )
    .await;
    exec(&src.url, "BEGIN; INSERT INTO t (id, name) VALUES (2, 'Mug'), (3, 'Lamp'); DELETE FROM t WHERE id = 3; UPDATE t SET id = 4 WHERE id = 2; COMMIT").await;
    let cols = "id, small, {name}, price, born, seen, precise, stamp, dur, status, tags, doc, HEX(raw), ratio, yr";
    let want = rows(
        &src.url,
        &format!(
            "SELECT {} FROM t ORDER BY id",
            cols.replace("{name}", "name")
        ),
    )
    .await;
    eventually("the target to match", || {
        let (url, cols, want) = (dst.url.clone(), cols.to_string(), want.clone());
        async move {
            rows(
                &url,
                &format!(
                    "SELECT {} FROM t ORDER BY id",
                    cols.replace("{name}", "title")
                ),
            )
            .await
                == want
        }
    })
    .await;
    assert_eq!(want.len(), 3, "rows 1, 4 and the max id");
    let origin = rows(&dst.url, "SELECT DISTINCT origin FROM t").await;
    assert_eq!(origin, vec![vec![Some("monolith".to_string())]]);
    let metrics = run.metrics.render();
    assert!(metrics.contains("cdc_events_total"), "{metrics}");
    // Conflict detection compares every type without false alarms.
    assert!(!metrics.contains("cdc_conflicts_total{"), "{metrics}");
    let _ = run.stop.send(true);
    run.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once_without_loops() {
    // Private servers: the idle-offset check below counts every transaction in their binlogs,
    // which the other tests' traffic on the shared servers would swell.
    let opts = |name: &str, id| testkit::MariaDbOptions::new(name, id);
    let private = (
        testkit::MariaDb::start(opts("bidir-monolith", 71)).unwrap(),
        testkit::MariaDb::start(opts("bidir-services", 72)).unwrap(),
    );
    let (m, s) = (&private.0, &private.1);
    let a = m.create_database("cdc_a").await.unwrap();
    let b = s.create_database("cdc_b").await.unwrap();
    let ddl = "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)";
    exec(&a.url, ddl).await;
    exec(&b.url, ddl).await;
    let id = std::process::id();
    let forward = start(config(
        &format!("fwd{id}"),
        m,
        s,
        &format!(
            "[[tables]]\nsource = \"{}.users\"\ntarget = \"{}.users\"\n",
            a.name, b.name
        ),
        4201,
    ))
    .await;
    let reverse = start(config(
        &format!("rev{id}"),
        s,
        m,
        &format!(
            "[[tables]]\nsource = \"{}.users\"\ntarget = \"{}.users\"\n",
            b.name, a.name
        ),
        4202,
    ))
    .await;
    exec(
        &a.url,
        "INSERT INTO users VALUES (1, 'a@x.co', 'written on the monolith')",
    )
    .await;
    exec(
        &b.url,
        "INSERT INTO users VALUES (2, 'b@x.co', 'written on the service')",
    )
    .await;
    eventually("row 1 on the service side", || {
        let u = b.url.clone();
        async move { rows(&u, "SELECT id FROM users WHERE id = 1").await.len() == 1 }
    })
    .await;
    exec(
        &b.url,
        "UPDATE users SET name = 'renamed on the service' WHERE id = 1",
    )
    .await;
    let q = "SELECT id, email, name FROM users ORDER BY id";
    for r in [&forward, &reverse] {
        assert!(!r.task.is_finished(), "a stream stopped early");
    }
    eventually("both sides to converge", || {
        let (a, b) = (a.url.clone(), b.url.clone());
        async move {
            let (x, y) = (rows(&a, q).await, rows(&b, q).await);
            x == y && x.len() == 2 && x[0][2].as_deref() == Some("renamed on the service")
        }
    })
    .await;
    // What each applier wrote came back to the other reader marked, and was skipped.
    eventually("suppressed echoes", || {
        let (f, r) = (forward.metrics.render(), reverse.metrics.render());
        async move { suppressed(&f) > 0 && suppressed(&r) > 0 }
    })
    .await;
    // Each side applied exactly what the other side wrote: 2 changes forward, 1 back.
    let applied = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| l.starts_with("cdc_transactions_total{kind=\"data\""))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        applied(&forward.metrics),
        ["1"],
        "forward: only the monolith's insert"
    );
    assert_eq!(
        applied(&reverse.metrics),
        ["2"],
        "reverse: the service's insert and update"
    );
    // No ping-pong: nothing more is applied once both sides agree.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(applied(&forward.metrics), ["1"]);
    assert_eq!(applied(&reverse.metrics), ["2"]);
    let empty = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| l.starts_with("cdc_transactions_total{kind=\"empty\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = (empty(&forward.metrics), empty(&reverse.metrics));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = (empty(&forward.metrics), empty(&reverse.metrics));
    assert!(
        after.0 <= before.0 + 2 && after.1 <= before.1 + 2,
        "offset writes kept bouncing: {before:?} → {after:?}"
    );
    for r in [forward, reverse] {
        let _ = r.stop.send(true);
        r.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_won_by_the_owner_and_counted() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let id = std::process::id();
    for (n, owner) in [("target", 4301u32), ("source", 4302)]
        .into_iter()
        .map(|(o, r)| (r, o))
    {
        let a = m.create_database("conf_a").await.unwrap();
        let b = s.create_database("conf_b").await.unwrap();
        for url in [&a.url, &b.url] {
            exec(url, "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)").await;
            exec(url, "INSERT INTO users VALUES (1, 'a@x.co', 'original'), (2, 'b@x.co', 'original'), (3, 'c@x.co', 'original')").await;
        }
        let cfg = one_table(
            &format!("conf{owner}{id}"),
            (&a, &b),
            "users",
            n,
            if owner == "target" {
                cdc_sync::config::Owner::Target
            } else {
                cdc_sync::config::Owner::Source
            },
        );
        let run = start(cfg).await;
        // Row 1 changes on both sides in the same window; row 3 is deleted on the source after
        // the target changed it; row 2 changes only on the source.
        exec(
            &b.url,
            "UPDATE users SET name = 'changed on the target' WHERE id IN (1, 3)",
        )
        .await;
        exec(
            &a.url,
            "UPDATE users SET name = 'changed on the source' WHERE id = 1",
        )
        .await;
        exec(&a.url, "DELETE FROM users WHERE id = 3").await;
        exec(
            &a.url,
            "UPDATE users SET name = 'only the source' WHERE id = 2",
        )
        .await;
        let b_url = b.url.clone();
        eventually("row 2 to arrive", || {
            let b_url = b_url.clone();
            async move {
                rows(&b_url, "SELECT name FROM users WHERE id = 2").await
                    == vec![vec![Some("only the source".to_string())]]
            }
        })
        .await;
        let got = rows(&b.url, "SELECT id, name FROM users ORDER BY id").await;
        let metrics = run.metrics.render();
        let counted = format!(
            "cdc_conflicts_total{{table=\"{}.users\",winner=\"{owner}\",stream=\"conf{owner}{id}\"}} 2",
            b.name
        );
        assert!(metrics.contains(&counted), "{counted}\n{metrics}");
        let row = |i: &str, name: &str| vec![Some(i.to_string()), Some(name.to_string())];
        if owner == "target" {
            assert_eq!(
                got,
                vec![
                    row("1", "changed on the target"),
                    row("2", "only the source"),
                    row("3", "changed on the target")
                ]
            );
        } else {
            assert_eq!(
                got,
                vec![
                    row("1", "changed on the source"),
                    row("2", "only the source")
                ]
            );
        }
        let _ = run.stop.send(true);
        run.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_schema_change_stops_at_a_known_offset() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("cdc_ddl").await.unwrap();
    let dst = s.create_database("cdc_ddl_dst").await.unwrap();
    exec(&src.url, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    exec(&dst.url, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    let name = format!("ddl{}", std::process::id());
    let cfg = config(
        &name,
        m,
        s,
        &format!(
            "[[tables]]\nsource = \"{}.t\"\ntarget = \"{}.t\"\n",
            src.name, dst.name
        ),
        4401,
    );
    let run = start(cfg.clone()).await;
    exec(&src.url, "INSERT INTO t VALUES (1, 1)").await;
    eventually("row 1", || {
        let u = dst.url.clone();
        async move { rows(&u, "SELECT id FROM t").await.len() == 1 }
    })
    .await;
    let _ = run.stop.send(true);
    run.task.await.unwrap().unwrap();
    // While the stream is down: a row, then a column the old events do not have.
    exec(&src.url, "INSERT INTO t VALUES (2, 2)").await;
    exec(&src.url, "ALTER TABLE t ADD COLUMN extra INT NULL").await;
    let metrics = Metrics::new(&name);
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        cdc_sync::transport::direct::run(&cfg, metrics, rx),
    )
    .await
    .expect("the stream stops by itself")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("{}.t", src.name))
            && err.contains("columns")
            && err.contains("stopped here"),
        "{err}"
    );
    assert!(err.contains("binlog."), "names the binlog position: {err}");
    // Nothing after the stop was applied.
    assert_eq!(rows(&dst.url, "SELECT id FROM t").await.len(), 1);
}

/// Conflict checks go out many rows per statement; a row changed twice in one batch must still
/// be checked against its first change, not against the row as it was before the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_twice_in_one_batch_is_no_conflict() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let id = std::process::id();
    let a = m.create_database("twice_a").await.unwrap();
    let b = s.create_database("twice_b").await.unwrap();
    for url in [&a.url, &b.url] {
        exec(url, "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)").await;
        exec(
            url,
            "INSERT INTO users VALUES (1, 'a@x.co', 'v0'), (2, 'b@x.co', 'v0')",
        )
        .await;
    }
    let cfg = one_table(
        &format!("twice{id}"),
        (&a, &b),
        "users",
        4303,
        cdc_sync::config::Owner::Target,
    );
    let run = start(cfg).await;
    // One transaction: rows 1 and 2 interleaved, each changed three times, a new row 3 inserted
    // and updated, row 2 deleted at the end.
    exec(
        &a.url,
        "BEGIN; UPDATE users SET name = 'v1' WHERE id = 1; UPDATE users SET name = 'v1' WHERE id = 2; \
         UPDATE users SET name = 'v2' WHERE id = 1; INSERT INTO users VALUES (3, 'c@x.co', 'v1'); \
         UPDATE users SET name = 'v2' WHERE id = 2; UPDATE users SET name = 'v3' WHERE id = 1; \
         UPDATE users SET name = 'v2' WHERE id = 3; DELETE FROM users WHERE id = 2; COMMIT",
    )
    .await;
    let b_url = b.url.clone();
    eventually("the transaction to arrive", || {
        let b_url = b_url.clone();
        async move {
            rows(&b_url, "SELECT id, name FROM users ORDER BY id").await
                == vec![
                    vec![Some("1".to_string()), Some("v3".to_string())],
                    vec![Some("3".to_string()), Some("v2".to_string())],
                ]
        }
    })
    .await;
    // With the target as owner, a false conflict would have kept an old value: none counted.
    let metrics = run.metrics.render();
    assert!(!metrics.contains("cdc_conflicts_total{"), "{metrics}");
}

/// Inserts go out as one plain multi-row INSERT when none of their rows exists on the target;
/// a batch that meets a row the target has falls back to row-by-row checks, loses nothing and
/// counts only the real conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_of_rows_the_target_has_are_checked() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let id = std::process::id();
    let a = m.create_database("ins_a").await.unwrap();
    let b = s.create_database("ins_b").await.unwrap();
    for url in [&a.url, &b.url] {
        exec(url, "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)").await;
    }
    // The target already has row 2 (its own version) and row 3 (as the source will write it).
    exec(
        &b.url,
        "INSERT INTO users VALUES (2, 'b@x.co', 'the target''s own'), (3, 'c@x.co', 'same')",
    )
    .await;
    let cfg = one_table(
        &format!("ins{id}"),
        (&a, &b),
        "users",
        4304,
        cdc_sync::config::Owner::Target,
    );
    let run = start(cfg).await;
    exec(
        &a.url,
        "INSERT INTO users VALUES (1, 'a@x.co', 'new'), (2, 'b@x.co', 'the source''s'), \
         (3, 'c@x.co', 'same'), (4, 'd@x.co', 'new'), (5, 'e@x.co', 'new')",
    )
    .await;
    exec(
        &a.url,
        "INSERT INTO users VALUES (6, 'f@x.co', 'new'), (7, 'g@x.co', 'new')",
    )
    .await;
    let b_url = b.url.clone();
    eventually("rows 1 to 7", || {
        let b_url = b_url.clone();
        async move { rows(&b_url, "SELECT id FROM users").await.len() == 7 }
    })
    .await;
    let got = rows(&b.url, "SELECT id, name FROM users ORDER BY id").await;
    let row = |i: &str, name: &str| vec![Some(i.to_string()), Some(name.to_string())];
    assert_eq!(
        got,
        vec![
            row("1", "new"),
            row("2", "the target's own"),
            row("3", "same"),
            row("4", "new"),
            row("5", "new"),
            row("6", "new"),
            row("7", "new"),
        ]
    );
    let metrics = run.metrics.render();
    let counted = format!(
        "cdc_conflicts_total{{table=\"{}.users\",winner=\"target\",stream=\"ins{id}\"}} 1",
        b.name
    );
    assert!(metrics.contains(&counted), "{counted}\n{metrics}");
    let _ = run.stop.send(true);
    run.task.await.unwrap().unwrap();
}

/// The applier compares rows with the event's images itself where the values are plainly the
/// same (integers, decimals, text, dates and times as the target reads them back), and leaves
/// the rest to the server: a key or text equal only by the column's collation is the server's to
/// judge, and is no conflict; a row the target really changed still is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_compared_by_the_applier_or_else_by_the_server() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let id = std::process::id();
    let a = m.create_database("cmp_a").await.unwrap();
    let b = s.create_database("cmp_b").await.unwrap();
    let table = "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, label VARCHAR(50) NOT NULL, \
                 price DECIMAL(12,2) NULL, qty INT UNSIGNED NULL, day DATE NULL, \
                 seen DATETIME(3) NULL, dur TIME(6) NULL) COLLATE utf8mb4_general_ci";
    for url in [&a.url, &b.url] {
        exec(url, table).await;
        exec(
            url,
            "INSERT INTO items VALUES ('b1', 'same', 9.50, 3, '2024-02-29', '2024-02-29 23:59:59.125', '-838:59:59.000001'), \
             ('c1', 'same', NULL, NULL, NULL, NULL, NULL)",
        )
        .await;
    }
    // 'a1' differs only by case: the same row to the server's collation.
    exec(
        &a.url,
        "INSERT INTO items (code, label) VALUES ('a1', 'widget')",
    )
    .await;
    exec(
        &b.url,
        "INSERT INTO items (code, label) VALUES ('A1', 'Widget')",
    )
    .await;
    // The target changes 'c1' on its own.
    exec(
        &b.url,
        "UPDATE items SET label = 'the target''s' WHERE code = 'c1'",
    )
    .await;
    let cfg = one_table(
        &format!("cmp{id}"),
        (&a, &b),
        "items",
        4305,
        cdc_sync::config::Owner::Target,
    );
    let run = start(cfg).await;
    exec(
        &a.url,
        "BEGIN; UPDATE items SET label = 'gadget' WHERE code = 'a1'; \
         UPDATE items SET label = 'updated', qty = 4 WHERE code = 'b1'; \
         UPDATE items SET label = 'the source''s' WHERE code = 'c1'; COMMIT",
    )
    .await;
    let b_url = b.url.clone();
    eventually("the updates to arrive", || {
        let b_url = b_url.clone();
        async move {
            rows(&b_url, "SELECT label FROM items WHERE code = 'b1'").await
                == vec![vec![Some("updated".to_string())]]
        }
    })
    .await;
    let got = rows(&b.url, "SELECT code, label, qty FROM items ORDER BY code").await;
    let row = |c: &str, l: &str, q: Option<&str>| {
        vec![
            Some(c.to_string()),
            Some(l.to_string()),
            q.map(String::from),
        ]
    };
    assert_eq!(
        got,
        vec![
            row("a1", "gadget", None),
            row("b1", "updated", Some("4")),
            row("c1", "the target's", None),
        ]
    );
    let metrics = run.metrics.render();
    for (line, n) in [
        (
            format!(
                "cdc_conflicts_total{{table=\"{}.items\",winner=\"target\",stream=\"cmp{id}\"}}",
                b.name
            ),
            1,
        ),
        (
            format!("cdc_conflict_checks_total{{by=\"applier\",stream=\"cmp{id}\"}}"),
            1,
        ),
        (
            format!("cdc_conflict_checks_total{{by=\"server\",stream=\"cmp{id}\"}}"),
            2,
        ),
    ] {
        assert!(
            metrics.contains(&format!("{line} {n}\n")),
            "{line} {n}\n{metrics}"
        );
    }
    let _ = run.stop.send(true);
    run.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_replicate_as_deltas_and_concurrent_sales_on_both_sides_are_all_kept() {
    // Stock sold on both sides at once, streams running both ways: with after-images each side
    // would overwrite the other's decrements; as deltas every sale counts on both sides.
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let a = m.create_database("cnt_a").await.unwrap();
    let b = s.create_database("cnt_b").await.unwrap();
    for url in [&a.url, &b.url] {
        // `updated_at` is set by each side on its own: not compared (no conflict), written as is.
        exec(url, "CREATE TABLE inventory (product_id INT PRIMARY KEY, available INT NOT NULL, label VARCHAR(40) NOT NULL, updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3))").await;
        exec(
            url,
            "INSERT INTO inventory (product_id, available, label) VALUES (1, 1000, 'one'), (2, 1000, 'two'), (3, 1000, 'three')",
        )
        .await;
    }
    let id = std::process::id();
    let table = |from: &testkit::TestDatabase, to: &testkit::TestDatabase| {
        format!(
            "[[tables]]\nsource = \"{}.inventory\"\ntarget = \"{}.inventory\"\ncounters = [\"available\"]\nuncompared = [\"updated_at\"]\n",
            from.name, to.name
        )
    };
    let forward = start(config(&format!("cntf{id}"), m, s, &table(&a, &b), 4211)).await;
    let mut back = config(&format!("cntr{id}"), s, m, &table(&b, &a), 4212);
    back.owner = cdc_sync::config::Owner::Target;
    let reverse = start(back).await;

    // 150 sales on each side, spread over the three products, a label change among them.
    // Side b renames product 2 in the middle of the sales: a change the other side's sales of
    // that row must not undo (an update of a counter table writes only what it changes).
    let sell = |url: String, offset: u32| async move {
        let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        for i in 0..150u32 {
            if offset == 1 && i == 75 {
                c.query_drop("UPDATE inventory SET label = 'renamed' WHERE product_id = 2")
                    .await
                    .unwrap();
            }
            let product = (i + offset) % 3 + 1;
            c.exec_drop(
                "UPDATE inventory SET available = available - ? WHERE product_id = ?",
                (1 + i % 2, product),
            )
            .await
            .unwrap();
        }
        c.disconnect().await.unwrap();
    };
    let (x, y) = tokio::join!(
        tokio::spawn(sell(a.url.clone(), 0)),
        tokio::spawn(sell(b.url.clone(), 1))
    );
    x.unwrap();
    y.unwrap();
    // Each side sold 225 units (75 × 1 + 75 × 2): 450 in all, 150 per product.
    let q = "SELECT product_id, available, label FROM inventory ORDER BY product_id";
    let want = vec![
        vec![Some("1".into()), Some("850".into()), Some("one".into())],
        vec![Some("2".into()), Some("850".into()), Some("renamed".into())],
        vec![Some("3".into()), Some("850".into()), Some("three".into())],
    ];
    let (au, bu) = (a.url.clone(), b.url.clone());
    let want2 = want.clone();
    for _ in 0..600 {
        if rows(&au, q).await == want2 && rows(&bu, q).await == want2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows(&a.url, q).await, want, "side a");
    assert_eq!(rows(&b.url, q).await, want, "side b");
    // Nothing of it was a conflict: counters are not compared.
    for r in [&forward, &reverse] {
        assert!(
            !r.metrics.render().contains("cdc_conflicts_total{"),
            "{}",
            r.metrics.render()
        );
    }
    // Stable: nothing bounces once both agree.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rows(&a.url, q).await, want);
    for r in [forward, reverse] {
        let _ = r.stop.send(true);
        r.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_writes_of_users_the_other_side_owns_are_kept_not_applied() {
    // A write canary: the proxy's flag splits users between the sides; each stream knows the
    // split and applies only what the user's owner wrote.
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let a = m.create_database("own_a").await.unwrap();
    let b = s.create_database("own_b").await.unwrap();
    let flags_db = m.create_database("own_flags").await.unwrap();
    for url in [&a.url, &b.url] {
        exec(url, "CREATE TABLE orders (id INT PRIMARY KEY, user_id BIGINT NOT NULL, note VARCHAR(40) NOT NULL)").await;
    }
    let source = flags::source::mysql::MysqlSource::new(
        mysql_async::Pool::new(flags_db.url.as_str()),
        "strangler_flags",
    );
    source.ensure_table().await.unwrap();
    let set_mode = |mode: flags::RouteMode| {
        let source = &source;
        async move {
            let note = flags::source::mysql::ChangeNote {
                actor: "test".into(),
                source: "cli".into(),
                action: "set_mode".into(),
                subject: "orders".into(),
                reason: "write canary".into(),
            };
            source
                .change("route.orders", None, &note, |_| {
                    Ok(mode.to_flag("route.orders", 0, "orders-salt"))
                })
                .await
                .unwrap();
        }
    };
    // A read canary first: its users read on the service but write on the monolith.
    set_mode(flags::RouteMode::Canary { percent: 50.0 }).await;
    let flag =
        flags::RouteMode::WriteCanary { percent: 50.0 }.to_flag("route.orders", 0, "orders-salt");
    let side = |user: u64| {
        flags::evaluate(&flag, &flags::Context::new(user.to_string()))
            .value
            .and_then(|v| v.as_str())
            == Some("service-writes")
    };
    let on_service = (1..100).find(|u| side(*u)).unwrap();
    let on_monolith = (1..100).find(|u| !side(*u)).unwrap();
    let id = std::process::id();
    let stream = |name: String,
                  from: &testkit::TestDatabase,
                  to: &testkit::TestDatabase,
                  src: &testkit::MariaDb,
                  dst: &testkit::MariaDb,
                  reader: u32,
                  side: &str| {
        config(
            &name,
            src,
            dst,
            &format!(
                "[ownership]\nflags_url = \"{}\"\nflag = \"route.orders\"\nsource_side = \"{side}\"\n\n\
                 [[tables]]\nsource = \"{}.orders\"\ntarget = \"{}.orders\"\nowner_key = \"user_id\"\n",
                flags_db.url, from.name, to.name
            ),
            reader,
        )
    };
    let forward = start(stream(format!("ownf{id}"), &a, &b, m, s, 4221, "monolith")).await;
    let reverse = start(stream(format!("ownr{id}"), &b, &a, s, m, 4222, "service")).await;
    exec(
        &a.url,
        &format!("INSERT INTO orders VALUES (7, {on_service}, 'read canary, monolith')"),
    )
    .await;
    eventually("a read canary's user's monolith write to cross", || {
        let b = b.url.clone();
        async move { rows(&b, "SELECT id FROM orders WHERE id = 7").await.len() == 1 }
    })
    .await;
    exec(&a.url, "DELETE FROM orders WHERE id = 7").await;
    eventually("the delete to cross", || {
        let b = b.url.clone();
        async move {
            rows(&b, "SELECT id FROM orders WHERE id = 7")
                .await
                .is_empty()
        }
    })
    .await;
    // The write canary: each user's writes on the side of their bucket.
    set_mode(flags::RouteMode::WriteCanary { percent: 50.0 }).await;
    // A stream judges by the flag as read at most REFRESH_EVERY ago.
    tokio::time::sleep(cdc_sync::apply::ownership::REFRESH_EVERY * 2).await;

    // Each owner's writes cross; the monolith's write for a service-owned user does not.
    exec(
        &a.url,
        &format!("INSERT INTO orders VALUES (1, {on_monolith}, 'owned, monolith')"),
    )
    .await;
    exec(
        &b.url,
        &format!("INSERT INTO orders VALUES (2, {on_service}, 'owned, service')"),
    )
    .await;
    exec(
        &a.url,
        &format!("INSERT INTO orders VALUES (3, {on_service}, 'stray, monolith')"),
    )
    .await;
    exec(
        &a.url,
        &format!("INSERT INTO orders VALUES (5, {on_monolith}, 'owned again')"),
    )
    .await;
    let q = "SELECT id FROM orders ORDER BY id";
    let ids = |url: String| async move {
        rows(&url, q)
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>()
    };
    eventually("owned rows to cross", || {
        let (a, b) = (a.url.clone(), b.url.clone());
        async move { ids(b).await.len() == 3 && ids(a).await.len() == 4 }
    })
    .await;
    assert_eq!(
        ids(b.url.clone()).await,
        ["1", "2", "5"],
        "the stray row was applied"
    );
    assert_eq!(ids(a.url.clone()).await, ["1", "2", "3", "5"]);
    let dead = rows(
        &s.url(&format!("cdc_ownf{id}")),
        "SELECT target_table, op, winner, source_after FROM cdc_conflicts",
    )
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0][2].as_deref(), Some("target"));
    assert!(
        dead[0][3].as_deref().unwrap().contains("stray, monolith"),
        "{dead:?}"
    );
    assert!(forward.metrics.render().contains("cdc_conflicts_total{"));

    // The canary grows to everyone: the service now owns the monolith's user too, and the
    // stream sees it at once (it reads the flag again before calling a write stray).
    set_mode(flags::RouteMode::WriteCanary { percent: 100.0 }).await;
    exec(
        &b.url,
        &format!("INSERT INTO orders VALUES (4, {on_monolith}, 'moved user, service')"),
    )
    .await;
    eventually("the moved user's write to cross", || {
        let a = a.url.clone();
        async move { ids(a).await.contains(&"4".to_string()) }
    })
    .await;
    assert!(
        !reverse.metrics.render().contains("cdc_conflicts_total{"),
        "{}",
        reverse.metrics.render()
    );
    for r in [forward, reverse] {
        let _ = r.stop.send(true);
        r.task.await.unwrap().unwrap();
    }
}
