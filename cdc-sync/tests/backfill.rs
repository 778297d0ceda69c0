//! `cdc-sync backfill` against real servers: a table copied while inserts, updates and deletes go
//! on ends verify-clean; `kill -9` of the stream mid-backfill resumes from the last chunk with no
//! chunk counted twice; tables without a primary key are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::exec;

struct Setup {
    dir: testkit::TempDir,
    config: PathBuf,
    src_url: String,
    dst_url: String,
    src_db: String,
}

async fn setup(tag: &str, rows: u32, reader_id: u32) -> Setup {
    setup_with(tag, rows, reader_id, None).await
}

/// `kafka`: bootstrap servers of a broker to stream through (Kafka mode).
async fn setup_with(tag: &str, rows: u32, reader_id: u32, kafka: Option<&str>) -> Setup {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database(&format!("bf{tag}_src")).await.unwrap();
    let dst = s.create_database(&format!("bf{tag}_dst")).await.unwrap();
    exec(&src.url, "CREATE TABLE items (id INT PRIMARY KEY, sku VARCHAR(40) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, updated DATETIME(3) NOT NULL)").await;
    exec(&dst.url, "CREATE TABLE items (id INT PRIMARY KEY, sku VARCHAR(40) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, updated DATETIME(3) NOT NULL)").await;
    // Existing rows: written before any stream runs, so only a backfill can bring them over.
    let mut c = mysql_async::Conn::from_url(src.url.as_str()).await.unwrap();
    for start in (1..=rows).step_by(1000) {
        let values: Vec<String> = (start..(start + 1000).min(rows + 1))
            .map(|i| {
                format!(
                    "({i}, 'SKU-{i:06}', {}, {}.{:02}, '2024-01-01 00:00:00.123')",
                    i % 50,
                    i % 500,
                    i % 100
                )
            })
            .collect();
        mysql_async::prelude::Queryable::query_drop(
            &mut c,
            format!("INSERT INTO items VALUES {}", values.join(", ")),
        )
        .await
        .unwrap();
    }
    c.disconnect().await.unwrap();
    let dir = testkit::TempDir::new(&format!("cdc-bf{tag}")).unwrap();
    let config = dir.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"bf{tag}{}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader_id}\nlisten = \"127.0.0.1:{}\"\n{}\n\
             [[tables]]\nsource = \"{}.items\"\ntarget = \"{}.items\"\n{}",
            std::process::id(),
            m.root_url(),
            s.root_url(),
            testkit::free_port(),
            if kafka.is_some() { "transport = \"kafka\"\n" } else { "" },
            src.name,
            dst.name,
            kafka
                .map(|b| format!("\n[kafka]\nbootstrap_servers = \"{b}\"\nresume_from = \"earliest\"\n"))
                .unwrap_or_default(),
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        src_url: src.url.clone(),
        dst_url: dst.url.clone(),
        src_db: src.name.clone(),
    }
}

fn spawn_stream(s: &Setup, n: u32) -> testkit::ProcessGuard {
    let p = testkit::ProcessGuard::spawn(
        Path::new(env!("CARGO_BIN_EXE_cdc-sync")),
        &[
            "stream".into(),
            "--config".into(),
            s.config.display().to_string(),
        ],
        &s.dir.path().join(format!("stream{n}.pid")),
        &s.dir.path().join("stream.log"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    p
}

fn cli(s: &Setup, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap()
}

/// `cli` on a blocking thread, so that writers on this runtime keep going meanwhile.
async fn cli_in_background(s: &Setup, args: &[&'static str]) -> std::process::Output {
    let (config, args) = (s.config.clone(), args.to_vec());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn verify_clean(s: &Setup) {
    for _ in 0..60 {
        if cli(s, &["verify", "--table", "items"]).status.code() == Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = cli(s, &["verify", "--table", "items", "--json"]);
    panic!(
        "never verified clean: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Random inserts, updates and deletes, including rows the backfill has not reached yet; `pace`
/// between statements (zero: as fast as the server takes them).
async fn churn(
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
    rows: u32,
    pace: Duration,
) -> u64 {
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    let mut n = 0u64;
    let mut seed = 12345u64;
    while !*stop.borrow() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = (seed >> 33) as u32 % (rows + 2000) + 1;
        let sql = match n % 4 {
            0 | 1 => format!("UPDATE items SET qty = qty + 1, updated = NOW(3) WHERE id = {id}"),
            2 => format!("DELETE FROM items WHERE id = {id}"),
            _ => format!(
                "INSERT INTO items VALUES ({id}, 'NEW-{id}', 1, 9.99, NOW(3)) ON DUPLICATE KEY UPDATE sku = 'RE-{id}'"
            ),
        };
        mysql_async::prelude::Queryable::query_drop(&mut c, sql)
            .await
            .unwrap();
        n += 1;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    c.disconnect().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_under_concurrent_writes_verifies_clean() {
    let s = setup("w", 20_000, 5101).await;
    let _stream = spawn_stream(&s, 1);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(churn(s.src_url.clone(), rx, 20_000, Duration::ZERO));
    let out = cli_in_background(&s, &["backfill", "--table", "items", "--chunk-size", "700"]).await;
    let _ = stop.send(true);
    let changes = writer.await.unwrap();
    assert!(testkit::assert_success(&out, "cdc-sync backfill").contains("done"));
    assert!(
        changes > 100,
        "the writer made {changes} changes during the backfill"
    );
    verify_clean(&s);
    // The stream's metrics show chunks and rows the window logic left to the stream.
    let status = cli(&s, &["snapshot-status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report[0]["status"], "done", "{report}");
    assert!(report[0]["chunks"].as_u64().unwrap() >= 2, "{report}");
    let log = std::fs::read_to_string(s.dir.path().join("stream.log")).unwrap();
    assert!(log.contains("backfill done"), "{log}");
    let _ = &s.dst_url;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backfill_resumes_from_the_last_chunk() {
    let s = setup("k", 12_000, 5111).await;
    let mut stream = spawn_stream(&s, 1);
    // Throttled so that the kill lands in the middle.
    let backfill = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args([
            "backfill",
            "--table",
            "items",
            "--chunk-size",
            "500",
            "--max-rows-per-sec",
            "4000",
            "--parallel",
            "3",
            "--config",
        ])
        .arg(&s.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.kill();
    let mid = cli(&s, &["snapshot-status", "--json"]);
    let mid: serde_json::Value = serde_json::from_slice(&mid.stdout).unwrap();
    let copied = mid[0]["rows_copied"].as_u64().unwrap();
    assert!(copied > 0 && copied < 12_000, "killed mid-way: {mid}");
    // The restarted stream picks the backfill up where the last committed chunk ended; the CLI
    // that was waiting sees it finish.
    let _stream = spawn_stream(&s, 2);
    let out = tokio::task::spawn_blocking(move || backfill.wait_with_output().unwrap())
        .await
        .unwrap();
    testkit::assert_success(&out, "the backfill the stream resumed");
    let log = std::fs::read_to_string(s.dir.path().join("stream.log")).unwrap();
    assert!(
        log.contains("resuming the backfill that was running"),
        "{log}"
    );
    // Every row was copied exactly once in effect: the progress committed with each chunk.
    let done = cli(&s, &["snapshot-status", "--json"]);
    let done: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(done[0]["rows_copied"], 12_000, "{done}");
    let ranges = &done[0]["ranges"];
    assert_eq!(ranges.as_array().unwrap().len(), 3, "{done}");
    assert!(
        ranges.as_array().unwrap().iter().all(|r| r["done"] == true),
        "{done}"
    );
    verify_clean(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_primary_key_are_refused() {
    let s = setup("n", 10, 5121).await;
    exec(&s.src_url, "CREATE TABLE nokey (a INT, b INT)").await;
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("source = \"{}.items\"", s.src_db),
        &format!("source = \"{}.nokey\"", s.src_db),
    );
    std::fs::write(&s.config, text).unwrap();
    let out = cli(&s, &["backfill", "--table", "nokey"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no primary key"), "{err}");
    // And a table the config does not map.
    let out = cli(&s, &["backfill", "--table", "elsewhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_pauses_and_resume_continues() {
    let s = setup("p", 12_000, 5131).await;
    let _stream = spawn_stream(&s, 1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args([
            "backfill",
            "--table",
            "items",
            "--chunk-size",
            "500",
            "--max-rows-per-sec",
            "3000",
            "--max-lag",
            "5",
            "--parallel",
            "3",
            "--config",
        ])
        .arg(&s.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Ctrl-C: the CLI asks the stream to pause and reports where it stopped.
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("--resume"), "{err}");
    // The stream confirms the pause (it may lag behind other tests' writes on the shared server).
    let mut status = serde_json::Value::Null;
    for _ in 0..120 {
        let out = cli(&s, &["snapshot-status", "--json"]);
        status = serde_json::from_slice(&out.stdout).unwrap();
        if status[0]["status"] == "paused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status[0]["status"], "paused", "{status}");
    let paused_at = status[0]["rows_copied"].as_u64().unwrap();
    assert!(paused_at > 0 && paused_at < 12_000, "{status}");
    // Running it again without --resume says how to continue.
    let again = cli(&s, &["backfill", "--table", "items"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    // --resume continues after the last chunk: every row copied once in all.
    let out = cli(&s, &["backfill", "--table", "items", "--resume"]);
    testkit::assert_success(&out, "cdc-sync backfill --resume");
    let done = cli(&s, &["snapshot-status", "--json"]);
    let done: serde_json::Value =
        serde_json::from_str(&testkit::assert_success(&done, "snapshot-status")).unwrap();
    assert_eq!(done[0]["status"], "done", "{done}");
    assert_eq!(done[0]["rows_copied"], 12_000, "{done}");
    let ranges = &done[0]["ranges"];
    assert_eq!(ranges.as_array().unwrap().len(), 3, "{done}");
    assert!(
        ranges.as_array().unwrap().iter().all(|r| r["done"] == true),
        "{done}"
    );
    verify_clean(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_and_text_primary_keys_are_backfilled() {
    let s = setup("c", 10, 5141).await;
    let ddl = "CREATE TABLE stock (region VARCHAR(20) NOT NULL, sku VARCHAR(40) NOT NULL, qty INT NOT NULL, PRIMARY KEY (region, sku))";
    exec(&s.src_url, ddl).await;
    exec(&s.dst_url, ddl).await;
    let mut c = mysql_async::Conn::from_url(s.src_url.as_str())
        .await
        .unwrap();
    for region in ["eu-west", "us-east", "ap-south"] {
        let values: Vec<String> = (0..700)
            .map(|i| format!("('{region}', 'SKU-{i:05}', {i})"))
            .collect();
        mysql_async::prelude::Queryable::query_drop(
            &mut c,
            format!("INSERT INTO stock VALUES {}", values.join(", ")),
        )
        .await
        .unwrap();
    }
    c.disconnect().await.unwrap();
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(".items\"", ".stock\"");
    std::fs::write(&s.config, text).unwrap();
    let _stream = spawn_stream(&s, 1);
    // Three ranges split at sampled keys of the text column `region`.
    let out = cli(
        &s,
        &[
            "backfill",
            "--table",
            "stock",
            "--chunk-size",
            "250",
            "--parallel",
            "3",
        ],
    );
    testkit::assert_success(&out, "cdc-sync backfill --parallel 3");
    let done = cli(&s, &["snapshot-status", "--json"]);
    let done: serde_json::Value =
        serde_json::from_str(&testkit::assert_success(&done, "snapshot-status")).unwrap();
    assert_eq!(done[0]["rows_copied"], 2_100, "{done}");
    assert!(done[0]["chunks"].as_u64().unwrap() >= 3, "{done}");
    for _ in 0..60 {
        if cli(&s, &["verify", "--table", "stock"]).status.code() == Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "{}",
        String::from_utf8_lossy(&cli(&s, &["verify", "--table", "stock", "--json"]).stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_asked_while_another_runs_waits_for_it_then_runs() {
    let s = setup("q", 6000, 5151).await;
    let ddl = "CREATE TABLE later (id INT PRIMARY KEY, sku VARCHAR(40) NOT NULL)";
    exec(&s.src_url, ddl).await;
    exec(&s.dst_url, ddl).await;
    exec(
        &s.src_url,
        "INSERT INTO later SELECT id, sku FROM items WHERE id <= 1500",
    )
    .await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    let dst_db = s.dst_url.rsplit('/').next().unwrap().to_string();
    std::fs::write(
        &s.config,
        format!(
            "{text}\n[[tables]]\nsource = \"{}.later\"\ntarget = \"{dst_db}.later\"\n",
            s.src_db
        ),
    )
    .unwrap();
    let _stream = spawn_stream(&s, 1);
    // Both asked at once: one copies, the other is queued and follows; neither is dropped.
    let first = cli_in_background(&s, &["backfill", "--table", "items", "--chunk-size", "300"]);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cli_in_background(&s, &["backfill", "--table", "later", "--chunk-size", "300"]).await
    };
    let (first, second) = tokio::join!(first, second);
    testkit::assert_success(&first, "backfill items");
    testkit::assert_success(&second, "backfill later");
    let done = cli(&s, &["snapshot-status", "--json"]);
    let done: serde_json::Value =
        serde_json::from_str(&testkit::assert_success(&done, "snapshot-status")).unwrap();
    let rows: Vec<(String, u64)> = done
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["status"], "done", "{done}");
            (
                p["table"]
                    .as_str()
                    .unwrap()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .to_string(),
                p["rows_copied"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("items".to_string(), 6000), ("later".to_string(), 1500)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_backfill_publishes_snapshot_events_and_verifies_clean() {
    let broker = testkit::Tansu::start().unwrap();
    let s = setup_with("kafka", 3_000, 5151, Some(&broker.bootstrap_servers())).await;
    let _stream = spawn_stream(&s, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(churn(
        s.src_url.clone(),
        rx,
        3_000,
        Duration::from_millis(2),
    ));
    // The churn is under way before the backfill starts and lasts until it ends: a backfill of
    // 3,000 rows can finish in a fraction of a second.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let out = cli_in_background(
        &s,
        &[
            "backfill",
            "--table",
            "items",
            "--chunk-size",
            "300",
            "--parallel",
            "2",
        ],
    )
    .await;
    let _ = stop.send(true);
    let changes = writer.await.unwrap();
    testkit::assert_success(&out, "cdc-sync backfill over Kafka");
    assert!(changes > 50, "the writer made {changes} changes");
    verify_clean(&s);
    // The copy went through Kafka as Debezium incremental-snapshot reads.
    let name = std::fs::read_to_string(&s.config).unwrap();
    let name = name
        .lines()
        .next()
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_string();
    let records = common::read_topic(
        &broker.bootstrap_servers(),
        &format!("{name}.{}.items", s.src_db),
    );
    let reads: Vec<&serde_json::Value> = records
        .iter()
        .map(|(_, v)| &v["payload"])
        .filter(|p| p["op"] == "r")
        .collect();
    assert!(
        reads.len() > 2_500,
        "{} snapshot reads of {} records",
        reads.len(),
        records.len()
    );
    assert!(
        reads
            .iter()
            .all(|p| p["source"]["snapshot"] == "incremental" && p["before"].is_null()),
        "{:?}",
        reads.first()
    );
    // The signal table's rows never reach Kafka.
    assert!(
        records
            .iter()
            .all(|(_, v)| v["payload"]["source"]["table"] == "items"),
        "signal rows published"
    );
}

/// A chunk after a composite key reads an index range, not the table from its start (a row
/// comparison `(a, b) > (?, ?)` is a full scan on MariaDB: a 5M-row backfill slowed to ~100 rows a
/// chunk before this).
#[tokio::test]
async fn a_chunk_after_a_composite_key_is_an_index_range() {
    let db = testkit::monolith_server()
        .create_database("bf_range")
        .await
        .unwrap();
    exec(
        &db.url,
        "CREATE TABLE order_lines (order_id INT NOT NULL, product_id INT NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, product_id))",
    )
    .await;
    let values: Vec<String> = (1..=2000)
        .map(|i| format!("({}, {}, 1)", i / 4, i % 4))
        .collect();
    exec(
        &db.url,
        &format!("INSERT INTO order_lines VALUES {}", values.join(", ")),
    )
    .await;
    exec(&db.url, "ANALYZE TABLE order_lines").await;
    let cols = vec!["`order_id`".to_string(), "`product_id`".to_string()];
    let (sql, parts) =
        cdc_sync::model::server::key_bound_sql(&cols, cdc_sync::model::server::KeyBound::After);
    let key = [490, 2];
    let params: Vec<mysql_async::Value> = parts.iter().map(|&i| key[i].into()).collect();
    let mut c = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    let plan: Vec<mysql_async::Row> = mysql_async::prelude::Queryable::exec(
        &mut c,
        format!("EXPLAIN SELECT order_id, product_id FROM order_lines WHERE {sql} ORDER BY order_id, product_id LIMIT 100"),
        params.clone(),
    )
    .await
    .unwrap();
    let access: String = plan[0].get("type").unwrap();
    assert_eq!(access, "range", "{sql}");
    let rows: Vec<(i32, i32)> = mysql_async::prelude::Queryable::exec(
        &mut c,
        format!("SELECT order_id, product_id FROM order_lines WHERE {sql} ORDER BY order_id, product_id LIMIT 3"),
        params,
    )
    .await
    .unwrap();
    assert_eq!(rows, [(490, 3), (491, 0), (491, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_table_is_upgraded_once_by_processes_starting_together() {
    // A progress table made before key ranges existed; a stream's publisher, applier and a CLI
    // upgrade it at the same moment: every one succeeds and the column is there once.
    let s = testkit::services_server();
    let db = s.create_database("bf_upgrade").await.unwrap();
    exec(&db.url, "CREATE TABLE cdc_backfill (stream VARCHAR(100) NOT NULL, source_table VARCHAR(200) NOT NULL, status VARCHAR(16) NOT NULL, request TEXT NOT NULL, last_key TEXT NULL, rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0, rows_estimate BIGINT UNSIGNED NOT NULL DEFAULT 0, chunks BIGINT UNSIGNED NOT NULL DEFAULT 0, message TEXT NULL, started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (stream, source_table))").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (url, name) = (db.url.clone(), db.name.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            cdc_sync::backfill::progress::ensure_progress_table(&mut c, &name).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("each upgrade succeeds");
    }
    let mut c = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    let n: Option<u64> = mysql_async::prelude::Queryable::exec_first(
        &mut c,
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'cdc_backfill' AND COLUMN_NAME = 'ranges'",
        (db.name.as_str(),),
    )
    .await
    .unwrap();
    assert_eq!(n, Some(1));
}
