//! `cdc-sync tail`: prints change events from now on as Debezium JSON lines, applying nothing.

use cdc_sync::config::StreamConfig;

pub(crate) async fn tail(
    config: StreamConfig,
    with_schema: bool,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&config.source_url)?);
    let start =
        cdc_sync::source::binlog::BinlogSource::current_position(&pool, config.mode).await?;
    let mut source = cdc_sync::source::binlog::BinlogSource::for_stream(&config);
    source.reader_server_id += 1;
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
