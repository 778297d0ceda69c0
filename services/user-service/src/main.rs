//! The `user-service` binary: `serve` (the default) runs the API; `migrate` applies the schema;
//! `rotate-keys` publishes a new token key (it signs after `jwt.prepublish_secs`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use user_service::Config;

#[derive(Parser)]
#[command(name = "user-service", version, about = "The extracted user service")]
struct Cli {
    /// TOML config file (defaults apply when absent; USER_SVC_* variables override).
    #[arg(long, global = true, env = "USER_SVC_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!(
            "config OK: listen {} database {}",
            config.server.listen, config.server.database_url
        );
        return Ok(());
    }
    service_kit::http::init_logging(config.server.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            user_service::prepare(config).await?;
            Ok(())
        }
        Command::RotateKeys => {
            let state = user_service::prepare(config).await?;
            let kid = state.keys.rotate().await?;
            println!("new token key {kid}: published now, signing after jwt.prepublish_secs");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.jwt.legacy_secret == user_service::config::DEV_LEGACY_SECRET {
        tracing::warn!(
            "jwt.legacy_secret is the development default; set USER_SVC_JWT_LEGACY_SECRET in production"
        );
    }
    let listen = config.server.listen;
    let state = user_service::prepare(config).await?;
    service_kit::http::serve(listen, "user-service", user_service::app(state))
        .await
        .with_context(|| format!("serving on {listen}"))
}
