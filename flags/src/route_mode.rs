//! Route modes on top of flags: a route's flag serves one of `monolith`, `service`, `shadow`;
//! a canary is a rollout between `service` and `monolith`, with the service bucket first so that
//! raising the percentage only ever adds users to the service side.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Flag, Rollout, VariationOrRollout, WeightedVariation};

/// The variations of every route flag, in this order.
pub const ROUTE_VARIATIONS: [&str; 3] = ["monolith", "service", "shadow"];
const MONOLITH: usize = 0;
const SERVICE: usize = 1;
const SHADOW: usize = 2;

/// Where a route's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RouteMode {
    /// Everything to the monolith.
    Monolith,
    /// Serve from the monolith, mirror to the service and compare.
    Shadow,
    /// `percent` of users (sticky) to the service, the rest to the monolith.
    Canary { percent: f64 },
    /// Everything to the service (the monolith stays the fallback).
    Service,
}

impl RouteMode {
    /// The flag that implements this mode. Off (the kill switch) always means the monolith.
    pub fn to_flag(self, key: &str, version: u64, salt: &str) -> Flag {
        let fixed = |v| VariationOrRollout {
            variation: Some(v),
            rollout: None,
        };
        let fallthrough = match self {
            RouteMode::Monolith => fixed(MONOLITH),
            RouteMode::Shadow => fixed(SHADOW),
            RouteMode::Service => fixed(SERVICE),
            RouteMode::Canary { percent } => {
                let service = (percent.clamp(0.0, 100.0) * 1000.0).round() as u32;
                VariationOrRollout {
                    variation: None,
                    rollout: Some(Rollout {
                        variations: vec![
                            WeightedVariation {
                                variation: SERVICE,
                                weight: service,
                            },
                            WeightedVariation {
                                variation: MONOLITH,
                                weight: 100_000 - service,
                            },
                        ],
                        bucket_by: None,
                        seed: None,
                    }),
                }
            }
        };
        Flag {
            key: key.to_string(),
            version,
            on: true,
            variations: ROUTE_VARIATIONS.iter().map(|v| Value::from(*v)).collect(),
            off_variation: Some(MONOLITH),
            fallthrough,
            targets: Vec::new(),
            rules: Vec::new(),
            salt: salt.to_string(),
        }
    }

    /// Describes a route flag's fallthrough as a mode (off reads as `monolith`); `None` when
    /// the flag is not shaped like a route flag.
    pub fn of(flag: &Flag) -> Option<Self> {
        let name = |i: usize| flag.variations.get(i).and_then(Value::as_str);
        if !flag.on {
            return Some(RouteMode::Monolith);
        }
        if let Some(v) = flag.fallthrough.variation {
            return match name(v)? {
                "monolith" => Some(RouteMode::Monolith),
                "service" => Some(RouteMode::Service),
                "shadow" => Some(RouteMode::Shadow),
                _ => None,
            };
        }
        let rollout = flag.fallthrough.rollout.as_ref()?;
        let mut service = 0u32;
        for w in &rollout.variations {
            match name(w.variation)? {
                "service" => service += w.weight,
                "monolith" => {}
                _ => return None,
            }
        }
        Some(RouteMode::Canary {
            percent: f64::from(service) / 1000.0,
        })
    }

    /// Parses `monolith`, `shadow`, `service` or `canary` with a percentage.
    pub fn parse(mode: &str, percent: Option<f64>) -> Result<Self, String> {
        match (mode, percent) {
            ("monolith", None) => Ok(RouteMode::Monolith),
            ("shadow", None) => Ok(RouteMode::Shadow),
            ("service", None) => Ok(RouteMode::Service),
            ("canary", Some(p)) if (0.0..=100.0).contains(&p) => {
                Ok(RouteMode::Canary { percent: p })
            }
            ("canary", Some(p)) => Err(format!("canary percent must be 0 to 100, got {p}")),
            ("canary", None) => Err("canary needs a percent".into()),
            (m @ ("monolith" | "shadow" | "service"), Some(_)) => {
                Err(format!("mode {m} takes no percent"))
            }
            (other, _) => Err(format!(
                "unknown mode {other:?}: use monolith, shadow, canary or service"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Context, evaluate};

    #[test]
    fn modes_round_trip_through_flags() {
        for mode in [
            RouteMode::Monolith,
            RouteMode::Shadow,
            RouteMode::Service,
            RouteMode::Canary { percent: 12.5 },
        ] {
            let f = mode.to_flag("route.users", 1, "s");
            f.validate().unwrap();
            assert_eq!(RouteMode::of(&f), Some(mode));
        }
        let mut off = RouteMode::Service.to_flag("k", 1, "s");
        off.on = false;
        assert_eq!(RouteMode::of(&off), Some(RouteMode::Monolith));
        assert_eq!(
            evaluate(&off, &Context::new("u")).value,
            Some(&Value::from("monolith"))
        );
    }

    #[test]
    fn parse_refuses_nonsense() {
        assert!(RouteMode::parse("canary", Some(101.0)).is_err());
        assert!(RouteMode::parse("canary", None).is_err());
        assert!(RouteMode::parse("service", Some(5.0)).is_err());
        assert!(
            RouteMode::parse("blue", None)
                .unwrap_err()
                .contains("unknown mode")
        );
        assert_eq!(
            RouteMode::parse("canary", Some(10.0)),
            Ok(RouteMode::Canary { percent: 10.0 })
        );
    }
}
