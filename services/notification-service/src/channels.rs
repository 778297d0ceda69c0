//! The ways a message leaves: e-mail over SMTP (lettre; the `Message-ID` is the event's, so a
//! receiver can drop a copy), and SMS and push through HTTP providers. Templates turn an event
//! into a subject and a text.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use serde_json::{Value, json};

use crate::config::{Config, HttpChannel};

/// The template of an event type, and what it is called in `notifications`.
pub fn template(event_type: &str) -> Option<&'static str> {
    match event_type {
        "user.registered" => Some("welcome"),
        "order.placed" => Some("order_confirmation"),
        "order.cancelled" => Some("order_cancelled"),
        _ => None,
    }
}

/// Subject and text of a template for a payload.
pub fn render(template: &str, name: &str, payload: &Value) -> (String, String) {
    let order = payload["order_id"].to_string();
    let total = payload["total"].as_str().unwrap_or_default();
    match template {
        "welcome" => (
            "Welcome to the shop".into(),
            format!("Hello {name},\n\nyour account is ready. Happy shopping!\n"),
        ),
        "order_confirmation" => (
            format!("Your order {order} is confirmed"),
            format!(
                "Hello {name},\n\nwe received your payment of {total} USD for order {order}.\n"
            ),
        ),
        "order_cancelled" => (
            format!("Your order {order} is cancelled"),
            format!("Hello {name},\n\norder {order} is cancelled and refunded.\n"),
        ),
        other => (other.to_string(), payload.to_string()),
    }
}

/// Where a message goes.
pub struct Recipient<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub push_token: Option<&'a str>,
}

/// The senders.
#[derive(Clone)]
pub struct Channels {
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    http: reqwest::Client,
    sms: HttpChannel,
    push: HttpChannel,
}

impl Channels {
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            smtp: AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.smtp.host)
                .port(config.smtp.port)
                .timeout(Some(Duration::from_secs(10)))
                .build(),
            from: config
                .smtp
                .from
                .parse()
                .map_err(|e| format!("smtp.from: {e}"))?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
            sms: config.sms.clone(),
            push: config.push.clone(),
        })
    }

    /// Whether a channel can send at all.
    pub fn enabled(&self, channel: &str) -> bool {
        match channel {
            "email" => true,
            "sms" => !self.sms.url.is_empty(),
            "push" => !self.push.url.is_empty(),
            _ => false,
        }
    }

    /// Sends one message; the error says why it did not leave.
    pub async fn send(
        &self,
        channel: &str,
        event_id: &str,
        to: &Recipient<'_>,
        subject: &str,
        text: &str,
    ) -> Result<(), String> {
        match channel {
            "email" => {
                let address = to.email.ok_or("no e-mail address")?;
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(address
                        .parse()
                        .map_err(|e| format!("bad address {address:?}: {e}"))?)
                    .message_id(Some(format!("<{event_id}.email@shop.example>")))
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(text.to_string())
                    .map_err(|e| e.to_string())?;
                self.smtp
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("SMTP: {e}"))
            }
            "sms" => {
                let phone = to.phone.ok_or("no phone number")?;
                self.post(
                    &self.sms,
                    json!({"to": phone, "text": format!("{subject}: {text}"), "id": event_id}),
                )
                .await
            }
            "push" => {
                let token = to.push_token.ok_or("no push token")?;
                self.post(
                    &self.push,
                    json!({"token": token, "title": subject, "body": text, "id": event_id}),
                )
                .await
            }
            other => Err(format!("unknown channel {other}")),
        }
    }

    async fn post(&self, provider: &HttpChannel, body: Value) -> Result<(), String> {
        let r = self
            .http
            .post(&provider.url)
            .bearer_auth(&provider.api_key)
            .header("Idempotency-Key", body["id"].as_str().unwrap_or_default())
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", provider.url))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", provider.url, r.status()))
        }
    }
}
