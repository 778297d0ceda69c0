//! Request correlation: `x-request-id` kept when sane or created, and W3C `traceparent` kept
//! when valid or started fresh, so a request can be followed through proxy, monolith and service.
//! A request id made here is the trace id, so the two join in logs without a lookup.

use bytes::Bytes;
use http::HeaderValue;
use rand::Rng as _;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out` (two digits a byte; the request path: no
/// formatting machinery).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// A request id worth keeping: 1–128 visible ASCII characters.
fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_graphic())
}

fn is_hex(s: &[u8], len: usize) -> bool {
    s.len() == len
        && s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A valid `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, version not `ff`, ids not all zero.
fn valid_traceparent(tp: &[u8]) -> bool {
    let mut parts = tp.split(|b| *b == b'-');
    let (Some(version), Some(trace), Some(parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    is_hex(version, 2)
        && version != b"ff"
        && is_hex(trace, 32)
        && trace.iter().any(|b| *b != b'0')
        && is_hex(parent, 16)
        && parent.iter().any(|b| *b != b'0')
        && is_hex(flags, 2)
}

/// A new sampled `traceparent` (55 bytes; the trace id is bytes 3..35).
fn new_traceparent() -> Bytes {
    let mut rng = rand::rng();
    let (trace, parent): (u128, u64) = (rng.random(), rng.random());
    let mut out = *b"00-________________________________-________________-01";
    // Ids must not be all zero.
    hex_into(&mut out[3..35], &trace.max(1).to_be_bytes());
    hex_into(&mut out[36..52], &parent.max(1).to_be_bytes());
    // One allocation that owns the array: the request id sliced from it shares it (a slice of a
    // `copy_from_slice` buffer would allocate again to share).
    Bytes::from_owner(out)
}

/// The ids a request travels with.
#[derive(Debug, Clone)]
pub struct Ids {
    pub request_id: HeaderValue,
    pub traceparent: HeaderValue,
    /// Whether each came in as it is (so the upstream request already carries it).
    pub kept: (bool, bool),
}

/// The request's ids from its incoming headers (each given only when it came exactly once):
/// kept when valid; otherwise a fresh trace, and a request id equal to the trace id.
pub fn ids(incoming_id: Option<&HeaderValue>, incoming_tp: Option<&HeaderValue>) -> Ids {
    let keep_tp = incoming_tp.filter(|tp| valid_traceparent(tp.as_bytes()));
    let keep_id = incoming_id.filter(|id| valid_request_id(id.as_bytes()));
    let (traceparent, trace_id) = match keep_tp {
        Some(tp) => (tp.clone(), None),
        None => {
            let tp = new_traceparent();
            let trace_id = tp.slice(3..35);
            (
                HeaderValue::from_maybe_shared(tp).expect("hex digits and dashes"),
                Some(trace_id),
            )
        }
    };
    let request_id = match (keep_id, trace_id) {
        (Some(id), _) => id.clone(),
        (None, Some(trace_id)) => HeaderValue::from_maybe_shared(trace_id).expect("hex digits"),
        (None, None) => {
            HeaderValue::from_bytes(&traceparent.as_bytes()[3..35]).expect("checked hex digits")
        }
    };
    Ids {
        request_id,
        traceparent,
        kept: (keep_id.is_some(), keep_tp.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn keeps_valid_ids() {
        let ids = ids(Some(&v("abc-123")), Some(&v(TP)));
        assert_eq!(ids.request_id, "abc-123");
        assert_eq!(ids.traceparent, TP);
        assert_eq!(ids.kept, (true, true));
    }

    #[test]
    fn a_new_request_id_is_the_trace_id() {
        let fresh = ids(None, None);
        assert_eq!(fresh.kept, (false, false));
        let tp = fresh.traceparent.to_str().unwrap();
        assert!(valid_traceparent(tp.as_bytes()), "{tp}");
        assert_eq!(fresh.request_id, &tp[3..35]);
        assert_ne!(ids(None, None).request_id, fresh.request_id);
        // A valid incoming trace without a request id: the id is that trace's id.
        let joined = ids(None, Some(&v(TP)));
        assert_eq!(joined.request_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(joined.kept, (false, true));
    }

    #[test]
    fn replaces_bad_ids() {
        let mut out = [0u8; 4];
        hex_into(&mut out, &0x00abu16.to_be_bytes());
        assert_eq!(&out, b"00ab");
        let long = "x".repeat(129);
        for bad in ["has space", long.as_str()] {
            let ids = ids(Some(&v(bad)), None);
            assert_ne!(ids.request_id, bad);
            assert!(is_hex(ids.request_id.as_bytes(), 32));
            assert!(!ids.kept.0);
        }
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let fresh = ids(Some(&v("keep-me")), Some(&v(bad)));
            assert_ne!(fresh.traceparent, bad);
            assert!(valid_traceparent(fresh.traceparent.as_bytes()));
            assert_eq!(fresh.request_id, "keep-me");
            assert_eq!(fresh.kept, (true, false));
        }
    }
}
