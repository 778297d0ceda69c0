//! `strangler`: the migration's CLI. `domains routes|streams` render the proxy's routes and
//! cdc-sync's table mappings from the one declaration; `phase status|plan|history` show where
//! each domain stands, the moves to a target with their gates, and the audit trail.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use phases::{Declaration, Direction, Phase, PhaseError, PhaseStore};

#[derive(Parser, Debug)]
#[command(
    name = "strangler",
    about = "Moves the shop's domains between monolith and services"
)]
struct Cli {
    /// The declaration of the domains.
    #[arg(
        long,
        env = "STRANGLER_DOMAINS",
        default_value = "phases/config/shop-domains.toml"
    )]
    domains: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What the declaration renders.
    Domains {
        #[command(subcommand)]
        what: DomainsCommand,
    },
    /// Where domains stand and how they move.
    Phase {
        /// The `strangler` database (flags, phases, audit).
        #[arg(long, env = "STRANGLER_DATABASE_URL")]
        database_url: String,
        #[command(subcommand)]
        what: PhaseCommand,
    },
}

#[derive(Subcommand, Debug)]
enum DomainsCommand {
    /// strangler-proxy's `[[routes]]` (strangler-proxy/config/shop-routes.toml).
    Routes,
    /// cdc-sync's `[[tables]]` for a stream flowing one way.
    Streams {
        #[arg(long, value_enum)]
        direction: Flow,
        /// Only these domains (all when absent).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Flow {
    MonolithToServices,
    ServicesToMonolith,
}

#[derive(Subcommand, Debug)]
enum PhaseCommand {
    /// Every domain's phase, owner, replication direction and route mode.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The moves from the domain's phase to `--to` (default service-primary), with their gates.
    Plan {
        domain: String,
        #[arg(long, default_value = "service-primary")]
        to: String,
        /// Canary percentages to pass through on the way.
        #[arg(long, value_delimiter = ',', default_value = "10,50")]
        canary_steps: Vec<u8>,
        #[arg(long)]
        json: bool,
    },
    /// The domain's audited moves, newest first.
    History {
        domain: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let decl = match Declaration::load(&cli.domains) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Domains { what } => {
            domains(&decl, what);
            Ok(())
        }
        Command::Phase { database_url, what } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(phase(&decl, &database_url, what)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (PhaseError::Store(_) | PhaseError::LeaseHeld { .. })) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn domains(decl: &Declaration, what: DomainsCommand) {
    match what {
        DomainsCommand::Routes => print!("{}", decl.proxy_routes_toml()),
        DomainsCommand::Streams { direction, domains } => {
            let direction = match direction {
                Flow::MonolithToServices => Direction::MonolithToServices,
                Flow::ServicesToMonolith => Direction::ServicesToMonolith,
            };
            let names: Vec<&str> = domains.iter().map(String::as_str).collect();
            print!("{}", decl.cdc_tables_toml(direction, &names));
        }
    }
}

async fn phase(decl: &Declaration, url: &str, what: PhaseCommand) -> Result<(), PhaseError> {
    let store = PhaseStore::open(url).await?;
    let names: Vec<&str> = decl.domains.iter().map(|d| d.name.as_str()).collect();
    match what {
        PhaseCommand::Status { json } => {
            let states = store.states(&names).await?;
            if json {
                let rows: Vec<serde_json::Value> = states
                    .iter()
                    .map(|s| {
                        let e = s.phase.effect();
                        serde_json::json!({
                            "domain": s.domain, "phase": s.phase, "version": s.version,
                            "owner": e.owner, "replication": e.replication,
                            "route_mode": e.route_mode, "reads_only": e.reads_only,
                            "changed_at": s.changed_at, "changed_by": s.changed_by,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
            } else {
                println!(
                    "{:<14} {:<16} {:<9} {:<20} {:<26} CHANGED",
                    "DOMAIN", "PHASE", "OWNER", "REPLICATION", "ROUTES"
                );
                for s in &states {
                    let e = s.phase.effect();
                    let routes = match e.route_mode {
                        flags::RouteMode::Canary { percent } => {
                            format!("canary {percent}% (reads)")
                        }
                        other => serde_json::to_value(other).expect("JSON")["mode"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string(),
                    };
                    let changed = if s.changed_at.is_empty() {
                        "never".to_string()
                    } else {
                        format!("{} by {}", s.changed_at, s.changed_by)
                    };
                    println!(
                        "{:<14} {:<16} {:<9} {:<20} {:<26} {changed}",
                        s.domain,
                        s.phase.to_string(),
                        serde_json::to_value(e.owner)
                            .expect("JSON")
                            .as_str()
                            .unwrap_or("?"),
                        serde_json::to_value(e.replication)
                            .expect("JSON")
                            .as_str()
                            .unwrap_or("?"),
                        routes,
                    );
                }
            }
        }
        PhaseCommand::Plan {
            domain,
            to,
            canary_steps,
            json,
        } => {
            decl.domain(&domain)?;
            let to: Phase = to.parse()?;
            let state = store.states(&[domain.as_str()]).await?.remove(0);
            let steps = phases::plan(&domain, state.phase, to, &canary_steps)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "domain": domain, "from": state.phase, "to": to, "steps": steps,
                    }))
                    .expect("JSON")
                );
            } else {
                println!("{domain}: {} → {to}", state.phase);
                for (i, s) in steps.iter().enumerate() {
                    let gates: Vec<&str> = s.gates.iter().map(|g| g.name()).collect();
                    println!(
                        "  {}. {} → {}: owner {}, replication {}{}; gates: {}",
                        i + 1,
                        s.from,
                        s.to,
                        serde_json::to_value(s.effect.owner)
                            .expect("JSON")
                            .as_str()
                            .unwrap_or("?"),
                        serde_json::to_value(s.effect.replication)
                            .expect("JSON")
                            .as_str()
                            .unwrap_or("?"),
                        if s.effect.reads_only {
                            ", reads only"
                        } else {
                            ""
                        },
                        if gates.is_empty() {
                            "none".to_string()
                        } else {
                            gates.join(", ")
                        },
                    );
                }
            }
        }
        PhaseCommand::History {
            domain,
            limit,
            json,
        } => {
            decl.domain(&domain)?;
            let entries = store.history(&domain, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries).expect("JSON"));
            } else {
                for e in &entries {
                    println!(
                        "{} {} → {} by {}{}: {} (gates {})",
                        e.at,
                        e.from,
                        e.to,
                        e.actor,
                        if e.forced { " (forced)" } else { "" },
                        e.reason,
                        e.gates
                    );
                }
            }
        }
    }
    Ok(())
}
