//! Orders: place (check and take stock, charge, record the payment and a notification, all in
//! one transaction), get one, list one's own, and cancel (stock back, refund). Stock never goes
//! negative: each line takes stock with a guarded UPDATE, in product-id order to avoid deadlocks.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mysql_async::Value;
use mysql_async::prelude::*;

use super::extract::{ApiId, ApiJson, AuthUser};
use crate::app::AppState;
use crate::db;
use crate::error::{ApiError, FieldError};
use crate::money::{format_cents, parse_cents};
use crate::payment::{Charge, PaymentError};
pub use service_kit::orders::{
    ItemBody, OrderItemView, OrderView, PaymentView, PlaceBody, get_one, list_own,
};
use service_kit::orders::{load, placeholders, validate_place};

enum Attempt {
    Done(u64),
    Retry,
}

/// `POST /api/orders`: 201 with the paid order; 409 `insufficient_stock`, 402 `payment_declined`,
/// 502 `payment_unavailable`, 422 for unknown products. Nothing is written unless all succeed.
pub async fn place(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PlaceBody>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    validate_place(&body)?;
    let mut attempts = 0;
    let id = loop {
        attempts += 1;
        match place_once(&state, &user, &body).await {
            Ok(Attempt::Done(id)) => break id,
            Ok(Attempt::Retry) if attempts < 5 => continue,
            Ok(Attempt::Retry) => {
                return Err(ApiError::Conflict {
                    code: "busy",
                    message: "the order conflicted with others too often, try again".into(),
                });
            }
            Err(e) => {
                let outcome = match &e {
                    ApiError::Conflict { code, .. } => code,
                    ApiError::PaymentDeclined(_) => "payment_declined",
                    ApiError::PaymentUnavailable(_) => "payment_unavailable",
                    ApiError::Validation(_) => "invalid",
                    _ => "error",
                };
                state.metrics.orders.with_label_values(&[outcome]).inc();
                return Err(e);
            }
        }
    };
    state.metrics.orders.with_label_values(&["placed"]).inc();
    let mut conn = state.pool.get_conn().await?;
    let order = load(&mut conn, &[id]).await?.pop().expect("just committed");
    Ok((StatusCode::CREATED, Json(order)))
}

async fn place_once(
    state: &AppState,
    user: &AuthUser,
    body: &PlaceBody,
) -> Result<Attempt, ApiError> {
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let lines: BTreeMap<u64, i64> = body
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    let ids: Vec<Value> = lines.keys().map(|&i| i.into()).collect();
    let prices: Vec<(u64, String, i8)> = tx
        .exec(
            format!(
                "SELECT id, CAST(price AS CHAR), active FROM products WHERE id IN ({})",
                placeholders(ids.len())
            ),
            ids,
        )
        .await?;
    let prices: HashMap<u64, (i64, bool)> = prices
        .into_iter()
        .map(|(id, p, a)| (id, (parse_cents(&p).unwrap_or(0), a != 0)))
        .collect();
    let unknown: Vec<FieldError> = body
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| !prices.get(&i.product_id).is_some_and(|p| p.1))
        .map(|(n, i)| FieldError {
            field: format!("items[{n}].product_id"),
            message: format!("product {} does not exist or is not for sale", i.product_id),
        })
        .collect();
    if !unknown.is_empty() {
        tx.rollback().await?;
        return Err(ApiError::Validation(unknown));
    }
    // Take stock line by line in product order; the guard keeps it from ever going negative.
    for (&product_id, &quantity) in &lines {
        let taken = tx
            .exec_drop(
                "UPDATE inventory SET available = available - ? \
                 WHERE product_id = ? AND available >= ?",
                (quantity, product_id, quantity),
            )
            .await;
        match taken {
            Err(e) if db::is_retryable(&e) => return Ok(Attempt::Retry),
            other => other?,
        }
        if tx.affected_rows() == 0 {
            tx.rollback().await?;
            return Err(ApiError::Conflict {
                code: "insufficient_stock",
                message: format!("not enough stock for product {product_id}"),
            });
        }
    }
    let total: i64 = lines.iter().map(|(id, q)| prices[id].0 * q).sum();
    tx.exec_drop(
        "INSERT INTO orders (user_id, status, total, shipping_address) VALUES (?, 'pending', ?, ?)",
        (
            user.id,
            format_cents(total),
            body.shipping_address.as_deref().map(str::trim),
        ),
    )
    .await?;
    let order_id = tx.last_insert_id().expect("auto increment id");
    let mut params: Vec<Value> = Vec::new();
    for (&product_id, &quantity) in &lines {
        params.extend([
            order_id.into(),
            product_id.into(),
            quantity.into(),
            format_cents(prices[&product_id].0).into(),
        ]);
    }
    tx.exec_drop(
        format!(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES {}",
            vec!["(?, ?, ?, ?)"; lines.len()].join(", ")
        ),
        params,
    )
    .await?;
    let key = format!("order-{order_id}");
    let charge = match state
        .payments
        .charge(&key, total, &body.payment_token)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tx.rollback().await?;
            return Err(match e {
                PaymentError::Declined(m) => ApiError::PaymentDeclined(m),
                PaymentError::Unavailable(m) => ApiError::PaymentUnavailable(m),
            });
        }
    };
    // From here on the customer has been charged: any failure refunds before answering.
    let recorded = record_payment(&mut tx, order_id, user.id, total, &key, &charge).await;
    let committed = match recorded {
        Ok(()) => tx.commit().await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match committed {
        Ok(()) => Ok(Attempt::Done(order_id)),
        Err(e) => {
            if let Err(refund) = state.payments.refund(&charge.reference, total).await {
                tracing::error!(order_id, charge = %charge.reference, error = %refund, "refund after failed order did not go through");
            }
            match e {
                ApiError::Database(ref d) if db::is_retryable(d) => Ok(Attempt::Retry),
                e => Err(e),
            }
        }
    }
}

async fn record_payment(
    tx: &mut mysql_async::Transaction<'_>,
    order_id: u64,
    user_id: u64,
    total: i64,
    key: &str,
    charge: &Charge,
) -> Result<(), ApiError> {
    tx.exec_drop(
        "INSERT INTO payments (order_id, amount, status, provider, provider_ref, idempotency_key) \
         VALUES (?, ?, 'captured', ?, ?, ?)",
        (
            order_id,
            format_cents(total),
            charge.provider,
            &charge.reference,
            key,
        ),
    )
    .await?;
    tx.exec_drop(
        "UPDATE orders SET status = 'paid' WHERE id = ?",
        (order_id,),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'order_confirmation', ?)",
        (
            user_id,
            serde_json::json!({"order_id": order_id, "total": format_cents(total)}).to_string(),
        ),
    )
    .await?;
    Ok(())
}

/// `POST /api/orders/{id}/cancel`: a paid order goes back to stock and is refunded; 409
/// `order_not_cancellable` for any other status.
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<OrderView>, ApiError> {
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let order: Option<(u64, String)> = tx
        .exec_first(
            "SELECT user_id, status FROM orders WHERE id = ? FOR UPDATE",
            (id,),
        )
        .await?;
    let Some((owner, status)) = order.filter(|(o, _)| *o == user.id || user.is_admin()) else {
        return Err(ApiError::NotFound("order"));
    };
    if status != "paid" {
        return Err(ApiError::Conflict {
            code: "order_not_cancellable",
            message: format!("order {id} is {status} and cannot be cancelled"),
        });
    }
    let lines: Vec<(u64, i64)> = tx
        .exec(
            "SELECT product_id, quantity FROM order_items WHERE order_id = ? ORDER BY product_id",
            (id,),
        )
        .await?;
    for (product_id, quantity) in lines {
        tx.exec_drop(
            "UPDATE inventory SET available = available + ? WHERE product_id = ?",
            (quantity, product_id),
        )
        .await?;
    }
    let payment: Option<(u64, String, String)> = tx
        .exec_first(
            "SELECT id, provider_ref, CAST(amount AS CHAR) FROM payments \
             WHERE order_id = ? AND status = 'captured' FOR UPDATE",
            (id,),
        )
        .await?;
    if let Some((payment_id, reference, amount)) = payment {
        let cents = parse_cents(&amount).unwrap_or(0);
        state
            .payments
            .refund(&reference, cents)
            .await
            .map_err(|e| ApiError::PaymentUnavailable(e.to_string()))?;
        tx.exec_drop(
            "UPDATE payments SET status = 'refunded' WHERE id = ?",
            (payment_id,),
        )
        .await?;
    }
    tx.exec_drop("UPDATE orders SET status = 'cancelled' WHERE id = ?", (id,))
        .await?;
    tx.exec_drop(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'order_cancelled', ?)",
        (owner, serde_json::json!({"order_id": id}).to_string()),
    )
    .await?;
    tx.commit().await?;
    state.metrics.orders.with_label_values(&["cancelled"]).inc();
    let mut conn = state.pool.get_conn().await?;
    let order = load(&mut conn, &[id]).await?.pop().expect("exists");
    Ok(Json(order))
}
