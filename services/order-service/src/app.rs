//! order-service's HTTP application: the monolith's `/api/orders*` routes — reads through the
//! shared handlers, placing through the saga, cancelling with a refund and the stock given back —
//! and the health, readiness and metrics endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mysql_async::prelude::*;
use mysql_async::{Pool, TxOpts};
use prometheus::{IntCounterVec, Opts};
use service_kit::error::{ApiError, FieldError};
use service_kit::extract::{ApiId, ApiJson, AuthUser, VerifyToken};
use service_kit::http::HttpMetrics;
use service_kit::jwks::JwksVerifier;
use service_kit::jwt::Claims;
use service_kit::migrate::Migration;
use service_kit::orders::{
    OrderView, OrdersState, PlaceBody, get_one, list_own, load, validate_place,
};

use crate::config::Config;
use crate::peers::Clients;
use crate::saga;

/// order-service's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "orders",
        sql: include_str!("../migrations/0001_orders.sql"),
    },
    Migration {
        version: 2,
        name: "sagas",
        sql: include_str!("../migrations/0002_sagas.sql"),
    },
];

/// Metrics: HTTP, and `order_service_saga_steps_total{state}`.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    pub sagas: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let http = HttpMetrics::new("order_service");
        let sagas = IntCounterVec::new(
            Opts::new(
                "order_service_saga_steps_total",
                "Saga steps by the state reached",
            ),
            &["state"],
        )
        .expect("valid metric");
        http.register(&sagas);
        Self { http, sagas }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub tokens: Arc<JwksVerifier>,
    pub peers: Clients,
    pub metrics: Metrics,
    pub config: Arc<Config>,
}

impl VerifyToken for AppState {
    fn verify_token(&self, token: &str) -> Option<Claims> {
        self.tokens.verify(token)
    }
}

impl OrdersState for AppState {
    fn orders_pool(&self) -> &Pool {
        &self.pool
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/orders", get(list_own::<AppState>).post(place))
        .route("/api/orders/{id}", get(get_one::<AppState>))
        .route("/api/orders/{id}/cancel", post(cancel));
    service_kit::http::finish(
        routes,
        state.clone(),
        state.metrics.http.clone(),
        state.pool.clone(),
        MIGRATIONS,
        state.config.server.max_body_bytes,
    )
}

/// `POST /api/orders`: prices from product-service, then the saga; 201 with the paid order, or
/// the monolith's error for the same failure (422, 409, 402, 502).
async fn place(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PlaceBody>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    validate_place(&body)?;
    let mut lines: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    let mut unknown = Vec::new();
    let ids: Vec<u64> = body.items.iter().map(|i| i.product_id).collect();
    let prices = state
        .peers
        .prices(&ids)
        .await
        .map_err(|e| ApiError::Internal(format!("product-service: {e}")))?;
    for (n, item) in body.items.iter().enumerate() {
        match prices.get(&item.product_id).copied() {
            Some(p) if p.active => {
                lines.insert(item.product_id, (item.quantity, p.price_cents));
            }
            _ => unknown.push(FieldError {
                field: format!("items[{n}].product_id"),
                message: format!(
                    "product {} does not exist or is not for sale",
                    item.product_id
                ),
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    let req = saga::Request {
        total_cents: lines.values().map(|(q, p)| q * p).sum(),
        items: lines.iter().map(|(id, (q, p))| (*id, *q, *p)).collect(),
        shipping_address: body
            .shipping_address
            .as_deref()
            .map(|a| a.trim().to_string()),
        payment_token: body.payment_token.clone(),
    };
    let id = saga::start(&state, user.id, &req).await?;
    let order_id = saga::drive(&state, id).await?;
    let mut conn = state.pool.get_conn().await?;
    let order = load(&mut conn, &[order_id])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(format!("order {order_id} missing")))?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// `POST /api/orders/{id}/cancel`: a paid order is refunded and its stock given back; 409
/// `order_not_cancellable` for any other status; someone else's order is 404.
async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<OrderView>, ApiError> {
    let mut tx = state.pool.start_transaction(TxOpts::default()).await?;
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
    let payment: Option<(u64, String)> = tx
        .exec_first(
            "SELECT id, idempotency_key FROM payments WHERE order_id = ? AND status = 'captured' FOR UPDATE",
            (id,),
        )
        .await?;
    if let Some((payment_id, key)) = payment {
        state
            .peers
            .refund(&key)
            .await
            .map_err(|e| ApiError::PaymentUnavailable(e.to_string()))?;
        state
            .peers
            .settle(&key, "return")
            .await
            .map_err(|e| ApiError::Internal(format!("giving the stock back: {e}")))?;
        tx.exec_drop(
            "UPDATE payments SET status = 'refunded' WHERE id = ?",
            (payment_id,),
        )
        .await?;
    }
    tx.exec_drop("UPDATE orders SET status = 'cancelled' WHERE id = ?", (id,))
        .await?;
    service_kit::outbox::write(
        &mut tx,
        "order",
        &id.to_string(),
        "order.cancelled",
        &serde_json::json!({"order_id": id, "user_id": owner}),
    )
    .await?;
    tx.commit().await?;
    let mut conn = state.pool.get_conn().await?;
    let order = load(&mut conn, &[id])
        .await?
        .pop()
        .ok_or(ApiError::NotFound("order"))?;
    Ok(Json(order))
}
