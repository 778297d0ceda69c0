//! OpenAPI conformance of real answers: the operation of a request found in the project's
//! `architecture/*.openapi.yaml` (references across files followed), its documented status
//! required, and the body checked against the response schema as JSON Schema (formats included).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The project's OpenAPI files, with one of them the contract to check against.
pub struct Spec {
    /// Every `*.openapi.yaml` of the folder, by file name, as JSON.
    docs: HashMap<String, Value>,
    /// The file whose paths are the contract.
    root: String,
}

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} is not valid YAML: {source}")]
    Yaml {
        file: String,
        source: serde_yaml::Error,
    },
    #[error("{0} has no `paths`")]
    NoPaths(String),
}

impl Spec {
    /// The contract `architecture/<name>.openapi.yaml` of this workspace.
    pub fn named(name: &str) -> Result<Self, SpecError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../architecture");
        Self::load(&dir, &format!("{name}.openapi.yaml"))
    }

    /// Every `*.openapi.yaml` in `dir`, with `root` the contract.
    pub fn load(dir: &Path, root: &str) -> Result<Self, SpecError> {
        let mut docs = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Read {
            path: dir.into(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| SpecError::Read {
                    path: dir.into(),
                    source,
                })?
                .path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if !file.ends_with(".openapi.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
                path: path.clone(),
                source,
            })?;
            let doc: Value = serde_yaml::from_str(&text).map_err(|source| SpecError::Yaml {
                file: file.into(),
                source,
            })?;
            docs.insert(file.to_string(), doc);
        }
        if docs.get(root).and_then(|d| d.get("paths")).is_none() {
            return Err(SpecError::NoPaths(root.into()));
        }
        Ok(Self {
            docs,
            root: root.into(),
        })
    }

    /// What is wrong with answering `method path` (query allowed) with `status` and `body`;
    /// empty when the answer conforms.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
        match self.check_inner(method, path, status, body) {
            Ok(problems) => problems,
            Err(problem) => vec![problem],
        }
    }

    fn check_inner(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<Vec<String>, String> {
        let path = path.split('?').next().unwrap_or(path);
        let Some((template, item)) = self.operation_path(path) else {
            return self.unrouted(404, status, body, || {
                format!("{path} matches no documented path of {}", self.root)
            });
        };
        let (doc, item) = self.resolve(&self.root, item)?;
        let Some(operation) = item.get(method.to_ascii_lowercase()) else {
            return self.unrouted(405, status, body, || {
                format!("{method} is not documented for {template}")
            });
        };
        let responses = operation
            .get("responses")
            .ok_or_else(|| format!("{method} {template} documents no responses"))?;
        let response = [
            status.to_string(),
            format!("{}XX", status / 100),
            "default".into(),
        ]
        .iter()
        .find_map(|key| responses.get(key))
        .ok_or_else(|| format!("status {status} is not documented for {method} {template}"))?;
        let (doc, response) = self.resolve(&doc, response)?;
        self.check_body(
            &doc,
            &response,
            body,
            &format!("{method} {template} {status}"),
        )
    }

    /// An answer to a path or method the file does not document: conforming only when it is
    /// `expected` (404 or 405) with the file's `x-unrouted` response.
    fn unrouted(
        &self,
        expected: u16,
        status: u16,
        body: &Value,
        undocumented: impl FnOnce() -> String,
    ) -> Result<Vec<String>, String> {
        match self.docs[&self.root].get("x-unrouted") {
            Some(response) if status == expected => {
                let (doc, response) = self.resolve(&self.root, response)?;
                self.check_body(&doc, &response, body, &format!("unrouted {status}"))
            }
            _ => Err(format!("{} (answered {status})", undocumented())),
        }
    }

    /// Problems of `body` against the JSON schema of `response` (none when it documents none).
    fn check_body(
        &self,
        doc: &str,
        response: &Value,
        body: &Value,
        what: &str,
    ) -> Result<Vec<String>, String> {
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            return Ok(Vec::new());
        };
        let schema = self.inline(doc, schema, 0)?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| format!("the schema of {what} is invalid: {e}"))?;
        Ok(validator
            .iter_errors(body)
            .map(|e| format!("{what}: at `{}`: {e}", e.instance_path()))
            .collect())
    }

    /// The documented path template `path` falls under: literal segments preferred over
    /// parameters (`/api/users/me` before `/api/users/{id}`).
    fn operation_path(&self, path: &str) -> Option<(&str, &Value)> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.docs[&self.root].get("paths")?.as_object()?;
        paths
            .iter()
            .filter_map(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.as_str(), item))
            })
            .max_by_key(|(literal, ..)| *literal)
            .map(|(_, template, item)| (template, item))
    }

    /// `value`, or what its `$ref` points at (followed until it is no reference), with the file
    /// the result lives in.
    fn resolve(&self, doc: &str, value: &Value) -> Result<(String, Value), String> {
        let (mut doc, mut value) = (doc.to_string(), value.clone());
        for _ in 0..16 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok((doc, value));
            };
            let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
            if !file.is_empty() {
                doc = file.to_string();
            }
            let target = self
                .docs
                .get(&doc)
                .ok_or_else(|| format!("$ref {reference}: no file {doc}"))?
                .pointer(pointer)
                .ok_or_else(|| format!("$ref {reference}: nothing at {pointer} in {doc}"))?;
            value = target.clone();
        }
        Err(format!("$ref chain too long at {doc}"))
    }

    /// `schema` with every `$ref` replaced by its target and OpenAPI's `nullable: true` written
    /// as JSON Schema (`anyOf` with `null`).
    fn inline(&self, doc: &str, schema: &Value, depth: usize) -> Result<Value, String> {
        if depth > 32 {
            return Err(format!(
                "schema nesting too deep (a recursive $ref?) in {doc}"
            ));
        }
        match schema {
            Value::Object(map) if map.contains_key("$ref") => {
                let (doc, target) = self.resolve(doc, schema)?;
                self.inline(&doc, &target, depth + 1)
            }
            Value::Object(map) => {
                let mut out = Map::new();
                let mut nullable = false;
                for (key, value) in map {
                    match key.as_str() {
                        "nullable" => nullable = value.as_bool() == Some(true),
                        // Documentation only.
                        "example" | "description" => {}
                        _ => {
                            out.insert(key.clone(), self.inline(doc, value, depth + 1)?);
                        }
                    }
                }
                let out = Value::Object(out);
                Ok(if nullable {
                    serde_json::json!({"anyOf": [out, {"type": "null"}]})
                } else {
                    out
                })
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.inline(doc, v, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn monolith() -> Spec {
        Spec::named("legacy-monolith").unwrap()
    }

    fn user() -> Value {
        json!({"id": 1, "email": "a@b.co", "name": "A", "phone": null, "address": null,
               "role": "customer", "created_at": "2026-12-07T10:00:00.123Z",
               "updated_at": "2026-12-07T10:00:00.123Z"})
    }

    #[test]
    fn a_conforming_answer_passes() {
        assert_eq!(
            monolith().check("GET", "/api/users/me", 200, &user()),
            Vec::<String>::new()
        );
        let error = json!({"error": {"code": "not_found", "message": "user not found"}});
        assert!(
            monolith()
                .check("GET", "/api/users/7", 404, &error)
                .is_empty()
        );
    }

    #[test]
    fn wrong_shapes_statuses_and_routes_are_named() {
        let spec = monolith();
        let mut bad = user();
        bad["role"] = json!("root");
        bad["created_at"] = json!("yesterday");
        bad.as_object_mut().unwrap().remove("email");
        let problems = spec.check("GET", "/api/users/me", 200, &bad);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems.iter().any(|p| p.contains("/role")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("email")),
            "{problems:#?}"
        );
        // `phone` is nullable, but not a number.
        let mut wrong_type = user();
        wrong_type["phone"] = json!(5);
        assert_eq!(
            spec.check("GET", "/api/users/me", 200, &wrong_type).len(),
            1
        );
        assert!(spec.check("GET", "/api/users/me", 418, &user())[0].contains("418"));
        assert!(spec.check("DELETE", "/api/users/me", 200, &user())[0].contains("DELETE"));
        assert!(spec.check("GET", "/api/nowhere", 200, &user())[0].contains("no documented"));
        // Unknown routes and methods: 404 and 405 with the error body, nothing else.
        let error = json!({"error": {"code": "not_found", "message": "route not found"}});
        assert!(spec.check("GET", "/api/nowhere", 404, &error).is_empty());
        assert!(
            spec.check("DELETE", "/api/users/me", 405, &error)
                .is_empty()
        );
        assert!(
            !spec
                .check("DELETE", "/api/users/me", 404, &error)
                .is_empty()
        );
        assert_eq!(spec.check("GET", "/api/nowhere", 404, &user()).len(), 1);
    }

    #[test]
    fn references_to_another_file_are_followed() {
        let orders = Spec::named("order-service").unwrap();
        let problems = orders.check("GET", "/api/orders?page=2", 200, &json!({"items": 3}));
        assert!(!problems.is_empty());
        let page = json!({"items": [], "page": 2, "per_page": 20, "total": 0});
        assert_eq!(
            orders.check("GET", "/api/orders?page=2", 200, &page),
            Vec::<String>::new()
        );
    }
}
