//! Conflict detection: a target row is compared with the event's `before` and `after` images;
//! a row the target changed on its own since is a conflict, which the stream's owner wins.

use mysql_async::Value;

use crate::config::Owner;

/// A row changed on both sides in the same window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Target table.
    pub table: String,
    /// Which side's version stands.
    pub winner: Owner,
}

/// The conflict check of one row change: the event's images to compare with the target's row.
pub struct Check {
    pub target: String,
    /// Target key columns, quoted.
    pub key_cols: Vec<String>,
    /// Compared target columns, quoted (the same for both images).
    pub cols: Vec<String>,
    /// The compared values of the `before` and `after` images, when the event has them.
    pub images: [Option<Vec<Value>>; 2],
}

impl Check {
    /// Placeholders the server's comparison of this row takes.
    pub fn width(&self) -> usize {
        self.images.iter().flatten().map(Vec::len).sum::<usize>() + self.key_cols.len()
    }

    /// The server's comparison of this row, as branch `n` of a `UNION ALL`:
    /// `SELECT n, (cols <=> before…), (cols <=> after…) … FOR UPDATE`, `0` for a missing image.
    pub fn server_branch(&self, n: usize, key: &[Value], params: &mut Vec<Value>) -> String {
        let same = format!(
            "({})",
            self.cols
                .iter()
                .map(|c| format!("{c} <=> ?"))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        let select: Vec<&str> = self
            .images
            .iter()
            .map(|image| if image.is_some() { same.as_str() } else { "0" })
            .collect();
        params.extend(self.images.iter().flatten().flatten().cloned());
        params.extend(key.iter().cloned());
        format!(
            "(SELECT {n}, {} FROM {} WHERE {} FOR UPDATE)",
            select.join(", "),
            self.target,
            self.key_cols
                .iter()
                .map(|k| format!("{k} = ?"))
                .collect::<Vec<_>>()
                .join(" AND ")
        )
    }
}

/// Whether an event value (as `decode` makes it) and a value read from the target are the same
/// value. `false` means "not known to be": only the server can tell collations and conversions.
pub fn same_value(event: &Value, target: &Value) -> bool {
    match (event, target) {
        (Value::NULL, Value::NULL) => true,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::UInt(a), Value::UInt(b)) => a == b,
        (Value::Int(a), Value::UInt(b)) | (Value::UInt(b), Value::Int(a)) => {
            u64::try_from(*a).is_ok_and(|a| a == *b)
        }
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        (Value::Bytes(a), temporal @ (Value::Date(..) | Value::Time(..))) => {
            temporal_forms(temporal).iter().any(|f| f.as_bytes() == a)
        }
        _ => false,
    }
}

/// The texts `decode` gives a date, datetime or time value of the target.
fn temporal_forms(v: &Value) -> Vec<String> {
    match *v {
        Value::Date(y, mo, d, h, mi, s, us) => {
            let mut forms = vec![format!(
                "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
            )];
            if (h, mi, s, us) == (0, 0, 0, 0) {
                forms.push(format!("{y:04}-{mo:02}-{d:02}"));
            }
            forms
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let sign = if neg { "-" } else { "" };
            let hours = u64::from(days) * 24 + u64::from(h);
            vec![format!("{sign}{hours}:{mi:02}:{s:02}.{us:06}")]
        }
        _ => Vec::new(),
    }
}

/// A key's values as lookup text; integers by number, whatever their signedness.
pub fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|v| match v {
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Bytes(b) => format!("{b:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    parts.join("|")
}

/// The lookup texts a key read from the target may have as an event key (a date reads back the
/// same whether the event gave it as a date or a datetime).
pub fn key_forms(key: &[Value]) -> Vec<String> {
    let mut forms = vec![Vec::new()];
    for v in key {
        let options: Vec<Value> = match v {
            Value::Date(..) | Value::Time(..) => temporal_forms(v)
                .into_iter()
                .map(|f| Value::Bytes(f.into_bytes()))
                .collect(),
            other => vec![other.clone()],
        };
        forms = forms
            .into_iter()
            .flat_map(|prefix: Vec<Value>| {
                options.iter().map(move |o| {
                    let mut p = prefix.clone();
                    p.push(o.clone());
                    p
                })
            })
            .collect();
    }
    forms.iter().map(|k| key_text(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn values_are_the_same_only_when_plainly_equal() {
        assert!(same_value(&Value::NULL, &Value::NULL));
        assert!(same_value(&Value::Int(7), &Value::UInt(7)));
        assert!(same_value(&Value::UInt(7), &Value::Int(7)));
        assert!(!same_value(&Value::Int(-1), &Value::UInt(u64::MAX)));
        assert!(same_value(&text("9.50"), &text("9.50")));
        // Equal to the server perhaps (collation, numeric conversion), not known here.
        assert!(!same_value(&text("abc"), &text("ABC")));
        assert!(!same_value(&text("9.5"), &text("9.50")));
        assert!(!same_value(&text("7"), &Value::Int(7)));
        assert!(!same_value(&Value::NULL, &text("")));
        let dt = Value::Date(2024, 2, 29, 23, 59, 59, 125_000);
        assert!(same_value(&text("2024-02-29 23:59:59.125000"), &dt));
        assert!(!same_value(&text("2024-02-29"), &dt));
        let day = Value::Date(2024, 2, 29, 0, 0, 0, 0);
        assert!(same_value(&text("2024-02-29"), &day));
        assert!(same_value(&text("2024-02-29 00:00:00.000000"), &day));
        let t = Value::Time(true, 34, 22, 59, 59, 1);
        assert!(same_value(&text("-838:59:59.000001"), &t));
        assert!(!same_value(&text("838:59:59.000001"), &t));
    }

    #[test]
    fn keys_read_back_find_their_event_key() {
        let event = key_text(&[Value::Int(5), text("2024-02-29")]);
        let read = key_forms(&[Value::UInt(5), Value::Date(2024, 2, 29, 0, 0, 0, 0)]);
        assert!(read.contains(&event), "{event} in {read:?}");
        assert!(
            !key_forms(&[Value::UInt(6), Value::Date(2024, 2, 29, 0, 0, 0, 0)]).contains(&event)
        );
        // Text keys match byte for byte only.
        assert!(!key_forms(&[text("A1")]).contains(&key_text(&[text("a1")])));
    }
}

/// One conflict as the dead-letter table `<offsets_db>.cdc_conflicts` keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    pub id: u64,
    pub target_table: String,
    pub op: String,
    /// The row's key values, JSON array.
    pub row_key: serde_json::Value,
    /// The event's images and the target's row when the conflict was found (JSON objects).
    pub source_before: serde_json::Value,
    pub source_after: serde_json::Value,
    pub target_row: serde_json::Value,
    pub winner: String,
    pub source_offset: String,
    pub detected_at: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// The stream's conflicts, newest first: the open ones, or all with `include_resolved`.
pub async fn list(
    config: &crate::config::StreamConfig,
    include_resolved: bool,
    limit: u32,
) -> Result<Vec<ConflictRecord>, crate::error::CdcError> {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(config.target_url.as_str()).await?;
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            format!(
                "SELECT id, target_table, op, row_key, source_before, source_after, target_row, \
                 winner, source_offset, CAST(detected_at AS CHAR), CAST(resolved_at AS CHAR), \
                 resolved_by, resolution FROM {}.cdc_conflicts WHERE stream = ? {} \
                 ORDER BY id DESC LIMIT {limit}",
                crate::model::server::quote_ident(&config.offsets_db),
                if include_resolved {
                    ""
                } else {
                    "AND resolved_at IS NULL"
                }
            ),
            (&config.name,),
        )
        .await?;
    let json = |t: Option<String>| {
        t.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let text = |r: &mut mysql_async::Row, i: usize| -> Option<String> {
        r.take::<Option<String>, _>(i).flatten()
    };
    Ok(rows
        .into_iter()
        .map(|mut r| ConflictRecord {
            id: r.take::<u64, _>(0).unwrap_or_default(),
            target_table: text(&mut r, 1).unwrap_or_default(),
            op: text(&mut r, 2).unwrap_or_default(),
            row_key: json(text(&mut r, 3)),
            source_before: json(text(&mut r, 4)),
            source_after: json(text(&mut r, 5)),
            target_row: json(text(&mut r, 6)),
            winner: text(&mut r, 7).unwrap_or_default(),
            source_offset: text(&mut r, 8).unwrap_or_default(),
            detected_at: text(&mut r, 9).unwrap_or_default(),
            resolved_at: text(&mut r, 10),
            resolved_by: text(&mut r, 11),
            resolution: text(&mut r, 12),
        })
        .collect())
}

/// Marks conflict `id` of the stream resolved, saying who and how; `false` if no open conflict
/// has that id.
pub async fn resolve(
    config: &crate::config::StreamConfig,
    id: u64,
    who: &str,
    resolution: &str,
) -> Result<bool, crate::error::CdcError> {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(config.target_url.as_str()).await?;
    conn.exec_drop(
        format!(
            "UPDATE {}.cdc_conflicts SET resolved_at = CURRENT_TIMESTAMP(3), resolved_by = ?, \
             resolution = ? WHERE id = ? AND stream = ? AND resolved_at IS NULL",
            crate::model::server::quote_ident(&config.offsets_db)
        ),
        (who, resolution, id, &config.name),
    )
    .await?;
    Ok(conn.affected_rows() == 1)
}
