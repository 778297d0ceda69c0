//! `cdc-sync check-source`: the source server's binlog settings and the stream user's grants,
//! one line per problem.

use cdc_sync::config::StreamConfig;

pub(crate) async fn check_source(config: StreamConfig, json: bool) -> anyhow::Result<()> {
    let report = match cdc_sync::check::check_source(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: checking {}: {e}", config.name);
            std::process::exit(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.problems.is_empty() {
        println!("{}: source settings and grants OK", report.server);
    } else {
        for p in &report.problems {
            println!("problem: {}", p.message);
        }
        println!(
            "{}: {} problem(s); the stream would stop or lose changes",
            report.server,
            report.problems.len()
        );
    }
    std::process::exit(i32::from(!report.problems.is_empty()));
}
