//! `strangler-drill`: against a running dev stack (`./dev up`), shoppers load the proxy the whole
//! time while each domain goes monolith → … → service-primary and back with the phase
//! controller, cdc-sync and the domain's service killed with SIGKILL on the way; then every
//! acknowledged write must be on both sides, verify clean, and no idempotent request a 5xx.

mod checks;
mod load;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use phases::{
    Controller, ControllerConfig, Declaration, Phase, PhaseError, PhaseStore, Request, Way,
};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "strangler-drill",
    about = "Moves domains back and forth under load with faults, then checks nothing was lost"
)]
struct Args {
    /// The dev stack's state folder (its `stack.json`).
    #[arg(long, default_value = ".dev-stack")]
    stack: PathBuf,
    /// Domains to move, in order.
    #[arg(long = "domain", default_values_t = ["users".to_string(), "orders".to_string()])]
    domains: Vec<String>,
    /// Concurrent shoppers.
    #[arg(long, default_value_t = 6)]
    workers: u32,
    /// Pause between one shopper's requests, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// Load kept on each phase before the next move, in seconds.
    #[arg(long, default_value_t = 5)]
    dwell_secs: u64,
    /// Longest wait for a move's gates to pass, in seconds.
    #[arg(long, default_value_t = 180)]
    gate_timeout_secs: u64,
    /// A controller config to use instead of the stack's (other gate bounds).
    #[arg(long)]
    controller_config: Option<PathBuf>,
    /// Where to write the results (Markdown).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Domains whose canary also takes writes (write-canary 10% → 50% → service-primary and
    /// back through write-canary 50%), the stack's controller keeping the stock escrow
    /// rebalanced meanwhile.
    #[arg(long = "write-canary", default_values_t = ["orders".to_string()])]
    write_canary: Vec<String>,
}

/// What `strangler-dev` says about the stack it runs.
#[derive(Debug, Deserialize)]
struct Stack {
    proxy: String,
    /// The phase controller's API (`strangler serve`), which also keeps the escrow.
    controller: String,
    strangler_db: String,
    monolith_db: String,
    services_db: String,
    controller_config: PathBuf,
    domains: PathBuf,
    to_services_config: PathBuf,
    pids: std::collections::BTreeMap<String, PathBuf>,
}

/// One move the drill made.
#[derive(Debug, Clone, Serialize)]
struct MoveRecord {
    domain: String,
    from: String,
    to: String,
    /// From the first try to the move, gates' refusals included.
    took_ms: u64,
    /// Gate refusals before it passed.
    refusals: u32,
    last_refusal: Option<String>,
    paused_ms: Option<u64>,
    held_writes: Option<i64>,
}

/// A write canary's figures after a move: what the stock escrow refused, open conflicts.
#[derive(Debug, Clone, Serialize)]
struct WriteFigures {
    domain: String,
    phase: String,
    taken: i64,
    refused: i64,
    open_conflicts: u64,
    rebalanced_units: i64,
}

/// A fault the drill caused.
#[derive(Debug, Clone, Serialize)]
struct Fault {
    process: String,
    during: String,
    killed_pid: u32,
    back_after_ms: u64,
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `kill -9` the process, then waits until the stack's supervisor has started it again.
async fn kill_and_wait(stack: &Stack, process: &str, during: &str) -> Result<Fault, String> {
    let pidfile = stack
        .pids
        .get(process)
        .ok_or(format!("the stack names no process {process}"))?;
    let pid = read_pid(pidfile).ok_or(format!("no pid in {}", pidfile.display()))?;
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("kill -9 {pid} ({process}) failed"));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(new) = read_pid(pidfile)
            && new != pid
            && alive(new)
        {
            return Ok(Fault {
                process: process.into(),
                during: during.into(),
                killed_pid: pid,
                back_after_ms: started.elapsed().as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{process} was not restarted within 60 s after kill -9"
    ))
}

struct Drill {
    args: Args,
    stack: Stack,
    controller: Controller,
    moves: Vec<MoveRecord>,
    faults: Vec<Fault>,
    /// How long each domain's backfill took, in ms (the stream copies while the shoppers load).
    backfills: Vec<(String, u64)>,
    /// The write canaries' figures, after each move into or within one.
    writes: Vec<WriteFigures>,
}

impl Drill {
    /// Moves `domain` to `to`, retrying while gates refuse (the load keeps feeding them).
    async fn go(&mut self, domain: &str, way: Way, to: Phase) -> Result<(), String> {
        let started = Instant::now();
        let mut refusals = 0;
        let mut last_refusal = None;
        loop {
            let request = Request {
                domain,
                way,
                to: Some(to),
                canary_steps: &[],
                reason: "drill",
                force: false,
                caller: None,
            };
            match self.controller.run(&request).await {
                Ok(t) => {
                    eprintln!(
                        "drill: {domain} {} → {} after {} ms{}",
                        t.from,
                        t.to,
                        started.elapsed().as_millis(),
                        t.switch
                            .as_ref()
                            .map(|s| format!(" (writes paused {} ms)", s.paused_ms))
                            .unwrap_or_default()
                    );
                    self.moves.push(MoveRecord {
                        domain: domain.into(),
                        from: t.from.to_string(),
                        to: t.to.to_string(),
                        took_ms: started.elapsed().as_millis() as u64,
                        refusals,
                        last_refusal,
                        paused_ms: t.switch.as_ref().map(|s| s.paused_ms),
                        held_writes: t.switch.as_ref().map(|s| s.released_writes),
                    });
                    return Ok(());
                }
                // Gates not yet met, an action that may succeed next time, or another controller
                // (the proxy's auto-rollback) moving meanwhile.
                Err(
                    e @ (PhaseError::Gates { .. }
                    | PhaseError::Action { .. }
                    | PhaseError::LeaseHeld { .. }),
                ) => {
                    refusals += 1;
                    let message = e.to_string();
                    if started.elapsed() > Duration::from_secs(self.args.gate_timeout_secs) {
                        return Err(format!(
                            "{domain} never reached {to} in {} s: {message}",
                            self.args.gate_timeout_secs
                        ));
                    }
                    if refusals == 1 || refusals % 10 == 0 {
                        eprintln!("drill: {domain} → {to} not yet: {message}");
                    }
                    last_refusal = Some(message);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // An auto-rollback (the proxy asking the controller) got there first.
                Err(e @ (PhaseError::Direction(_) | PhaseError::NoChange { .. }))
                    if way == Way::Rollback =>
                {
                    eprintln!("drill: {domain} → {to}: {e} (rolled back already)");
                    self.moves.push(MoveRecord {
                        domain: domain.into(),
                        from: "(rolled back by the proxy's auto-rollback)".into(),
                        to: to.to_string(),
                        took_ms: started.elapsed().as_millis() as u64,
                        refusals,
                        last_refusal: Some(e.to_string()),
                        paused_ms: None,
                        held_writes: None,
                    });
                    return Ok(());
                }
                Err(e) => return Err(format!("{domain} → {to}: {e}")),
            }
        }
    }

    async fn dwell(&self) {
        tokio::time::sleep(Duration::from_secs(self.args.dwell_secs)).await;
    }

    /// Waits until the stream has backfilled every table of the domain.
    async fn backfilled(&self, domain: &str) -> Result<(), String> {
        let config = cdc_sync::config::StreamConfig::load(&self.stack.to_services_config)?;
        let decl = &self.controller.decl;
        let started = Instant::now();
        for m in decl.mappings(phases::Direction::MonolithToServices, &[domain]) {
            loop {
                let p = cdc_sync::backfill::progress(&config, &m.source)
                    .await
                    .map_err(|e| e.to_string())?;
                match p.as_ref().map(|p| p.status.as_str()) {
                    Some("done") => break,
                    Some("failed") => {
                        return Err(format!("the backfill of {} failed: {p:?}", m.source));
                    }
                    _ if started.elapsed()
                        > Duration::from_secs(self.args.gate_timeout_secs * 10) =>
                    {
                        return Err(format!(
                            "the backfill of {} did not finish: {p:?}",
                            m.source
                        ));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        Ok(())
    }

    /// The domain there and back, with a cdc-sync kill on the canary and a kill of the domain's
    /// service while it owns the writes.
    async fn move_domain(&mut self, domain: &str) -> Result<(), String> {
        let service = match domain {
            "users" => "user-service",
            "orders" => "order-service",
            "products" => "product-service",
            other => return Err(format!("the drill knows no service for {other}")),
        };
        self.go(domain, Way::Advance, Phase::Backfilling).await?;
        let started = Instant::now();
        self.backfilled(domain).await?;
        self.backfills
            .push((domain.to_string(), started.elapsed().as_millis() as u64));
        self.go(domain, Way::Advance, Phase::Verified).await?;
        self.go(domain, Way::Advance, Phase::Shadow).await?;
        self.dwell().await;
        self.go(domain, Way::Advance, Phase::Canary { percent: 10 })
            .await?;
        let fault = kill_and_wait(&self.stack, "cdc-sync", &format!("{domain} canary 10%")).await?;
        self.faults.push(fault);
        self.dwell().await;
        let writes = self.args.write_canary.iter().any(|d| d == domain);
        if writes {
            self.stock_copied(domain).await?;
            // Both sides take the canary users' writes: 10%, 50%, then all of them.
            for percent in [10, 50] {
                self.write_canary(domain, Way::Advance, percent).await?;
            }
        } else {
            self.go(domain, Way::Advance, Phase::Canary { percent: 50 })
                .await?;
            self.dwell().await;
        }
        self.go(domain, Way::Advance, Phase::ServicePrimary).await?;
        self.dwell().await;
        let fault =
            kill_and_wait(&self.stack, service, &format!("{domain} service-primary")).await?;
        self.faults.push(fault);
        self.dwell().await;
        if writes {
            // Back through the write canary: half the users' writes return to the monolith.
            self.write_canary(domain, Way::Rollback, 50).await?;
        }
        self.go(domain, Way::Rollback, Phase::Monolith).await?;
        self.dwell().await;
        Ok(())
    }

    /// The stock a write canary of `domain` sells from has a whole copy on the service side:
    /// the escrow domain (products for orders) is backfilled and verified first.
    async fn stock_copied(&mut self, domain: &str) -> Result<(), String> {
        let decl = &self.controller.decl;
        let d = decl.domain(domain).map_err(|e| e.to_string())?;
        let Some(owner) = decl.escrow_domain(d).map(|o| o.name.clone()) else {
            return Ok(());
        };
        if owner == domain {
            return Ok(());
        }
        let state = self
            .controller
            .store()
            .states(&[owner.as_str()])
            .await
            .map_err(|e| e.to_string())?
            .remove(0);
        if state.phase == Phase::Monolith {
            self.go(&owner, Way::Advance, Phase::Backfilling).await?;
            let started = Instant::now();
            self.backfilled(&owner).await?;
            self.backfills
                .push((owner.clone(), started.elapsed().as_millis() as u64));
            self.go(&owner, Way::Advance, Phase::Verified).await?;
        }
        Ok(())
    }

    /// Moves `domain` into a write canary of `percent`, dwells there (the stack's controller
    /// keeps the escrow following the sales), and records its figures.
    async fn write_canary(&mut self, domain: &str, way: Way, percent: u8) -> Result<(), String> {
        let to = Phase::write_canary(u32::from(percent)).map_err(|e| e.to_string())?;
        self.go(domain, way, to).await?;
        let now = self
            .controller
            .store()
            .states(&[domain])
            .await
            .map_err(|e| e.to_string())?
            .remove(0)
            .phase;
        if now != to {
            // An auto-rollback took the domain elsewhere meanwhile.
            return Ok(());
        }
        self.dwell().await;
        let figures = self.write_figures(domain, &to.to_string()).await?;
        self.writes.push(figures);
        Ok(())
    }

    /// The escrow's tally and the open conflicts on the domain's tables, now.
    async fn write_figures(&self, domain: &str, phase: &str) -> Result<WriteFigures, String> {
        let decl = &self.controller.decl;
        let d = decl.domain(domain).map_err(|e| e.to_string())?;
        let tally = match decl.escrow_domain(d) {
            Some(owner) => {
                let c = &self.controller.config;
                let (_, m, s) =
                    phases::escrow::sides(decl, owner, &c.monolith_url, &c.services_url)?;
                phases::escrow::tally(&m, &s).await?
            }
            None => phases::escrow::Tally::default(),
        };
        let open_conflicts = checks::open_conflicts(self).await?;
        Ok(WriteFigures {
            domain: domain.into(),
            phase: phase.into(),
            taken: tally.taken,
            refused: tally.refused,
            open_conflicts,
            rebalanced_units: rebalanced_units(&self.stack.controller).await?,
        })
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let stack_file = args.stack.join("stack.json");
    let stack: Stack = serde_json::from_str(
        &std::fs::read_to_string(&stack_file)
            .map_err(|e| format!("{}: {e} (is the dev stack up?)", stack_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", stack_file.display()))?;
    let decl = Declaration::load(&stack.domains).map_err(|e| e.to_string())?;
    let config_path = args
        .controller_config
        .clone()
        .unwrap_or_else(|| stack.controller_config.clone());
    let config = ControllerConfig::load(&config_path).map_err(|e| e.to_string())?;
    let store = PhaseStore::open(&stack.strangler_db)
        .await
        .map_err(|e| e.to_string())?;
    for d in &args.domains {
        decl.domain(d).map_err(|e| e.to_string())?;
    }
    let users_before = checks::count(&stack.monolith_db, "shop.users").await?;
    let orders_before = checks::count(&stack.monolith_db, "shop.orders").await?;
    let products = checks::count(&stack.monolith_db, "shop.products").await?;

    let ledger = Arc::new(Mutex::new(load::Ledger::default()));
    let running = Arc::new(AtomicBool::new(true));
    let run_tag = format!("{}", std::process::id());
    let workers = load::start(
        load::Shoppers {
            proxy: stack.proxy.clone(),
            workers: args.workers,
            pace: Duration::from_millis(args.pace_ms),
            run: run_tag.clone(),
            products: products.clamp(1, 200),
        },
        ledger.clone(),
        running.clone(),
    );
    let domains = args.domains.clone();
    let mut drill = Drill {
        args,
        stack,
        controller: Controller::new(config, decl, store),
        moves: Vec::new(),
        faults: Vec::new(),
        backfills: Vec::new(),
        writes: Vec::new(),
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    for d in &domains {
        if let Err(e) = drill.move_domain(d).await {
            failures.push(e);
            break;
        }
    }
    running.store(false, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Everything acknowledged must be on both sides once the streams have caught up.
    let ledger = Arc::try_unwrap(ledger)
        .map_err(|_| "workers still hold the ledger")?
        .into_inner()
        .map_err(|e| e.to_string())?;
    let found = checks::check(&drill, &domains, &ledger, &run_tag).await;
    failures.extend(found.failures.iter().cloned());

    let report = report(
        &drill,
        &ledger,
        &found,
        seconds,
        users_before,
        orders_before,
        &failures,
    );
    print!("{report}");
    if let Some(path) = &drill.args.report {
        std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(failures.is_empty())
}

/// While a write canary runs, moves escrow units every second toward the canary's share for
/// products a side holds fewer than 3 units of (`strangler escrow rebalance --watch`'s work).
/// The stock units the controller's escrow upkeep has moved so far, from its `/metrics`.
async fn rebalanced_units(controller: &str) -> Result<i64, String> {
    let text = reqwest::get(format!("{controller}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("the controller's metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("the controller's metrics: {e}"))?;
    Ok(testkit::prometheus::sum(&text, "strangler_escrow_rebalanced_units_total") as i64)
}

/// The proxy's auto-rollbacks during the drill, from its log: when, which route, why.
fn auto_rollbacks(stack: &Stack) -> Vec<String> {
    let Some(dir) = stack.pids.values().next().and_then(|p| p.parent()) else {
        return Vec::new();
    };
    let log = std::fs::read_to_string(dir.join("logs/strangler-proxy.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("auto-rollback: route burned its SLO"))
        })
        .map(|v| {
            format!(
                "{} {}: {}",
                v["timestamp"].as_str().unwrap_or("?"),
                v["fields"]["route"].as_str().unwrap_or("?"),
                v["fields"]["reason"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn report(
    drill: &Drill,
    ledger: &load::Ledger,
    found: &checks::Found,
    seconds: f64,
    users: u64,
    orders: u64,
    failures: &[String],
) -> String {
    use std::fmt::Write as _;
    let mut r = String::new();
    let _ = writeln!(r, "# Migration drill\n");
    let _ = writeln!(
        r,
        "Dataset: {users} users, {orders} orders at the start. {} shoppers, one request every {} ms each; {:.0} s in all. Domains: {}.\n",
        drill.args.workers,
        drill.args.pace_ms,
        seconds,
        drill
            .moves
            .iter()
            .map(|m| m.domain.as_str())
            .fold(Vec::<&str>::new(), |mut v, d| {
                if !v.contains(&d) {
                    v.push(d);
                }
                v
            })
            .join(", ")
    );
    let _ = writeln!(r, "## Moves\n");
    let _ = writeln!(
        r,
        "| domain | move | took (ms) | gate refusals | writes paused (ms) | writes held |"
    );
    let _ = writeln!(r, "|---|---|---:|---:|---:|---:|");
    for m in &drill.moves {
        let _ = writeln!(
            r,
            "| {} | {} → {} | {} | {} | {} | {} |",
            m.domain,
            m.from,
            m.to,
            m.took_ms,
            m.refusals,
            m.paused_ms.map_or("-".into(), |v| v.to_string()),
            m.held_writes.map_or("-".into(), |v| v.to_string())
        );
    }
    for (domain, ms) in &drill.backfills {
        let _ = writeln!(
            r,
            "\nBackfill of the {domain} tables (between backfilling and verified): {:.1} s.",
            *ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        r,
        "\n`took` runs from the first try to the move: gate refusals while the load fed the gates, \
         and the fresh verify of every table before `verified` and `service-primary`."
    );
    if !drill.writes.is_empty() {
        let _ = writeln!(r, "\n## Write canary\n");
        let _ = writeln!(
            r,
            "| domain | phase | order lines sold from the escrow | refused (other side held the stock) | refusal rate | open conflicts | units rebalanced so far |"
        );
        let _ = writeln!(r, "|---|---|---:|---:|---:|---:|---:|");
        for w in &drill.writes {
            let asked = w.taken + w.refused;
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {:.2}% | {} | {} |",
                w.domain,
                w.phase,
                w.taken,
                w.refused,
                if asked > 0 {
                    w.refused as f64 * 100.0 / asked as f64
                } else {
                    0.0
                },
                w.open_conflicts,
                w.rebalanced_units
            );
        }
        let _ = writeln!(
            r,
            "\nFigures after each dwell in the phase, counted from the escrow split (tallies per side in `stock_escrow`). Pauses per switch are in the moves above."
        );
    }
    let rollbacks = auto_rollbacks(&drill.stack);
    if !rollbacks.is_empty() {
        let _ = writeln!(r, "\n## Auto-rollbacks by the proxy\n");
        for line in &rollbacks {
            let _ = writeln!(r, "- {line}");
        }
    }
    let _ = writeln!(r, "\n## Faults\n");
    for f in &drill.faults {
        let _ = writeln!(
            r,
            "- `kill -9` {} (pid {}) during {}: restarted after {} ms",
            f.process, f.killed_pid, f.during, f.back_after_ms
        );
    }
    let _ = writeln!(r, "\n## Load\n");
    let _ = writeln!(
        r,
        "| request | sent | ok | 4xx | 5xx | no answer | error statuses |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---|");
    for (kind, c) in &ledger.counts {
        let statuses: Vec<String> = c.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        let _ = writeln!(
            r,
            "| {}{} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            if kind.read_only() { " (read)" } else { "" },
            c.sent,
            c.ok,
            c.client_errors,
            c.server_errors,
            c.transport_errors,
            statuses.join(" ")
        );
    }
    let _ = writeln!(r, "\n## Checks\n");
    for line in &found.passed {
        let _ = writeln!(r, "- pass: {line}");
    }
    for line in failures {
        let _ = writeln!(r, "- FAIL: {line}");
    }
    let _ = writeln!(
        r,
        "\nWrites answered with an error (the client was told): {}.",
        ledger.failed_writes.len()
    );
    r
}
