//! The delivery loop: events in `inbox` (written by cdc-sync from the services' outboxes) become
//! one `notifications` row and one `deliveries` row per channel the user wants — once per event,
//! however often the event arrives — and due deliveries are sent, retried with exponential
//! backoff, and moved to `dead_letters` after `max_attempts`.

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Pool, TxOpts};
use prometheus::IntCounterVec;
use serde_json::Value;

use crate::channels::{Channels, Recipient, render, template};
use crate::config::Delivery;

/// What the loop needs.
#[derive(Clone)]
pub struct Worker {
    pub pool: Pool,
    pub channels: Channels,
    pub delivery: Delivery,
    /// `notification_service_messages_total{channel,outcome}`.
    pub messages: IntCounterVec,
}

/// email / sms / push enabled, phone, push token.
pub type Preferences = (i8, i8, i8, Option<String>, Option<String>);

/// e-mail, name, phone, push token.
type Contact = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Worker {
    /// Plans deliveries for events not planned yet; how many events.
    pub async fn plan_once(&self) -> Result<usize, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let events: Vec<(String, String, String)> = conn
            .query(
                "SELECT i.id, i.type, i.payload FROM inbox i WHERE NOT EXISTS \
                 (SELECT 1 FROM deliveries d WHERE d.event_id = i.id) ORDER BY i.created_at, i.id LIMIT 100",
            )
            .await?;
        drop(conn);
        let n = events.len();
        for (id, kind, payload) in events {
            match self.plan(&id, &kind, &payload).await {
                Ok(()) => {}
                // Another replica planned it first.
                Err(e) if service_kit::db::is_duplicate(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    async fn plan(&self, id: &str, kind: &str, payload: &str) -> Result<(), mysql_async::Error> {
        let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let user_id = payload["user_id"].as_u64();
        let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
        if kind == "user.registered"
            && let Some(user) = user_id
        {
            tx.exec_drop(
                "INSERT INTO contacts (user_id, email, name) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE email = VALUES(email), name = VALUES(name)",
                (user, payload["email"].as_str(), payload["name"].as_str()),
            )
            .await?;
        }
        let mut planned = 0;
        if let (Some(tpl), Some(user)) = (template(kind), user_id) {
            let prefs: Option<Preferences> = tx
                .exec_first(
                    "SELECT email_enabled, sms_enabled, push_enabled, phone, push_token FROM contacts WHERE user_id = ?",
                    (user,),
                )
                .await?;
            let (email, sms, push) = match &prefs {
                Some((e, s, p, phone, token)) => (
                    *e != 0,
                    *s != 0 && phone.is_some(),
                    *p != 0 && token.is_some(),
                ),
                None => (true, false, false),
            };
            // The monolith's payload: the event's, without the user id.
            let mut stored = payload.clone();
            if let Some(o) = stored.as_object_mut() {
                o.remove("user_id");
            }
            for (channel, wanted) in [("email", email), ("sms", sms), ("push", push)] {
                if !wanted || !self.channels.enabled(channel) {
                    continue;
                }
                tx.exec_drop(
                    "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, ?, ?, ?)",
                    (user, channel, tpl, stored.to_string()),
                )
                .await?;
                let notification = tx.last_insert_id();
                tx.exec_drop(
                    "INSERT INTO deliveries (event_id, channel, notification_id) VALUES (?, ?, ?)",
                    (id, channel, notification),
                )
                .await?;
                planned += 1;
            }
        }
        if planned == 0 {
            // Nothing to send for it (an event type without a template, or every channel off):
            // remembered, so it is not looked at again.
            tx.exec_drop(
                "INSERT INTO deliveries (event_id, channel) VALUES (?, 'none')",
                (id,),
            )
            .await?;
        }
        tx.commit().await
    }

    /// Sends the deliveries that are due; how many were tried.
    pub async fn deliver_once(&self) -> Result<usize, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        type Due = (String, String, u64, u32, u64, String, String);
        let due: Vec<Due> = conn
            .query(
                "SELECT d.event_id, d.channel, d.notification_id, d.attempts, n.user_id, n.template, n.payload \
                 FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
                 WHERE n.status = 'pending' AND d.next_attempt_at <= NOW(3) ORDER BY d.next_attempt_at LIMIT 50",
            )
            .await?;
        let n = due.len();
        for (event, channel, notification, attempts, user, tpl, payload) in due {
            let contact: Option<Contact> = conn
                .exec_first(
                    "SELECT email, name, phone, push_token FROM contacts WHERE user_id = ?",
                    (user,),
                )
                .await?;
            let (email, name, phone, token) = contact.unwrap_or_default();
            let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
            let (subject, text) = render(&tpl, name.as_deref().unwrap_or("there"), &payload);
            let to = Recipient {
                email: email.as_deref(),
                phone: phone.as_deref(),
                push_token: token.as_deref(),
            };
            let sent = self
                .channels
                .send(&channel, &event, &to, &subject, &text)
                .await;
            let attempts = attempts + 1;
            match sent {
                Ok(()) => {
                    conn.exec_drop(
                        "UPDATE notifications SET status = 'sent', sent_at = NOW(3) WHERE id = ?",
                        (notification,),
                    )
                    .await?;
                    conn.exec_drop(
                        "UPDATE deliveries SET attempts = ? WHERE event_id = ? AND channel = ?",
                        (attempts, &event, &channel),
                    )
                    .await?;
                    self.messages.with_label_values(&[&channel, "sent"]).inc();
                    tracing::info!(%event, %channel, template = %tpl, "sent");
                }
                Err(error) if attempts >= self.delivery.max_attempts => {
                    conn.exec_drop(
                        "UPDATE notifications SET status = 'failed' WHERE id = ?",
                        (notification,),
                    )
                    .await?;
                    conn.exec_drop(
                        "UPDATE deliveries SET attempts = ?, last_error = ? WHERE event_id = ? AND channel = ?",
                        (attempts, &error, &event, &channel),
                    )
                    .await?;
                    conn.exec_drop(
                        "INSERT IGNORE INTO dead_letters (event_id, channel, attempts, error) VALUES (?, ?, ?, ?)",
                        (&event, &channel, attempts, &error),
                    )
                    .await?;
                    self.messages.with_label_values(&[&channel, "dead"]).inc();
                    tracing::error!(%event, %channel, attempts, %error, "message given up: dead letter");
                }
                Err(error) => {
                    let wait = self
                        .delivery
                        .backoff_ms
                        .saturating_mul(1 << (attempts - 1).min(20))
                        .min(self.delivery.max_backoff_ms);
                    conn.exec_drop(
                        "UPDATE deliveries SET attempts = ?, last_error = ?, \
                         next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND WHERE event_id = ? AND channel = ?",
                        (attempts, &error, wait * 1000, &event, &channel),
                    )
                    .await?;
                    self.messages.with_label_values(&[&channel, "retry"]).inc();
                    tracing::warn!(%event, %channel, attempts, retry_in_ms = wait, %error, "send failed; will retry");
                }
            }
        }
        Ok(n)
    }

    /// Plans and delivers every `poll_ms` until the process ends.
    pub fn spawn(self) {
        tokio::spawn(async move {
            let every = Duration::from_millis(self.delivery.poll_ms);
            loop {
                if let Err(e) = self.plan_once().await {
                    tracing::warn!(error = %e, "planning deliveries failed");
                }
                if let Err(e) = self.deliver_once().await {
                    tracing::warn!(error = %e, "delivering failed");
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}
