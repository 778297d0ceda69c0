//! Clients of the services the saga calls: product-service (prices, stock reservations) and the
//! payment gateway (charges and refunds keyed by the saga's idempotency key). Timeouts and
//! transport errors are retried with the same key; answers are typed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Peers;

/// What a call to a peer came to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    /// The peer refused: status, its error code and message.
    #[error("{code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer after every attempt (timeouts, connection errors, 5xx): the effect is unknown.
    #[error("{0}")]
    Unreachable(String),
}

/// A product's price and whether it is for sale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priced {
    pub price_cents: i64,
    pub active: bool,
}

/// The peers, with one HTTP client.
#[derive(Clone)]
pub struct Clients {
    http: reqwest::Client,
    peers: Peers,
}

impl Clients {
    pub fn new(peers: Peers) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(peers.timeout_ms))
                .build()
                .expect("HTTP client"),
            peers,
        }
    }

    /// One call, retried on no answer or a 5xx; a 4xx is the peer's answer.
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), PeerError> {
        let mut last = String::new();
        for attempt in 0..self.peers.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(r) if r.status().is_server_error() => {
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    last = format!("{url} answered {status}: {v}");
                    // A gateway that says it is unavailable charged nothing: say so as such.
                    if status == 503 && attempt + 1 == self.peers.attempts {
                        return Err(refused(503, &v));
                    }
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    return Ok((status, v));
                }
                Err(e) => last = format!("{url}: {e}"),
            }
            tracing::warn!(%url, attempt, error = %last, "peer call failed; trying again");
        }
        Err(PeerError::Unreachable(last))
    }

    fn product(&self, path: &str) -> String {
        format!("{}{path}", self.peers.product_url.trim_end_matches('/'))
    }

    fn payment(&self, path: &str) -> String {
        format!("{}{path}", self.peers.payment_url.trim_end_matches('/'))
    }

    /// Price and state of each product, in one call; a product that does not exist is absent.
    pub async fn prices(
        &self,
        product_ids: &[u64],
    ) -> Result<std::collections::BTreeMap<u64, Priced>, PeerError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                self.product("/internal/prices"),
                Some(&self.peers.product_token),
                None,
                Some(json!({"product_ids": product_ids})),
            )
            .await?;
        if status != 200 {
            return Err(refused(status, &v));
        }
        let bad = || PeerError::Unreachable(format!("product-service prices: unexpected {v}"));
        let mut out = std::collections::BTreeMap::new();
        for p in v["prices"].as_array().ok_or_else(bad)? {
            let id = p["product_id"].as_u64().ok_or_else(bad)?;
            let price_cents = p["price"]
                .as_str()
                .and_then(service_kit::money::parse_cents)
                .ok_or_else(bad)?;
            let active = p["active"].as_bool().ok_or_else(bad)?;
            out.insert(
                id,
                Priced {
                    price_cents,
                    active,
                },
            );
        }
        Ok(out)
    }

    /// Reserves every item or none (idempotent on `id`).
    pub async fn reserve(&self, id: &str, items: &[(u64, i64)]) -> Result<(), PeerError> {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q}))
            .collect();
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                self.product("/internal/reservations"),
                Some(&self.peers.product_token),
                None,
                Some(json!({"id": id, "items": items})),
            )
            .await?;
        match status {
            200 | 201 => Ok(()),
            s => Err(refused(s, &v)),
        }
    }

    /// `release`, `commit` or `return` of a reservation; an unknown reservation counts as done
    /// for `release` (nothing was reserved).
    pub async fn settle(&self, id: &str, action: &str) -> Result<(), PeerError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                self.product(&format!("/internal/reservations/{id}/{action}")),
                Some(&self.peers.product_token),
                None,
                None,
            )
            .await?;
        match status {
            200 => Ok(()),
            404 if action == "release" => Ok(()),
            s => Err(refused(s, &v)),
        }
    }

    /// Charges `amount_cents` once for `key`; the charge reference.
    pub async fn charge(
        &self,
        key: &str,
        amount_cents: i64,
        token: &str,
    ) -> Result<String, PeerError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                self.payment("/v1/charges"),
                None,
                Some(key),
                Some(json!({"amount_cents": amount_cents, "currency": "USD", "token": token})),
            )
            .await?;
        match status {
            200 | 201 => v["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| PeerError::Unreachable(format!("charge without id: {v}"))),
            s => Err(refused(s, &v)),
        }
    }

    /// The charge made for `key`, if any (after a crash: did the money move?).
    pub async fn charge_for(&self, key: &str) -> Result<Option<String>, PeerError> {
        let (status, v) = self
            .call(
                reqwest::Method::GET,
                self.payment(&format!("/v1/charges/{key}")),
                None,
                None,
                None,
            )
            .await?;
        match status {
            200 if v["status"] == "captured" => Ok(v["id"].as_str().map(str::to_string)),
            200 | 404 => Ok(None),
            s => Err(refused(s, &v)),
        }
    }

    /// Refunds the charge made for `key`; nothing charged is nothing to refund.
    pub async fn refund(&self, key: &str) -> Result<(), PeerError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                self.payment("/v1/refunds"),
                None,
                None,
                Some(json!({"idempotency_key": key})),
            )
            .await?;
        match status {
            200 | 404 => Ok(()),
            s => Err(refused(s, &v)),
        }
    }
}

/// A refusal from either peer's error body (`{"error": {"code"|"type", "message"}}`).
fn refused(status: u16, v: &Value) -> PeerError {
    let e = &v["error"];
    PeerError::Refused {
        status,
        code: e["code"]
            .as_str()
            .or(e["type"].as_str())
            .unwrap_or("unknown")
            .to_string(),
        message: e["message"].as_str().unwrap_or_default().to_string(),
    }
}
