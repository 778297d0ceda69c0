//! Notifications, the monolith's own way: the messages queued for the caller (welcome, order
//! confirmation, cancellation), newest first, from `shop.notifications`.

use axum::Json;
use serde_json::{Value, json};

use super::extract::{ApiQuery, AuthUser};
use super::{Paging, iso_time_sql};
use crate::db::Db;
use crate::error::ApiError;

type NotificationRow = (u64, String, String, String, String, String, Option<String>);

/// `GET /api/notifications`: the caller's notifications, newest first, a page at a time.
pub async fn list_own(
    db: Db,
    user: AuthUser,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Value>, ApiError> {
    let (page, per_page, skip) = paging.window()?;
    let mut conn = db.conn().await?;
    let total: Option<u64> = conn
        .first(
            "SELECT COUNT(*) FROM notifications WHERE user_id = ?",
            (user.id,),
        )
        .await?;
    let rows: Vec<NotificationRow> = conn
        .all(
            format!(
                "SELECT id, channel, template, payload, status, {}, {} FROM notifications \
                 WHERE user_id = ? ORDER BY id DESC LIMIT {per_page} OFFSET {skip}",
                iso_time_sql("created_at"),
                iso_time_sql("sent_at")
            ),
            (user.id,),
        )
        .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(
            |(id, channel, template, payload, status, created_at, sent_at)| {
                json!({
                    "id": id,
                    "channel": channel,
                    "template": template,
                    // Stored as JSON text; a row that is not JSON shows as null.
                    "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                    "status": status,
                    "created_at": created_at,
                    "sent_at": sent_at,
                })
            },
        )
        .collect();
    Ok(Json(json!({
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total.unwrap_or(0),
    })))
}
