//! The `order-service` binary: `serve` (the default) runs the API and the saga recovery loop;
//! `migrate` applies the schema.

use clap::Parser;
use service_kit::cli::{Command, Common};

#[derive(Parser)]
#[command(name = "order-service", version, about = "The extracted order service")]
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
        "order-service",
        &cli.common,
        cli.command,
        order_service::prepare,
        order_service::app,
    )
    .await
}
