//! Faults: `kill -9` of the cdc-sync process in the middle of a write burst and a restart of the
//! source MariaDB server; afterwards the target equals the source (count and checksum), with no
//! row lost or applied twice.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{TABLE, burst, converge, converge_or_show, exec, fingerprint, spawn_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_then_restart_loses_and_doubles_nothing() {
    let common::OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    } = common::orders_stream("crash", 4501).await;
    let spawn = |n: u32| spawn_stream(&config, dir.path(), n, "cdc.log");
    let mut process = spawn(1);
    // Ready means its start position is fixed: the whole burst is in its range.
    common::wait_ready(port).await;
    let writer = tokio::spawn(burst(src.url.clone(), 1, 1500));
    // Kill it hard while the burst is flowing, twice.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        process.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        process = spawn(round + 2);
    }
    writer.await.unwrap();
    converge_or_show(&src.url, &dst.url, 60, Some(&dir.path().join("cdc.log"))).await;
    let (rows, _) = fingerprint(&dst.url).await;
    assert!(rows > 1000, "{rows}");
    // The data may converge before the third process has logged its start: wait for it.
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(dir.path().join("cdc.log")).unwrap();
        if log.matches("stream starting").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.matches("stream starting").count(), 3, "{log}");
    // Status says caught up.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        report["transactions_applied"].as_u64().unwrap() >= 1499,
        "{report}"
    );
    // Per table: every row event applied once (inserts, updates, deletes of the burst).
    let table = &report["tables"][0];
    let writes = 1499
        + (1..1500).filter(|i| i % 3 == 0 && *i > 1).count()
        + (1..1500).filter(|i| i % 7 == 0 && *i > 2).count();
    assert_eq!(
        table["events_applied"].as_u64().unwrap() as usize,
        writes,
        "{report}"
    );
    assert!(
        table["last_change_age_seconds"].as_f64().unwrap() < 120.0,
        "{report}"
    );
    drop(process);
}

/// `/readyz` says 503 while the stream cannot reach its target yet, then 200 once it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_stream() {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("ready_src").await.unwrap();
    let dst = s.create_database("ready_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    // A target that accepts connections and never greets: the stream waits on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dir = testkit::TempDir::new("cdc-ready").unwrap();
    let port = testkit::free_port();
    let write = |target: &str| {
        let config = dir.path().join("stream.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"ready{}\"\nsource_url = \"{}\"\ntarget_url = \"{target}\"\nreader_server_id = 4701\nlisten = \"127.0.0.1:{port}\"\n\n[[tables]]\nsource = \"{}.orders\"\ntarget = \"{}.orders\"\n",
                std::process::id(),
                m.root_url(),
                src.name,
                dst.name
            ),
        )
        .unwrap();
        config
    };
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move {
            reqwest::get(&url)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let spawn = |config: &Path, n: u32| spawn_stream(config, dir.path(), n, "cdc.log");
    let process = spawn(&write(&format!("mysql://root@127.0.0.1:{silent_port}/")), 1);
    let mut health = 0;
    for _ in 0..100 {
        health = get("/healthz").await;
        if health == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health, 200);
    assert_eq!(get("/readyz").await, 503);
    drop(process);
    drop(silent);
    let _process = spawn(&write(&s.root_url()), 2);
    let mut ready = 0;
    for _ in 0..200 {
        ready = get("/readyz").await;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restart_is_survived() {
    let mut source =
        testkit::MariaDb::start(testkit::MariaDbOptions::new("cdc-restart", 21)).unwrap();
    let s = testkit::services_server();
    let src = source.create_database("restart_src").await.unwrap();
    let dst = s.create_database("restart_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let config = cdc_sync::config::StreamConfig::parse(&format!(
        "name = \"restart{}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = 4601\n\n[[tables]]\nsource = \"{}.orders\"\ntarget = \"{}.orders\"\n",
        std::process::id(),
        source.root_url(),
        s.root_url(),
        src.name,
        dst.name
    ))
    .unwrap();
    let metrics = cdc_sync::metrics::Metrics::new(&config.name);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move { cdc_sync::transport::direct::run(&config, m, rx).await });
    // Running means the start position is fixed: the burst below is all in the stream's range.
    common::wait_running(&metrics, &task).await;
    burst(src.url.clone(), 1, 100).await;
    converge(&src.url, &dst.url, 30).await;
    source.restart().unwrap();
    burst(src.url.clone(), 100, 200).await;
    converge(&src.url, &dst.url, 60).await;
    assert!(
        metrics
            .render()
            .contains(r#"cdc_errors_total{kind="reconnect""#)
    );
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_line() {
    let dir = testkit::TempDir::new("cdc-check").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "name = \"m2s\"\nsource_url = \"mysql://root@127.0.0.1:1\"\ntarget_url = \"mysql://root@127.0.0.1:2\"\n\n[[tables]]\nsource = \"shop.users\"\ntarget = \"shop_mirror.users\"\n",
    )
    .unwrap();
    let run = |p: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
            .arg("--config")
            .arg(p)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = run(&good);
    let out = testkit::assert_success(&out, "cdc-sync --check-config");
    assert!(out.contains("stream m2s with 1 tables"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("target = ", "trget = "),
    )
    .unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 7") && err.contains("trget"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_debezium_events_with_schema_and_transaction_metadata() {
    let m = testkit::monolith_server();
    let src = m.create_database("tail_src").await.unwrap();
    exec(&src.url, TABLE).await;
    let dir = testkit::TempDir::new("cdc-tail").unwrap();
    let config = dir.path().join("tail.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"shop\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = 4701\n\n[[tables]]\nsource = \"{}.orders\"\ntarget = \"x.orders\"\n",
            m.root_url(),
            m.root_url(),
            src.name
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cdc-sync"))
        .args(["tail", "--schema", "--limit", "3", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    exec(
        &src.url,
        "BEGIN; INSERT INTO orders VALUES (1, 9.99, 'a'), (2, 1.50, 'b'); COMMIT",
    )
    .await;
    exec(&src.url, "DELETE FROM orders WHERE id = 2").await;
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("tail stops after --limit")
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "two creates, a delete and its tombstone: {lines:?}"
    );
    let first = &lines[0];
    assert_eq!(first["key"]["payload"]["id"], 1);
    assert_eq!(
        first["key"]["schema"]["name"],
        format!("shop.{}.orders.Key", src.name)
    );
    assert_eq!(
        first["value"]["schema"]["name"],
        format!("shop.{}.orders.Envelope", src.name)
    );
    let payload = &first["value"]["payload"];
    assert_eq!(payload["op"], "c");
    assert_eq!(payload["after"]["amount"], "9.99");
    assert_eq!(payload["source"]["connector"], "mariadb");
    assert_eq!(payload["transaction"]["total_order"], 1);
    assert_eq!(
        lines[1]["value"]["payload"]["transaction"]["total_order"],
        2
    );
    assert_eq!(lines[2]["value"]["payload"]["op"], "d");
    assert!(lines[3]["value"].is_null(), "tombstone");
    // What tail prints reads back as a Debezium event.
    let text = serde_json::to_vec(&first["value"]).unwrap();
    let env = cdc_sync::model::debezium::Envelope::from_json(&text)
        .unwrap()
        .unwrap();
    assert_eq!(env.after.unwrap()["note"], "a");
}

/// Counters move by deltas: a delta applied twice after a crash would show. `kill -9` twice in a
/// burst of decrements; the target's stock ends exactly at the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_applies_each_counter_delta_once() {
    let common::OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    } = common::orders_stream("crashcnt", 4503).await;
    for url in [&src.url, &dst.url] {
        exec(
            url,
            "CREATE TABLE stock (id INT PRIMARY KEY, available INT NOT NULL)",
        )
        .await;
        exec(
            url,
            "INSERT INTO stock VALUES (1, 100000), (2, 100000), (3, 100000)",
        )
        .await;
    }
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace(
            "[[tables]]",
            &format!(
                "[[tables]]\nsource = \"{}.stock\"\ntarget = \"{}.stock\"\ncounters = [\"available\"]\n\n[[tables]]",
                src.name, dst.name
            ),
        ),
    )
    .unwrap();
    let spawn = |n: u32| spawn_stream(&config, dir.path(), n, "cdc.log");
    let mut process = spawn(1);
    common::wait_ready(port).await;
    let url = src.url.clone();
    let writer = tokio::spawn(async move {
        let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        for i in 0..1500u32 {
            mysql_async::prelude::Queryable::exec_drop(
                &mut c,
                "UPDATE stock SET available = available - ? WHERE id = ?",
                (1 + i % 3, i % 3 + 1),
            )
            .await
            .unwrap();
        }
    });
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        process.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        process = spawn(round + 2);
    }
    writer.await.unwrap();
    let stock = |url: String| async move {
        let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        let v: Vec<(i64, i64)> = mysql_async::prelude::Queryable::query(
            &mut c,
            "SELECT id, available FROM stock ORDER BY id",
        )
        .await
        .unwrap();
        v
    };
    let want = stock(src.url.clone()).await;
    assert_eq!(want[0].1, 100000 - 500, "{want:?}");
    for _ in 0..600 {
        if stock(dst.url.clone()).await == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("cdc.log")).unwrap_or_default();
    assert_eq!(stock(dst.url.clone()).await, want, "{log}");
    // And it stays there: no delta arrives late or twice.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(stock(dst.url.clone()).await, want);
    drop(process);
}
