//! Prices as whole cents, the monolith's own parsing: the decimal text its forms accept ("19.99",
//! "20", "0.5") and the text it prints; DECIMAL(12,2) bounds, and never a float.

/// The largest amount `shop`'s DECIMAL(12,2) columns hold, in cents (9,999,999,999.99).
pub const MAX_CENTS: i64 = 999_999_999_999;

/// Cents of a plain decimal: digits, then optionally a point and one or two digits; nothing else
/// (no sign, exponent, separators or spaces). `None` also when above [`MAX_CENTS`].
pub fn parse_cents(text: &str) -> Option<i64> {
    let mut cents: i64 = 0;
    let mut whole_digits = 0;
    let mut fraction_digits: Option<u32> = None;
    for c in text.chars() {
        match (c, fraction_digits) {
            ('0'..='9', None) => {
                whole_digits += 1;
                if whole_digits > 10 {
                    return None;
                }
                cents = cents * 10 + i64::from(c as u8 - b'0');
            }
            ('0'..='9', Some(n)) if n < 2 => {
                cents = cents * 10 + i64::from(c as u8 - b'0');
                fraction_digits = Some(n + 1);
            }
            ('.', None) if whole_digits > 0 => fraction_digits = Some(0),
            _ => return None,
        }
    }
    let cents = match fraction_digits {
        None if whole_digits > 0 => cents * 100,
        Some(1) => cents * 10,
        Some(2) => cents,
        _ => return None,
    };
    (cents <= MAX_CENTS).then_some(cents)
}

/// Cents as the API prints them: "19.99", "-1.50".
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_prints_prices() {
        for (text, cents) in [
            ("19.99", 1999),
            ("20", 2000),
            ("0.5", 50),
            ("0.05", 5),
            ("007.10", 710),
        ] {
            assert_eq!(parse_cents(text), Some(cents), "{text}");
        }
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(-150), "-1.50");
        for cents in [0, 1, 99, 100, 123_456, MAX_CENTS] {
            assert_eq!(parse_cents(&format_cents(cents)), Some(cents));
        }
    }

    #[test]
    fn refuses_anything_else() {
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
            "1 ",
            "1.2.3",
            "99999999999",
            "١٢",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad:?}");
        }
    }
}
