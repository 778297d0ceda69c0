//! Request correlation: `x-request-id` kept when sane or created, and W3C `traceparent` kept
//! when valid or started fresh, so a request can be followed through proxy, monolith and service.

use rand::Rng as _;

/// `n` (≤ 32) random lowercase hex digits.
fn hex(n: usize) -> String {
    let r: u128 = rand::rng().random();
    let mut s = format!("{r:032x}");
    s.truncate(n);
    s
}

/// The incoming request id if it is 1–128 visible ASCII characters, else a new one.
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_string()
        }
        _ => hex(32),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The incoming `traceparent` if valid (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero),
/// else a new sampled one.
pub fn traceparent(incoming: Option<&str>) -> String {
    if let Some(tp) = incoming {
        let parts: Vec<&str> = tp.split('-').collect();
        if let [version, trace, parent, flags] = parts[..]
            && is_hex(version, 2)
            && version != "ff"
            && is_hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && is_hex(parent, 16)
            && parent.bytes().any(|b| b != b'0')
            && is_hex(flags, 2)
        {
            return tp.to_string();
        }
    }
    let (trace, parent): (u128, u64) = (rand::rng().random(), rand::rng().random());
    // Ids must not be all zero.
    format!("00-{:032x}-{:016x}-01", trace.max(1), parent.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_bad_ones() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some("has space")), "has space");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(tp)), tp);
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let fresh = traceparent(Some(bad));
            assert_ne!(fresh, bad);
            assert_eq!(traceparent(Some(&fresh)), fresh, "a fresh one is valid");
        }
    }
}
