//! The `cdc-sync` CLI: `stream` runs one direction with `/metrics` and `/healthz`; `status`
//! prints where each stream stands against its source; `--check-config` validates and exits.

use std::path::PathBuf;

use cdc_sync::config::StreamConfig;
use cdc_sync::metrics::Metrics;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cdc-sync",
    version,
    about = "Mirrors tables between the monolith and the services"
)]
struct Cli {
    /// The stream's TOML config.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Validate the config and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stream until Ctrl-C / SIGTERM.
    Stream {
        /// With the Kafka transport: publish, apply, or both in this process.
        #[arg(long, value_enum, default_value = "both")]
        role: cdc_sync::pipeline::Role,
    },
    /// Offset, lag and counts of the stream, as a table or `--json`.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Copy a table's existing rows to the target while the stream runs (the running
    /// `cdc-sync stream` does the copying, with watermarks); shows progress until done.
    /// Ctrl-C pauses it; `--resume` continues from the last copied chunk.
    Backfill {
        /// Source `db.table` (or table name) of a mapping in the config.
        #[arg(long)]
        table: String,
        /// Rows per chunk to start with (adapted to about half a second per chunk).
        #[arg(long, default_value_t = 5_000)]
        chunk_size: u64,
        /// Throttle: at most this many rows per second (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_rows_per_sec: u64,
        /// Throttle: wait while the stream lags more than this many seconds (0: no limit).
        #[arg(long, default_value_t = 0.0)]
        max_lag: f64,
        /// Continue after the last copied chunk of a paused or failed backfill.
        #[arg(long)]
        resume: bool,
        /// Copy this many primary-key ranges at once (1 to 64).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel: u32,
    },
    /// Progress of every backfill of the stream.
    SnapshotStatus {
        #[arg(long)]
        json: bool,
    },
    /// Compare a table on both sides through the mapping (chunked checksums, then rows); exit
    /// code 0 when clean, 1 when rows differ, 2 on errors. `--repair` rewrites the target rows.
    Verify {
        /// Source or target `db.table` (or table name) of a mapping in the config.
        #[arg(long)]
        table: String,
        #[arg(long, default_value_t = 10_000)]
        chunk_size: u64,
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print change events from now on as Debezium JSON lines (`{"key":…,"value":…}`), without
    /// applying them; `--schema` uses the JSON converter's `schema` + `payload` form.
    Tail {
        #[arg(long)]
        schema: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
}

fn load(cli: &Cli) -> StreamConfig {
    let Some(path) = &cli.config else {
        eprintln!("error: --config FILE is required");
        std::process::exit(2);
    };
    StreamConfig::load(path).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load(&cli);
    if cli.check_config {
        println!(
            "config OK: stream {} with {} tables",
            config.name,
            config.tables.len()
        );
        return Ok(());
    }
    match cli.command {
        None => stream(config, Default::default()).await,
        Some(Command::Stream { role }) => stream(config, role).await,
        Some(Command::Status { json }) => status(config, json).await,
        Some(Command::Tail { schema, limit }) => tail(config, schema, limit).await,
        Some(Command::Backfill {
            table,
            chunk_size,
            max_rows_per_sec,
            max_lag,
            resume,
            parallel,
        }) => {
            backfill(
                config,
                &table,
                cdc_sync::backfill::Request {
                    table: String::new(),
                    chunk_size,
                    max_rows_per_sec,
                    max_lag_seconds: max_lag,
                    resume,
                    parallel,
                },
            )
            .await
        }
        Some(Command::SnapshotStatus { json }) => snapshot_status(config, json).await,
        Some(Command::Verify {
            table,
            chunk_size,
            repair,
            json,
        }) => verify(config, &table, chunk_size, repair, json).await,
    }
}

/// The mapping `name` designates: source or target `db.table`, or a table name if unique.
fn mapping<'a>(
    config: &'a StreamConfig,
    name: &str,
) -> Result<&'a cdc_sync::apply::mapping::TableMapping, String> {
    let hits: Vec<_> = config
        .tables
        .iter()
        .filter(|t| {
            t.source == name
                || t.target == name
                || t.source.split_once('.').is_some_and(|(_, n)| n == name)
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no table {name:?} in the config; it maps: {}",
            config
                .tables
                .iter()
                .map(|t| t.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!("{name:?} matches several tables; give db.table")),
    }
}

/// A progress bar over rows (drawn only on a terminal).
fn rows_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} rows {per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar
}

async fn snapshot_status(config: StreamConfig, json: bool) -> anyhow::Result<()> {
    let all = cdc_sync::backfill::all_progress(&config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no backfill has run for stream {}", config.name);
    }
    println!(
        "{:<32} {:<8} {:>12} {:>12} {:>7} {:>7} {:>9}  LAST KEY",
        "TABLE", "STATUS", "ROWS", "ESTIMATE", "CHUNKS", "RANGES", "SECONDS"
    );
    for p in all {
        let done = p.ranges.iter().filter(|r| r.done).count();
        println!(
            "{:<32} {:<8} {:>12} {:>12} {:>7} {:>7} {:>9.1}  {}{}",
            p.table,
            p.status,
            p.rows_copied,
            p.rows_estimate,
            p.chunks,
            format!("{done}/{}", p.ranges.len()),
            p.seconds,
            p.last_key.unwrap_or_default(),
            p.message.map(|m| format!("  ({m})")).unwrap_or_default()
        );
    }
    Ok(())
}

async fn backfill(
    config: StreamConfig,
    table: &str,
    mut req: cdc_sync::backfill::Request,
) -> anyhow::Result<()> {
    use cdc_sync::backfill::{progress, send_signal};
    let fail = |m: String| -> ! {
        eprintln!("error: {m}");
        std::process::exit(2);
    };
    let m = mapping(&config, table).unwrap_or_else(|e| fail(e));
    req.table = m.source.clone();
    if req.chunk_size == 0 || req.chunk_size > 1_000_000 {
        fail("--chunk-size must be 1 to 1000000".into());
    }
    if !(0.0..=86_400.0).contains(&req.max_lag_seconds) {
        fail("--max-lag must be 0 to 86400 seconds".into());
    }
    // Refuse tables the copy cannot chunk before asking the stream.
    {
        let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.source_url)?);
        let (db, t) = req.table.split_once('.').expect("validated");
        if let Err(e) = cdc_sync::schema::load(&pool, db, t).await {
            fail(format!("cannot backfill {}: {e}", req.table));
        }
        pool.disconnect().await?;
    }
    let before = progress(&config, &req.table).await?;
    match before.as_ref().map(|p| p.status.as_str()) {
        Some("running") => eprintln!(
            "a backfill of {} is already running; following it",
            req.table
        ),
        Some("paused" | "failed") if !req.resume => fail(format!(
            "the backfill of {} is {} at key {}; continue with --resume (or start over by running it again after `snapshot-status`)",
            req.table,
            before.as_ref().map(|p| p.status.as_str()).unwrap_or(""),
            before
                .as_ref()
                .and_then(|p| p.last_key.clone())
                .unwrap_or_default()
        )),
        _ => {
            send_signal(&config, "backfill", &serde_json::to_value(&req)?).await?;
        }
    }
    let bar = rows_bar();
    bar.set_message(format!("backfill {}", req.table));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let asked = std::time::Instant::now();
    let mut last_log = std::time::Instant::now();
    let mut seen_running = false;
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut interrupt => {
                bar.abandon();
                send_signal(&config, "backfill-pause", &serde_json::json!({"table": req.table})).await?;
                for _ in 0..120 {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    if let Some(p) = progress(&config, &req.table).await?
                        && p.status != "running"
                    {
                        eprintln!("backfill of {} {} after {} rows at key {}; continue with --resume", req.table, p.status, p.rows_copied, p.last_key.unwrap_or_default());
                        std::process::exit(130);
                    }
                }
                eprintln!("asked the stream to pause the backfill of {} (it has not confirmed yet); continue later with --resume", req.table);
                std::process::exit(130);
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
        let p = progress(&config, &req.table).await?;
        let fresh = p.as_ref().is_some_and(|p| {
            p.status == "running" || seen_running || before.as_ref().is_none_or(|b| b != p)
        });
        let Some(p) = p.filter(|_| fresh) else {
            if asked.elapsed() > std::time::Duration::from_secs(30) {
                fail(format!(
                    "no stream picked up the request in 30 s; is `cdc-sync stream --config …` running for stream {}?",
                    config.name
                ));
            }
            continue;
        };
        seen_running |= p.status == "running";
        bar.set_length(p.rows_estimate.max(p.rows_copied));
        bar.set_position(p.rows_copied);
        if !tty && last_log.elapsed() > std::time::Duration::from_secs(10) {
            eprintln!(
                "backfill {}: {} of ~{} rows, {} chunks, {:.0}s",
                req.table, p.rows_copied, p.rows_estimate, p.chunks, p.seconds
            );
            last_log = std::time::Instant::now();
        }
        match p.status.as_str() {
            "done" => {
                bar.finish_and_clear();
                println!(
                    "backfill of {} done: {} rows in {} chunks, {:.1}s ({:.0} rows/s)",
                    req.table,
                    p.rows_copied,
                    p.chunks,
                    p.seconds,
                    p.rows_copied as f64 / p.seconds.max(0.001)
                );
                return Ok(());
            }
            "failed" | "paused"
                if seen_running || asked.elapsed() > std::time::Duration::from_secs(5) =>
            {
                bar.abandon();
                eprintln!(
                    "backfill of {} {}: {} (after {} rows at key {}); continue with --resume",
                    req.table,
                    p.status,
                    p.message.unwrap_or_default(),
                    p.rows_copied,
                    p.last_key.unwrap_or_default()
                );
                std::process::exit(1);
            }
            _ => {}
        }
    }
}

async fn verify(
    config: StreamConfig,
    table: &str,
    chunk_size: u64,
    repair: bool,
    json: bool,
) -> anyhow::Result<()> {
    let m = mapping(&config, table).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if chunk_size == 0 || chunk_size > 10_000_000 {
        eprintln!("error: --chunk-size must be 1 to 10000000");
        std::process::exit(2);
    }
    let opts = cdc_sync::verify::VerifyOptions {
        chunk_size,
        repair,
        ..Default::default()
    };
    let bar = rows_bar();
    bar.set_message(format!("verify {}", m.source));
    let result = cdc_sync::verify::verify(
        &config.source_url,
        &config.target_url,
        m,
        &opts,
        |done, total| {
            bar.set_length(total.max(done));
            bar.set_position(done);
        },
    )
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: verify {}: {e}", m.source);
            std::process::exit(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("table         {} -> {}", report.source, report.target);
        println!(
            "rows          source {}  target {}",
            report.source_rows, report.target_rows
        );
        println!(
            "chunks        {} ({} mismatched)",
            report.chunks, report.mismatched_chunks
        );
        let show = |what: &str, keys: &Vec<String>| {
            if !keys.is_empty() {
                let head: Vec<&str> = keys.iter().take(20).map(String::as_str).collect();
                println!(
                    "{what:<13} {} (keys {}{})",
                    keys.len(),
                    head.join(", "),
                    if keys.len() > 20 { ", …" } else { "" }
                );
            }
        };
        show("missing", &report.missing);
        show("extra", &report.extra);
        show("different", &report.different);
        if repair {
            println!("repaired      {}", report.repaired);
        }
        println!(
            "took          {:.2}s ({:.0} rows/s per side)",
            report.seconds, report.rows_per_second
        );
        println!(
            "result        {}",
            if report.clean() { "CLEAN" } else { "DIFFERENT" }
        );
    }
    std::process::exit(if report.clean() { 0 } else { 1 });
}

async fn tail(config: StreamConfig, with_schema: bool, limit: Option<u64>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.source_url)?);
    let start = cdc_sync::source::binlog::BinlogSource::current_position(&pool).await?;
    let source = cdc_sync::source::binlog::BinlogSource {
        url: config.source_url.clone(),
        reader_server_id: config.reader_server_id + 1,
        name: config.name.clone(),
        tables: config.tables.iter().map(|t| t.source.clone()).collect(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move { source.run(start, tx).await });
    eprintln!(
        "tailing {} tables of stream {} (Ctrl-C stops)",
        config.tables.len(),
        config.name
    );
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    'outer: while let Some(txn) = rx.recv().await {
        for ev in &txn.events {
            let line = if with_schema {
                serde_json::json!({"key": ev.key_with_schema(&config.name), "value": ev.value_with_schema(&config.name)})
            } else {
                serde_json::json!({"key": ev.key(), "value": ev.envelope})
            };
            writeln!(out, "{line}")?;
            out.flush()?;
            if ev.envelope.op == cdc_sync::model::debezium::Op::Delete {
                // Debezium follows a delete with a tombstone for log compaction.
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"key": ev.key(), "value": null})
                )?;
            }
            printed += 1;
            if limit.is_some_and(|l| printed >= l) {
                break 'outer;
            }
        }
    }
    reader.abort();
    Ok(())
}

async fn stream(config: StreamConfig, role: cdc_sync::pipeline::Role) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .with_writer(std::io::stderr)
        .init();
    let metrics = Metrics::new(&config.name);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = {
        let m = metrics.clone();
        let r = metrics.clone();
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            // Ready once both databases answered and the stream runs; not while it connects,
            // and not after it stopped.
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let running = r.running.get() == 1;
                    async move {
                        if running {
                            (axum::http::StatusCode::OK, "ready")
                        } else {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "stream not running",
                            )
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = m.clone();
                    async move { m.render() }
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        let _ = stop_tx.send(true);
    });
    cdc_sync::pipeline::run_stream(&config, role, metrics, stop_rx).await?;
    Ok(())
}

/// Per table: events applied, age of the newest applied change, events/s over one second.
type TableStats = Vec<(String, u64, i64)>;

async fn table_stats(conn: &mut mysql_async::Conn, config: &StreamConfig) -> TableStats {
    use mysql_async::prelude::Queryable;
    conn.exec(
        format!(
            "SELECT source_table, events, last_source_ts_ms FROM `{}`.cdc_table_stats WHERE stream = ? ORDER BY source_table",
            config.offsets_db
        ),
        (&config.name,),
    )
    .await
    .unwrap_or_default()
}

async fn status(config: StreamConfig, json: bool) -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable;
    let source = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.source_url)?);
    let target = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.target_url)?);
    let head = cdc_sync::source::binlog::BinlogSource::current_position(&source).await?;
    let mut conn = target.get_conn().await?;
    let row: Option<(String, u64, Option<String>, u64, i64)> = conn
        .exec_first(
            format!("SELECT file, pos, gtid, transactions, source_ts_ms FROM `{}`.cdc_offsets WHERE stream = ?", config.offsets_db),
            (&config.name,),
        )
        .await
        .unwrap_or(None);
    // Two samples a second apart give each table's current throughput.
    let first = table_stats(&mut conn, &config).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let second = table_stats(&mut conn, &config).await;
    let now = chrono::Utc::now().timestamp_millis();
    let tables: Vec<serde_json::Value> = config
        .tables
        .iter()
        .map(|t| {
            let find = |s: &TableStats| s.iter().find(|(n, _, _)| *n == t.source).map(|(_, e, ts)| (*e, *ts));
            let (events, ts) = find(&second).unwrap_or((0, 0));
            let before = find(&first).map_or(events, |(e, _)| e);
            serde_json::json!({
                "source": t.source, "target": t.target, "events_applied": events,
                "last_change_age_seconds": if ts > 0 { Some((now - ts) as f64 / 1000.0) } else { None },
                "events_per_second": events - before,
            })
        })
        .collect();
    let bytes_behind = row.as_ref().map(|(file, pos, ..)| {
        if *file == head.file {
            head.pos.saturating_sub(*pos)
        } else {
            u64::MAX
        }
    });
    let report = match &row {
        Some((file, pos, gtid, txns, ts)) => serde_json::json!({
            "stream": config.name, "applied": {"file": file, "pos": pos, "gtid": gtid},
            "source_head": {"file": head.file, "pos": head.pos, "gtid": head.gtid},
            "caught_up": *file == head.file && *pos >= head.pos,
            "bytes_behind": bytes_behind,
            "transactions_applied": txns,
            "last_commit_age_seconds": (now - ts) as f64 / 1000.0,
            "tables": tables,
        }),
        None => serde_json::json!({"stream": config.name, "applied": null,
            "source_head": {"file": head.file, "pos": head.pos}, "caught_up": false, "tables": tables}),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("stream        {}", config.name);
        println!("source head   {}", head);
        match &row {
            Some((file, pos, _, txns, _)) => {
                println!("applied       {file}:{pos}  ({txns} transactions)");
                println!("caught up     {}", report["caught_up"]);
                println!(
                    "last commit   {:.1}s ago",
                    report["last_commit_age_seconds"].as_f64().unwrap_or(0.0)
                );
            }
            None => println!("applied       nothing yet"),
        }
        println!(
            "{:<32} {:<32} {:>10} {:>9} {:>12}",
            "SOURCE", "TARGET", "EVENTS", "EVENTS/S", "LAST CHANGE"
        );
        for t in &tables {
            println!(
                "{:<32} {:<32} {:>10} {:>9} {:>12}",
                t["source"].as_str().unwrap_or(""),
                t["target"].as_str().unwrap_or(""),
                t["events_applied"],
                t["events_per_second"],
                t["last_change_age_seconds"]
                    .as_f64()
                    .map(|s| format!("{s:.1}s ago"))
                    .unwrap_or_else(|| "never".into())
            );
        }
    }
    Ok(())
}
