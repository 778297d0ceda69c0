//! Money as integer cents: parsed from and written as decimal strings ("19.99"), the same text
//! MariaDB's DECIMAL(12,2) columns take and return, so no float ever touches a price.

/// Largest amount a DECIMAL(12,2) column holds, in cents.
pub const MAX_CENTS: i64 = 999_999_999_999; // 9,999,999,999.99

/// Parses "19.99", "20", "0.5" into cents; `None` for anything else (signs, exponents, >2 decimals).
pub fn parse_cents(text: &str) -> Option<i64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty()
        || whole.len() > 10
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let cents = whole.checked_mul(100)?.checked_add(frac)?;
    (cents <= MAX_CENTS).then_some(cents)
}

/// Formats cents as "19.99".
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_decimal_strings() {
        assert_eq!(parse_cents("19.99"), Some(1999));
        assert_eq!(parse_cents("20"), Some(2000));
        assert_eq!(parse_cents("0.5"), Some(50));
        assert_eq!(parse_cents("0.05"), Some(5));
        assert_eq!(format_cents(1999), "19.99");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(-150), "-1.50");
        for cents in [0, 1, 99, 100, 123456, MAX_CENTS] {
            assert_eq!(parse_cents(&format_cents(cents)), Some(cents));
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "1.999",
            "abc",
            "1,00",
            " 1",
            "99999999999",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad:?}");
        }
    }
}
