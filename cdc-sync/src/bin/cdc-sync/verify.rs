//! `cdc-sync verify`: compares a table on both sides and, with `--repair`, rewrites what differs;
//! the exit code says clean (0), differing (1) or failed (2).

use crate::backfill::rows_bar;
use crate::mapping;
use cdc_sync::config::StreamConfig;

pub(crate) async fn verify(
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
        stream: config.name.clone(),
        offsets_db: config.offsets_db.clone(),
        mode: config.mode,
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
