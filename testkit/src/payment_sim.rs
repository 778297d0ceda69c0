//! A payment gateway simulator over HTTP, for order-service's tests and the dev stack: charges
//! keyed by `Idempotency-Key` (a replay answers the first charge), refunds, and failure modes
//! chosen by the card token — `tok_decline…` (402), `tok_unavailable…` (503, nothing charged),
//! `tok_timeout…` (charged, answered only after 10 s), `tok_fail_after_charge…` (charged, 500).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Ledger {
    /// idempotency key → (charge id, amount in cents, refunded)
    charges: HashMap<String, (String, i64, bool)>,
    /// Charge requests that took money (not replays).
    charged: u64,
    refunded: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn error(status: StatusCode, kind: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message}})),
    )
}

fn view(key: &str, (id, amount, refunded): &(String, i64, bool)) -> Value {
    json!({"id": id, "idempotency_key": key, "amount_cents": amount,
           "status": if *refunded { "refunded" } else { "captured" }, "provider": "simulated"})
}

async fn charge(
    State(ledger): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_string)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Idempotency-Key is required",
        );
    };
    let token = body["token"].as_str().unwrap_or_default().to_string();
    let amount = body["amount_cents"].as_i64().unwrap_or(0);
    if let Some(c) = ledger.lock().expect("ledger").charges.get(&key) {
        return (StatusCode::OK, Json(view(&key, c)));
    }
    if token.starts_with("tok_decline") {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            "the card was declined",
        );
    }
    if token.starts_with("tok_unavailable") {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the payment gateway did not answer",
        );
    }
    if !token.starts_with("tok_") {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            "the payment token is not recognised",
        );
    }
    if amount <= 0 {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            "nothing to charge",
        );
    }
    let c = {
        let mut l = ledger.lock().expect("ledger");
        l.charged += 1;
        let c = (format!("ch_{}", l.charged), amount, false);
        l.charges.insert(key.clone(), c.clone());
        c
    };
    if token.starts_with("tok_timeout") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if token.starts_with("tok_fail_after_charge") {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway failed after charging",
        );
    }
    (StatusCode::CREATED, Json(view(&key, &c)))
}

async fn refund(
    State(ledger): State<Shared>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = body["idempotency_key"].as_str().unwrap_or_default();
    let mut l = ledger.lock().expect("ledger");
    let Some(c) = l.charges.get_mut(key) else {
        return error(
            StatusCode::NOT_FOUND,
            "no_charge",
            "no charge with this key",
        );
    };
    let first = !c.2;
    c.2 = true;
    let v = view(key, c);
    if first {
        l.refunded += 1;
    }
    (StatusCode::OK, Json(v))
}

async fn get_charge(
    State(ledger): State<Shared>,
    Path(key): Path<String>,
) -> (StatusCode, Json<Value>) {
    match ledger.lock().expect("ledger").charges.get(&key) {
        Some(c) => (StatusCode::OK, Json(view(&key, c))),
        None => error(
            StatusCode::NOT_FOUND,
            "no_charge",
            "no charge with this key",
        ),
    }
}

async fn stats(State(ledger): State<Shared>) -> Json<Value> {
    let l = ledger.lock().expect("ledger");
    Json(json!({"charged": l.charged, "refunded": l.refunded}))
}

/// The simulator's routes, with an empty ledger.
pub fn router() -> Router {
    Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/charges/{key}", get(get_charge))
        .route("/v1/refunds", post(refund))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Shared::default())
}
