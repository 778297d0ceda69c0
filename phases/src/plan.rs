//! A domain's plan: the moves from where it stands to a target phase, each with what it changes
//! (route mode, owner, replication) and the gates it must pass.

use serde::Serialize;

use crate::error::PhaseError;
use crate::phase::{Effect, Gate, Phase};

/// One move of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub from: Phase,
    pub to: Phase,
    pub effect: Effect,
    pub gates: Vec<Gate>,
}

/// The moves of `domain` from `from` to `to`: forward through every phase in order (a canary
/// through each of `canary_steps` above the current percentage), or one move back.
pub fn plan(
    domain: &str,
    from: Phase,
    to: Phase,
    canary_steps: &[u8],
) -> Result<Vec<Step>, PhaseError> {
    if from == to {
        return Err(PhaseError::NoChange {
            domain: domain.into(),
            phase: from,
        });
    }
    if !from.is_advance(to) {
        from.check_move(domain, to)?;
        return Ok(vec![step(from, to)]);
    }
    let mut path = Vec::new();
    let mut at = from;
    while at != to {
        let next = match at {
            Phase::Monolith => Phase::Backfilling,
            Phase::Backfilling => Phase::Verified,
            Phase::Verified => Phase::Shadow,
            Phase::Shadow | Phase::Canary { .. } | Phase::WriteCanary { .. } => {
                let current = at.percent().unwrap_or(0);
                let wanted = to.percent();
                let step = canary_steps
                    .iter()
                    .copied()
                    .find(|p| *p > current && wanted.is_none_or(|w| *p < w));
                match (at, to, step) {
                    // A read canary gives its users' writes to the service in one move.
                    (Phase::Canary { .. }, Phase::WriteCanary { .. }, _) => to,
                    (Phase::Shadow, Phase::WriteCanary { percent }, None) => {
                        Phase::canary(u32::from(percent))?
                    }
                    (Phase::WriteCanary { .. }, _, Some(p)) => Phase::write_canary(u32::from(p))?,
                    (_, _, Some(p)) => Phase::canary(u32::from(p))?,
                    (_, _, None) if to.is_canary() => to,
                    (_, _, None) => Phase::ServicePrimary,
                }
            }
            Phase::ServicePrimary => Phase::Decommissioned,
            Phase::Decommissioned => {
                return Err(PhaseError::Final {
                    domain: domain.into(),
                });
            }
        };
        at.check_move(domain, next)?;
        path.push(step(at, next));
        at = next;
    }
    Ok(path)
}

fn step(from: Phase, to: Phase) -> Step {
    Step {
        from,
        to,
        effect: to.effect(),
        gates: from.gates(to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_plan_walks_every_phase_with_the_canary_steps() {
        let steps = plan("users", Phase::Monolith, Phase::ServicePrimary, &[10, 50]).unwrap();
        let names: Vec<String> = steps.iter().map(|s| s.to.to_string()).collect();
        assert_eq!(
            names,
            [
                "backfilling",
                "verified",
                "shadow",
                "canary 10%",
                "canary 50%",
                "service-primary"
            ]
        );
        assert!(steps[3].effect.reads_only);
        assert!(steps.last().unwrap().gates.contains(&Gate::CanaryHealth));
    }

    #[test]
    fn partial_plans_and_rollbacks() {
        let to_canary = plan(
            "users",
            Phase::Shadow,
            Phase::canary(25).unwrap(),
            &[10, 50],
        )
        .unwrap();
        assert_eq!(to_canary.len(), 2);
        assert_eq!(to_canary[1].to, Phase::Canary { percent: 25 });
        let back = plan("users", Phase::ServicePrimary, Phase::Monolith, &[]).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].gates, [Gate::ReplicationLag]);
        assert!(plan("users", Phase::Decommissioned, Phase::Monolith, &[]).is_err());
        assert!(plan("users", Phase::Shadow, Phase::Shadow, &[]).is_err());
    }

    #[test]
    fn a_write_canary_follows_a_read_canary_and_grows_by_the_steps() {
        let names = |from, to| -> Vec<String> {
            plan("orders", from, to, &[10, 50])
                .unwrap()
                .iter()
                .map(|s| s.to.to_string())
                .collect()
        };
        assert_eq!(
            names(Phase::Shadow, Phase::write_canary(10).unwrap()),
            ["canary 10%", "write-canary 10%"]
        );
        assert_eq!(
            names(Phase::write_canary(10).unwrap(), Phase::ServicePrimary),
            ["write-canary 50%", "service-primary"]
        );
        assert_eq!(
            names(Phase::canary(50).unwrap(), Phase::ServicePrimary),
            ["service-primary"]
        );
        let back = plan(
            "orders",
            Phase::write_canary(50).unwrap(),
            Phase::canary(50).unwrap(),
            &[],
        )
        .unwrap();
        assert_eq!(back[0].gates, [Gate::ReplicationLag]);
    }
}
