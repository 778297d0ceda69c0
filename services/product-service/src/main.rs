//! The `product-service` binary: `serve` (the default) runs the API; `migrate` applies the schema.

use clap::Parser;
use service_kit::cli::{Command, Common};

#[derive(Parser)]
#[command(
    name = "product-service",
    version,
    about = "The extracted product service"
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
        "product-service",
        &cli.common,
        cli.command,
        product_service::prepare,
        product_service::app,
    )
    .await
}
