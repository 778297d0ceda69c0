//! The proxy replicas' admin API as the controller calls it: one client, the operator token,
//! the answer as JSON or a typed failure naming the replica.

use std::time::Duration;

/// Every replica's admin API and the token to call them with.
#[derive(Debug, Clone)]
pub struct Proxies {
    http: reqwest::Client,
    pub urls: Vec<String>,
    token: Option<String>,
}

/// A call that failed: which replica, and what it said.
#[derive(Debug, thiserror::Error)]
#[error("proxy {proxy}: {message}")]
pub struct ProxyError {
    pub proxy: String,
    pub message: String,
}

impl Proxies {
    pub fn new(urls: Vec<String>, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            urls,
            token,
        }
    }

    /// `method path` on `proxy`; the JSON answer of a 2xx, else the status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        proxy: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProxyError> {
        let text = self.send(method, proxy, path, body).await?;
        serde_json::from_str(&text).map_err(|e| ProxyError {
            proxy: proxy.to_string(),
            message: format!("{path}: not JSON: {e}"),
        })
    }

    /// `GET path` on `proxy` as text (`/metrics`).
    pub async fn text(&self, proxy: &str, path: &str) -> Result<String, ProxyError> {
        self.send(reqwest::Method::GET, proxy, path, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        proxy: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String, ProxyError> {
        let mut req = self
            .http
            .request(method, format!("{proxy}{path}"))
            .header("x-strangler-source", "cli")
            .timeout(Duration::from_secs(5));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let fail = |message: String| ProxyError {
            proxy: proxy.to_string(),
            message,
        };
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        Ok(text)
    }
}
