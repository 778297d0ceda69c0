//! Evaluation in LaunchDarkly's order: off → individual targets → rules (first match) →
//! fallthrough; percentage rollouts walk their buckets with the shared bucketing function.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::bucket::bucket;
use crate::model::{Clause, Flag, Op, VariationOrRollout};

/// Who the flag is evaluated for: a key plus optional attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub key: String,
    pub attributes: HashMap<String, Value>,
}

impl Context {
    /// A context with only a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            attributes: HashMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }

    /// An attribute as it is stored: the key in its own field, the rest as JSON values.
    fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        match name {
            "key" => Some(Attribute::Key(&self.key)),
            other => self.attributes.get(other).map(Attribute::Value),
        }
    }

    fn get(&self, attribute: &str) -> Option<Value> {
        self.attribute(attribute).map(|a| match a {
            Attribute::Key(k) => Value::String(k.to_string()),
            Attribute::Value(v) => v.clone(),
        })
    }
}

/// A borrowed context attribute.
enum Attribute<'a> {
    Key(&'a str),
    Value(&'a Value),
}

/// Why a variation was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Off,
    TargetMatch,
    RuleMatch { index: usize },
    Fallthrough { in_rollout: bool },
}

/// The outcome of an evaluation; `variation` is `None` when the flag is off without an
/// off variation (the caller's default applies).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'f> {
    pub variation: Option<usize>,
    pub value: Option<&'f Value>,
    pub reason: Reason,
}

/// The value a rollout buckets by: strings as they are, integers as decimal text, else none.
fn bucketable(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(|i| Cow::Owned(i.to_string())),
        _ => None,
    }
}

fn serve(flag: &Flag, vor: &VariationOrRollout, ctx: &Context) -> (Option<usize>, bool) {
    if let Some(v) = vor.variation {
        return (Some(v), false);
    }
    let Some(rollout) = &vor.rollout else {
        return (None, false);
    };
    // Bucketed in place (the key, the usual case, and string attributes); numbers as their text.
    let by = ctx
        .attribute(rollout.bucket_by.as_deref().unwrap_or("key"))
        .and_then(|a| match a {
            Attribute::Key(k) => Some(Cow::Borrowed(k)),
            Attribute::Value(v) => bucketable(v),
        });
    let b = by
        .map(|v| bucket(&flag.key, &flag.salt, rollout.seed, &v))
        .unwrap_or(0.0);
    let mut sum: f32 = 0.0;
    for wv in &rollout.variations {
        sum += wv.weight as f32 / 100_000.0;
        if b < sum {
            return (Some(wv.variation), true);
        }
    }
    // Rounding can leave the very top bucket unmatched: it belongs to the last variation.
    (rollout.variations.last().map(|w| w.variation), true)
}

fn clause_matches(clause: &Clause, ctx: &Context) -> bool {
    let Some(actual) = ctx.get(&clause.attribute) else {
        return false;
    };
    let one = |a: &Value| {
        clause.values.iter().any(|want| match clause.op {
            Op::In => a == want,
            Op::StartsWith => matches!((a, want), (Value::String(a), Value::String(w)) if a.starts_with(w.as_str())),
            Op::EndsWith => matches!((a, want), (Value::String(a), Value::String(w)) if a.ends_with(w.as_str())),
            Op::Contains => matches!((a, want), (Value::String(a), Value::String(w)) if a.contains(w.as_str())),
            Op::LessThan | Op::LessThanOrEqual | Op::GreaterThan | Op::GreaterThanOrEqual => {
                match (a.as_f64(), want.as_f64()) {
                    (Some(a), Some(w)) => match clause.op {
                        Op::LessThan => a < w,
                        Op::LessThanOrEqual => a <= w,
                        Op::GreaterThan => a > w,
                        _ => a >= w,
                    },
                    _ => false,
                }
            }
        })
    };
    // An array attribute matches when any element does.
    let matched = match &actual {
        Value::Array(items) => items.iter().any(one),
        single => one(single),
    };
    matched != clause.negate
}

/// Evaluates `flag` for `ctx`.
pub fn evaluate<'f>(flag: &'f Flag, ctx: &Context) -> Evaluation<'f> {
    let done = |variation: Option<usize>, reason: Reason| Evaluation {
        variation,
        value: variation.and_then(|v| flag.variations.get(v)),
        reason,
    };
    if !flag.on {
        return done(flag.off_variation, Reason::Off);
    }
    for t in &flag.targets {
        if t.values.contains(&ctx.key) {
            return done(Some(t.variation), Reason::TargetMatch);
        }
    }
    for (index, rule) in flag.rules.iter().enumerate() {
        if rule.clauses.iter().all(|c| clause_matches(c, ctx)) {
            let served = match (rule.variation, &rule.rollout) {
                (Some(v), _) => Some(v),
                (None, Some(_)) => serve(flag, &rule.serve(), ctx).0,
                (None, None) => None,
            };
            return done(served, Reason::RuleMatch { index });
        }
    }
    let (variation, in_rollout) = serve(flag, &flag.fallthrough, ctx);
    done(variation, Reason::Fallthrough { in_rollout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Rollout, Rule, Target, WeightedVariation};
    use serde_json::json;

    fn rollout_flag(weights: &[(usize, u32)]) -> Flag {
        Flag {
            key: "hashKey".into(),
            version: 1,
            on: true,
            variations: vec![json!("a"), json!("b")],
            off_variation: Some(0),
            fallthrough: VariationOrRollout {
                variation: None,
                rollout: Some(Rollout {
                    variations: weights
                        .iter()
                        .map(|&(variation, weight)| WeightedVariation { variation, weight })
                        .collect(),
                    bucket_by: None,
                    seed: None,
                }),
            },
            targets: vec![],
            rules: vec![],
            salt: "saltyA".into(),
        }
    }

    /// The rollout example of LaunchDarkly's evaluation tests: 60/40 over userKeyA, B, C.
    #[test]
    fn rollout_matches_launchdarkly() {
        let f = rollout_flag(&[(0, 60_000), (1, 40_000)]);
        let got: Vec<_> = ["userKeyA", "userKeyB", "userKeyC"]
            .iter()
            .map(|k| evaluate(&f, &Context::new(*k)).variation.unwrap())
            .collect();
        assert_eq!(got, [0, 1, 0]);
    }

    #[test]
    fn order_is_off_targets_rules_fallthrough() {
        let mut f = rollout_flag(&[(0, 100_000)]);
        f.targets = vec![Target {
            values: vec!["vip".into()],
            variation: 1,
        }];
        f.rules = vec![Rule {
            id: None,
            clauses: vec![Clause {
                attribute: "email".into(),
                op: Op::EndsWith,
                values: vec![json!("@staff.example")],
                negate: false,
            }],
            variation: Some(1),
            rollout: None,
        }];
        let staff = Context::new("s1").with("email", "ann@staff.example");
        assert_eq!(
            evaluate(&f, &Context::new("vip")).reason,
            Reason::TargetMatch
        );
        assert_eq!(evaluate(&f, &Context::new("vip")).value, Some(&json!("b")));
        assert_eq!(evaluate(&f, &staff).reason, Reason::RuleMatch { index: 0 });
        assert_eq!(evaluate(&f, &Context::new("x")).variation, Some(0));
        f.on = false;
        let off = evaluate(&f, &Context::new("vip"));
        assert_eq!((off.variation, off.reason), (Some(0), Reason::Off));
        f.off_variation = None;
        assert_eq!(evaluate(&f, &Context::new("vip")).value, None);
    }

    #[test]
    fn operators_and_negation() {
        let ctx = Context::new("k")
            .with("country", "DE")
            .with("age", 30)
            .with("groups", json!(["beta", "staff"]));
        let c = |attribute: &str, op: Op, values: Value, negate: bool| Clause {
            attribute: attribute.into(),
            op,
            values: values.as_array().unwrap().clone(),
            negate,
        };
        assert!(clause_matches(
            &c("country", Op::In, json!(["FR", "DE"]), false),
            &ctx
        ));
        assert!(!clause_matches(
            &c("country", Op::In, json!(["FR", "DE"]), true),
            &ctx
        ));
        assert!(clause_matches(
            &c("groups", Op::In, json!(["beta"]), false),
            &ctx
        ));
        assert!(clause_matches(
            &c("age", Op::GreaterThanOrEqual, json!([30]), false),
            &ctx
        ));
        assert!(!clause_matches(
            &c("age", Op::LessThan, json!([18]), false),
            &ctx
        ));
        assert!(clause_matches(
            &c("key", Op::StartsWith, json!(["k"]), false),
            &ctx
        ));
        // A missing attribute never matches, even negated.
        assert!(!clause_matches(
            &c("plan", Op::In, json!(["gold"]), true),
            &ctx
        ));
    }

    #[test]
    fn non_bucketable_values_fall_in_bucket_zero() {
        let mut f = rollout_flag(&[(1, 1), (0, 99_999)]);
        f.fallthrough.rollout.as_mut().unwrap().bucket_by = Some("org".into());
        let ctx = Context::new("k").with("org", json!({"nested": true}));
        assert_eq!(evaluate(&f, &ctx).variation, Some(1));
        let int_ctx = Context::new("k").with("org", 42);
        let str_ctx = Context::new("k").with("org", "42");
        assert_eq!(evaluate(&f, &int_ctx), evaluate(&f, &str_ctx));
    }
}
