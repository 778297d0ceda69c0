//! `cdc-sync pause|resume|retire`: sets the stream's control rows, which the running stream
//! follows.

use cdc_sync::config::StreamConfig;
use cdc_sync::control::{Control, Desired};

pub(crate) async fn set(
    config: StreamConfig,
    desired: Desired,
    actor: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let actor = who(actor, reason)?;
    let control = Control::new(&config)?;
    control.set(desired, &actor, reason).await?;
    let state = control.state().await?;
    println!(
        "{}: {} (by {}: {})",
        config.name,
        serde_json::to_value(state.desired)?.as_str().unwrap_or("?"),
        state.changed_by,
        state.reason
    );
    Ok(())
}

pub(crate) async fn retire(
    config: StreamConfig,
    table: &str,
    actor: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let actor = who(actor, reason)?;
    let control = Control::new(&config)?;
    control.retire(table, &actor, reason).await?;
    let state = control.state().await?;
    println!(
        "{}: retired {} (retired now: {})",
        config.name,
        table,
        state.retired.join(", ")
    );
    Ok(())
}

/// The actor (default: the login name), once `reason` says why.
pub(crate) fn who(actor: Option<String>, reason: &str) -> anyhow::Result<String> {
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why");
    }
    Ok(actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into()))
}
