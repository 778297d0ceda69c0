//! Property tests of the Debezium value encodings: every binlog value cdc-sync can read encodes
//! to JSON that the applier decodes back to the SQL text MariaDB would accept for it.

use cdc_sync::model::schema::ColumnKind;
use cdc_sync::model::values::{decode, encode};
use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use proptest::prelude::*;

fn sql_text(v: Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8(b).unwrap(),
        other => format!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn datetimes_round_trip(y in 1000u16..9999, mo in 1u8..=12, d in 1u8..=28, h in 0u8..24, mi in 0u8..60, s in 0u8..60, us in 0u32..1_000_000) {
        let kind = ColumnKind::DateTime { precision: 6 };
        let json = encode(&kind, &BinlogValue::Value(Value::Date(y, mo, d, h, mi, s, us))).unwrap();
        let back = sql_text(decode(&kind, &json).unwrap());
        prop_assert_eq!(back, format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"));
    }

    #[test]
    fn millisecond_datetimes_round_trip(y in 1970u16..2100, mo in 1u8..=12, d in 1u8..=28, ms in 0u32..1000) {
        let kind = ColumnKind::DateTime { precision: 3 };
        let json = encode(&kind, &BinlogValue::Value(Value::Date(y, mo, d, 1, 2, 3, ms * 1000))).unwrap();
        let back = sql_text(decode(&kind, &json).unwrap());
        prop_assert_eq!(back, format!("{y:04}-{mo:02}-{d:02} 01:02:03.{:06}", ms * 1000));
    }

    #[test]
    fn dates_round_trip(y in 1000u16..9999, mo in 1u8..=12, d in 1u8..=28) {
        let json = encode(&ColumnKind::Date, &BinlogValue::Value(Value::Date(y, mo, d, 0, 0, 0, 0))).unwrap();
        prop_assert_eq!(sql_text(decode(&ColumnKind::Date, &json).unwrap()), format!("{y:04}-{mo:02}-{d:02}"));
    }

    #[test]
    fn times_round_trip(neg: bool, h in 0u8..24, m in 0u8..60, s in 0u8..60, us in 0u32..1_000_000) {
        let json = encode(&ColumnKind::Time, &BinlogValue::Value(Value::Time(neg, 0, h, m, s, us))).unwrap();
        let zero = h == 0 && m == 0 && s == 0 && us == 0;
        let sign = if neg && !zero { "-" } else { "" };
        prop_assert_eq!(sql_text(decode(&ColumnKind::Time, &json).unwrap()), format!("{sign}{h}:{m:02}:{s:02}.{us:06}"));
    }

    #[test]
    fn timestamps_round_trip(sec in 0i64..4_102_444_800, us in 0u32..1_000_000) {
        let kind = ColumnKind::Timestamp { precision: 6 };
        let raw = format!("{sec}.{us:06}");
        let json = encode(&kind, &BinlogValue::Value(Value::Bytes(raw.into_bytes()))).unwrap();
        let dt = chrono::DateTime::from_timestamp(sec, us * 1000).unwrap();
        prop_assert_eq!(sql_text(decode(&kind, &json).unwrap()), dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
    }

    #[test]
    fn bytes_and_text_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64), t in ".{0,40}") {
        let json = encode(&ColumnKind::Bytes, &BinlogValue::Value(Value::Bytes(b.clone()))).unwrap();
        prop_assert_eq!(decode(&ColumnKind::Bytes, &json).unwrap(), Value::Bytes(b));
        let json = encode(&ColumnKind::Text, &BinlogValue::Value(Value::Bytes(t.clone().into_bytes()))).unwrap();
        prop_assert_eq!(decode(&ColumnKind::Text, &json).unwrap(), Value::Bytes(t.into_bytes()));
    }

    #[test]
    fn unsigned_integers_are_never_negative(i: i64, bits in prop::sample::select(vec![8u8, 16, 24, 32, 64])) {
        let kind = ColumnKind::Int { unsigned: true, bits };
        // The binlog carries the stored bits; a signed reading of a large unsigned value is negative.
        let stored = if bits == 64 { i } else { i % (1i64 << (bits - 1)) };
        let json = encode(&kind, &BinlogValue::Value(Value::Int(stored))).unwrap();
        prop_assert!(json.as_u64().is_some(), "{json}");
    }

    #[test]
    fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..32)) {
        for kind in [ColumnKind::Date, ColumnKind::Timestamp { precision: 3 }, ColumnKind::Year, ColumnKind::Text] {
            let _ = encode(&kind, &BinlogValue::Value(Value::Bytes(b.clone())));
        }
        let _ = cdc_sync::model::debezium::Envelope::from_json(&b);
    }
}
