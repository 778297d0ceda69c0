//! `cdc-sync conflicts [resolve]`: the dead letters of conflicts (rows changed on both sides),
//! each with both images; an operator settles one and marks it resolved.

use cdc_sync::apply::conflicts::{list, resolve};
use cdc_sync::config::StreamConfig;

pub(crate) async fn show(
    config: StreamConfig,
    all: bool,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let records = list(&config, all, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!(
            "{}: no {}conflicts",
            config.name,
            if all { "" } else { "open " }
        );
        return Ok(());
    }
    for r in records {
        println!(
            "#{} {} {} key {} at {} ({}): {} won{}",
            r.id,
            r.target_table,
            r.op,
            r.row_key,
            r.source_offset,
            r.detected_at,
            r.winner,
            r.resolved_at
                .as_ref()
                .map(|at| format!(
                    "; resolved {at} by {}: {}",
                    r.resolved_by.as_deref().unwrap_or("?"),
                    r.resolution.as_deref().unwrap_or("")
                ))
                .unwrap_or_default()
        );
        println!("    source before: {}", r.source_before);
        println!("    source after:  {}", r.source_after);
        println!("    target row:    {}", r.target_row);
    }
    Ok(())
}

pub(crate) async fn settle(
    config: StreamConfig,
    id: u64,
    actor: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let actor = crate::control::who(actor, reason)?;
    if !resolve(&config, id, &actor, reason).await? {
        anyhow::bail!("no open conflict #{id} in stream {}", config.name);
    }
    println!(
        "{}: conflict #{id} resolved by {actor}: {reason}",
        config.name
    );
    Ok(())
}
