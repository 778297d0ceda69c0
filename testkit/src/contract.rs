//! Contract checks: the same scripted HTTP requests sent to two servers (the monolith and the
//! service that takes over its routes), answers compared after masking the fields that differ
//! by nature (ids, timestamps, tokens) — what the proxy's shadow mode checks in production.
//! A side given its OpenAPI file also checks every answer it gets against it.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::openapi::Spec;

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    /// Raw bytes with a content type (malformed JSON, wrong media types).
    Raw(&'static str, Vec<u8>),
}

/// One server under test.
#[derive(Clone)]
pub struct Side {
    pub base: String,
    client: reqwest::Client,
    spec: Option<Arc<Spec>>,
    conformance: Arc<Mutex<Conformance>>,
}

/// What the OpenAPI checks of one side found.
#[derive(Debug, Default, Clone)]
pub struct Conformance {
    /// Answers checked.
    pub checked: usize,
    /// One line per problem, naming the request.
    pub problems: Vec<String>,
}

/// Status and JSON body (a JSON string when the body is not JSON; null when empty).
pub type Answer = (u16, Value);

impl Side {
    /// Logs `email` in with the seed password `password123`; the token (panics otherwise).
    pub async fn login(&self, email: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/api/users/login",
                None,
                Body::Json(serde_json::json!({"email": email, "password": "password123"})),
            )
            .await;
        assert_eq!(status, 200, "login of {email}: {v}");
        v["token"].as_str().expect("a token").to_string()
    }

    /// Serves `app` on a free loopback port for the rest of the test; the side that reaches it.
    pub async fn serve(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serving");
        });
        Self::new(base)
    }

    /// A server at `base` (`http://127.0.0.1:port`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: reqwest::Client::new(),
            spec: None,
            conformance: Arc::default(),
        }
    }

    /// From now on every answer is checked against `spec` (see [`Side::conformance`]).
    pub fn conforming_to(mut self, spec: Spec) -> Self {
        self.spec = Some(Arc::new(spec));
        self
    }

    /// What the OpenAPI checks found so far.
    pub fn conformance(&self) -> Conformance {
        self.conformance.lock().expect("not poisoned").clone()
    }

    /// Panics unless at least `at_least` answers were checked and every one conformed.
    #[track_caller]
    pub fn assert_conformance(&self, at_least: usize) {
        let found = self.conformance();
        assert!(
            found.problems.is_empty(),
            "answers of {} that do not conform to the OpenAPI file:\n{}",
            self.base,
            found.problems.join("\n")
        );
        assert!(
            found.checked >= at_least,
            "only {} answers of {} were checked against the OpenAPI file",
            found.checked,
            self.base
        );
    }

    /// Sends one request.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> Answer {
        let verb = method;
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(v.to_string()),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
        };
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if let Some(spec) = &self.spec {
            let problems = spec.check(verb, path, status, &value);
            let mut found = self.conformance.lock().expect("not poisoned");
            found.checked += 1;
            found.problems.extend(problems);
        }
        (status, value)
    }
}

/// `v` with the value of every key named in `volatile` (at any depth) replaced by `"<key>"`.
pub fn mask(v: &Value, volatile: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if volatile.contains(&k.as_str()) && !v.is_null() {
                        (k.clone(), Value::String(format!("<{k}>")))
                    } else {
                        (k.clone(), mask(v, volatile))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| mask(v, volatile)).collect()),
        other => other.clone(),
    }
}

/// Differences between two answers after masking, one line each; empty when equivalent.
pub fn differences(name: &str, a: &Answer, b: &Answer, volatile: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if a.0 != b.0 {
        out.push(format!("{name}: status {} vs {}", a.0, b.0));
    }
    let (ma, mb) = (mask(&a.1, volatile), mask(&b.1, volatile));
    if ma != mb {
        out.push(format!("{name}: body\n  {ma}\n  {mb}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masking_hides_only_the_named_fields() {
        let a = (
            200,
            json!({"id": 1, "user": {"id": 9, "name": "A"}, "token": "x"}),
        );
        let b = (
            200,
            json!({"id": 2, "user": {"id": 8, "name": "A"}, "token": "y"}),
        );
        assert!(differences("t", &a, &b, &["id", "token"]).is_empty());
        let c = (
            200,
            json!({"id": 2, "user": {"id": 8, "name": "B"}, "token": "y"}),
        );
        assert_eq!(differences("t", &a, &c, &["id", "token"]).len(), 1);
        assert_eq!(differences("t", &a, &(201, a.1.clone()), &["id"]).len(), 1);
    }
}
