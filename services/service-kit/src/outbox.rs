//! The transactional outbox (Debezium's outbox-event-router layout): a service writes its domain
//! events into `outbox` (id, aggregatetype, aggregateid, type, payload, created_at) in the same
//! transaction as the change, and cdc-sync carries the rows on as Debezium events.

use mysql_async::prelude::*;

use crate::error::ApiError;

/// A random (version 4) UUID, as text.
pub fn new_event_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Writes one event in `tx`; returns its id (consumers deduplicate on it).
pub async fn write(
    tx: &mut impl Queryable,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<String, ApiError> {
    let id = new_event_id();
    tx.exec_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, ?, ?, ?, ?)",
        (
            &id,
            aggregate_type,
            aggregate_id,
            event_type,
            payload.to_string(),
        ),
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_are_v4_uuids() {
        let a = super::new_event_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
        assert_ne!(a, super::new_event_id());
    }
}
