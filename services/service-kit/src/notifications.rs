//! Notifications: the messages queued for a user (welcome, order confirmation, cancellation),
//! newest first — the read contract the monolith and notification-service both serve from a
//! `notifications` table of the same shape.

use axum::Json;
use axum::extract::State;
use mysql_async::Row;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use mysql_async::Pool;

use crate::error::ApiError;
use crate::extract::{ApiQuery, AuthUser, VerifyToken};
use crate::format::{PageQuery, timestamp};
use crate::products::Page;

/// A server state that serves the notifications list.
pub trait NotificationsState: VerifyToken + Clone + Send + Sync + 'static {
    fn notifications_pool(&self) -> &Pool;
}

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
pub async fn list_own<S: NotificationsState>(
    State(state): State<S>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let (page, per_page, offset) = query.resolve()?;
    let mut conn = state.notifications_pool().get_conn().await?;
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
