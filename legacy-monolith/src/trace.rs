//! The trace context of a request: the caller's W3C `traceparent` kept (a new span id for the
//! monolith's own work) or a new trace started, and the sqlcommenter comment
//! (`/*route='…',traceparent='00-…'*/`) that every SQL statement of the request carries.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use rand::Rng as _;

/// The monolith's span of one request, inside the caller's trace when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero: the monolith's span.
    pub span_id: String,
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent_id: Option<String>,
    /// Two hex digits (`01` sampled).
    pub flags: String,
}

fn hex_of(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex<const BYTES: usize>() -> String {
    let mut bytes = [0u8; BYTES];
    rand::rng().fill(&mut bytes[..]);
    if bytes.iter().all(|b| *b == 0) {
        bytes[BYTES - 1] = 1;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceContext {
    /// The monolith's span under `traceparent` when that is a valid W3C header (version not
    /// `ff`, ids not all zero), else the root span of a new trace.
    pub fn from_traceparent(traceparent: Option<&str>) -> Self {
        let span_id = random_hex::<8>();
        if let Some(tp) = traceparent {
            let parts: Vec<&str> = tp.trim().split('-').collect();
            if let [version, trace, parent, flags] = parts[..]
                && hex_of(version, 2)
                && version != "ff"
                && hex_of(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && hex_of(parent, 16)
                && parent.bytes().any(|b| b != b'0')
                && hex_of(flags, 2)
            {
                return Self {
                    trace_id: trace.to_string(),
                    span_id,
                    parent_id: Some(parent.to_string()),
                    flags: flags.to_string(),
                };
            }
        }
        Self {
            trace_id: random_hex::<16>(),
            span_id,
            parent_id: None,
            flags: "01".into(),
        }
    }

    /// `00-<trace id>-<span id>-<flags>`: the monolith's span as a W3C `traceparent`.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// The sqlcommenter comment appended to every statement of one request: keys sorted, values
/// URL-encoded and single-quoted, as the sqlcommenter specification has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlComment(String);

impl SqlComment {
    /// The comment for a request to `route` (its template, e.g. `/api/orders/{id}`) in `trace`.
    pub fn new(route: Option<&str>, trace: &TraceContext) -> Self {
        let mut pairs = Vec::with_capacity(2);
        if let Some(route) = route {
            pairs.push(format!("route='{}'", url_encode(route)));
        }
        pairs.push(format!(
            "traceparent='{}'",
            url_encode(&trace.traceparent())
        ));
        Self(format!("/*{}*/", pairs.join(",")))
    }

    /// The comment text, `/*…*/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters: nothing in a value can
/// close the comment or the quotes.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a handler gets: the request's trace and the comment its statements carry.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub context: TraceContext,
    pub comment: SqlComment,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(known) = parts.extensions.get::<RequestTrace>() {
            return Ok(known.clone());
        }
        let header = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let context = TraceContext::from_traceparent(header);
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let comment = SqlComment::new(route, &context);
        let trace = Self { context, comment };
        // Two extractors of one request share one span.
        parts.extensions.insert(trace.clone());
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let t = TraceContext::from_traceparent(Some(TP));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(hex_of(&t.span_id, 16));
        assert_eq!(t.flags, "01");
    }

    #[test]
    fn broken_or_missing_traceparents_start_a_new_trace() {
        for bad in [
            None,
            Some(""),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01*/ DROP"),
        ] {
            let t = TraceContext::from_traceparent(bad);
            assert!(t.parent_id.is_none(), "{bad:?}");
            assert!(hex_of(&t.trace_id, 32) && t.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn the_comment_follows_sqlcommenter() {
        let t = TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "1111111111111111".into(),
            parent_id: None,
            flags: "01".into(),
        };
        assert_eq!(
            SqlComment::new(Some("/api/orders/{id}"), &t).as_str(),
            "/*route='%2Fapi%2Forders%2F%7Bid%7D',traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01'*/"
        );
        assert_eq!(
            SqlComment::new(Some("*/ x'"), &t).as_str()[..18].to_string(),
            "/*route='%2A%2F%20"
        );
    }
}
