//! Statements as the monolith sends them: `?` placeholders filled in on the client (emulated
//! prepares, as PHP's PDO and Connector/J do by default) and the request's sqlcommenter comment
//! appended, so the exact text, comment included, reaches the general log and the binlog.

use mysql_async::{DriverError, Params, Value};

/// `sql` with each `?` outside quotes and comments replaced by its parameter as an SQL literal,
/// then ` ` and `comment`. Literals are correct whatever the session's `sql_mode`: strings with a
/// backslash or a control byte that needs one are sent as `_utf8mb4 X'…'`.
pub fn render(sql: &str, params: Params, comment: &str) -> Result<String, mysql_async::Error> {
    let values = match params {
        Params::Empty => Vec::new(),
        Params::Positional(values) => values,
        Params::Named(_) => return Err(DriverError::MixedParams.into()),
    };
    let mut out = String::with_capacity(sql.len() + comment.len() + 16 * values.len() + 1);
    let mut values = values.into_iter();
    let mut used: usize = 0;
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => i = skip_quoted(bytes, i, quote),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| i + 2 + end + 2);
            }
            b'#' => i = skip_line(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && bytes.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                i = skip_line(bytes, i)
            }
            b'?' => {
                out.push_str(&sql[copied..i]);
                let value = values.next().ok_or(DriverError::StmtParamsMismatch {
                    required: u16::MAX,
                    supplied: used,
                })?;
                push_literal(&mut out, &value)?;
                used += 1;
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    let extra = values.count();
    if extra > 0 {
        return Err(DriverError::StmtParamsMismatch {
            required: u16::try_from(used).unwrap_or(u16::MAX),
            supplied: used + extra,
        }
        .into());
    }
    out.push_str(&sql[copied..]);
    out.push(' ');
    out.push_str(comment);
    Ok(out)
}

/// Index after the quoted text starting at `start` (doubled quotes and backslash escapes kept).
fn skip_quoted(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_line(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |n| start + n + 1)
}

fn push_literal(out: &mut String, value: &Value) -> Result<(), mysql_async::Error> {
    use std::fmt::Write as _;
    match value {
        Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.contains(['\\', '\0', '\x1a']) => {
                out.push('\'');
                out.push_str(&text.replace('\'', "''"));
                out.push('\'');
            }
            Ok(_) => push_hex(out, "_utf8mb4 X'", bytes),
            Err(_) => push_hex(out, "X'", bytes),
        },
        Value::Float(f) if !f.is_finite() => return Err(not_finite()),
        Value::Double(f) if !f.is_finite() => return Err(not_finite()),
        Value::Float(f) => write!(out, "{f:e}").expect("writing to a String"),
        Value::Double(f) => write!(out, "{f:e}").expect("writing to a String"),
        // NULL, integers, dates and times: mysql_common's literals have no quotes to escape.
        other => out.push_str(&other.as_sql(true)),
    }
    Ok(())
}

fn push_hex(out: &mut String, prefix: &str, bytes: &[u8]) {
    use std::fmt::Write as _;
    out.push_str(prefix);
    for b in bytes {
        write!(out, "{b:02X}").expect("writing to a String");
    }
    out.push('\'');
}

fn not_finite() -> mysql_async::Error {
    mysql_async::Error::Other("a NaN or infinite number cannot be sent to the database".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "/*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01'*/";

    fn params(values: Vec<Value>) -> Params {
        Params::Positional(values)
    }

    #[test]
    fn fills_placeholders_and_appends_the_comment() {
        let sql = render(
            "UPDATE users SET name = ?, phone = ? WHERE id = ? AND role <> 'a?b'",
            params(vec!["O'Brien".into(), Value::NULL, 42u64.into()]),
            C,
        )
        .unwrap();
        assert_eq!(
            sql,
            format!(
                "UPDATE users SET name = 'O''Brien', phone = NULL WHERE id = 42 AND role <> 'a?b' {C}"
            )
        );
    }

    #[test]
    fn placeholders_in_quotes_and_comments_are_text() {
        let sql = render(
            "SELECT `a?`, \"b?\", 'it''s?', 'c\\'?' /* d? */ FROM t -- e?\nWHERE x = ? # f?",
            params(vec![7i64.into()]),
            C,
        )
        .unwrap();
        assert!(sql.contains("WHERE x = 7 # f?"), "{sql}");
    }

    #[test]
    fn risky_strings_go_as_hex() {
        let sql = render(
            "INSERT INTO t VALUES (?, ?, ?)",
            params(vec![
                "back\\slash' OR 1=1 -- ".into(),
                Value::Bytes(vec![0xff, 0x00]),
                "ok".into(),
            ]),
            C,
        )
        .unwrap();
        assert!(sql.starts_with(
            "INSERT INTO t VALUES (_utf8mb4 X'6261636B5C736C61736827204F5220313D31202D2D20', X'FF00', 'ok')"
        ));
    }

    #[test]
    fn wrong_parameter_counts_are_errors() {
        assert!(render("SELECT ?", Params::Empty, C).is_err());
        assert!(render("SELECT ?, ?", params(vec![1.into()]), C).is_err());
        assert!(render("SELECT 1", params(vec![1.into()]), C).is_err());
        assert!(render("SELECT ?", params(vec![f64::NAN.into()]), C).is_err());
    }

    #[test]
    fn dates_and_numbers_are_literals() {
        let when = Value::Date(2026, 12, 7, 15, 4, 5, 120_000);
        let sql = render(
            "SELECT ?, ?, ?",
            params(vec![when, (-3i64).into(), 2.5f64.into()]),
            "",
        )
        .unwrap();
        assert_eq!(sql, "SELECT '2026-12-07 15:04:05.120000', -3, 2.5e0 ");
    }
}
