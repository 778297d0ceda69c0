//! Migration phases: the one declaration of the shop's domains (`domains`), what each phase of
//! a domain fixes and which moves and gates lead between them (`phase`, `plan`), and where the
//! phases, their audit trail and the controller's lease are kept (`store`); the ownership
//! switch that moves a domain's writes without losing one (`switch`); the gates measured on the
//! live system (`gates`, a write canary's in `writes`) and the controller that makes one gated
//! move (`controller`).

pub mod api;
pub mod config;
pub mod controller;
pub mod decommission;
pub mod domains;
pub mod error;
pub mod escrow;
pub mod gates;
pub mod phase;
pub mod plan;
pub mod proxies;
pub mod store;
pub mod switch;
pub mod writes;

pub use config::{Bounds, ControllerConfig, EscrowUpkeep, GateBounds};
pub use controller::{Caller, Controller, Preview, Request, Transition, Way};
pub use domains::{Declaration, Direction, Domain, Route, TableMapping};
pub use error::PhaseError;
pub use gates::GateResult;
pub use phase::{Effect, Gate, Owner, Phase, Replication, Side};
pub use plan::{Step, plan};
pub use store::{AuditEntry, DomainState, Move, PhaseStore};
pub use switch::{CaughtUp, Drain, Switch, SwitchError, SwitchReport, catch_up, switch};
