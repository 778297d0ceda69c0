//! `cdc-sync status`: offset, lag and per-table counts of the stream, as a table or JSON.

use cdc_sync::config::StreamConfig;

/// Per table: events applied, age of the newest applied change, events/s over one second.
type TableStats = Vec<(String, u64, i64)>;

pub(crate) async fn table_stats(conn: &mut mysql_async::Conn, config: &StreamConfig) -> TableStats {
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

pub(crate) async fn status(config: StreamConfig, json: bool) -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable;
    let source = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.source_url)?);
    let target = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.target_url)?);
    let head =
        cdc_sync::source::binlog::BinlogSource::current_position(&source, config.mode).await?;
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
    // Conflicts not yet settled (`cdc-sync conflicts`), per target table.
    let open: Vec<(String, u64)> = conn
        .exec(
            format!(
                "SELECT target_table, COUNT(*) FROM `{}`.cdc_conflicts WHERE stream = ? AND resolved_at IS NULL GROUP BY target_table",
                config.offsets_db
            ),
            (&config.name,),
        )
        .await
        .unwrap_or_default();
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
                "open_conflicts": open.iter().find(|(n, _)| *n == t.target).map_or(0, |(_, c)| *c),
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
            "{:<32} {:<32} {:>10} {:>9} {:>12} {:>9}",
            "SOURCE", "TARGET", "EVENTS", "EVENTS/S", "LAST CHANGE", "CONFLICTS"
        );
        for t in &tables {
            println!(
                "{:<32} {:<32} {:>10} {:>9} {:>12} {:>9}",
                t["source"].as_str().unwrap_or(""),
                t["target"].as_str().unwrap_or(""),
                t["events_applied"],
                t["events_per_second"],
                t["last_change_age_seconds"]
                    .as_f64()
                    .map(|s| format!("{s:.1}s ago"))
                    .unwrap_or_else(|| "never".into()),
                t["open_conflicts"]
            );
        }
    }
    Ok(())
}
