//! Column values in Debezium's encodings (decimal handling mode `string`): DATE → days since
//! epoch, DATETIME → epoch ms (µs above precision 3), TIMESTAMP → ISO-8601 UTC string, TIME → µs,
//! DECIMAL/JSON/ENUM/SET → string, BLOB → base64. `encode` reads binlog values; `decode` turns an
//! event value back into an SQL parameter for the applier.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use serde_json::Value as Json;

use crate::model::schema::ColumnKind;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "text column holds invalid UTF-8".to_string())
}

/// A binlog value of a column of `kind` in Debezium's JSON encoding.
pub fn encode(kind: &ColumnKind, value: &BinlogValue<'_>) -> Result<Json, String> {
    let v = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(_) | BinlogValue::JsonDiff(_) => {
            return Err("MySQL binary JSON is not supported (MariaDB stores JSON as text)".into());
        }
    };
    if matches!(v, Value::NULL) {
        return Ok(Json::Null);
    }
    Ok(match (kind, v) {
        (ColumnKind::Int { unsigned, bits }, Value::Int(i)) => {
            if *unsigned && *i < 0 {
                if *bits == 64 {
                    Json::from(*i as u64)
                } else {
                    Json::from(*i + (1i64 << bits))
                }
            } else {
                Json::from(*i)
            }
        }
        (ColumnKind::Int { .. }, Value::UInt(u)) => Json::from(*u),
        (ColumnKind::Year, Value::Int(i)) => Json::from(*i),
        (ColumnKind::Year, Value::Bytes(b)) => Json::from(
            text(b)?
                .parse::<i64>()
                .map_err(|_| "YEAR is not a number".to_string())?,
        ),
        (ColumnKind::Float, Value::Float(f)) => Json::from(f64::from(*f)),
        (ColumnKind::Float | ColumnKind::Double, Value::Double(d)) => Json::from(*d),
        (ColumnKind::Decimal { .. } | ColumnKind::Text | ColumnKind::Json, Value::Bytes(b)) => {
            Json::from(text(b)?)
        }
        (ColumnKind::Enum { values }, Value::Int(i)) => match *i {
            0 => Json::from(""),
            n => Json::from(
                values
                    .get(n as usize - 1)
                    .ok_or_else(|| format!("ENUM index {n} out of range"))?
                    .clone(),
            ),
        },
        (ColumnKind::Enum { .. }, Value::Bytes(b)) => Json::from(text(b)?),
        (ColumnKind::Set { values }, Value::Bytes(b)) => {
            let mut mask: u64 = 0;
            for (i, byte) in b.iter().enumerate() {
                mask |= u64::from(*byte) << (8 * i);
            }
            set_text(values, mask)
        }
        // `col + 0` of a SET, as a snapshot selects it: the bitmask as a number.
        (ColumnKind::Set { values }, Value::Int(_) | Value::UInt(_)) => {
            let mask = match v {
                Value::Int(i) => *i as u64,
                Value::UInt(u) => *u,
                _ => 0,
            };
            set_text(values, mask)
        }
        (ColumnKind::Bytes, Value::Bytes(b)) => Json::from(B64.encode(b)),
        (ColumnKind::Date, Value::Date(0, 0, 0, ..)) => Json::Null,
        (ColumnKind::Date, Value::Date(y, m, d, ..)) => {
            let date = NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*m), u32::from(*d))
                .ok_or("invalid DATE")?;
            Json::from((date - epoch()).num_days())
        }
        (ColumnKind::DateTime { .. }, Value::Date(0, 0, 0, ..)) => Json::Null,
        (ColumnKind::DateTime { precision }, Value::Date(y, mo, d, h, mi, s, us)) => {
            let dt = NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))
                .and_then(|date| {
                    date.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us)
                })
                .ok_or("invalid DATETIME")?
                .and_utc();
            if *precision <= 3 {
                Json::from(dt.timestamp_millis())
            } else {
                Json::from(dt.timestamp_micros())
            }
        }
        (ColumnKind::Timestamp { precision }, Value::Bytes(b)) => {
            let s = text(b)?;
            let (sec, frac) = s.split_once('.').unwrap_or((&s, "0"));
            let sec: i64 = sec.parse().map_err(|_| "TIMESTAMP seconds")?;
            let us: u32 = format!("{frac:0<6}")[..6]
                .parse()
                .map_err(|_| "TIMESTAMP fraction")?;
            timestamp_iso(sec, us, *precision)?
        }
        (ColumnKind::Timestamp { precision }, Value::Int(sec)) => {
            timestamp_iso(*sec, 0, *precision)?
        }
        (ColumnKind::Time, Value::Time(neg, days, h, m, s, us)) => {
            let micros = ((i64::from(*days) * 24 + i64::from(*h)) * 3600
                + i64::from(*m) * 60
                + i64::from(*s))
                * 1_000_000
                + i64::from(*us);
            Json::from(if *neg { -micros } else { micros })
        }
        (kind, v) => return Err(format!("a {kind:?} column holds an unexpected value {v:?}")),
    })
}

/// The members of a SET picked by a bitmask, comma-separated.
fn set_text(values: &[String], mask: u64) -> Json {
    let picked: Vec<&str> = values
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, v)| v.as_str())
        .collect();
    Json::from(picked.join(","))
}

fn timestamp_iso(sec: i64, us: u32, precision: u32) -> Result<Json, String> {
    let dt = DateTime::from_timestamp(sec, us * 1000).ok_or("TIMESTAMP out of range")?;
    let base = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(Json::from(if precision == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{us:06}");
        format!("{base}.{}Z", &frac[..precision.min(6) as usize])
    }))
}

fn sql_datetime(dt: NaiveDateTime) -> Value {
    Value::Bytes(dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes())
}

/// An event value of a column of `kind` as an SQL parameter.
pub fn decode(kind: &ColumnKind, value: &Json) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::NULL);
    }
    let bad = || format!("a {kind:?} column cannot hold {value}");
    Ok(match kind {
        ColumnKind::Int { .. } | ColumnKind::Year => {
            if let Some(i) = value.as_i64() {
                Value::Int(i)
            } else {
                Value::UInt(value.as_u64().ok_or_else(bad)?)
            }
        }
        ColumnKind::Float | ColumnKind::Double => Value::Double(value.as_f64().ok_or_else(bad)?),
        ColumnKind::Decimal { .. }
        | ColumnKind::Text
        | ColumnKind::Json
        | ColumnKind::Enum { .. }
        | ColumnKind::Set { .. } => {
            Value::Bytes(value.as_str().ok_or_else(bad)?.as_bytes().to_vec())
        }
        ColumnKind::Bytes => Value::Bytes(
            B64.decode(value.as_str().ok_or_else(bad)?)
                .map_err(|_| bad())?,
        ),
        ColumnKind::Date => {
            let days = value.as_i64().ok_or_else(bad)?;
            let d = epoch() + chrono::Duration::days(days);
            Value::Bytes(d.format("%Y-%m-%d").to_string().into_bytes())
        }
        ColumnKind::DateTime { precision } => {
            let n = value.as_i64().ok_or_else(bad)?;
            let dt = if *precision <= 3 {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp_micros(n)
            }
            .ok_or_else(bad)?;
            sql_datetime(dt.naive_utc())
        }
        ColumnKind::Timestamp { .. } => {
            let dt =
                DateTime::parse_from_rfc3339(value.as_str().ok_or_else(bad)?).map_err(|_| bad())?;
            sql_datetime(dt.naive_utc())
        }
        ColumnKind::Time => {
            let us = value.as_i64().ok_or_else(bad)?;
            let sign = if us < 0 { "-" } else { "" };
            let a = us.unsigned_abs();
            let (secs, micros) = (a / 1_000_000, a % 1_000_000);
            Value::Bytes(
                format!(
                    "{sign}{}:{:02}:{:02}.{micros:06}",
                    secs / 3600,
                    (secs / 60) % 60,
                    secs % 60
                )
                .into_bytes(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bv(v: Value) -> BinlogValue<'static> {
        BinlogValue::Value(v)
    }

    #[test]
    fn debezium_encodings() {
        let dt = ColumnKind::DateTime { precision: 3 };
        assert_eq!(
            encode(&dt, &bv(Value::Date(2024, 1, 1, 0, 0, 1, 500_000))).unwrap(),
            Json::from(1_704_067_201_500i64)
        );
        let dt6 = ColumnKind::DateTime { precision: 6 };
        assert_eq!(
            encode(&dt6, &bv(Value::Date(1970, 1, 1, 0, 0, 0, 7))).unwrap(),
            Json::from(7)
        );
        assert_eq!(
            encode(&ColumnKind::Date, &bv(Value::Date(1970, 1, 11, 0, 0, 0, 0))).unwrap(),
            Json::from(10)
        );
        let ts = ColumnKind::Timestamp { precision: 3 };
        assert_eq!(
            encode(&ts, &bv(Value::Bytes(b"1704067201.250000".to_vec()))).unwrap(),
            Json::from("2024-01-01T00:00:01.250Z")
        );
        assert_eq!(
            encode(&ColumnKind::Time, &bv(Value::Time(true, 1, 2, 0, 0, 5))).unwrap(),
            Json::from(-(26 * 3600 * 1_000_000i64 + 5))
        );
        let e = ColumnKind::Enum {
            values: vec!["pending".into(), "paid".into()],
        };
        assert_eq!(encode(&e, &bv(Value::Int(2))).unwrap(), Json::from("paid"));
        let s = ColumnKind::Set {
            values: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(
            encode(&s, &bv(Value::Bytes(vec![0b101]))).unwrap(),
            Json::from("a,c")
        );
        let u8k = ColumnKind::Int {
            unsigned: true,
            bits: 8,
        };
        assert_eq!(encode(&u8k, &bv(Value::Int(-56))).unwrap(), Json::from(200));
        let u64k = ColumnKind::Int {
            unsigned: true,
            bits: 64,
        };
        assert_eq!(
            encode(&u64k, &bv(Value::Int(-1))).unwrap(),
            Json::from(u64::MAX)
        );
        assert_eq!(
            encode(&ColumnKind::Bytes, &bv(Value::Bytes(vec![0, 255]))).unwrap(),
            Json::from("AP8=")
        );
        assert_eq!(
            encode(
                &ColumnKind::Decimal { scale: 2 },
                &bv(Value::Bytes(b"19.99".to_vec()))
            )
            .unwrap(),
            Json::from("19.99")
        );
        assert!(encode(&ColumnKind::Date, &bv(Value::Bytes(b"x".to_vec()))).is_err());
    }

    #[test]
    fn decode_inverts_encode() {
        let cases = [
            (
                ColumnKind::DateTime { precision: 3 },
                Json::from(1_704_067_201_500i64),
                "2024-01-01 00:00:01.500000",
            ),
            (
                ColumnKind::DateTime { precision: 6 },
                Json::from(1_704_067_201_000_001i64),
                "2024-01-01 00:00:01.000001",
            ),
            (
                ColumnKind::Timestamp { precision: 3 },
                Json::from("2024-01-01T00:00:01.250Z"),
                "2024-01-01 00:00:01.250000",
            ),
            (ColumnKind::Date, Json::from(10), "1970-01-11"),
            (
                ColumnKind::Time,
                Json::from(-(26 * 3600 * 1_000_000i64 + 5)),
                "-26:00:00.000005",
            ),
        ];
        for (kind, json, sql) in cases {
            assert_eq!(
                decode(&kind, &json).unwrap(),
                Value::Bytes(sql.as_bytes().to_vec()),
                "{kind:?}"
            );
        }
        assert_eq!(
            decode(&ColumnKind::Bytes, &Json::from("AP8=")).unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert!(decode(&ColumnKind::Date, &Json::from("tuesday")).is_err());
        assert_eq!(decode(&ColumnKind::Text, &Json::Null).unwrap(), Value::NULL);
    }
}
