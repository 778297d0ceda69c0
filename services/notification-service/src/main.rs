//! The `notification-service` binary: `serve` (the default) runs the API and the delivery loop; `migrate`
//! applies the schema.

use clap::Parser;
use service_kit::cli::{Command, Common};

#[derive(Parser)]
#[command(
    name = "notification-service",
    version,
    about = "The extracted notification service"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    service_kit::cli::run(
        "notification-service",
        &cli.common,
        cli.command,
        notification_service::prepare,
        notification_service::app,
    )
    .await
}
