//! A domain's migration phase, the moves allowed between phases, and what each phase fixes: the
//! mode of the domain's routes, who owns its writes and so which way its rows replicate, and the
//! gates a move into it must pass.

use std::fmt;
use std::str::FromStr;

use flags::RouteMode;
use serde::{Serialize, Serializer};

use crate::error::PhaseError;

/// Where a domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The monolith serves and owns everything; its rows stream to the service.
    Monolith,
    /// The service's copy is being filled from the monolith's tables.
    Backfilling,
    /// A clean verify says both copies are equal.
    Verified,
    /// The monolith answers; the service gets a copy of each read to compare.
    Shadow,
    /// `percent` of users' reads go to the service (sticky); the monolith keeps the writes.
    Canary { percent: u8 },
    /// `percent` of users' reads and writes go to the service (the same sticky buckets): each
    /// user's writes on one side only, both streams running, counters as deltas, stock in escrow.
    WriteCanary { percent: u8 },
    /// The service serves and owns the writes; its rows stream back to the monolith.
    ServicePrimary,
    /// The monolith's routes for the domain are gone and its tables read-only.
    Decommissioned,
}

/// Who owns a domain's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    Monolith,
    Service,
    /// Each user's writes on one side, by the domain flag's sticky bucket (a write canary).
    Split,
}

impl Owner {
    /// The sides whose writes the domain takes.
    pub fn sides(self) -> &'static [Side] {
        match self {
            Owner::Monolith => &[Side::Monolith],
            Owner::Service => &[Side::Service],
            Owner::Split => &[Side::Monolith, Side::Service],
        }
    }
}

/// One side of the migration, the monolith's server or the services'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Monolith,
    Service,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Monolith => "monolith",
            Side::Service => "service",
        }
    }
}

/// Which way a domain's rows replicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replication {
    MonolithToService,
    ServiceToMonolith,
    /// Both streams carry the domain's rows, each side's own users' changes.
    Both,
    Stopped,
}

/// A check that must hold before a move; the controller measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// The stream that carries the owner's writes is within its lag bound.
    ReplicationLag,
    /// A verify of every table of the domain is clean, recent, and newer than the last backfill.
    VerifyClean,
    /// The two sides number new rows from ranges that cannot collide.
    IdRanges,
    /// The shadow mismatch rate is under its bound over enough compared requests.
    ShadowMismatches,
    /// The canary's error rate and p99, fleet-wide, are healthy over the window.
    CanaryHealth,
    /// Both sides may take writes: both streams split ownership by the domain's flag, the
    /// domain's tables name their user column, counters are deltas and the stock has an escrow.
    WritesReady,
    /// No open conflict (a row written on the side that does not own it) on the domain's tables.
    Conflicts,
    /// Orders refused because the other side held the stock stay under their bound.
    EscrowRefusals,
}

impl Gate {
    /// The gate's name in messages and the audit trail.
    pub fn name(self) -> &'static str {
        match self {
            Gate::ReplicationLag => "replication-lag",
            Gate::VerifyClean => "verify-clean",
            Gate::IdRanges => "id-ranges",
            Gate::ShadowMismatches => "shadow-mismatches",
            Gate::CanaryHealth => "canary-health",
            Gate::WritesReady => "writes-ready",
            Gate::Conflicts => "conflicts",
            Gate::EscrowRefusals => "escrow-refusals",
        }
    }
}

/// What a phase fixes for its domain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Effect {
    /// The mode of every route of the domain (the routes are removed when decommissioned).
    pub route_mode: RouteMode,
    /// A canary that routes reads only (a write canary sends writes too).
    pub reads_only: bool,
    pub owner: Owner,
    pub replication: Replication,
    /// Whether the monolith still has routes for the domain.
    pub monolith_routes: bool,
}

impl Phase {
    /// Position in the forward order.
    fn rank(self) -> u8 {
        match self {
            Phase::Monolith => 0,
            Phase::Backfilling => 1,
            Phase::Verified => 2,
            Phase::Shadow => 3,
            Phase::Canary { .. } => 4,
            Phase::WriteCanary { .. } => 5,
            Phase::ServicePrimary => 6,
            Phase::Decommissioned => 7,
        }
    }

    /// The phase's name without the percentage, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Monolith => "monolith",
            Phase::Backfilling => "backfilling",
            Phase::Verified => "verified",
            Phase::Shadow => "shadow",
            Phase::Canary { .. } => "canary",
            Phase::WriteCanary { .. } => "write-canary",
            Phase::ServicePrimary => "service-primary",
            Phase::Decommissioned => "decommissioned",
        }
    }

    /// The canary's percentage, if a canary.
    pub fn percent(self) -> Option<u8> {
        match self {
            Phase::Canary { percent } | Phase::WriteCanary { percent } => Some(percent),
            _ => None,
        }
    }

    /// A phase from its stored name and percentage.
    pub fn from_parts(name: &str, percent: Option<u32>) -> Result<Self, PhaseError> {
        Ok(match name {
            "monolith" => Phase::Monolith,
            "backfilling" => Phase::Backfilling,
            "verified" => Phase::Verified,
            "shadow" => Phase::Shadow,
            "canary" => Phase::canary(percent.unwrap_or(0))?,
            "write-canary" => Phase::write_canary(percent.unwrap_or(0))?,
            "service-primary" => Phase::ServicePrimary,
            "decommissioned" => Phase::Decommissioned,
            other => return Err(PhaseError::UnknownPhase(other.into())),
        })
    }

    /// A canary of `percent` (1–99).
    pub fn canary(percent: u32) -> Result<Self, PhaseError> {
        match u8::try_from(percent) {
            Ok(p) if (1..=99).contains(&p) => Ok(Phase::Canary { percent: p }),
            _ => Err(PhaseError::Percent(percent)),
        }
    }

    /// A write canary of `percent` (1–99).
    pub fn write_canary(percent: u32) -> Result<Self, PhaseError> {
        match Phase::canary(percent)? {
            Phase::Canary { percent } => Ok(Phase::WriteCanary { percent }),
            other => Ok(other),
        }
    }

    /// Whether the phase is a canary of either kind.
    pub fn is_canary(self) -> bool {
        matches!(self, Phase::Canary { .. } | Phase::WriteCanary { .. })
    }

    /// What this phase fixes.
    pub fn effect(self) -> Effect {
        let (route_mode, owner, replication) = match self {
            Phase::Monolith | Phase::Backfilling | Phase::Verified => (
                RouteMode::Monolith,
                Owner::Monolith,
                Replication::MonolithToService,
            ),
            Phase::Shadow => (
                RouteMode::Shadow,
                Owner::Monolith,
                Replication::MonolithToService,
            ),
            Phase::Canary { percent } => (
                RouteMode::Canary {
                    percent: f64::from(percent),
                },
                Owner::Monolith,
                Replication::MonolithToService,
            ),
            Phase::WriteCanary { percent } => (
                RouteMode::WriteCanary {
                    percent: f64::from(percent),
                },
                Owner::Split,
                Replication::Both,
            ),
            Phase::ServicePrimary => (
                RouteMode::Service,
                Owner::Service,
                Replication::ServiceToMonolith,
            ),
            Phase::Decommissioned => (RouteMode::Service, Owner::Service, Replication::Stopped),
        };
        Effect {
            route_mode,
            reads_only: matches!(self, Phase::Canary { .. }),
            owner,
            replication,
            monolith_routes: self != Phase::Decommissioned,
        }
    }

    /// The next phase forward, as a name (a canary takes a percentage).
    pub fn next(self) -> Option<&'static str> {
        match self {
            Phase::Monolith => Some("backfilling"),
            Phase::Backfilling => Some("verified"),
            Phase::Verified => Some("shadow"),
            Phase::Shadow => Some("canary N%"),
            Phase::Canary { .. } => Some("a larger canary, write-canary N% or service-primary"),
            Phase::WriteCanary { .. } => Some("a larger write-canary or service-primary"),
            Phase::ServicePrimary => Some("decommissioned"),
            Phase::Decommissioned => None,
        }
    }

    /// Whether `self → to` is a step forward (else a rollback).
    pub fn is_advance(self, to: Phase) -> bool {
        match (self, to) {
            (Phase::Canary { percent: a }, Phase::Canary { percent: b })
            | (Phase::WriteCanary { percent: a }, Phase::WriteCanary { percent: b }) => b > a,
            _ => to.rank() > self.rank(),
        }
    }

    /// Checks that `domain` may move from `self` to `to`: one step forward (a canary may grow
    /// in any steps), or back to any earlier phase unless decommissioned.
    pub fn check_move(self, domain: &str, to: Phase) -> Result<(), PhaseError> {
        if self == to {
            return Err(PhaseError::NoChange {
                domain: domain.into(),
                phase: self,
            });
        }
        if self == Phase::Decommissioned {
            return Err(PhaseError::Final {
                domain: domain.into(),
            });
        }
        if !self.is_advance(to) {
            return Ok(());
        }
        // The write canary is optional: a read canary may hand the whole domain over at once.
        let one_step = to.rank() == self.rank() + 1
            || self.rank() == to.rank()
            || (matches!(self, Phase::Canary { .. }) && to == Phase::ServicePrimary);
        if one_step {
            Ok(())
        } else {
            Err(PhaseError::Skip {
                domain: domain.into(),
                from: self,
                to,
                next: self.next().unwrap_or("nothing").into(),
            })
        }
    }

    /// The gates a move from `self` to `to` must pass.
    pub fn gates(self, to: Phase) -> Vec<Gate> {
        if !self.is_advance(to) {
            // Back: the side that owns the writes must have handed all of them over.
            return vec![Gate::ReplicationLag];
        }
        let writing = matches!(self, Phase::WriteCanary { .. });
        match to {
            Phase::Monolith => vec![],
            Phase::Backfilling => vec![Gate::ReplicationLag],
            Phase::Verified => vec![Gate::ReplicationLag, Gate::VerifyClean],
            Phase::Shadow => vec![Gate::IdRanges, Gate::VerifyClean],
            Phase::Canary { .. } if matches!(self, Phase::Canary { .. }) => {
                vec![Gate::CanaryHealth, Gate::ReplicationLag]
            }
            Phase::Canary { .. } => vec![Gate::ShadowMismatches, Gate::ReplicationLag],
            Phase::WriteCanary { .. } if writing => vec![
                Gate::WritesReady,
                Gate::CanaryHealth,
                Gate::Conflicts,
                Gate::EscrowRefusals,
                Gate::ReplicationLag,
            ],
            Phase::WriteCanary { .. } => vec![
                Gate::WritesReady,
                Gate::CanaryHealth,
                Gate::IdRanges,
                Gate::ReplicationLag,
            ],
            Phase::ServicePrimary if writing => vec![
                Gate::CanaryHealth,
                Gate::Conflicts,
                Gate::EscrowRefusals,
                Gate::ReplicationLag,
                Gate::VerifyClean,
                Gate::IdRanges,
            ],
            Phase::ServicePrimary => vec![
                Gate::CanaryHealth,
                Gate::ReplicationLag,
                Gate::VerifyClean,
                Gate::IdRanges,
            ],
            Phase::Decommissioned => vec![Gate::ReplicationLag, Gate::VerifyClean],
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Canary { percent } => write!(f, "canary {percent}%"),
            Phase::WriteCanary { percent } => write!(f, "write-canary {percent}%"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Phase {
    type Err = PhaseError;

    /// `monolith`, …, `canary 10%`, `canary:10`, `canary10`, `write-canary 10%`.
    fn from_str(s: &str) -> Result<Self, PhaseError> {
        let s = s.trim();
        let percent = |rest: &str| {
            rest.trim_start_matches([' ', ':', '='])
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|_| PhaseError::UnknownPhase(s.into()))
        };
        if let Some(rest) = s.strip_prefix("write-canary") {
            return Phase::write_canary(percent(rest)?);
        }
        if let Some(rest) = s.strip_prefix("canary") {
            return Phase::canary(percent(rest)?);
        }
        Phase::from_parts(s, None)
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 8] = [
        Phase::Monolith,
        Phase::Backfilling,
        Phase::Verified,
        Phase::Shadow,
        Phase::Canary { percent: 10 },
        Phase::WriteCanary { percent: 10 },
        Phase::ServicePrimary,
        Phase::Decommissioned,
    ];

    #[test]
    fn forward_one_step_at_a_time_back_from_anywhere_but_the_end() {
        for (i, from) in ALL.iter().enumerate() {
            for (j, to) in ALL.iter().enumerate() {
                let ok = from.check_move("users", *to).is_ok();
                let skips_writes = i == 4 && j == 6;
                let expected =
                    *from != Phase::Decommissioned && (j == i + 1 || j < i || skips_writes);
                assert_eq!(ok, expected, "{from} → {to}");
            }
        }
        let ten = Phase::Canary { percent: 10 };
        assert!(ten.check_move("users", Phase::canary(50).unwrap()).is_ok());
        assert!(ten.check_move("users", Phase::canary(5).unwrap()).is_ok());
        assert!(!ten.is_advance(Phase::canary(5).unwrap()));
        let err = Phase::Monolith
            .check_move("users", Phase::Shadow)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "users cannot go from monolith to shadow: the next step is backfilling"
        );
    }

    #[test]
    fn ownership_and_replication_switch_together() {
        for phase in ALL {
            let e = phase.effect();
            match e.owner {
                Owner::Monolith => assert_eq!(e.replication, Replication::MonolithToService),
                Owner::Service => assert_ne!(e.replication, Replication::MonolithToService),
                Owner::Split => assert_eq!(e.replication, Replication::Both),
            }
        }
        let canary = Phase::Canary { percent: 10 }.effect();
        assert!(canary.reads_only);
        assert_eq!(canary.route_mode, RouteMode::Canary { percent: 10.0 });
        assert_eq!(canary.owner, Owner::Monolith);
        let primary = Phase::ServicePrimary.effect();
        assert_eq!(primary.replication, Replication::ServiceToMonolith);
        assert!(!Phase::Decommissioned.effect().monolith_routes);
        let writes = Phase::WriteCanary { percent: 10 }.effect();
        assert!(!writes.reads_only);
        assert_eq!(writes.owner, Owner::Split);
        assert_eq!(writes.route_mode, RouteMode::WriteCanary { percent: 10.0 });
    }

    #[test]
    fn names_round_trip_and_percentages_are_checked() {
        for phase in ALL {
            assert_eq!(phase.to_string().parse::<Phase>().unwrap(), phase);
            assert_eq!(
                Phase::from_parts(phase.name(), phase.percent().map(u32::from)).unwrap(),
                phase
            );
        }
        assert_eq!(
            "canary:25".parse::<Phase>().unwrap(),
            Phase::Canary { percent: 25 }
        );
        assert_eq!(
            "write-canary 50%".parse::<Phase>().unwrap(),
            Phase::WriteCanary { percent: 50 }
        );
        for bad in [
            "canary 0%",
            "canary 100",
            "canary",
            "primary",
            "write-canary 100%",
        ] {
            assert!(bad.parse::<Phase>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gates_follow_the_move() {
        assert_eq!(
            Phase::Shadow.gates(Phase::canary(5).unwrap()),
            [Gate::ShadowMismatches, Gate::ReplicationLag]
        );
        assert!(
            Phase::Canary { percent: 50 }
                .gates(Phase::ServicePrimary)
                .contains(&Gate::CanaryHealth)
        );
        assert_eq!(
            Phase::ServicePrimary.gates(Phase::Monolith),
            [Gate::ReplicationLag]
        );
        let into_writes = Phase::Canary { percent: 10 }.gates(Phase::write_canary(10).unwrap());
        assert!(into_writes.contains(&Gate::WritesReady));
        let wider = Phase::WriteCanary { percent: 10 }.gates(Phase::write_canary(50).unwrap());
        for g in [Gate::WritesReady, Gate::Conflicts, Gate::EscrowRefusals] {
            assert!(wider.contains(&g), "{g:?}");
        }
        assert!(
            Phase::WriteCanary { percent: 50 }
                .gates(Phase::ServicePrimary)
                .contains(&Gate::Conflicts)
        );
    }
}
