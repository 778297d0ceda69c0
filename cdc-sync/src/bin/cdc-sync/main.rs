//! The `cdc-sync` CLI: `stream` runs one direction with `/metrics` and `/healthz`; `status`
//! prints where each stream stands against its source; `backfill`, `snapshot-status`, `verify`
//! and `tail` work on its tables; `pause` and `resume` set its control row; `--check-config`
//! validates and exits. One module per command.

use std::path::PathBuf;

use cdc_sync::config::StreamConfig;
use clap::{Parser, Subcommand};

mod backfill;
mod check_source;
mod conflicts;
mod control;
mod server;
mod status;
mod tail;
mod verify;

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
    /// Check the source server's binlog settings and the stream user's grants; one line per
    /// problem; exit code 0 when none, 1 when some, 2 on errors.
    CheckSource {
        #[arg(long)]
        json: bool,
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
    /// Hold the stream at its committed offset (its control row; a running `stream` stops
    /// applying within a quarter second, and stays paused across restarts).
    Pause {
        /// Why, for the control row.
        #[arg(long)]
        reason: String,
        /// Who (default: the login name).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Let a paused stream run again from where it stopped.
    Resume {
        #[arg(long)]
        reason: String,
        #[arg(long)]
        actor: Option<String>,
    },
    /// Conflicts (rows changed on both sides) kept with both images, newest first: the open
    /// ones, or all with `--all`.
    Conflicts {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// Retire a source table from the stream for good (a decommissioned domain): the running
    /// stream restarts at its committed offset without it. There is no un-retire.
    Retire {
        /// The source table, as in the config (`db.table`).
        #[arg(long)]
        table: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConflictAction {
    /// Mark a conflict settled (after repairing the row by hand, or deciding the winner stands).
    Resolve {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        actor: Option<String>,
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
        None => server::stream(config, Default::default()).await,
        Some(Command::Stream { role }) => server::stream(config, role).await,
        Some(Command::CheckSource { json }) => check_source::check_source(config, json).await,
        Some(Command::Status { json }) => status::status(config, json).await,
        Some(Command::Tail { schema, limit }) => tail::tail(config, schema, limit).await,
        Some(Command::Pause { reason, actor }) => {
            control::set(config, cdc_sync::control::Desired::Paused, actor, &reason).await
        }
        Some(Command::Resume { reason, actor }) => {
            control::set(config, cdc_sync::control::Desired::Running, actor, &reason).await
        }
        Some(Command::Conflicts {
            all,
            limit,
            json,
            action,
        }) => match action {
            None => conflicts::show(config, all, limit, json).await,
            Some(ConflictAction::Resolve { id, reason, actor }) => {
                conflicts::settle(config, id, actor, &reason).await
            }
        },
        Some(Command::Retire {
            table,
            reason,
            actor,
        }) => control::retire(config, &table, actor, &reason).await,
        Some(Command::Backfill {
            table,
            chunk_size,
            max_rows_per_sec,
            max_lag,
            resume,
            parallel,
        }) => {
            backfill::backfill(
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
        Some(Command::SnapshotStatus { json }) => backfill::snapshot_status(config, json).await,
        Some(Command::Verify {
            table,
            chunk_size,
            repair,
            json,
        }) => verify::verify(config, &table, chunk_size, repair, json).await,
    }
}

/// The mapping `name` designates: source or target `db.table`, or a table name if unique.
pub(crate) fn mapping<'a>(
    config: &'a StreamConfig,
    name: &str,
) -> Result<&'a cdc_sync::model::mapping::TableMapping, String> {
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
