//! The order saga, an orchestrator persisted in `sagas`: reserve stock (product-service) →
//! charge (payment gateway, idempotency key `saga-<id>`) → confirm (order, items, payment and an
//! `order.placed` outbox event in one transaction) → commit the reservation. Any failure
//! compensates: release the stock, refund whatever was charged. Every step is idempotent and
//! every state is stored, so a saga whose driver died is finished by the recovery loop.

use std::time::Duration;

use mysql_async::TxOpts;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use service_kit::error::ApiError;
use service_kit::money::format_cents;

use crate::app::AppState;
use crate::peers::PeerError;

/// What the customer asked for, priced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// (product id, quantity, unit price in cents), in product order.
    pub items: Vec<(u64, i64, i64)>,
    pub shipping_address: Option<String>,
    pub payment_token: String,
    pub total_cents: i64,
}

/// Why a saga failed, as stored and as the customer hears it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The monolith's error for the same failure.
    pub fn to_api(&self) -> ApiError {
        match self.code.as_str() {
            "insufficient_stock" => ApiError::Conflict {
                code: "insufficient_stock",
                message: self.message.clone(),
            },
            "payment_declined" => ApiError::PaymentDeclined(self.message.clone()),
            "payment_unavailable" => ApiError::PaymentUnavailable(self.message.clone()),
            "product_gone" => ApiError::NotFound("product"),
            _ => ApiError::Internal(format!("{}: {}", self.code, self.message)),
        }
    }
}

/// The idempotency key of saga `id`: the reservation id and the payment key.
pub fn key(id: u64) -> String {
    format!("saga-{id}")
}

/// Stores a new saga, driven by the caller for `lease_secs`.
pub async fn start(state: &AppState, user_id: u64, req: &Request) -> Result<u64, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    conn.exec_drop(
        "INSERT INTO sagas (user_id, request, state, lease_until) VALUES (?, ?, 'reserving', NOW(3) + INTERVAL ? SECOND)",
        (
            user_id,
            serde_json::to_string(req).expect("serializable"),
            state.config.peers.lease_secs,
        ),
    )
    .await?;
    Ok(conn.last_insert_id().expect("auto increment id"))
}

/// state, user, request, charge reference, order id, failure.
type SagaRow = (
    String,
    u64,
    String,
    Option<String>,
    Option<u64>,
    Option<String>,
);

/// Moves saga `id` from `from` to `to` (renewing the lease); false when it was not in `from`.
async fn advance(
    state: &AppState,
    id: u64,
    from: &str,
    to: &str,
    charge_ref: Option<&str>,
    failure: Option<&Failure>,
) -> Result<bool, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    conn.exec_drop(
        "UPDATE sagas SET state = ?, charge_ref = COALESCE(?, charge_ref), error = COALESCE(?, error), \
         lease_until = NOW(3) + INTERVAL ? SECOND WHERE id = ? AND state = ?",
        (
            to,
            charge_ref,
            failure.map(|f| serde_json::to_string(f).expect("serializable")),
            state.config.peers.lease_secs,
            id,
            from,
        ),
    )
    .await?;
    if conn.affected_rows() == 1 {
        tracing::info!(saga = id, from, to, "saga step");
        state.metrics.sagas.with_label_values(&[to]).inc();
    }
    Ok(conn.affected_rows() == 1)
}

/// Runs saga `id` from where it stands to its end: the order id, or the customer's error.
pub async fn drive(state: &AppState, id: u64) -> Result<u64, ApiError> {
    let k = key(id);
    let peers = &state.peers;
    for _ in 0..20 {
        let mut conn = state.pool.get_conn().await?;
        let row: Option<SagaRow> = conn
            .exec_first(
                "SELECT state, user_id, request, charge_ref, order_id, error FROM sagas WHERE id = ?",
                (id,),
            )
            .await?;
        drop(conn);
        let (step, user_id, request, charge_ref, order_id, error) =
            row.ok_or(ApiError::NotFound("saga"))?;
        let req: Request = serde_json::from_str(&request)
            .map_err(|e| ApiError::Internal(format!("saga {id} request: {e}")))?;
        let failure = || -> Failure {
            error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_else(|| Failure::new("unknown", "the order failed"))
        };
        match step.as_str() {
            "reserving" => {
                let lines: Vec<(u64, i64)> = req.items.iter().map(|i| (i.0, i.1)).collect();
                let (to, failure) = match peers.reserve(&k, &lines).await {
                    Ok(()) => ("charging", None),
                    Err(PeerError::Refused {
                        status: 409,
                        code,
                        message,
                    }) if code == "insufficient_stock" => {
                        ("failed", Some(Failure::new("insufficient_stock", message)))
                    }
                    Err(PeerError::Refused { status: 404, .. }) => (
                        "failed",
                        Some(Failure::new("product_gone", "a product disappeared")),
                    ),
                    Err(e) => (
                        "compensating",
                        Some(Failure::new("unavailable", format!("reserving stock: {e}"))),
                    ),
                };
                advance(state, id, "reserving", to, None, failure.as_ref()).await?;
            }
            "charging" => {
                let (to, reference, failure) = match peers
                    .charge(&k, req.total_cents, &req.payment_token)
                    .await
                {
                    Ok(reference) => ("confirming", Some(reference), None),
                    Err(PeerError::Refused {
                        status: 402,
                        message,
                        ..
                    }) => (
                        "compensating",
                        None,
                        Some(Failure::new("payment_declined", message)),
                    ),
                    Err(PeerError::Refused {
                        status: 503,
                        message,
                        ..
                    }) => (
                        "compensating",
                        None,
                        Some(Failure::new("payment_unavailable", message)),
                    ),
                    // No answer: perhaps charged. Compensation refunds by the same key.
                    Err(e) => {
                        tracing::warn!(saga = id, error = %e, "payment gateway did not answer; compensating");
                        (
                            "compensating",
                            None,
                            Some(Failure::new(
                                "payment_unavailable",
                                "the payment gateway did not answer",
                            )),
                        )
                    }
                };
                advance(
                    state,
                    id,
                    "charging",
                    to,
                    reference.as_deref(),
                    failure.as_ref(),
                )
                .await?;
            }
            "confirming" => {
                confirm(
                    state,
                    id,
                    user_id,
                    &req,
                    charge_ref.as_deref().unwrap_or_default(),
                )
                .await?;
            }
            "committing" => {
                let order_id = order_id
                    .ok_or_else(|| ApiError::Internal(format!("saga {id} has no order")))?;
                match peers.settle(&k, "commit").await {
                    Ok(()) => {
                        advance(state, id, "committing", "done", None, None).await?;
                    }
                    // The order is paid; the recovery loop commits the reservation later.
                    Err(e) => {
                        tracing::warn!(saga = id, error = %e, "reservation not committed yet")
                    }
                }
                return Ok(order_id);
            }
            "compensating" => {
                // Stock first: it is never wrong to give it back once no order will exist; the
                // refund (of a charge that may not even exist) can wait for the gateway.
                let undone = async {
                    peers.settle(&k, "release").await?;
                    peers.refund(&k).await
                }
                .await;
                match undone {
                    Ok(()) => {
                        advance(state, id, "compensating", "failed", None, None).await?;
                    }
                    // The customer hears the failure now; the recovery loop finishes undoing.
                    Err(e) => {
                        tracing::warn!(saga = id, error = %e, "compensation incomplete; the recovery loop retries");
                        return Err(failure().to_api());
                    }
                }
            }
            "failed" => return Err(failure().to_api()),
            "done" => {
                return order_id
                    .ok_or_else(|| ApiError::Internal(format!("saga {id} has no order")));
            }
            other => return Err(ApiError::Internal(format!("saga {id} in state {other}"))),
        }
    }
    Err(ApiError::Internal(format!("saga {id} did not settle")))
}

/// The order, its items, its payment and the `order.placed` event, in one transaction that also
/// moves the saga on (so it happens once, whoever drives).
async fn confirm(
    state: &AppState,
    id: u64,
    user_id: u64,
    req: &Request,
    charge_ref: &str,
) -> Result<(), ApiError> {
    let mut tx = state.pool.start_transaction(TxOpts::default()).await?;
    let current: Option<String> = tx
        .exec_first("SELECT state FROM sagas WHERE id = ? FOR UPDATE", (id,))
        .await?;
    if current.as_deref() != Some("confirming") {
        return Ok(()); // someone else confirmed it
    }
    tx.exec_drop(
        "INSERT INTO orders (user_id, status, total, shipping_address) VALUES (?, 'paid', ?, ?)",
        (
            user_id,
            format_cents(req.total_cents),
            req.shipping_address.as_deref(),
        ),
    )
    .await?;
    let order_id = tx.last_insert_id().expect("auto increment id");
    let mut params: Vec<mysql_async::Value> = Vec::new();
    for (product_id, quantity, price) in &req.items {
        params.extend([
            order_id.into(),
            (*product_id).into(),
            (*quantity).into(),
            format_cents(*price).into(),
        ]);
    }
    tx.exec_drop(
        format!(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES {}",
            vec!["(?, ?, ?, ?)"; req.items.len()].join(", ")
        ),
        params,
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO payments (order_id, amount, status, provider, provider_ref, idempotency_key) \
         VALUES (?, ?, 'captured', 'simulated', ?, ?)",
        (order_id, format_cents(req.total_cents), charge_ref, key(id)),
    )
    .await?;
    service_kit::outbox::write(
        &mut tx,
        "order",
        &order_id.to_string(),
        "order.placed",
        &serde_json::json!({"order_id": order_id, "user_id": user_id, "total": format_cents(req.total_cents)}),
    )
    .await?;
    tx.exec_drop(
        "UPDATE sagas SET state = 'committing', order_id = ?, lease_until = NOW(3) + INTERVAL ? SECOND WHERE id = ?",
        (order_id, state.config.peers.lease_secs, id),
    )
    .await?;
    tx.commit().await?;
    state.metrics.sagas.with_label_values(&["committing"]).inc();
    tracing::info!(saga = id, order_id, "order confirmed");
    Ok(())
}

/// Finishes sagas whose driver went silent (a crash, a lost request): before the charge they are
/// compensated; a charge the gateway knows of is completed into an order.
pub async fn recover_once(state: &AppState) -> Result<usize, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    let open: Vec<(u64, String)> = conn
        .query(
            "SELECT id, state FROM sagas WHERE state NOT IN ('done', 'failed') AND lease_until < NOW(3) ORDER BY id LIMIT 100",
        )
        .await?;
    let mut n = 0;
    for (id, step) in open {
        conn.exec_drop(
            "UPDATE sagas SET lease_until = NOW(3) + INTERVAL ? SECOND WHERE id = ? AND lease_until < NOW(3)",
            (state.config.peers.lease_secs, id),
        )
        .await?;
        if conn.affected_rows() != 1 {
            continue; // another replica took it
        }
        tracing::info!(saga = id, state = %step, "recovering a saga whose driver went silent");
        let interrupted = || Failure::new("payment_unavailable", "the order was interrupted");
        match step.as_str() {
            "reserving" => {
                advance(
                    state,
                    id,
                    "reserving",
                    "compensating",
                    None,
                    Some(&interrupted()),
                )
                .await?;
            }
            "charging" => match state.peers.charge_for(&key(id)).await {
                Ok(Some(reference)) => {
                    advance(state, id, "charging", "confirming", Some(&reference), None).await?;
                }
                Ok(None) => {
                    advance(
                        state,
                        id,
                        "charging",
                        "compensating",
                        None,
                        Some(&interrupted()),
                    )
                    .await?;
                }
                Err(e) => {
                    tracing::warn!(saga = id, error = %e, "cannot ask the gateway yet");
                    continue;
                }
            },
            _ => {}
        }
        let _ = drive(state, id).await;
        n += 1;
    }
    Ok(n)
}

/// Runs `recover_once` every `every` until the process ends.
pub fn spawn_recovery(state: AppState, every: Duration) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = recover_once(&state).await {
                tracing::warn!(error = %e, "saga recovery round failed");
            }
            tokio::time::sleep(every).await;
        }
    });
}
