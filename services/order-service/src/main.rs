//! The `order-service` binary: `serve` (the default) runs the API and the saga recovery loop;
//! `migrate` applies the schema.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use order_service::Config;

#[derive(Parser)]
#[command(name = "order-service", version, about = "The extracted order service")]
struct Cli {
    /// TOML config file (defaults apply when absent; ORDER_SVC_* variables override).
    #[arg(long, global = true, env = "ORDER_SVC_CONFIG")]
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
    let listen = config.server.listen;
    let state = order_service::prepare(config).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            service_kit::http::serve(listen, "order-service", order_service::app(state))
                .await
                .with_context(|| format!("serving on {listen}"))
        }
        Command::Migrate => Ok(()),
    }
}
