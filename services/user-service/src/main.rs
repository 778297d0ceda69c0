//! The `user-service` binary: `serve` (the default) runs the API; `migrate` applies the schema;
//! `rotate-keys` publishes a new token key (it signs after `jwt.prepublish_secs`).

use clap::{Parser, Subcommand};
use service_kit::cli::{Command, Common};

#[derive(Parser)]
#[command(name = "user-service", version, about = "The extracted user service")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Clone, Copy)]
enum Cmd {
    /// Serve the API (the default).
    Serve,
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Add a new Ed25519 token key; the current one retires when it starts signing.
    RotateKeys,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(Cmd::RotateKeys) => {
            let Some(config) = service_kit::cli::start(&cli.common) else {
                return Ok(());
            };
            let state = user_service::prepare(config).await?;
            let kid = state.keys.rotate().await?;
            println!("new token key {kid}: published now, signing after jwt.prepublish_secs");
            return Ok(());
        }
        Some(Cmd::Migrate) => Some(Command::Migrate),
        Some(Cmd::Serve) | None => Some(Command::Serve),
    };
    service_kit::cli::run(
        "user-service",
        &cli.common,
        command,
        user_service::prepare,
        user_service::app,
    )
    .await
}
