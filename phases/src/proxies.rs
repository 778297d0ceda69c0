//! The proxy replicas' admin API as the controller calls it: one client, the operator token,
//! the answer as JSON or a typed failure naming the replica.

use std::time::Duration;

/// Every replica's admin API and the token to call them with. An entry `dns+http://name:port`
/// stands for every address `name` resolves to when asked (a headless Service in Kubernetes,
/// whose replicas come and go).
#[derive(Debug, Clone)]
pub struct Proxies {
    http: reqwest::Client,
    pub urls: Vec<String>,
    token: Option<String>,
}

/// The replicas an entry of `proxies` stands for: itself, or each address its name resolves to.
pub async fn expand(entry: &str) -> Result<Vec<String>, ProxyError> {
    let Some(url) = entry.strip_prefix("dns+") else {
        return Ok(vec![entry.to_string()]);
    };
    let fail = |message: String| ProxyError {
        proxy: entry.to_string(),
        message,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| fail("not dns+http://name:port".into()))?;
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
        .ok_or_else(|| fail("names no port (dns+http://name:port)".into()))?;
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(format!("resolving {host}: {e}")))?
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(fail(format!("{host} resolves to no address")));
    }
    Ok(addrs
        .into_iter()
        .map(|a| format!("{scheme}://{a}"))
        .collect())
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

    /// The same client for the replicas every entry stands for now (see [`expand`]).
    pub async fn resolved(&self) -> Result<Self, ProxyError> {
        let mut urls = Vec::new();
        for entry in &self.urls {
            for u in expand(entry).await? {
                if !urls.contains(&u) {
                    urls.push(u);
                }
            }
        }
        Ok(Self {
            http: self.http.clone(),
            urls,
            token: self.token.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dns_entry_stands_for_every_address_of_its_name() {
        assert_eq!(
            expand("http://10.0.0.7:8001").await.unwrap(),
            ["http://10.0.0.7:8001"]
        );
        let all = expand("dns+http://localhost:8001").await.unwrap();
        assert!(
            all.contains(&"http://127.0.0.1:8001".to_string()),
            "{all:?}"
        );
        let fleet = Proxies::new(
            vec![
                "dns+http://localhost:8001".into(),
                "http://127.0.0.1:8001".into(),
            ],
            None,
        )
        .resolved()
        .await
        .unwrap();
        assert_eq!(fleet.urls, all, "one replica is asked once");
        let e = expand("dns+http://no-such-host.invalid:8001")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
        let e = expand("dns+http://localhost").await.unwrap_err();
        assert!(e.to_string().contains("names no port"), "{e}");
    }
}
