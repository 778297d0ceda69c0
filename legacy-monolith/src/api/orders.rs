//! Orders: place (check and take stock, charge, record the payment and a notification, all in
//! one transaction), get one, list one's own, and cancel (stock back, refund). Stock never goes
//! negative: each line takes stock with a guarded UPDATE, in product-id order to avoid deadlocks.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mysql_async::Value;
use mysql_async::prelude::Queryable;

use super::extract::{ApiId, ApiJson, AuthUser};
use crate::app::AppState;
use crate::db::{Db, Traced};
use crate::error::{ApiError, FieldError};
use crate::money::{format_cents, parse_cents};
use crate::payment::{Charge, PaymentError};
use serde::Deserialize;
use serde_json::json;

use super::extract::ApiQuery;
use super::{Paging, iso_time_sql};
use crate::error::Validator;

/// An order as the API shows it: a JSON object built from the rows.
type OrderJson = serde_json::Value;

/// `n` placeholders for an `IN (…)` list.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Orders with their lines and latest payment, in the order of `ids`: one query joining each
/// order to its payment, one for the lines.
async fn load(conn: &mut Traced<impl Queryable>, ids: &[u64]) -> Result<Vec<OrderJson>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let params: Vec<Value> = ids.iter().map(|&i| i.into()).collect();
    let rows: Vec<mysql_async::Row> = conn
        .all(
            format!(
                "SELECT o.id, o.user_id, o.status, CAST(o.total AS CHAR), o.currency, \
                 o.shipping_address, {}, {}, pay.id, CAST(pay.amount AS CHAR), pay.currency, \
                 pay.status, pay.provider, pay.provider_ref \
                 FROM orders o \
                 LEFT JOIN payments pay ON pay.id = (SELECT MAX(id) FROM payments WHERE order_id = o.id) \
                 WHERE o.id IN ({})",
                iso_time_sql("o.created_at"),
                iso_time_sql("o.updated_at"),
                marks(ids.len())
            ),
            params.clone(),
        )
        .await?;
    let lines: Vec<(u64, u64, i64, String)> = conn
        .all(
            format!(
                "SELECT order_id, product_id, quantity, CAST(unit_price AS CHAR) FROM order_items \
                 WHERE order_id IN ({}) ORDER BY order_id, product_id",
                marks(ids.len())
            ),
            params,
        )
        .await?;
    let mut by_order: HashMap<u64, Vec<serde_json::Value>> = HashMap::new();
    for (order_id, product_id, quantity, unit_price) in lines {
        by_order.entry(order_id).or_default().push(
            json!({"product_id": product_id, "quantity": quantity, "unit_price": unit_price}),
        );
    }
    let mut orders: HashMap<u64, OrderJson> = HashMap::new();
    for row in rows {
        let col = |i: usize| row.get::<Option<String>, _>(i).flatten();
        let id: u64 = row.get(0).unwrap_or_default();
        let payment = match row.get::<Option<u64>, _>(8).flatten() {
            Some(pay_id) => json!({
                "id": pay_id,
                "amount": col(9),
                "currency": col(10),
                "status": col(11),
                "provider": col(12),
                "reference": col(13),
            }),
            None => serde_json::Value::Null,
        };
        orders.insert(
            id,
            json!({
                "id": id,
                "user_id": row.get::<u64, _>(1).unwrap_or_default(),
                "status": col(2),
                "total": col(3),
                "currency": col(4),
                "shipping_address": col(5),
                "items": by_order.remove(&id).unwrap_or_default(),
                "payment": payment,
                "created_at": col(6),
                "updated_at": col(7),
            }),
        );
    }
    Ok(ids.iter().filter_map(|id| orders.remove(id)).collect())
}

/// One line of `POST /api/orders`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LineForm {
    pub product_id: u64,
    pub quantity: i64,
}

/// `POST /api/orders` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderForm {
    pub items: Vec<LineForm>,
    pub payment_token: String,
    pub shipping_address: Option<String>,
}

/// 422 naming every bad field of an order form.
fn check_order(form: &OrderForm) -> Result<(), ApiError> {
    let mut v = Validator::default();
    v.check(
        (1..=50).contains(&form.items.len()),
        "items",
        "must hold 1 to 50 lines",
    )
    .check(
        (1..=64).contains(&form.payment_token.len()),
        "payment_token",
        "is required (at most 64 characters)",
    )
    .check(
        form.shipping_address
            .as_deref()
            .is_none_or(|a| (1..=500).contains(&a.trim().chars().count())),
        "shipping_address",
        "must be 1 to 500 characters",
    );
    let mut seen = std::collections::HashSet::new();
    for (i, line) in form.items.iter().enumerate() {
        let field = format!("items[{i}].product_id");
        v.check(line.product_id > 0, &field, "must be a positive id")
            .check(
                (1..=100).contains(&line.quantity),
                &format!("items[{i}].quantity"),
                "must be between 1 and 100",
            )
            .check(
                seen.insert(line.product_id),
                &field,
                "appears twice; put the whole quantity on one line",
            );
    }
    v.finish()
}

/// `GET /api/orders/{id}`: the owner's or, for administrators, anyone's; 404 otherwise (someone
/// else's order looks exactly like a missing one).
pub async fn get_one(
    db: Db,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<OrderJson>, ApiError> {
    let mut conn = db.conn().await?;
    match load(&mut conn, &[id]).await?.pop() {
        Some(o) if o["user_id"] == json!(user.id) || user.is_admin() => Ok(Json(o)),
        _ => Err(ApiError::NotFound("order")),
    }
}

/// `GET /api/orders`: the caller's orders, newest first.
pub async fn list_own(
    db: Db,
    user: AuthUser,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (page, per_page, skip) = paging.window()?;
    let mut conn = db.conn().await?;
    let total: Option<u64> = conn
        .first("SELECT COUNT(*) FROM orders WHERE user_id = ?", (user.id,))
        .await?;
    let ids: Vec<u64> = conn
        .all(
            format!(
                "SELECT id FROM orders WHERE user_id = ? ORDER BY id DESC LIMIT {per_page} OFFSET {skip}"
            ),
            (user.id,),
        )
        .await?;
    let items = load(&mut conn, &ids).await?;
    Ok(Json(json!({
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total.unwrap_or(0),
    })))
}

enum Attempt {
    Done(u64),
    Retry,
}

/// `POST /api/orders`: 201 with the paid order; 409 `insufficient_stock`, 402 `payment_declined`,
/// 502 `payment_unavailable`, 422 for unknown products. Nothing is written unless all succeed.
pub async fn place(
    State(state): State<AppState>,
    db: Db,
    user: AuthUser,
    ApiJson(body): ApiJson<OrderForm>,
) -> Result<(StatusCode, Json<OrderJson>), ApiError> {
    check_order(&body)?;
    let mut attempts = 0;
    let id = loop {
        attempts += 1;
        match place_once(&state, &db, &user, &body).await {
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
    let mut conn = db.conn().await?;
    let order = load(&mut conn, &[id]).await?.pop().expect("just committed");
    Ok((StatusCode::CREATED, Json(order)))
}

async fn place_once(
    state: &AppState,
    db: &Db,
    user: &AuthUser,
    body: &OrderForm,
) -> Result<Attempt, ApiError> {
    let mut tx = db.begin().await?;
    let lines: BTreeMap<u64, i64> = body
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    let ids: Vec<Value> = lines.keys().map(|&i| i.into()).collect();
    let prices: Vec<(u64, String, i8)> = tx
        .all(
            format!(
                "SELECT id, CAST(price AS CHAR), active FROM products WHERE id IN ({})",
                marks(ids.len())
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
    // While both sides sell (a write canary) each may sell only its escrow share: the products
    // of the order that have one, locked in product order like the stock below.
    let escrowed: Vec<u64> = tx
        .all(
            format!(
                "SELECT product_id FROM stock_escrow WHERE product_id IN ({}) ORDER BY product_id FOR UPDATE",
                marks(lines.len())
            ),
            lines.keys().map(|&i| Value::from(i)).collect::<Vec<_>>(),
        )
        .await?;
    // Take stock line by line in product order; the guard keeps it from ever going negative.
    for (&product_id, &quantity) in &lines {
        if escrowed.contains(&product_id) {
            tx.run(
                "UPDATE stock_escrow SET units = units - ?, taken = taken + 1 \
                 WHERE product_id = ? AND units >= ?",
                (quantity, product_id, quantity),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                state.metrics.escrow_refusals.inc();
                state
                    .pool
                    .get_conn()
                    .await?
                    .exec_drop(
                        "UPDATE stock_escrow SET refused = refused + 1 WHERE product_id = ?",
                        (product_id,),
                    )
                    .await?;
                return Err(ApiError::Conflict {
                    code: "insufficient_stock",
                    message: format!(
                        "not enough stock for product {product_id} (the rest is held for the other side of a migration)"
                    ),
                });
            }
        }
        let taken = tx
            .run(
                "UPDATE inventory SET available = available - ? \
                 WHERE product_id = ? AND available >= ?",
                (quantity, product_id, quantity),
            )
            .await;
        match taken {
            Err(e) if crate::db::is_retryable(&e) => return Ok(Attempt::Retry),
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
    tx.run(
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
    tx.run(
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
                ApiError::Database(ref d) if crate::db::is_retryable(d) => Ok(Attempt::Retry),
                e => Err(e),
            }
        }
    }
}

async fn record_payment(
    tx: &mut Traced<mysql_async::Transaction<'static>>,
    order_id: u64,
    user_id: u64,
    total: i64,
    key: &str,
    charge: &Charge,
) -> Result<(), ApiError> {
    tx.run(
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
    tx.run(
        "UPDATE orders SET status = 'paid' WHERE id = ?",
        (order_id,),
    )
    .await?;
    // The confirmation is composed by the database from the order and its customer, one
    // statement across what will become three services (orders, users, notifications).
    tx.run(
        "INSERT INTO notifications (user_id, channel, template, payload) \
         SELECT u.id, 'email', 'order_confirmation', \
                JSON_OBJECT('order_id', o.id, 'total', CAST(o.total AS CHAR)) \
         FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = ? AND u.id = ?",
        (order_id, user_id),
    )
    .await?;
    Ok(())
}

/// `POST /api/orders/{id}/cancel`: a paid order goes back to stock and is refunded; 409
/// `order_not_cancellable` for any other status.
pub async fn cancel(
    State(state): State<AppState>,
    db: Db,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<OrderJson>, ApiError> {
    let mut tx = db.begin().await?;
    let order: Option<(u64, String)> = tx
        .first(
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
        .all(
            "SELECT product_id, quantity FROM order_items WHERE order_id = ? ORDER BY product_id",
            (id,),
        )
        .await?;
    for (product_id, quantity) in lines {
        tx.run(
            "UPDATE inventory SET available = available + ? WHERE product_id = ?",
            (quantity, product_id),
        )
        .await?;
        // Units given back return to this side's escrow share, when there is one.
        tx.run(
            "UPDATE stock_escrow SET units = units + ? WHERE product_id = ?",
            (quantity, product_id),
        )
        .await?;
    }
    let payment: Option<(u64, String, String)> = tx
        .first(
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
        tx.run(
            "UPDATE payments SET status = 'refunded' WHERE id = ?",
            (payment_id,),
        )
        .await?;
    }
    tx.run("UPDATE orders SET status = 'cancelled' WHERE id = ?", (id,))
        .await?;
    tx.run(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'order_cancelled', ?)",
        (owner, serde_json::json!({"order_id": id}).to_string()),
    )
    .await?;
    tx.commit().await?;
    state.metrics.orders.with_label_values(&["cancelled"]).inc();
    let mut conn = db.conn().await?;
    let order = load(&mut conn, &[id]).await?.pop().expect("exists");
    Ok(Json(order))
}
