//! The `legacy-monolith` binary: `serve` (the default) runs the shop API; `migrate` applies the
//! schema; `seed` fills the schema with deterministic demo or benchmark data.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use legacy_monolith::config::Config;
use legacy_monolith::seed::SeedOptions;

#[derive(Parser)]
#[command(
    name = "legacy-monolith",
    version,
    about = "The shop monolith that Strangler migrates away from"
)]
struct Cli {
    /// TOML config file (defaults apply when absent; SHOP_* variables override).
    #[arg(long, global = true, env = "SHOP_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the public API (the default).
    Serve,
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Fill an empty schema with deterministic data (bulk inserts; reports rows/s).
    Seed(SeedOptions),
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
            config.listen, config.database_url
        );
        return Ok(());
    }
    service_kit::http::init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            legacy_monolith::prepare(config).await?;
            Ok(())
        }
        Command::Seed(options) => {
            let state = legacy_monolith::prepare(config).await?;
            let report = legacy_monolith::seed::run(&state.pool, &options).await?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.jwt.secret == legacy_monolith::config::DEV_JWT_SECRET {
        tracing::warn!("jwt.secret is the development default; set SHOP_JWT_SECRET in production");
    }
    let listen = config.listen;
    let state = legacy_monolith::prepare(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "legacy monolith listening");
    axum::serve(listener, legacy_monolith::app(state))
        .with_graceful_shutdown(service_kit::http::shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
