//! The `notification-service` binary: `serve` (the default) runs the API and the delivery loop;
//! `migrate` applies the schema.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use notification_service::Config;

#[derive(Parser)]
#[command(
    name = "notification-service",
    version,
    about = "The extracted notification service"
)]
struct Cli {
    /// TOML config file (defaults apply when absent; NOTIFICATION_SVC_* variables override).
    #[arg(long, global = true, env = "NOTIFICATION_SVC_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and send messages (the default).
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
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let state = notification_service::prepare(config).await?;
            service_kit::http::serve(
                listen,
                "notification-service",
                notification_service::app(state),
            )
            .await
            .with_context(|| format!("serving on {listen}"))
        }
        Command::Migrate => {
            config
                .server
                .open_database(notification_service::app::MIGRATIONS)
                .await?;
            Ok(())
        }
    }
}
