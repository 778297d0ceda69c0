//! Prices of several products in one call (`POST /internal/prices`, callers with the internal
//! token): what order-service needs to price an order, one round trip instead of one per line.

use axum::Json;
use axum::extract::State;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use service_kit::error::{ApiError, Validator};
use service_kit::extract::ApiJson;

use crate::app::AppState;
use crate::reservations::Internal;

/// Most products priced in one call (an order's most lines).
pub const MAX_PRODUCTS: usize = 50;

/// `POST /internal/prices` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesBody {
    pub product_ids: Vec<u64>,
}

/// One product's price ("19.99") and whether it is for sale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PriceView {
    pub product_id: u64,
    pub price: String,
    pub active: bool,
}

/// The answer: the products that exist, in id order; an unknown id is absent.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PricesView {
    pub prices: Vec<PriceView>,
}

/// `POST /internal/prices`.
pub async fn prices(
    _: Internal,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PricesBody>,
) -> Result<Json<PricesView>, ApiError> {
    let mut ids = body.product_ids;
    Validator::default()
        .check(
            (1..=MAX_PRODUCTS).contains(&ids.len()),
            "product_ids",
            "must list 1 to 50 products",
        )
        .check(
            ids.iter().all(|id| *id > 0),
            "product_ids",
            "must be positive ids",
        )
        .finish()?;
    ids.sort_unstable();
    ids.dedup();
    let marks = vec!["?"; ids.len()].join(", ");
    let mut conn = state.pool.get_conn().await?;
    let rows: Vec<(u64, String, i8)> = conn
        .exec(
            format!(
                "SELECT id, CAST(price AS CHAR), active FROM products WHERE id IN ({marks}) ORDER BY id"
            ),
            ids,
        )
        .await?;
    Ok(Json(PricesView {
        prices: rows
            .into_iter()
            .map(|(product_id, price, active)| PriceView {
                product_id,
                price,
                active: active != 0,
            })
            .collect(),
    }))
}
