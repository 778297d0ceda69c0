//! Stock reservations for the order saga (`/internal/reservations`, callers with the internal
//! token): reserve several products at once or none, release (compensation) and commit, each
//! idempotent on the caller's reservation id; stock never goes below zero under concurrency.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use mysql_async::TxOpts;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use service_kit::error::{ApiError, Validator};
use service_kit::extract::ApiJson;

use crate::app::AppState;

/// One product and how many units.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub product_id: u64,
    pub quantity: u32,
}

/// `POST /internal/reservations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    /// The caller's id for this reservation (the saga's), its idempotency key.
    pub id: String,
    pub items: Vec<Item>,
}

/// A reservation as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReservationView {
    pub id: String,
    pub status: String,
    pub items: Vec<Item>,
}

/// A caller holding the internal token.
pub struct Internal;

impl FromRequestParts<AppState> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "the internal API needs its bearer token",
            ))?;
        if constant_time_eq(
            given.trim().as_bytes(),
            state.config.internal.token.as_bytes(),
        ) {
            Ok(Self)
        } else {
            Err(ApiError::InvalidToken)
        }
    }
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

async fn find(
    conn: &mut impl Queryable,
    id: &str,
    lock: bool,
) -> Result<Option<ReservationView>, ApiError> {
    let row: Option<(String, String)> = conn
        .exec_first(
            format!(
                "SELECT status, items FROM reservations WHERE id = ?{}",
                if lock { " FOR UPDATE" } else { "" }
            ),
            (id,),
        )
        .await?;
    row.map(|(status, items)| {
        Ok(ReservationView {
            id: id.to_string(),
            status,
            items: serde_json::from_str(&items)
                .map_err(|e| ApiError::Internal(format!("reservation {id} items: {e}")))?,
        })
    })
    .transpose()
}

/// `POST /internal/reservations`: 201 with the reservation; the same request again is 200 with
/// the same reservation (nothing reserved twice); 409 `insufficient_stock` (nothing reserved),
/// 409 `reservation_mismatch` for a known id with other items, 404 for an unknown product.
pub async fn reserve(
    State(state): State<AppState>,
    _: Internal,
    ApiJson(body): ApiJson<ReserveBody>,
) -> Result<(StatusCode, Json<ReservationView>), ApiError> {
    let mut items = body.items.clone();
    items.sort();
    Validator::default()
        .check(
            valid_id(&body.id),
            "id",
            "must be 1 to 64 letters, digits, -, _, : or .",
        )
        .check(
            (1..=50).contains(&items.len()),
            "items",
            "must hold 1 to 50 items",
        )
        .check(
            items
                .iter()
                .all(|i| i.product_id > 0 && (1..=10_000).contains(&i.quantity)),
            "items",
            "each needs a product_id and a quantity from 1 to 10000",
        )
        .check(
            items.windows(2).all(|w| w[0].product_id != w[1].product_id),
            "items",
            "each product at most once",
        )
        .finish()?;
    // Deadlocks (two reservations locking the same rows) are retried after a short random
    // pause, so that a crowd of callers on one product does not collide again in step.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_reserve(&state, &body.id, &items).await {
            Err(ApiError::Database(e)) if attempt < 10 && service_kit::db::is_retryable(&e) => {
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos())
                        % 10,
                );
                tokio::time::sleep(std::time::Duration::from_millis(1 + jitter * attempt)).await;
                continue;
            }
            // Two callers inserting the same new id at once: the loser reads the winner's.
            Err(ApiError::Database(e)) if attempt < 10 && service_kit::db::is_duplicate(&e) => {
                continue;
            }
            other => return other,
        }
    }
}

async fn try_reserve(
    state: &AppState,
    id: &str,
    items: &[Item],
) -> Result<(StatusCode, Json<ReservationView>), ApiError> {
    let mut tx = state.pool.start_transaction(TxOpts::default()).await?;
    // A plain read: a locking read of a missing id takes a gap lock that every concurrent
    // reservation's INSERT then waits on (deadlocks under a crowd). Two callers with one new id
    // are settled by the primary key instead: the loser's INSERT fails, its transaction rolls
    // back (stock included) and its retry finds the winner's reservation.
    if let Some(existing) = find(&mut tx, id, false).await? {
        return if existing.items == items {
            Ok((StatusCode::OK, Json(existing)))
        } else {
            Err(ApiError::Conflict {
                code: "reservation_mismatch",
                message: format!("reservation {id} exists with other items"),
            })
        };
    }
    // In product order, so that concurrent reservations lock rows in the same order. While both
    // sides sell, this side sells only its escrow share (service_kit::escrow).
    for item in items {
        tx.exec_drop(
            "UPDATE inventory SET available = available - ? WHERE product_id = ? AND available >= ?",
            (item.quantity, item.product_id, item.quantity),
        )
        .await?;
        let taken = tx.affected_rows() == 1;
        if taken
            && service_kit::escrow::take(&mut tx, item.product_id, i64::from(item.quantity)).await?
                == service_kit::escrow::Take::Refused
        {
            state.escrow_refusals.inc();
            tx.rollback().await?;
            service_kit::escrow::record_refusal(&state.pool, item.product_id).await?;
            return Err(ApiError::Conflict {
                code: "insufficient_stock",
                message: service_kit::escrow::refusal(item.product_id),
            });
        }
        if !taken {
            let available: Option<i64> = tx
                .exec_first(
                    "SELECT available FROM inventory WHERE product_id = ?",
                    (item.product_id,),
                )
                .await?;
            return Err(match available {
                None => ApiError::NotFound("product"),
                // The monolith's words, which order-service passes on unchanged.
                Some(_) => ApiError::Conflict {
                    code: "insufficient_stock",
                    message: format!("not enough stock for product {}", item.product_id),
                },
            });
        }
    }
    tx.exec_drop(
        "INSERT INTO reservations (id, status, items) VALUES (?, 'reserved', ?)",
        (id, serde_json::to_string(items).expect("serializable")),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ReservationView {
            id: id.to_string(),
            status: "reserved".into(),
            items: items.to_vec(),
        }),
    ))
}

/// `GET /internal/reservations/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: Internal,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    find(&mut conn, &id, false)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("reservation"))
}

/// `POST /internal/reservations/{id}/release`: the stock goes back (the saga's compensation);
/// again is a no-op; 409 `reservation_committed` once committed.
pub async fn release(
    State(state): State<AppState>,
    _: Internal,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>, ApiError> {
    transition(&state, &id, "released").await
}

/// `POST /internal/reservations/{id}/commit`: the order is paid, the stock stays taken; again
/// is a no-op; 409 `reservation_released` once released.
pub async fn commit(
    State(state): State<AppState>,
    _: Internal,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>, ApiError> {
    transition(&state, &id, "committed").await
}

/// `POST /internal/reservations/{id}/return`: a committed reservation's stock comes back (the
/// order was cancelled after payment); again is a no-op.
pub async fn give_back(
    State(state): State<AppState>,
    _: Internal,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>, ApiError> {
    transition(&state, &id, "returned").await
}

async fn transition(
    state: &AppState,
    id: &str,
    to: &str,
) -> Result<Json<ReservationView>, ApiError> {
    let mut tx = state.pool.start_transaction(TxOpts::default()).await?;
    let mut r = find(&mut tx, id, true)
        .await?
        .ok_or(ApiError::NotFound("reservation"))?;
    match (r.status.as_str(), to) {
        (from, to) if from == to => return Ok(Json(r)),
        ("reserved", "released" | "committed") | ("committed", "returned") => {}
        (from, _) => {
            return Err(ApiError::Conflict {
                code: match from {
                    "committed" => "reservation_committed",
                    "reserved" => "reservation_not_committed",
                    "returned" => "reservation_returned",
                    _ => "reservation_released",
                },
                message: format!("reservation {id} is already {from}"),
            });
        }
    }
    if to == "released" || to == "returned" {
        for item in &r.items {
            tx.exec_drop(
                "UPDATE inventory SET available = available + ? WHERE product_id = ?",
                (item.quantity, item.product_id),
            )
            .await?;
            service_kit::escrow::give_back(&mut tx, item.product_id, i64::from(item.quantity))
                .await?;
        }
    }
    tx.exec_drop("UPDATE reservations SET status = ? WHERE id = ?", (to, id))
        .await?;
    tx.commit().await?;
    r.status = to.to_string();
    tracing::info!(reservation = %id, status = to, "reservation changed");
    Ok(Json(r))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
        assert!(super::valid_id("order-42:saga"));
        assert!(!super::valid_id("a b"));
        assert!(!super::valid_id(""));
    }
}
