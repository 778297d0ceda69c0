//! `cdc-sync backfill` and `snapshot-status`: start, follow, pause and resume a backfill run by
//! the stream, with a progress bar on a terminal.

use crate::mapping;
use cdc_sync::config::StreamConfig;

/// A progress bar over rows (drawn only on a terminal).
pub(crate) fn rows_bar() -> indicatif::ProgressBar {
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

pub(crate) async fn snapshot_status(config: StreamConfig, json: bool) -> anyhow::Result<()> {
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

pub(crate) async fn backfill(
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
        if let Err(e) = cdc_sync::source::schema::load(&pool, db, t).await {
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
