//! Field rules the monolith and the services apply alike, so the same input is refused with the
//! same message on both sides.

/// A plausible e-mail address: one `@`, a dotted domain, no spaces, at most 254 bytes.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email.chars().all(|c| c.is_ascii_graphic())
}

/// A phone number: 6 to 15 digits, optionally a leading `+`, spaces, dashes or parentheses.
pub fn valid_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(|c| c.is_ascii_digit()).count();
    (6..=20).contains(&phone.len())
        && (6..=15).contains(&digits)
        && phone
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || " ()-".contains(c) || (i == 0 && c == '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        for ok in ["a@b.co", "first.last+tag@shop.example.com"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.co", "a@b..co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn phone_rules() {
        assert!(valid_phone("+44 20 7946 0958"));
        assert!(valid_phone("(555) 123-4567"));
        assert!(!valid_phone("12345"));
        assert!(!valid_phone("call me maybe"));
        assert!(!valid_phone("12+345678"));
    }
}
