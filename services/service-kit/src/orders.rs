//! The orders contract the monolith and order-service both serve: shapes, the validation of a
//! new order, loading orders with their items and payment, and the read handlers (`GET
//! /api/orders`, `GET /api/orders/{id}`) over the `orders`, `order_items` and `payments` tables.
//! Placing and cancelling differ: one transaction in the monolith, a saga in order-service.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use mysql_async::prelude::*;
use mysql_async::{Pool, Row, Value};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Validator};
use crate::extract::{ApiId, ApiQuery, AuthUser, VerifyToken};
use crate::format::{PageQuery, timestamp};
use crate::products::Page;

/// A server state that serves the order read routes.
pub trait OrdersState: VerifyToken + Clone + Send + Sync + 'static {
    fn orders_pool(&self) -> &Pool;
}

/// An order line.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct OrderItemView {
    pub product_id: u64,
    pub quantity: i64,
    pub unit_price: String,
}

/// The payment of an order.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct PaymentView {
    pub id: u64,
    pub amount: String,
    pub currency: String,
    pub status: String,
    pub provider: String,
    pub reference: String,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct OrderView {
    pub id: u64,
    pub user_id: u64,
    pub status: String,
    pub total: String,
    pub currency: String,
    pub shipping_address: Option<String>,
    pub items: Vec<OrderItemView>,
    pub payment: Option<PaymentView>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Loads orders with their items and payments in three queries, in the order of `ids`.
pub async fn load(conn: &mut impl Queryable, ids: &[u64]) -> Result<Vec<OrderView>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let params: Vec<Value> = ids.iter().map(|&i| i.into()).collect();
    let marks = placeholders(ids.len());
    let rows: Vec<Row> = conn
        .exec(
            format!(
                "SELECT id, user_id, status, CAST(total AS CHAR) AS total, currency, \
                 shipping_address, created_at, updated_at FROM orders WHERE id IN ({marks})"
            ),
            params.clone(),
        )
        .await?;
    let items: Vec<(u64, u64, i64, String)> = conn
        .exec(
            format!(
                "SELECT order_id, product_id, quantity, CAST(unit_price AS CHAR) \
                 FROM order_items WHERE order_id IN ({marks}) ORDER BY order_id, product_id"
            ),
            params.clone(),
        )
        .await?;
    let payments: Vec<Row> = conn
        .exec(
            format!(
                "SELECT id, order_id, CAST(amount AS CHAR) AS amount, currency, status, provider, \
                 provider_ref FROM payments WHERE order_id IN ({marks}) ORDER BY id"
            ),
            params,
        )
        .await?;
    let mut item_map: HashMap<u64, Vec<OrderItemView>> = HashMap::new();
    for (order_id, product_id, quantity, unit_price) in items {
        item_map.entry(order_id).or_default().push(OrderItemView {
            product_id,
            quantity,
            unit_price,
        });
    }
    let mut payment_map: HashMap<u64, PaymentView> = HashMap::new();
    for mut p in payments {
        let order_id: u64 = p.take("order_id").expect("order_id");
        payment_map.insert(
            order_id,
            PaymentView {
                id: p.take("id").expect("id"),
                amount: p.take("amount").expect("amount"),
                currency: p.take("currency").expect("currency"),
                status: p.take("status").expect("status"),
                provider: p.take("provider").expect("provider"),
                reference: p.take("provider_ref").expect("provider_ref"),
            },
        );
    }
    let mut by_id: HashMap<u64, OrderView> = HashMap::new();
    for mut r in rows {
        let id: u64 = r.take("id").expect("id");
        by_id.insert(
            id,
            OrderView {
                id,
                user_id: r.take("user_id").expect("user_id"),
                status: r.take("status").expect("status"),
                total: r.take("total").expect("total"),
                currency: r.take("currency").expect("currency"),
                shipping_address: r.take("shipping_address").expect("shipping_address"),
                items: item_map.remove(&id).unwrap_or_default(),
                payment: payment_map.remove(&id),
                created_at: timestamp(r.take("created_at").expect("created_at")),
                updated_at: timestamp(r.take("updated_at").expect("updated_at")),
            },
        );
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// One line of `POST /api/orders`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    pub product_id: u64,
    pub quantity: i64,
}

/// `POST /api/orders` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceBody {
    pub items: Vec<ItemBody>,
    pub payment_token: String,
    pub shipping_address: Option<String>,
}

pub fn validate_place(body: &PlaceBody) -> Result<(), ApiError> {
    let mut v = Validator::default();
    v.check(
        (1..=50).contains(&body.items.len()),
        "items",
        "must hold 1 to 50 lines",
    )
    .check(
        (1..=64).contains(&body.payment_token.len()),
        "payment_token",
        "is required (at most 64 characters)",
    )
    .check(
        body.shipping_address
            .as_deref()
            .is_none_or(|a| (1..=500).contains(&a.trim().chars().count())),
        "shipping_address",
        "must be 1 to 500 characters",
    );
    let mut seen = std::collections::HashSet::new();
    for (i, item) in body.items.iter().enumerate() {
        v.check(
            item.product_id > 0,
            &format!("items[{i}].product_id"),
            "must be a positive id",
        )
        .check(
            (1..=100).contains(&item.quantity),
            &format!("items[{i}].quantity"),
            "must be between 1 and 100",
        )
        .check(
            seen.insert(item.product_id),
            &format!("items[{i}].product_id"),
            "appears twice; put the whole quantity on one line",
        );
    }
    v.finish()
}

/// What one attempt at placing an order ended with.
/// `GET /api/orders/{id}`: the owner's or, for administrators, anyone's; 404 otherwise.
pub async fn get_one<S: OrdersState>(
    State(state): State<S>,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<OrderView>, ApiError> {
    let mut conn = state.orders_pool().get_conn().await?;
    let order = load(&mut conn, &[id]).await?.pop();
    match order {
        Some(o) if o.user_id == user.id || user.is_admin() => Ok(Json(o)),
        // Someone else's order looks exactly like a missing one.
        _ => Err(ApiError::NotFound("order")),
    }
}

/// `GET /api/orders`: the caller's orders, newest first.
pub async fn list_own<S: OrdersState>(
    State(state): State<S>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let (page, per_page, offset) = query.resolve()?;
    let mut conn = state.orders_pool().get_conn().await?;
    let total: u64 = conn
        .exec_first("SELECT COUNT(*) FROM orders WHERE user_id = ?", (user.id,))
        .await?
        .unwrap_or(0);
    let ids: Vec<u64> = conn
        .exec(
            format!(
                "SELECT id FROM orders WHERE user_id = ? ORDER BY id DESC LIMIT {per_page} OFFSET {offset}"
            ),
            (user.id,),
        )
        .await?;
    let items = load(&mut conn, &ids).await?;
    Ok(Json(Page {
        items,
        page,
        per_page,
        total,
    }))
}
