//! Notifications: the messages the monolith queued for a user (welcome, order confirmation,
//! cancellation), newest first.

use axum::Json;
use axum::extract::State;
use mysql_async::Row;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use super::extract::{ApiQuery, AuthUser};
use super::products::Page;
use super::{PageQuery, timestamp};
use crate::app::AppState;
use crate::error::ApiError;

/// A notification as the API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct NotificationView {
    pub id: u64,
    pub channel: String,
    pub template: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub created_at: String,
    pub sent_at: Option<String>,
}

/// `GET /api/notifications`: the caller's notifications, newest first.
pub async fn list_own(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let (page, per_page, offset) = query.resolve()?;
    let mut conn = state.pool.get_conn().await?;
    let total: u64 = conn
        .exec_first(
            "SELECT COUNT(*) FROM notifications WHERE user_id = ?",
            (user.id,),
        )
        .await?
        .unwrap_or(0);
    let rows: Vec<Row> = conn
        .exec(
            format!(
                "SELECT id, channel, template, payload, status, created_at, sent_at \
                 FROM notifications WHERE user_id = ? ORDER BY id DESC LIMIT {per_page} OFFSET {offset}"
            ),
            (user.id,),
        )
        .await?;
    let items = rows
        .into_iter()
        .map(|mut r| {
            let payload: String = r.take("payload").expect("payload");
            let sent_at: Option<chrono::NaiveDateTime> = r.take("sent_at").expect("sent_at");
            NotificationView {
                id: r.take("id").expect("id"),
                channel: r.take("channel").expect("channel"),
                template: r.take("template").expect("template"),
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                status: r.take("status").expect("status"),
                created_at: timestamp(r.take("created_at").expect("created_at")),
                sent_at: sent_at.map(timestamp),
            }
        })
        .collect();
    Ok(Json(Page {
        items,
        page,
        per_page,
        total,
    }))
}
