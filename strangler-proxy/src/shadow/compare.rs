//! Comparing two JSON answers: every leaf that differs, with its path (`items.*.price`: array
//! indexes normalised to `*` so noise and ignore rules apply to every element).

use serde_json::Value;

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Normalised path, `.`-separated, `*` for array elements; `$` for the whole document.
    pub path: String,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<Difference>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(va, vb, &join(path, k), out),
                    None => out.push(Difference {
                        path: join(path, k),
                    }),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(Difference {
                    path: join(path, k),
                });
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(Difference {
                    path: join(path, "#len"),
                });
            }
            for (va, vb) in x.iter().zip(y) {
                walk(va, vb, &join(path, "*"), out);
            }
        }
        (x, y) if x == y => {}
        _ => out.push(Difference {
            path: if path.is_empty() {
                "$".into()
            } else {
                path.to_string()
            },
        }),
    }
}

/// Every differing leaf between `a` and `b`, deduplicated, in order.
pub fn diff_json(a: &Value, b: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    let mut seen = std::collections::HashSet::new();
    out.retain(|d| seen.insert(d.path.clone()));
    out
}

/// Whether `path` falls under the ignore rule `rule` (`a.b` covers `a.b` and `a.b.c`; `*`
/// matches any one segment).
pub fn path_matches(rule: &str, path: &str) -> bool {
    let mut r = rule.split('.');
    let mut p = path.split('.');
    loop {
        match (r.next(), p.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some(x), Some(y)) if x == "*" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_differing_leaf() {
        let a =
            json!({"id": 1, "items": [{"p": "1.00", "q": 1}, {"p": "2.00", "q": 1}], "gone": true});
        let b = json!({"id": 1, "items": [{"p": "1.00", "q": 2}, {"p": "2.50", "q": 1}], "new": 0});
        let paths: Vec<String> = diff_json(&a, &b).into_iter().map(|d| d.path).collect();
        assert_eq!(paths, ["gone", "items.*.q", "items.*.p", "new"]);
        assert!(diff_json(&a, &a).is_empty());
        assert_eq!(diff_json(&json!([1]), &json!([1, 2]))[0].path, "#len");
        assert_eq!(diff_json(&json!(1), &json!("1"))[0].path, "$");
    }

    #[test]
    fn ignore_rules_cover_subtrees_and_wildcards() {
        assert!(path_matches("created_at", "created_at"));
        assert!(path_matches("user", "user.updated_at"));
        assert!(path_matches("items.*.updated_at", "items.*.updated_at"));
        assert!(path_matches("*.updated_at", "user.updated_at"));
        assert!(!path_matches("items.price", "items"));
        assert!(!path_matches("created_at", "updated_at"));
    }
}
