//! The flag model, in LaunchDarkly's JSON shape (camelCase keys, weights in 1/100000), so the
//! same definitions can be served by the embedded store or by LaunchDarkly unchanged.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FlagError;

/// One flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    /// Unique key, `[A-Za-z0-9._-]`.
    pub key: String,
    /// Bumped on every change.
    #[serde(default)]
    pub version: u64,
    /// Off is the kill switch: every evaluation serves `off_variation`.
    pub on: bool,
    /// The values this flag can serve.
    pub variations: Vec<Value>,
    /// Served when the flag is off; `None` serves the caller's default.
    #[serde(default)]
    pub off_variation: Option<usize>,
    /// Served when no target or rule matched.
    pub fallthrough: VariationOrRollout,
    /// Individual user keys pinned to a variation.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Attribute rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Mixed into bucketing so different flags bucket users independently.
    #[serde(default)]
    pub salt: String,
}

/// Either a fixed variation or a percentage rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariationOrRollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A percentage rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Buckets in order; weights in 1/100000 summing to 100000.
    pub variations: Vec<WeightedVariation>,
    /// Attribute to bucket by (default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// When present, replaces `<flagKey>.<salt>` as the hash prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

/// One bucket of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedVariation {
    pub variation: usize,
    /// In 1/100000. LaunchDarkly's SDK writes weights as floats (`37500.0`): whole floats are
    /// accepted, fractions are refused.
    #[serde(deserialize_with = "whole_weight")]
    pub weight: u32,
}

fn whole_weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = f64::deserialize(d)?;
    if n.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "weight must be a whole number of 1/100000, got {n}"
        )));
    }
    Ok(n as u32)
}

/// User keys served one variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub values: Vec<String>,
    pub variation: usize,
}

/// A rule: all clauses must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub clauses: Vec<Clause>,
    /// Fixed variation served on a match (or `rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<usize>,
    /// Rollout served on a match (or `variation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl Rule {
    /// What the rule serves on a match.
    pub fn serve(&self) -> VariationOrRollout {
        VariationOrRollout {
            variation: self.variation,
            rollout: self.rollout.clone(),
        }
    }
}

/// `attribute op values`, optionally negated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clause {
    pub attribute: String,
    pub op: Op,
    pub values: Vec<Value>,
    #[serde(default)]
    pub negate: bool,
}

/// Clause operators (LaunchDarkly's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    In,
    StartsWith,
    EndsWith,
    Contains,
    LessThan,
    LessThanOrEqual,
    GreaterThan,
    GreaterThanOrEqual,
}

impl Flag {
    /// Checks everything serde cannot: key syntax, variation indexes, rollout weights.
    pub fn validate(&self) -> Result<(), FlagError> {
        let invalid = |message: String| FlagError::Invalid {
            key: self.key.clone(),
            message,
        };
        if self.key.is_empty()
            || self.key.len() > 200
            || !self
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "key must be 1 to 200 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        if self.variations.is_empty() {
            return Err(invalid("variations must not be empty".into()));
        }
        let n = self.variations.len();
        let index = |i: usize, field: &str| {
            if i < n {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{field}: variation {i} does not exist (the flag has {n})"
                )))
            }
        };
        if let Some(off) = self.off_variation {
            index(off, "offVariation")?;
        }
        let serve = |v: &VariationOrRollout, field: &str| -> Result<(), FlagError> {
            match (&v.variation, &v.rollout) {
                (Some(i), None) => index(*i, field),
                (None, Some(r)) => {
                    if r.variations.is_empty() {
                        return Err(invalid(format!("{field}.rollout.variations is empty")));
                    }
                    let mut sum: u64 = 0;
                    for (k, w) in r.variations.iter().enumerate() {
                        index(w.variation, &format!("{field}.rollout.variations[{k}]"))?;
                        sum += u64::from(w.weight);
                    }
                    if sum != 100_000 {
                        return Err(invalid(format!(
                            "{field}.rollout weights sum to {sum}, not 100000"
                        )));
                    }
                    Ok(())
                }
                _ => Err(invalid(format!(
                    "{field} must have exactly one of `variation` and `rollout`"
                ))),
            }
        };
        serve(&self.fallthrough, "fallthrough")?;
        for (i, t) in self.targets.iter().enumerate() {
            index(t.variation, &format!("targets[{i}]"))?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.clauses.is_empty() {
                return Err(invalid(format!("rules[{i}] has no clauses")));
            }
            serve(&r.serve(), &format!("rules[{i}]"))?;
        }
        Ok(())
    }

    /// Parses one flag from JSON, naming the failing field; validates it.
    pub fn from_json(source_name: &str, text: &str) -> Result<Self, FlagError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let flag: Flag = serde_path_to_error::deserialize(de).map_err(|e| FlagError::Parse {
            source_name: source_name.to_string(),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        flag.validate()?;
        Ok(flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(json: &str) -> Result<Flag, FlagError> {
        Flag::from_json("test", json)
    }

    #[test]
    fn parses_launchdarkly_json() {
        let f = flag(
            r#"{"key":"route.users","version":3,"on":true,"variations":["monolith","service"],
                "offVariation":0,"salt":"abc",
                "fallthrough":{"rollout":{"variations":[{"variation":1,"weight":10000},
                                                         {"variation":0,"weight":90000}]}},
                "targets":[{"values":["u1"],"variation":1}],
                "rules":[{"id":"r1","clauses":[{"attribute":"country","op":"in","values":["DE"]}],
                          "variation":0}],
                "clientSide":false,"trackEvents":false}"#,
        )
        .unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.rules[0].variation, Some(0));
        // Round trip.
        let again = flag(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn names_the_failing_field() {
        let err = flag(r#"{"key":"k","on":true,"variations":[1],"fallthrough":{"variation":"x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fallthrough.variation"), "{err}");
        let err = flag(
            r#"{"key":"k","on":true,"variations":[1],"fallthrough":{"variation":0},
                "rules":[{"clauses":[{"attribute":"a","op":"matchesRegex","values":[]}],"variation":0}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rules[0].clauses[0].op"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn rejects_what_cannot_be_evaluated() {
        for (json, needle) in [
            (
                r#"{"key":"k","on":true,"variations":[],"fallthrough":{"variation":0}}"#,
                "empty",
            ),
            (
                r#"{"key":"k","on":true,"variations":[1],"fallthrough":{"variation":3}}"#,
                "variation 3",
            ),
            (
                r#"{"key":"k","on":true,"variations":[1],"fallthrough":{}}"#,
                "exactly one",
            ),
            (
                r#"{"key":"k","on":true,"variations":[1,2],"fallthrough":{"rollout":{"variations":[{"variation":0,"weight":5}]}}}"#,
                "sum to 5",
            ),
            (
                r#"{"key":"bad key","on":true,"variations":[1],"fallthrough":{"variation":0}}"#,
                "key",
            ),
            (
                r#"{"key":"k","on":true,"variations":[1],"offVariation":2,"fallthrough":{"variation":0}}"#,
                "offVariation",
            ),
        ] {
            let err = flag(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
