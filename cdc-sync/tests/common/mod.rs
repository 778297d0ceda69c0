//! Helpers shared by the fault tests: a table, a write burst of small transactions, and a
//! converge check that compares row count and checksum of source and target.
#![allow(dead_code)]

use std::time::Duration;

use mysql_async::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The in-process stream's log, captured per test and shown when it fails.
pub fn show_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,cdc_sync=debug,rdkafka=info",
        ))
        .try_init();
}

pub async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.disconnect().await.unwrap();
}

/// (rows, checksum) of the table.
pub async fn fingerprint(url: &str) -> (u64, u64) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let r: Option<(u64, u64)> = c
        .query_first("SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS('#', id, amount, note))), 0) AS UNSIGNED) FROM orders")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    r.unwrap()
}

pub async fn converge(src: &str, dst: &str, secs: u64) {
    converge_or_show(src, dst, secs, None).await
}

/// [`converge`], showing the end of the stream's `log` when it fails.
pub async fn converge_or_show(src: &str, dst: &str, secs: u64, log: Option<&std::path::Path>) {
    let want = fingerprint(src).await;
    for _ in 0..secs * 10 {
        if fingerprint(dst).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = log
        .and_then(|l| std::fs::read_to_string(l).ok())
        .map(|t| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        })
        .unwrap_or_default();
    panic!(
        "target {:?} never matched source {want:?}\n{tail}",
        fingerprint(dst).await
    );
}

/// A burst of small transactions: inserts, updates of earlier rows, deletes.
pub async fn burst(url: String, from: u32, to: u32) {
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    for i in from..to {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        tx.exec_drop(
            "INSERT INTO orders VALUES (?, ?, ?)",
            (i, format!("{}.{:02}", i, i % 100), format!("order {i}")),
        )
        .await
        .unwrap();
        if i % 3 == 0 && i > from {
            tx.exec_drop("UPDATE orders SET note = CONCAT(note, ' (updated)'), amount = amount + 1 WHERE id = ?", (i - 1,))
                .await
                .unwrap();
        }
        if i % 7 == 0 && i > from + 1 {
            tx.exec_drop("DELETE FROM orders WHERE id = ?", (i - 2,))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

pub const TABLE: &str = "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, note VARCHAR(80) NOT NULL)";

/// Every record of a topic partition 0, as (key, value) JSON.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let parse = |b: Option<&[u8]>| {
                    b.map(|b| serde_json::from_slice(b).unwrap())
                        .unwrap_or(serde_json::Value::Null)
                };
                out.push((parse(m.key()), parse(m.payload())));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

/// `cdc-sync stream --config CONFIG` as the `n`th process of a test, its pid file and `log` in
/// `dir`; killed when the guard drops.
pub fn spawn_stream(
    config: &std::path::Path,
    dir: &std::path::Path,
    n: u32,
    log: &str,
) -> testkit::ProcessGuard {
    testkit::ProcessGuard::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_cdc-sync")),
        &[
            "stream".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &dir.join(format!("cdc{n}.pid")),
        &dir.join(log),
    )
    .unwrap()
}

/// Waits until a stream started in-process has fixed its start position (`cdc_running` is 1).
pub async fn wait_running<T: std::fmt::Debug>(
    metrics: &cdc_sync::metrics::Metrics,
    task: &tokio::task::JoinHandle<T>,
) {
    for _ in 0..600 {
        if metrics.running.get() == 1 {
            return;
        }
        assert!(!task.is_finished(), "the stream stopped while starting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream never started");
}

/// The value of `cdc_loop_suppressed_total` in a rendered exposition (0 when absent).
pub fn suppressed(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cdc_loop_suppressed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub struct Running {
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), cdc_sync::error::CdcError>>,
    pub metrics: cdc_sync::metrics::Metrics,
}

pub async fn start(config: cdc_sync::config::StreamConfig) -> Running {
    let metrics = cdc_sync::metrics::Metrics::new(&config.name);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move { cdc_sync::transport::direct::run(&config, m, rx).await });
    // The stream has fixed its start position when it reports running: writes from here on are
    // in its range (a fixed pause lost the race on a loaded machine).
    wait_running(&metrics, &task).await;
    Running {
        stop,
        task,
        metrics,
    }
}

/// A direct stream from a fresh database on the monolith server to a fresh one on the services
/// server, both holding [`TABLE`]: its config file in a temp folder, listening on a free port.
pub struct OrdersStream {
    pub src: testkit::TestDatabase,
    pub dst: testkit::TestDatabase,
    pub dir: testkit::TempDir,
    pub config: std::path::PathBuf,
    pub port: u16,
}

/// The stream `<prefix><pid>` with binlog reader id `reader_server_id`.
pub async fn orders_stream(prefix: &str, reader_server_id: u32) -> OrdersStream {
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database(&format!("{prefix}_src")).await.unwrap();
    let dst = s.create_database(&format!("{prefix}_dst")).await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let dir = testkit::TempDir::new(&format!("cdc-{prefix}")).unwrap();
    let config = dir.path().join("stream.toml");
    let port = testkit::free_port();
    std::fs::write(
        &config,
        format!(
            "name = \"{prefix}{}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader_server_id}\nlisten = \"127.0.0.1:{port}\"\n\n[[tables]]\nsource = \"{}.orders\"\ntarget = \"{}.orders\"\n",
            std::process::id(),
            m.root_url(),
            s.root_url(),
            src.name,
            dst.name
        ),
    )
    .unwrap();
    OrdersStream {
        src,
        dst,
        dir,
        config,
        port,
    }
}

/// Waits until the stream process listening on `port` answers `/readyz` with 200: it has fixed
/// its start position, so writes from here on are in its range (an open port is not enough).
pub async fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    for _ in 0..600 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream on port {port} never became ready");
}
