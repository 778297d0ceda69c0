//! `smtp-sink`: an SMTP server that accepts every message and prints it (the dev stack's mail
//! relay, so that notification-service's e-mail can be read in its log); Ctrl-C stops it.

use clap::Parser;

#[derive(Parser)]
#[command(name = "smtp-sink", about = "Accepts every e-mail and prints it")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2525")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let sink = testkit::smtp_sink::SmtpSink::start_on(args.listen).await?;
    eprintln!("smtp-sink listening on {}", args.listen);
    let mut shown = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        for m in sink.messages().into_iter().skip(shown) {
            eprintln!(
                "--- mail from {} to {}\n{}",
                m.from,
                m.to.join(", "),
                m.data
            );
            shown += 1;
        }
    }
}
