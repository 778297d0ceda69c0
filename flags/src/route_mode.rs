//! Route modes on top of flags: a route's flag serves one of `monolith`, `service`, `shadow`;
//! a canary is a rollout between `service` (`service-writes` when the canary's users write on the
//! service too) and `monolith`, the service bucket first so that raising the percentage only ever
//! adds users to the service side.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Flag, Rollout, VariationOrRollout, WeightedVariation};

/// The variations of every route flag, in this order.
pub const ROUTE_VARIATIONS: [&str; 4] = ["monolith", "service", "shadow", "service-writes"];
const MONOLITH: usize = 0;
const SERVICE: usize = 1;
const SHADOW: usize = 2;
const SERVICE_WRITES: usize = 3;

/// Where a route's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RouteMode {
    /// Everything to the monolith.
    Monolith,
    /// Serve from the monolith, mirror to the service and compare.
    Shadow,
    /// `percent` of users (sticky) to the service for reads, the rest to the monolith; every
    /// write stays on the monolith, which owns the domain's writes.
    Canary { percent: f64 },
    /// A canary whose users also write on the service (a write canary): each user's reads and
    /// writes go to one side by the same sticky bucket as a [`RouteMode::Canary`] of `percent`.
    WriteCanary { percent: f64 },
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
            RouteMode::Canary { percent } | RouteMode::WriteCanary { percent } => {
                let service = (percent.clamp(0.0, 100.0) * 1000.0).round() as u32;
                let variation = if matches!(self, RouteMode::WriteCanary { .. }) {
                    SERVICE_WRITES
                } else {
                    SERVICE
                };
                VariationOrRollout {
                    variation: None,
                    rollout: Some(Rollout {
                        variations: vec![
                            WeightedVariation {
                                variation,
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
        let (mut service, mut writes) = (0u32, 0u32);
        for w in &rollout.variations {
            match name(w.variation)? {
                "service" => service += w.weight,
                "service-writes" => writes += w.weight,
                "monolith" => {}
                _ => return None,
            }
        }
        match (service, writes) {
            (_, 0) => Some(RouteMode::Canary {
                percent: f64::from(service) / 1000.0,
            }),
            (0, _) => Some(RouteMode::WriteCanary {
                percent: f64::from(writes) / 1000.0,
            }),
            // Some users writing on the service and others not: no mode says that.
            _ => None,
        }
    }

    /// The mode's name in the admin API (`canary`, `write-canary`, …).
    pub fn name(self) -> &'static str {
        match self {
            RouteMode::Monolith => "monolith",
            RouteMode::Shadow => "shadow",
            RouteMode::Canary { .. } => "canary",
            RouteMode::WriteCanary { .. } => "write-canary",
            RouteMode::Service => "service",
        }
    }

    /// The percentage of users sent to the service (0 for the monolith and shadow, 100 for the
    /// service).
    pub fn percent(self) -> f64 {
        match self {
            RouteMode::Monolith | RouteMode::Shadow => 0.0,
            RouteMode::Canary { percent } | RouteMode::WriteCanary { percent } => percent,
            RouteMode::Service => 100.0,
        }
    }

    /// The percentage of users whose writes the service owns: a write canary's percentage, all
    /// of them in `service`, none otherwise (a read canary's writes stay on the monolith).
    pub fn service_write_share(self) -> f64 {
        match self {
            RouteMode::WriteCanary { percent } => percent,
            RouteMode::Service => 100.0,
            _ => 0.0,
        }
    }

    /// Parses `monolith`, `shadow`, `service`, or `canary` / `write-canary` with a percentage.
    pub fn parse(mode: &str, percent: Option<f64>) -> Result<Self, String> {
        match (mode, percent) {
            ("monolith", None) => Ok(RouteMode::Monolith),
            ("shadow", None) => Ok(RouteMode::Shadow),
            ("service", None) => Ok(RouteMode::Service),
            ("canary", Some(p)) if (0.0..=100.0).contains(&p) => {
                Ok(RouteMode::Canary { percent: p })
            }
            ("write-canary", Some(p)) if (0.0..=100.0).contains(&p) => {
                Ok(RouteMode::WriteCanary { percent: p })
            }
            (m @ ("canary" | "write-canary"), Some(p)) => {
                Err(format!("{m} percent must be 0 to 100, got {p}"))
            }
            (m @ ("canary" | "write-canary"), None) => Err(format!("{m} needs a percent")),
            (m @ ("monolith" | "shadow" | "service"), Some(_)) => {
                Err(format!("mode {m} takes no percent"))
            }
            (other, _) => Err(format!(
                "unknown mode {other:?}: use monolith, shadow, canary, write-canary or service"
            )),
        }
    }
}

/// As operators read it: `monolith`, `shadow`, `canary 10%`, `write-canary 10%`, `service`.
impl std::fmt::Display for RouteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteMode::Canary { percent } | RouteMode::WriteCanary { percent } => {
                write!(f, "{} {percent}%", self.name())
            }
            other => f.write_str(other.name()),
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
            RouteMode::WriteCanary { percent: 12.5 },
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
    fn a_write_canary_buckets_users_as_the_read_canary_of_the_same_percent() {
        let read = RouteMode::Canary { percent: 30.0 }.to_flag("route.orders", 1, "s");
        let write = RouteMode::WriteCanary { percent: 30.0 }.to_flag("route.orders", 2, "s");
        let mut on_service = 0;
        for i in 0..2000 {
            let ctx = Context::new(format!("{i}"));
            let r = evaluate(&read, &ctx).value.cloned();
            let w = evaluate(&write, &ctx).value.cloned();
            match (
                r.as_ref().and_then(Value::as_str),
                w.as_ref().and_then(Value::as_str),
            ) {
                (Some("service"), Some("service-writes")) => on_service += 1,
                (Some("monolith"), Some("monolith")) => {}
                other => panic!("user {i}: {other:?}"),
            }
        }
        assert!((500..700).contains(&on_service), "{on_service}");
        assert_eq!(
            RouteMode::WriteCanary { percent: 30.0 }.service_write_share(),
            30.0
        );
        assert_eq!(
            RouteMode::Canary { percent: 30.0 }.service_write_share(),
            0.0
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
        assert_eq!(
            RouteMode::parse("write-canary", Some(10.0)),
            Ok(RouteMode::WriteCanary { percent: 10.0 })
        );
        assert!(RouteMode::parse("write-canary", None).is_err());
    }
}
