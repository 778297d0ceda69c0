//! cdc-sync benchmark, with MariaDB's own replication as the baseline in the same run: apply rate
//! for a binlog backlog of single-row and 100-row transactions (direct, Kafka, native replica),
//! then portable mode against MariaDB-native mode head to head, then replication lag under a paced
//! write load. Prints a Markdown report. Run through `bench/cdc.sh`.

use std::time::{Duration, Instant};

use cdc_sync::config::StreamConfig;
use cdc_sync::metrics::Metrics;
use cdc_sync::model::transaction::Offset;
use cdc_sync::source::binlog::BinlogSource;
use mysql_async::prelude::*;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS events (id BIGINT PRIMARY KEY, account INT NOT NULL, \
    amount DECIMAL(12,2) NOT NULL, note VARCHAR(64) NOT NULL, created_at DATETIME(6) NOT NULL)";

struct Args {
    single: u64,
    batched: u64,
    lag_seconds: u64,
    rate: u64,
    kafka: bool,
}

fn args() -> Args {
    let mut a = Args {
        single: 100_000,
        batched: 100_000,
        lag_seconds: 60,
        rate: 2_000,
        kafka: true,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = || {
            argv.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match argv[i].as_str() {
            "--single" => a.single = v(),
            "--batched" => a.batched = v(),
            "--lag-seconds" => a.lag_seconds = v(),
            "--rate" => a.rate = v(),
            "--no-kafka" => {
                a.kafka = false;
                i -= 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

async fn exec(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.disconnect().await.unwrap();
}

async fn position(url: &str) -> Offset {
    let pool = mysql_async::Pool::new(url);
    let o = BinlogSource::current_position(&pool, Default::default())
        .await
        .unwrap();
    pool.disconnect().await.unwrap();
    o
}

/// Writes `rows` rows from id `from`, `per_txn` rows a transaction, over 4 connections.
async fn write_backlog(url: &str, from: u64, rows: u64, per_txn: u64) {
    spread(url, rows / per_txn, move |t| {
        let first = from + t * per_txn;
        let values: Vec<String> = (first..first + per_txn)
            .map(|id| {
                format!(
                    "({id}, {}, {}.{:02}, 'event {id}', NOW(6))",
                    id % 997,
                    id % 10_000,
                    id % 100
                )
            })
            .collect();
        format!("INSERT INTO events VALUES {}", values.join(", "))
    })
    .await;
}

/// Updates rows 1..=`rows`, one per transaction, over 4 connections.
async fn write_updates(url: &str, rows: u64) {
    spread(url, rows, |i| {
        format!(
            "UPDATE events SET amount = amount + 1, note = 'updated' WHERE id = {}",
            i + 1
        )
    })
    .await;
}

/// Runs statements `0..count` (made by `statement`), one transaction each, over 4 connections.
async fn spread(url: &str, count: u64, statement: impl Fn(u64) -> String + Send + Sync + 'static) {
    let conns = 4u64;
    let statement = std::sync::Arc::new(statement);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (url, statement) = (url.to_string(), statement.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let mut i = c;
            while i < count {
                conn.query_drop(statement(i)).await.unwrap();
                i += conns;
            }
            conn.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn stream_config(
    name: &str,
    source: &testkit::MariaDb,
    target: &testkit::MariaDb,
    db: &str,
    from: &Offset,
    reader_id: u32,
    kafka: Option<&str>,
) -> StreamConfig {
    let mut text = format!(
        "name = \"{name}\"\nsource_url = \"{}\"\ntarget_url = \"{}\"\nreader_server_id = {reader_id}\n\
         start_position = \"{}:{}\"\nlisten = \"127.0.0.1:{}\"\n",
        source.root_url(),
        target.root_url(),
        from.file,
        from.pos,
        testkit::free_port()
    );
    if kafka.is_some() {
        text.push_str("transport = \"kafka\"\n");
    }
    if name.ends_with("-blind") {
        text.push_str("detect_conflicts = false\n");
    }
    if name.ends_with("-native") {
        text.push_str("mode = \"mariadb-native\"\n");
    }
    text.push_str(&format!(
        "\n[[tables]]\nsource = \"{db}.events\"\ntarget = \"{db}.events\"\n"
    ));
    if let Some(b) = kafka {
        text.push_str(&format!("\n[kafka]\nbootstrap_servers = \"{b}\"\n"));
    }
    StreamConfig::parse(&text).unwrap()
}

/// How often the target is counted: a count scans the table, and every 20 ms it took a good
/// part of a core from the very server being measured.
const POLL: Duration = Duration::from_millis(100);

/// Rows on a side; updated rows.
const ALL_ROWS: &str = "SELECT COUNT(*) FROM events";
const UPDATED_ROWS: &str = "SELECT COUNT(*) FROM events WHERE note = 'updated'";

async fn count(url: &str, sql: &str) -> u64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let n: Option<u64> = c.query_first(sql).await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap_or(0)
}

/// How long applying `rows` rows took: in all, and from the moment the first tenth had arrived
/// (the sustained part, without connecting, topic metadata and consumer start-up).
#[derive(Clone, Copy)]
struct Timing {
    rows: u64,
    total: f64,
    sustained: f64,
}

impl Timing {
    /// Rows per second, sustained.
    fn rate(&self) -> f64 {
        (self.rows - self.rows / 10) as f64 / self.sustained
    }

    /// Rows per second including start-up.
    fn overall(&self) -> f64 {
        self.rows as f64 / self.total
    }

    /// "sustained (with start-up)".
    fn cell(&self) -> String {
        format!("{:.0} ({:.0})", self.rate(), self.overall())
    }
}

/// Polls the target until `sql` counts `want` rows, `rows` of them new.
async fn wait_rows(
    url: &str,
    sql: &str,
    want: u64,
    rows: u64,
    started: Instant,
    alive: impl Fn() -> bool,
    published: impl Fn() -> Option<u64>,
) -> Timing {
    let tenth = want - rows + rows / 10;
    let mut tenth_at = None;
    loop {
        let n = count(url, sql).await;
        // Over Kafka the clock starts once a tenth is *published*, if that comes first: the
        // applier's rate alone (draining what the publisher queued during start-up) would
        // overstate the transport.
        let published_tenth = published().is_some_and(|p| p >= rows / 10);
        if tenth_at.is_none() && (n >= tenth || published_tenth) {
            tenth_at = Some(Instant::now());
        }
        if n >= want {
            break;
        }
        assert!(alive(), "the stream stopped");
        tokio::time::sleep(POLL).await;
    }
    let end = Instant::now();
    Timing {
        rows,
        total: (end - started).as_secs_f64(),
        // Never shorter than one poll: a tiny backlog can finish between two counts.
        sustained: (end - tenth_at.expect("set by the end"))
            .max(POLL)
            .as_secs_f64(),
    }
}

/// Runs a stream from `from` until the target holds `want` rows (`rows` of them new).
async fn time_stream(
    config: StreamConfig,
    target_url: &str,
    sql: &str,
    want: u64,
    rows: u64,
) -> Timing {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new(&config.name);
    let started = Instant::now();
    let task = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::spawn(async move {
            cdc_sync::pipeline::run_stream(&config, Default::default(), metrics, rx).await
        })
    };
    let kafka = config.kafka.is_some();
    let events = metrics.events.clone();
    let table = config.tables[0].source.clone();
    let published = || kafka.then(|| events.with_label_values(&[&table, "published"]).get());
    let timing = wait_rows(
        target_url,
        sql,
        want,
        rows,
        started,
        || !task.is_finished(),
        published,
    )
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    // Conflicts would mean the workload is not what it claims (every side had the same rows).
    for line in metrics.render().lines() {
        if line.starts_with("cdc_conflicts_total{")
            || line.starts_with("cdc_conflict_checks_total{")
        {
            eprintln!("{}: {line}", config.name);
        }
    }
    timing
}

/// Native replication from `from` until the replica holds `want` rows.
async fn time_native(
    replica: &testkit::MariaDb,
    source: &testkit::MariaDb,
    db: &str,
    from: &Offset,
    sql: &str,
    want: u64,
    rows: u64,
) -> Timing {
    let url = replica.root_url();
    exec(&url, "STOP SLAVE").await;
    exec(&url, "RESET SLAVE ALL").await;
    exec(
        &url,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_LOG_FILE='{}', MASTER_LOG_POS={}",
            source.port(),
            from.file,
            from.pos
        ),
    )
    .await;
    let started = Instant::now();
    exec(&url, "START SLAVE").await;
    let timing = wait_rows(&replica.url(db), sql, want, rows, started, || true, || None).await;
    exec(&url, "STOP SLAVE").await;
    timing
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Paced writes at `rate` single-row transactions/s for `secs`, sampling the target's lag (age
/// of its newest row) every 50 ms. Returns (p50, p99, max) in seconds and the rate achieved.
async fn lag_under_load(
    config: StreamConfig,
    source_url: &str,
    target_url: &str,
    first_id: u64,
    rate: u64,
    secs: u64,
) -> (f64, f64, f64, f64) {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new(&config.name);
    let task = tokio::spawn(async move {
        cdc_sync::pipeline::run_stream(&config, Default::default(), metrics, rx).await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writers = 8u64;
    let per_writer = rate / writers;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let url = source_url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_writer as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let id = first_id + w + n * writers;
                conn.exec_drop(
                    "INSERT INTO events VALUES (?, ?, 1.00, 'lag', NOW(6))",
                    (id, id % 997),
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut sampler = mysql_async::Conn::from_url(target_url).await.unwrap();
    let mut samples = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() < deadline {
        let lag: Option<Option<i64>> = sampler
            .query_first(format!(
                "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) FROM events WHERE id >= {first_id} ORDER BY id DESC LIMIT 1"
            ))
            .await
            .unwrap();
        if let Some(Some(us)) = lag {
            samples.push(us as f64 / 1e6);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    samples.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN),
        written as f64 / secs as f64,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let source = testkit::MariaDb::start(testkit::MariaDbOptions::new("bench-source", 31)).unwrap();
    let target = testkit::MariaDb::start(testkit::MariaDbOptions::new("bench-target", 32)).unwrap();
    let replica =
        testkit::MariaDb::start(testkit::MariaDbOptions::new("bench-replica", 33)).unwrap();
    let broker = if a.kafka {
        Some(testkit::Tansu::start().unwrap())
    } else {
        None
    };
    let db = "bench";
    for s in [&source, &target, &replica] {
        exec(&s.root_url(), &format!("CREATE DATABASE {db}")).await;
        exec(&s.url(db), TABLE).await;
    }
    println!("# cdc-sync benchmark\n");
    println!(
        "Apply rate for a binlog backlog (row changes/s), each way from the same source position; the baseline is a MariaDB replica of the source (one SQL thread) applying the same backlog. Each cell: the sustained rate (from the moment a tenth of the rows had arrived, or over Kafka had been published if sooner, to the last one), then in brackets the rate including start-up (connecting, topic metadata, consumer start); ratios compare sustained rates. The first two workloads insert new rows; the third updates rows every side has. Completion is polled every 100 ms.\n"
    );
    println!(
        "| workload | rows | direct | direct, no conflict check | kafka | native replica | direct / native | no check / native | kafka / native |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Stream `n`'s config: named `bench<n><suffix>`, reading as server id 5000 + n.
    let config = |n: u32, suffix: &str, from: &Offset, kafka: Option<&str>| {
        stream_config(
            &format!("bench{n}{suffix}"),
            &source,
            &target,
            db,
            from,
            5000 + n,
            kafka,
        )
    };
    let mut next_id = 1u64;
    let mut streams = 0u32;
    let mut want_target = 0u64;
    for (label, rows, per_txn) in [
        ("single-row transactions", a.single, 1u64),
        ("100-row transactions", a.batched, 100),
    ] {
        let from = position(&source.root_url()).await;
        write_backlog(&source.url(db), next_id, rows, per_txn).await;
        next_id += rows;
        want_target += rows;
        // Direct.
        streams += 1;
        let direct = time_stream(
            config(streams, "", &from, None),
            &target.url(db),
            ALL_ROWS,
            want_target,
            rows,
        )
        .await;
        // The same without the per-row conflict check.
        exec(
            &target.url(db),
            &format!("DELETE FROM events WHERE id >= {}", next_id - rows),
        )
        .await;
        streams += 1;
        let blind = time_stream(
            config(streams, "-blind", &from, None),
            &target.url(db),
            ALL_ROWS,
            want_target,
            rows,
        )
        .await;
        // Kafka: a fresh target database would cost a reload; delete the rows instead.
        let kafka = if let Some(b) = &broker {
            exec(
                &target.url(db),
                &format!("DELETE FROM events WHERE id >= {}", next_id - rows),
            )
            .await;
            streams += 1;
            Some(
                time_stream(
                    config(streams, "", &from, Some(&b.bootstrap_servers())),
                    &target.url(db),
                    ALL_ROWS,
                    want_target,
                    rows,
                )
                .await,
            )
        } else {
            None
        };
        let native = time_native(&replica, &source, db, &from, ALL_ROWS, want_target, rows).await;
        println!(
            "| {label} | {rows} | {} | {} | {} | {} | {:.2}× | {:.2}× | {} |",
            direct.cell(),
            blind.cell(),
            kafka.map(|k| k.cell()).unwrap_or("–".into()),
            native.cell(),
            direct.rate() / native.rate(),
            blind.rate() / native.rate(),
            kafka
                .map(|k| format!("{:.2}×", k.rate() / native.rate()))
                .unwrap_or("–".into()),
        );
    }
    // Single-row updates of rows every side has: the path where each row is checked before it
    // is written. Each transport starts from the rows as they were before the updates.
    {
        let rows = a.single.min(next_id - 1);
        let from = position(&source.root_url()).await;
        write_updates(&source.url(db), rows).await;
        let reset = "UPDATE events SET amount = amount - 1, note = CONCAT('event ', id) \
                     WHERE note = 'updated'";
        let mut runs = Vec::new();
        let mut transports: Vec<(&str, Option<String>)> = vec![("", None), ("-blind", None)];
        if let Some(b) = &broker {
            transports.push(("", Some(b.bootstrap_servers())));
        }
        for (suffix, kafka) in transports {
            exec(&target.url(db), reset).await;
            streams += 1;
            runs.push(
                time_stream(
                    config(streams, suffix, &from, kafka.as_deref()),
                    &target.url(db),
                    UPDATED_ROWS,
                    rows,
                    rows,
                )
                .await,
            );
        }
        let native = time_native(&replica, &source, db, &from, UPDATED_ROWS, rows, rows).await;
        let kafka = runs.get(2).copied();
        println!(
            "| single-row updates | {rows} | {} | {} | {} | {} | {:.2}× | {:.2}× | {} |",
            runs[0].cell(),
            runs[1].cell(),
            kafka.map(|k| k.cell()).unwrap_or("–".into()),
            native.cell(),
            runs[0].rate() / native.rate(),
            runs[1].rate() / native.rate(),
            kafka
                .map(|k| format!("{:.2}×", k.rate() / native.rate()))
                .unwrap_or("–".into()),
        );
    }
    // Portable mode (marker rows, the default) against MariaDB-native mode (skip_replication),
    // direct transport, turn about on the same backlogs: inserts, then updates.
    println!(
        "\nPortable mode (the default: loop prevention by marker rows) against `mariadb-native` mode (`skip_replication`), direct transport with the conflict check, applying the same backlog turn about, two rounds each; ratio = portable / native sustained rate, per round:\n"
    );
    println!("| workload | rows | round | native | portable | portable / native |");
    println!("|---|---:|---:|---:|---:|---:|");
    {
        let rows = a.single;
        let from = position(&source.root_url()).await;
        let first = next_id;
        write_backlog(&source.url(db), first, rows, 1).await;
        next_id += rows;
        want_target += rows;
        for round in 1..=2 {
            let mut cells = Vec::new();
            for suffix in ["-native", ""] {
                exec(
                    &target.url(db),
                    &format!("DELETE FROM events WHERE id >= {first}"),
                )
                .await;
                streams += 1;
                cells.push(
                    time_stream(
                        config(streams, suffix, &from, None),
                        &target.url(db),
                        ALL_ROWS,
                        want_target,
                        rows,
                    )
                    .await,
                );
            }
            println!(
                "| single-row inserts | {rows} | {round} | {} | {} | {:.2}× |",
                cells[0].cell(),
                cells[1].cell(),
                cells[1].rate() / cells[0].rate()
            );
        }
        let rows = a.single.min(next_id - 1);
        // Both sides back to the rows as inserted (the updates above left them updated), so
        // every update's `before` image matches the target: the no-conflict path.
        let reset = "UPDATE events SET amount = amount - 1, note = CONCAT('event ', id) \
                     WHERE note = 'updated'";
        exec(&source.url(db), reset).await;
        let from = position(&source.root_url()).await;
        write_updates(&source.url(db), rows).await;
        for round in 1..=2 {
            let mut cells = Vec::new();
            for suffix in ["-native", ""] {
                exec(&target.url(db), reset).await;
                streams += 1;
                cells.push(
                    time_stream(
                        config(streams, suffix, &from, None),
                        &target.url(db),
                        UPDATED_ROWS,
                        rows,
                        rows,
                    )
                    .await,
                );
            }
            println!(
                "| single-row updates | {rows} | {round} | {} | {} | {:.2}× |",
                cells[0].cell(),
                cells[1].cell(),
                cells[1].rate() / cells[0].rate()
            );
        }
    }
    println!(
        "\nReplication lag under a paced load of single-row transactions ({} s at {}/s requested; samples every 50 ms of the age of the newest row on the target):\n",
        a.lag_seconds, a.rate
    );
    println!("| transport | writes/s achieved | lag p50 | lag p99 | lag max |");
    println!("|---|---:|---:|---:|---:|");
    let mut modes = vec![None];
    if let Some(b) = &broker {
        modes.push(Some(b.bootstrap_servers()));
    }
    for kafka in modes {
        streams += 1;
        let from = position(&source.root_url()).await;
        let first = next_id;
        next_id += a.rate * a.lag_seconds * 2;
        let (p50, p99, max, achieved) = lag_under_load(
            config(streams, "", &from, kafka.as_deref()),
            &source.url(db),
            &target.url(db),
            first,
            a.rate,
            a.lag_seconds,
        )
        .await;
        println!(
            "| {} | {achieved:.0} | {:.3} s | {:.3} s | {:.3} s |",
            if kafka.is_some() { "kafka" } else { "direct" },
            p50,
            p99,
            max
        );
    }
}
