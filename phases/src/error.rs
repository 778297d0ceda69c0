//! What can go wrong with the declaration, a phase change or the phase store, each a typed
//! error naming what to fix.

use crate::phase::Phase;

/// Errors of the phases library.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("domain declaration {path}: {reason}")]
    Declaration { path: String, reason: String },
    #[error("controller config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("no domain {name:?}; declared: {}", known.join(", "))]
    UnknownDomain { name: String, known: Vec<String> },
    #[error("{domain} is already {phase}")]
    NoChange { domain: String, phase: Phase },
    #[error("{domain} cannot go from {from} to {to}: the next step is {next}")]
    Skip {
        domain: String,
        from: Phase,
        to: Phase,
        next: String,
    },
    #[error("{domain} is decommissioned: its monolith routes are gone, there is no way back")]
    Final { domain: String },
    #[error("a canary percentage is 1 to 99, not {0}")]
    Percent(u32),
    #[error(
        "unknown phase {0:?}; phases: monolith, backfilling, verified, shadow, canary N%, service-primary, decommissioned"
    )]
    UnknownPhase(String),
    #[error("{domain} changed meanwhile (now {now}); read the status and try again")]
    Conflict { domain: String, now: Phase },
    #[error("the controller lease is held by {holder} until {until}")]
    LeaseHeld { holder: String, until: String },
    #[error("{domain} cannot go to {to}: {failures} (use --force to override, audited)")]
    Gates {
        domain: String,
        to: Phase,
        failures: String,
    },
    #[error("moving a domain needs the operator role; {who} is a {role}")]
    Forbidden { who: String, role: String },
    #[error("{0}")]
    Direction(String),
    #[error("{domain} did not move to {to}: {reason}")]
    Action {
        domain: String,
        to: Phase,
        reason: String,
    },
    #[error("escrow of {domain}'s stock: {reason}")]
    Escrow { domain: String, reason: String },
    #[error("the proxy's flags: {0}")]
    Flags(String),
    #[error("phase store: {0}")]
    Store(#[from] mysql_async::Error),
}
