//! The Kafka transport against a real `tansu` broker: Debezium records on the topics, `kill -9`
//! of cdc-sync mid-burst, a broker restart, and a malformed record that stops the applier at its
//! offset with nothing after it applied.

use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

mod common;
use common::{TABLE, burst, converge, exec, fingerprint, read_topic, show_logs, spawn_stream};

/// A Kafka stream config: `(server URL, database)` of each side.
fn stream_toml(
    name: &str,
    (source, src_db): (&str, &str),
    (target, dst_db): (&str, &str),
    brokers: &str,
    reader_id: u32,
    listen: u16,
) -> String {
    format!(
        "name = \"{name}\"\nsource_url = \"{source}\"\ntarget_url = \"{target}\"\nreader_server_id = {reader_id}\n\
         transport = \"kafka\"\nlisten = \"127.0.0.1:{listen}\"\n\n\
         [[tables]]\nsource = \"{src_db}.orders\"\ntarget = \"{dst_db}.orders\"\n\n\
         [kafka]\nbootstrap_servers = \"{brokers}\"\nresume_from = \"earliest\"\n"
    )
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_survives_kill_9_mid_burst_and_writes_debezium_records() {
    show_logs();
    let broker = testkit::Tansu::start().unwrap();
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("kcrash_src").await.unwrap();
    let dst = s.create_database("kcrash_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let dir = testkit::TempDir::new("cdc-kcrash").unwrap();
    let config = dir.path().join("stream.toml");
    let port = testkit::free_port();
    let name = format!("kcrash{}", std::process::id());
    std::fs::write(
        &config,
        stream_toml(
            &name,
            (&m.root_url(), &src.name),
            (&s.root_url(), &dst.name),
            &broker.bootstrap_servers(),
            4801,
            port,
        ),
    )
    .unwrap();
    let spawn = |n: u32| spawn_stream(&config, dir.path(), n, &format!("cdc{n}.log"));
    let mut process = spawn(1);
    wait_port(port).await;
    common::wait_ready(port).await;
    // Let it create the topics and settle its group before writing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writer = tokio::spawn(burst(src.url.clone(), 1, 1200));
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        process.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        process = spawn(round + 2);
    }
    writer.await.unwrap();
    let logs = |dir: &Path| {
        (1..=3)
            .map(|n| std::fs::read_to_string(dir.join(format!("cdc{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let log_dir = dir.path().to_path_buf();
    let (wb, wt) = (broker.bootstrap_servers(), format!("{name}.transaction"));
    let wtt = format!("{name}.{}.orders", src.name);
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(85)).await;
        let l = logs(&log_dir);
        eprintln!(
            "cdc logs:\n{}",
            l.lines()
                .filter(|l| !l.contains("gap before"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let recs =
            tokio::task::spawn_blocking(move || (read_topic(&wb, &wt), read_topic(&wb, &wtt)))
                .await
                .unwrap();
        for (i, (_, v)) in recs.0.iter().enumerate().take(120) {
            eprintln!(
                "T{i} {} {} prev={} end={} n={}",
                v["status"],
                v["id"],
                v["previous_offset"]["pos"],
                v["source_offset"]["pos"],
                v["event_count"]
            );
        }
        for (i, (_, v)) in recs.1.iter().enumerate().take(60) {
            eprintln!(
                "E{i} {} {} pos={}",
                v["payload"]["transaction"]["id"],
                v["payload"]["transaction"]["total_order"],
                v["payload"]["source"]["pos"]
            );
        }
    });
    converge(&src.url, &dst.url, 90).await;
    watchdog.abort();
    let (rows, _) = fingerprint(&dst.url).await;
    assert!(rows > 800, "{rows}");
    // Three processes ran (one may have been killed before it got to publish). The last one
    // may still be starting when the target has caught up: the first two can apply it all.
    let mut log = logs(dir.path());
    for _ in 0..300 {
        if log.matches("applying from Kafka").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = logs(dir.path());
    }
    assert_eq!(log.matches("applying from Kafka").count(), 3, "{log}");
    assert!(log.matches("publishing to Kafka").count() >= 2, "{log}");

    // The table topic holds Debezium records: key and value with schemas, transaction blocks.
    let records = read_topic(
        &broker.bootstrap_servers(),
        &format!("{name}.{}.orders", src.name),
    );
    assert!(records.len() >= 1199, "{}", records.len());
    let (key, value) = &records[0];
    assert_eq!(key["payload"]["id"], 1);
    assert_eq!(
        value["schema"]["name"],
        format!("{name}.{}.orders.Envelope", src.name)
    );
    assert_eq!(value["payload"]["op"], "c");
    assert_eq!(value["payload"]["after"]["amount"], "1.01");
    assert_eq!(value["payload"]["transaction"]["total_order"], 1);
    // The transaction topic frames them with BEGIN/END as Debezium does.
    let txns = read_topic(&broker.bootstrap_servers(), &format!("{name}.transaction"));
    let ends: Vec<_> = txns.iter().filter(|(_, v)| v["status"] == "END").collect();
    assert!(ends.len() >= 1199, "{}", ends.len());
    // Other tests write to the same source server: their transactions (none of this stream's
    // tables) may come first, with no data collections.
    let first = ends
        .iter()
        .find(|(_, v)| v["event_count"].as_u64() > Some(0))
        .expect("an END with events");
    assert_eq!(
        first.1["data_collections"][0]["data_collection"],
        format!("{}.orders", src.name)
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_record_stops_the_applier_at_its_offset() {
    show_logs();
    let broker = testkit::Tansu::start().unwrap();
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("kbad_src").await.unwrap();
    let dst = s.create_database("kbad_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let name = format!("kbad{}", std::process::id());
    let config = cdc_sync::config::StreamConfig::parse(&stream_toml(
        &name,
        (&m.root_url(), &src.name),
        (&s.root_url(), &dst.name),
        &broker.bootstrap_servers(),
        4811,
        testkit::free_port(),
    ))
    .unwrap();
    let metrics = cdc_sync::metrics::Metrics::new(&name);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::spawn(async move {
            cdc_sync::pipeline::run_stream(&config, Default::default(), metrics, rx).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    burst(src.url.clone(), 1, 20).await;
    converge(&src.url, &dst.url, 60).await;
    let good = fingerprint(&dst.url).await;

    // A record that is not a change event lands on the table topic, then more real changes.
    let topic = format!("{name}.{}.orders", src.name);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("{}").payload("{not json"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let bad_at = format!("{topic}[{}]@{}", delivery.partition, delivery.offset);
    burst(src.url.clone(), 20, 40).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the stream stops by itself")
        .unwrap();
    let err = outcome.unwrap_err().to_string();
    assert!(
        err.contains(&bad_at) && err.contains("not JSON"),
        "{err} (wanted {bad_at})"
    );
    // Nothing after the bad record was applied.
    assert_eq!(fingerprint(&dst.url).await, good);
    assert!(
        metrics
            .render()
            .contains(r#"cdc_errors_total{kind="fatal""#)
    );

    // A restart stops at the same record again: its offset was never committed.
    let (_stop2, rx2) = tokio::sync::watch::channel(false);
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        cdc_sync::transport::kafka::apply(&config, cdc_sync::metrics::Metrics::new(&name), rx2),
    )
    .await
    .expect("stops again")
    .unwrap_err()
    .to_string();
    assert!(again.contains(&bad_at), "{again}");
    assert_eq!(fingerprint(&dst.url).await, good);
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_survived() {
    show_logs();
    let broker = testkit::Tansu::start().unwrap();
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("kfreeze_src").await.unwrap();
    let dst = s.create_database("kfreeze_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let name = format!("kfreeze{}", std::process::id());
    let mut config = cdc_sync::config::StreamConfig::parse(&stream_toml(
        &name,
        (&m.root_url(), &src.name),
        (&s.root_url(), &dst.name),
        &broker.bootstrap_servers(),
        4821,
        testkit::free_port(),
    ))
    .unwrap();
    // Its start is fixed before the writes (a loaded machine may start the publisher after them).
    let pool = mysql_async::Pool::new(m.root_url().as_str());
    let at = cdc_sync::source::binlog::BinlogSource::current_position(&pool, Default::default())
        .await
        .unwrap();
    pool.disconnect().await.unwrap();
    config.start_position = Some(format!("{}:{}", at.file, at.pos));
    let metrics = cdc_sync::metrics::Metrics::new(&name);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::spawn(async move {
            cdc_sync::pipeline::run_stream(&config, Default::default(), metrics, rx).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    burst(src.url.clone(), 1, 100).await;
    converge(&src.url, &dst.url, 60).await;
    // The broker stops answering for 8 s while the shop keeps writing.
    broker.pause();
    burst(src.url.clone(), 100, 200).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.resume();
    burst(src.url.clone(), 200, 300).await;
    converge(&src.url, &dst.url, 120).await;
    assert!(!task.is_finished(), "the stream keeps running");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops on request")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_that_lost_its_data_is_survived() {
    // In-memory storage: the restarted broker has lost every topic, record and committed
    // offset. librdkafka 2.12 may crash on the metadata tansu then returns (a topic without a
    // name), so cdc-sync runs under a supervisor, as in production, and the publisher starts
    // again from what the target applied.
    let mut broker = testkit::Tansu::start().unwrap();
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("kbroker_src").await.unwrap();
    let dst = s.create_database("kbroker_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let dir = testkit::TempDir::new("cdc-kbroker").unwrap();
    let config = dir.path().join("stream.toml");
    let name = format!("kbroker{}", std::process::id());
    std::fs::write(
        &config,
        stream_toml(
            &name,
            (&m.root_url(), &src.name),
            (&s.root_url(), &dst.name),
            &broker.bootstrap_servers(),
            4831,
            testkit::free_port(),
        ),
    )
    .unwrap();
    let dir_path = dir.path().to_path_buf();
    let config_path = config.display().to_string();
    let spawn = move |n: u32| {
        testkit::ProcessGuard::spawn(
            Path::new(env!("CARGO_BIN_EXE_cdc-sync")),
            &["stream".into(), "--config".into(), config_path.clone()],
            &dir_path.join(format!("cdc{n}.pid")),
            &dir_path.join("cdc.log"),
        )
        .unwrap()
    };
    let process = std::sync::Arc::new(std::sync::Mutex::new(spawn(0)));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let supervisor = {
        let process = process.clone();
        tokio::spawn(async move {
            let mut restarts = 0u32;
            while !*done_rx.borrow() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut p = process.lock().unwrap();
                if !p.is_alive() {
                    restarts += 1;
                    *p = spawn(restarts);
                }
            }
            restarts
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    burst(src.url.clone(), 1, 100).await;
    converge(&src.url, &dst.url, 60).await;
    broker.kill();
    burst(src.url.clone(), 100, 200).await;
    broker.restart().unwrap();
    burst(src.url.clone(), 200, 300).await;
    let log_path = dir.path().join("cdc.log");
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(115)).await;
        eprintln!(
            "cdc.log:\n{}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
    });
    converge(&src.url, &dst.url, 120).await;
    watchdog.abort();
    let _ = done_tx.send(true);
    let restarts = supervisor.await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("cdc.log")).unwrap();
    assert!(
        log.matches("publishing to Kafka").count() as u32 > restarts,
        "{restarts} restarts: {log}"
    );
    drop(process);
}

/// Renames every schema field and payload key `from` to `to`, anywhere in a record value.
fn rename_column(v: &mut serde_json::Value, from: &str, to: &str) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("field").and_then(|f| f.as_str()) == Some(from) {
                map.insert("field".into(), serde_json::json!(to));
            }
            if let Some(x) = map.remove(from) {
                map.insert(to.to_string(), x);
            }
            for x in map.values_mut() {
                rename_column(x, from, to);
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                rename_column(x, from, to);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_a_column_the_target_lacks_stops_the_applier() {
    show_logs();
    let broker = testkit::Tansu::start().unwrap();
    let (m, s) = (testkit::monolith_server(), testkit::services_server());
    let src = m.create_database("kident_src").await.unwrap();
    let dst = s.create_database("kident_dst").await.unwrap();
    exec(&src.url, TABLE).await;
    exec(&dst.url, TABLE).await;
    let name = format!("kident{}", std::process::id());
    let mut config = cdc_sync::config::StreamConfig::parse(&stream_toml(
        &name,
        (&m.root_url(), &src.name),
        (&s.root_url(), &dst.name),
        &broker.bootstrap_servers(),
        4841,
        testkit::free_port(),
    ))
    .unwrap();
    // Real changes published and applied first, from a position fixed before they are written
    // (a loaded machine may start the publisher after the writes).
    let pool = mysql_async::Pool::new(m.root_url().as_str());
    let at = cdc_sync::source::binlog::BinlogSource::current_position(&pool, Default::default())
        .await
        .unwrap();
    pool.disconnect().await.unwrap();
    config.start_position = Some(format!("{}:{}", at.file, at.pos));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = {
        let config = config.clone();
        let metrics = cdc_sync::metrics::Metrics::new(&name);
        tokio::spawn(async move {
            cdc_sync::pipeline::run_stream(&config, Default::default(), metrics, rx).await
        })
    };
    burst(src.url.clone(), 1, 6).await;
    converge(&src.url, &dst.url, 60).await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let good = fingerprint(&dst.url).await;

    // Someone with write access to the topics appends a transaction whose change names a column
    // `note` = 'pwned', `amount` (the target has no such column) as if published after the last.
    let brokers = broker.bootstrap_servers();
    let table_topic = format!("{name}.{}.orders", src.name);
    let txn_topic = format!("{name}.transaction");
    let (key, mut value) = read_topic(&brokers, &table_topic).pop().unwrap();
    let last_end = read_topic(&brokers, &txn_topic)
        .into_iter()
        .map(|(_, v)| v)
        .rfind(|v| v["status"] == "END")
        .unwrap();
    let evil = "note` = 'pwned', `amount";
    rename_column(&mut value, "note", evil);
    let prev = last_end["source_offset"].clone();
    let pos = prev["pos"].as_u64().unwrap();
    let p = &mut value["payload"];
    p["op"] = serde_json::json!("c");
    p["before"] = serde_json::Value::Null;
    p["after"]["id"] = serde_json::json!(999);
    p["source"]["pos"] = serde_json::json!(pos + 100);
    p["transaction"] =
        serde_json::json!({"id": "evil", "total_order": 1, "data_collection_order": 1});
    let mut key = key;
    key["payload"]["id"] = serde_json::json!(999);
    let end = serde_json::json!({
        "status": "END", "id": "evil", "ts_ms": 0, "event_count": 1,
        "data_collections": [{"data_collection": format!("{}.orders", src.name), "event_count": 1}],
        "source_offset": {"file": prev["file"], "pos": pos + 200, "gtid": null},
        "previous_offset": prev,
    });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (topic, k, v) in [
        (&table_topic, key.to_string(), value.to_string()),
        (&txn_topic, "{}".to_string(), end.to_string()),
    ] {
        producer
            .send(
                FutureRecord::to(topic).key(&k).payload(&v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let (_stop2, rx2) = tokio::sync::watch::channel(false);
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        cdc_sync::transport::kafka::apply(&config, cdc_sync::metrics::Metrics::new(&name), rx2),
    )
    .await
    .expect("the applier stops by itself")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("{evil:?}")) && err.contains("not a column of the target table"),
        "{err}"
    );
    assert!(
        err.contains(&format!(":{} row", pos + 100)),
        "names the offset: {err}"
    );
    // Nothing of it reached the target, whose table is as it was.
    assert_eq!(fingerprint(&dst.url).await, good);
}
