//! The `product-service` binary: `serve` (the default) runs the API; `migrate` applies the schema.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use product_service::Config;

#[derive(Parser)]
#[command(
    name = "product-service",
    version,
    about = "The extracted product service"
)]
struct Cli {
    /// TOML config file (defaults apply when absent; PRODUCT_SVC_* variables override).
    #[arg(long, global = true, env = "PRODUCT_SVC_CONFIG")]
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
    if config.auth.internal_token == product_service::config::DEV_INTERNAL_TOKEN {
        tracing::warn!(
            "auth.internal_token is the development default; set PRODUCT_SVC_INTERNAL_TOKEN in production"
        );
    }
    let listen = config.server.listen;
    let state = product_service::prepare(config).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            service_kit::http::serve(listen, "product-service", product_service::app(state))
                .await
                .with_context(|| format!("serving on {listen}"))
        }
        Command::Migrate => Ok(()),
    }
}
