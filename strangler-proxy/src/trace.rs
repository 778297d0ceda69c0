//! Request correlation: `x-request-id` kept when sane or created, and W3C `traceparent` kept
//! when valid or started fresh, so a request can be followed through proxy, monolith and service.

use rand::Rng as _;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex, two digits a byte (the request path: no formatting
/// machinery).
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// The incoming request id if it is 1–128 visible ASCII characters, else a new one of 32
/// random hex digits.
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_string()
        }
        _ => {
            let mut out = Vec::with_capacity(32);
            push_hex(&mut out, &rand::rng().random::<u128>().to_be_bytes());
            String::from_utf8(out).expect("hex digits")
        }
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
        let mut parts = tp.split('-');
        if let (Some(version), Some(trace), Some(parent), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) && is_hex(version, 2)
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
    let mut rng = rand::rng();
    let (trace, parent): (u128, u64) = (rng.random(), rng.random());
    // Ids must not be all zero.
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    push_hex(&mut out, &trace.max(1).to_be_bytes());
    out.push(b'-');
    push_hex(&mut out, &parent.max(1).to_be_bytes());
    out.extend_from_slice(b"-01");
    String::from_utf8(out).expect("hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_bad_ones() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert!(is_hex(&request_id(None), 32));
        assert_ne!(request_id(None), request_id(None));
        let mut out = Vec::new();
        push_hex(&mut out, &0x00abu16.to_be_bytes());
        assert_eq!(out, b"00ab");
        assert_ne!(request_id(Some("has space")), "has space");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(tp)), tp);
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let fresh = traceparent(Some(bad));
            assert_ne!(fresh, bad);
            assert_eq!(traceparent(Some(&fresh)), fresh, "a fresh one is valid");
        }
    }
}
