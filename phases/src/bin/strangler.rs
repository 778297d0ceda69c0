//! `strangler`: the migration's CLI. `domains routes|streams` render the proxy's routes and
//! cdc-sync's table mappings from the one declaration; `phase status|plan|history` show where
//! each domain stands, the moves to a target with their gates, and the audit trail;
//! `phase advance|rollback` make one gated move; `switch` moves only the writes; `serve` runs
//! the controller's API behind the proxies' `/admin/phases`.

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
    /// Move a domain's writes to the other side without losing one: hold them on every proxy
    /// replica, drain, wait until the old owner's stream applied everything, flip, release.
    Switch {
        domain: String,
        /// The new owner: `service` or `monolith`.
        #[arg(long, value_enum)]
        to: Side,
        /// The controller's config (proxies, servers, streams, bounds).
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// The controller's HTTP API, which the proxies' admin API forwards `/admin/phases…` to.
    Serve {
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
        /// The `strangler` database (flags, phases, audit).
        #[arg(long, env = "STRANGLER_DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value = "127.0.0.1:9600")]
        listen: std::net::SocketAddr,
        /// Canary percentages an advance from shadow or a canary steps through.
        #[arg(long, value_delimiter = ',', default_value = "10,50")]
        canary_steps: Vec<u8>,
    },
    /// Where domains stand and how they move.
    Phase {
        /// The `strangler` database (flags, phases, audit).
        #[arg(long, env = "STRANGLER_DATABASE_URL")]
        database_url: String,
        #[command(subcommand)]
        what: PhaseCommand,
    },
    /// The stock escrow of a write canary: each side sells only its share of every product.
    Escrow {
        #[command(subcommand)]
        what: EscrowCommand,
    },
}

#[derive(Subcommand, Debug)]
enum EscrowCommand {
    /// Splits every product's unheld stock between the sides (escrow rows first, so nothing
    /// oversells while the streams settle).
    Split {
        domain: String,
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
        /// The service's share, 0 to 1 (the canary's percentage / 100).
        #[arg(long)]
        service_share: f64,
        #[arg(long)]
        json: bool,
    },
    /// Moves escrow toward the share where a side runs low (every `--watch` seconds, or once).
    Rebalance {
        domain: String,
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        service_share: f64,
        /// Only products with fewer units than this on a side (0: every product off its share).
        #[arg(long, default_value_t = 0)]
        low: i64,
        #[arg(long)]
        watch: Option<u64>,
    },
    /// Each side's stock and escrow, and any product held beyond its stock.
    Status {
        domain: String,
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ends the escrow (one side owns the writes again).
    Clear {
        domain: String,
        #[arg(long, env = "STRANGLER_CONFIG")]
        config: PathBuf,
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

/// What every move takes.
#[derive(clap::Args, Debug)]
struct Act {
    /// The controller's config (proxies, servers, streams, bounds, gates).
    #[arg(long, env = "STRANGLER_CONFIG")]
    config: PathBuf,
    #[arg(long)]
    reason: String,
    /// Move although gates fail (operator role; audited as forced).
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Side {
    Service,
    Monolith,
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
        /// The proxy's flag table in the same database (its `[flags] table`).
        #[arg(long, default_value = "strangler_flags")]
        flag_table: String,
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
    /// Moves the domain one phase forward (to `--to`, or the next phase), once every gate of
    /// the move passes.
    Advance {
        domain: String,
        /// The target phase (`shadow`, `canary 25%`, …); by default the next one.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        act: Act,
        /// Canary percentages an advance from shadow or a canary steps through.
        #[arg(long, value_delimiter = ',', default_value = "10,50")]
        canary_steps: Vec<u8>,
    },
    /// Moves the domain back (to `--to`, by default `monolith`): writes the service owns are
    /// drained back to the monolith before it takes them again.
    Rollback {
        domain: String,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        act: Act,
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
        Command::Switch {
            domain,
            to,
            config,
            reason,
            json,
        } => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(switch(&decl, &domain, to, &config, &reason, json));
        }
        Command::Serve {
            config,
            database_url,
            listen,
            canary_steps,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(serve(decl, &config, &database_url, listen, canary_steps)),
        Command::Escrow { what } => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(escrow(&decl, what));
        }
        Command::Phase { database_url, what } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(phase(&decl, &database_url, what)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (PhaseError::Store(_)
            | PhaseError::LeaseHeld { .. }
            | PhaseError::Gates { .. }
            | PhaseError::Action { .. }),
        ) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `strangler escrow …`: exit 0, 1 when a database fails or a product is overcommitted, 2 for
/// bad arguments.
async fn escrow(decl: &Declaration, what: EscrowCommand) -> ExitCode {
    use phases::escrow;
    let (domain, config) = match &what {
        EscrowCommand::Split { domain, config, .. }
        | EscrowCommand::Rebalance { domain, config, .. }
        | EscrowCommand::Status { domain, config, .. }
        | EscrowCommand::Clear { domain, config } => (domain, config),
    };
    let fail = |e: &dyn std::fmt::Display, code: u8| {
        eprintln!("error: {e}");
        ExitCode::from(code)
    };
    let c = match phases::ControllerConfig::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let d = match decl.domain(domain) {
        Ok(d) => d,
        Err(e) => return fail(&e, 2),
    };
    let (e, m, s) = match escrow::sides(decl, d, &c.monolith_url, &c.services_url) {
        Ok(x) => x,
        Err(e) => return fail(&e, 2),
    };
    let show = |st: &escrow::Status, json: bool| {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(st).expect("serializable")
            );
        } else {
            let sum = |f: &escrow::SideFigures| f.escrow.values().sum::<i64>();
            println!(
                "{domain}: {} products; escrow monolith {} units, service {} units; stock {} units",
                st.monolith.stock.len(),
                sum(&st.monolith),
                sum(&st.service),
                st.monolith.stock.values().sum::<i64>()
            );
            if !st.overcommitted.is_empty() {
                println!("OVERCOMMITTED: {:?}", st.overcommitted);
            }
        }
    };
    let result = match what {
        EscrowCommand::Split {
            service_share,
            json,
            ..
        } => escrow::split(
            &e,
            &m,
            &s,
            service_share,
            std::time::Duration::from_secs(60),
        )
        .await
        .map(|st| {
            show(&st, json);
            st.overcommitted.is_empty()
        }),
        EscrowCommand::Rebalance {
            service_share,
            low,
            watch,
            ..
        } => loop {
            match escrow::rebalance(&m, &s, service_share, low).await {
                Ok(moved) => println!(
                    "{domain}: moved {} units to the service and {} to the monolith over {} products",
                    moved.to_service, moved.to_monolith, moved.products
                ),
                Err(e) => break Err(e),
            }
            match watch {
                Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await,
                None => break Ok(true),
            }
        },
        EscrowCommand::Status { json, .. } => escrow::status(&e, &m, &s).await.map(|st| {
            show(&st, json);
            st.overcommitted.is_empty()
        }),
        EscrowCommand::Clear { .. } => escrow::clear(&m, &s).await.map(|()| {
            println!("{domain}: escrow cleared on both sides");
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(&e, 1),
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

/// `strangler switch`: exit 0 switched, 1 aborted (previous state back), 2 bad input.
async fn switch(
    decl: &Declaration,
    domain: &str,
    to: Side,
    config: &std::path::Path,
    reason: &str,
    json: bool,
) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display, code: u8| {
        eprintln!("error: {e}");
        ExitCode::from(code)
    };
    let d = match decl.domain(domain) {
        Ok(d) => d,
        Err(e) => return fail(&e, 2),
    };
    let c = match phases::ControllerConfig::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    if reason.trim().is_empty() {
        return fail(&"--reason must say why", 2);
    }
    let (to_mode, old_owner, stream, target) = match to {
        Side::Service => (
            "service",
            &c.monolith_url,
            &c.to_services_stream,
            &c.services_url,
        ),
        Side::Monolith => (
            "monolith",
            &c.services_url,
            &c.to_monolith_stream,
            &c.monolith_url,
        ),
    };
    let plan = phases::Switch {
        flag: d.flag.clone(),
        route: d.routes[0].name.clone(),
        to_mode: match to {
            Side::Service => flags::RouteMode::Service,
            Side::Monolith => flags::RouteMode::Monolith,
        },
        proxies: c.proxies.clone(),
        admin_token: c.admin_token.clone(),
        old_owner_url: old_owner.clone(),
        stream: stream.clone(),
        stream_target_url: target.clone(),
        offsets_db: c.offsets_db.clone(),
        hold: c.bounds.hold(),
        drain: c.bounds.drain(),
        catch_up: c.bounds.catch_up(),
        actor: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
        reason: reason.into(),
    };
    match phases::switch(&plan).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
            } else {
                println!(
                    "{domain}: writes now go to the {to_mode}; writes paused {} ms ({} released), \
                     in flight drained after {} ms, {stream} applied past {} after {} ms",
                    report.paused_ms,
                    report.released_writes,
                    report.drained_ms,
                    report.mark,
                    report.caught_up_ms
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 1),
    }
}

/// A route mode as operators read it: `monolith`, `shadow`, `canary 10%`, `service`.
fn mode_text(mode: flags::RouteMode) -> String {
    mode.to_string()
}

/// A unit-like enum's serialized name (`kebab-case` owners and directions, route modes' `mode`).
fn text<T: serde::Serialize>(value: T) -> String {
    match serde_json::to_value(value).expect("JSON") {
        serde_json::Value::String(s) => s,
        serde_json::Value::Object(m) => m
            .get("mode")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string(),
        _ => "?".into(),
    }
}

async fn phase(decl: &Declaration, url: &str, what: PhaseCommand) -> Result<(), PhaseError> {
    let store = PhaseStore::open(url).await?;
    let names: Vec<&str> = decl.domains.iter().map(|d| d.name.as_str()).collect();
    match what {
        PhaseCommand::Status { json, flag_table } => {
            let states = store.states(&names).await?;
            let flag_keys: Vec<&str> = decl.domains.iter().map(|d| d.flag.as_str()).collect();
            let now = store.route_modes(&flag_table, &flag_keys).await?;
            // A flag moved outside the phases (stranglerctl, the page, an auto-rollback) is
            // shown, and said, so an operator never trusts a phase the routes do not follow.
            let drift: Vec<String> = states
                .iter()
                .zip(&now)
                .zip(&flag_keys)
                .filter_map(|((s, now), flag)| {
                    let fixed = s.phase.effect().route_mode;
                    let now = now.as_ref()?;
                    (*now != fixed).then(|| {
                        format!(
                            "warning: {}: the flag {flag} serves {} but the phase {} fixes {}",
                            s.domain,
                            mode_text(*now),
                            s.phase,
                            mode_text(fixed)
                        )
                    })
                })
                .collect();
            if json {
                let rows: Vec<serde_json::Value> = states
                    .iter()
                    .zip(&now)
                    .map(|(s, now)| {
                        let e = s.phase.effect();
                        serde_json::json!({
                            "domain": s.domain, "phase": s.phase, "version": s.version,
                            "owner": e.owner, "replication": e.replication,
                            "route_mode": e.route_mode, "reads_only": e.reads_only,
                            "route_mode_now": now,
                            "changed_at": s.changed_at, "changed_by": s.changed_by,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
            } else {
                println!(
                    "{:<14} {:<16} {:<9} {:<20} {:<20} {:<20} CHANGED",
                    "DOMAIN", "PHASE", "OWNER", "REPLICATION", "ROUTES", "ROUTES NOW"
                );
                for (s, now) in states.iter().zip(&now) {
                    let e = s.phase.effect();
                    let mut routes = mode_text(e.route_mode);
                    if e.reads_only {
                        routes.push_str(" (reads)");
                    }
                    let changed = if s.changed_at.is_empty() {
                        "never".to_string()
                    } else {
                        format!("{} by {}", s.changed_at, s.changed_by)
                    };
                    println!(
                        "{:<14} {:<16} {:<9} {:<20} {:<20} {:<20} {changed}",
                        s.domain,
                        s.phase.to_string(),
                        text(e.owner),
                        text(e.replication),
                        routes,
                        now.map_or_else(|| "-".to_string(), mode_text),
                    );
                }
            }
            for line in &drift {
                eprintln!("{line}");
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
                        text(s.effect.owner),
                        text(s.effect.replication),
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
        PhaseCommand::Advance {
            domain,
            to,
            act,
            canary_steps,
        } => {
            let to = to.map(|t| t.parse::<Phase>()).transpose()?;
            let request = phases::Request {
                domain: &domain,
                way: phases::Way::Advance,
                to,
                canary_steps: &canary_steps,
                reason: &act.reason,
                force: act.force,
                caller: None,
            };
            act_on(decl, store.clone(), &act, &request).await?;
        }
        PhaseCommand::Rollback { domain, to, act } => {
            let to = to.map(|t| t.parse::<Phase>()).transpose()?;
            let request = phases::Request {
                domain: &domain,
                way: phases::Way::Rollback,
                to,
                canary_steps: &[],
                reason: &act.reason,
                force: act.force,
                caller: None,
            };
            act_on(decl, store.clone(), &act, &request).await?;
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

/// `phase advance|rollback`: one gated move; exit 0 moved, 1 refused or failed (nothing
/// changed), 2 bad input.
async fn act_on(
    decl: &Declaration,
    store: PhaseStore,
    act: &Act,
    request: &phases::Request<'_>,
) -> Result<(), PhaseError> {
    let config = phases::ControllerConfig::load(&act.config)?;
    let controller = phases::Controller::new(config, decl.clone(), store);
    let t = controller.run(request).await?;
    if act.json {
        println!("{}", serde_json::to_string_pretty(&t).expect("JSON"));
        return Ok(());
    }
    println!(
        "{}: {} → {} by {}{}",
        t.domain,
        t.from,
        t.to,
        t.actor,
        if t.forced { " (FORCED)" } else { "" }
    );
    for g in &t.gates {
        println!("  {} {}", if g.passed { "pass" } else { "FAIL" }, g.message);
    }
    for a in &t.actions {
        println!("  did: {a}");
    }
    Ok(())
}

/// `strangler serve`: the controller's API until SIGTERM or Ctrl-C.
async fn serve(
    decl: Declaration,
    config: &std::path::Path,
    url: &str,
    listen: std::net::SocketAddr,
    canary_steps: Vec<u8>,
) -> Result<(), PhaseError> {
    let config = phases::ControllerConfig::load(config)?;
    let store = PhaseStore::open(url).await?;
    let token = config.api_token.clone();
    let api = phases::api::Api::new(
        phases::Controller::new(config, decl, store),
        token,
        canary_steps,
    );
    eprintln!("strangler serve: the controller API on http://{listen}");
    tokio::select! {
        r = phases::api::serve(api, listen) => r.map_err(|e| PhaseError::Direction(format!("serve: {e}"))),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
