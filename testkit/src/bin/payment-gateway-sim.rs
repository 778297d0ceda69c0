//! `payment-gateway-sim`: the payment gateway simulator (`testkit::payment_sim`) on an address,
//! for the dev stack; Ctrl-C stops it.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "payment-gateway-sim",
    about = "A payment gateway simulator over HTTP"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("payment-gateway-sim listening on {}", args.listen);
    axum::serve(listener, testkit::payment_sim::router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
