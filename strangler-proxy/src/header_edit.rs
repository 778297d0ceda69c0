//! The headers the proxy adds to requests and responses, applied in one step. Pingora's header
//! types only take one parsed-and-copied name at a time into two maps (values and original case);
//! here the `http` parts are moved out, room is reserved once, ready-made names go in, and the
//! parts move back: header names leave normalised (standard ones titled, others lower case, as
//! Envoy does) unless `preserve_header_case` asks for Pingora's case-keeping slow path.

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// One header change. Names are statics: cloning one costs nothing, and its text is `'static`
/// for Pingora's case-keeping methods.
pub enum Edit {
    /// Replaces every value the header had.
    Insert(&'static HeaderName, HeaderValue),
    /// Adds a value beside those already there.
    Append(&'static HeaderName, HeaderValue),
}

/// Pingora's header types: each edited with its own one-at-a-time methods (which keep each
/// name's case), or as `http` parts moved out and back.
pub trait PingoraHeader {
    fn insert(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()>;
    fn append(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()>;
    /// Moves the parts out, lets `edit` change the header map, and moves them back; everything
    /// but the case of the names stays as it was.
    fn edit_parts(&mut self, edit: impl FnOnce(&mut HeaderMap)) -> pingora::Result<()>;
}

impl PingoraHeader for RequestHeader {
    fn insert(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()> {
        self.insert_header(name, value)
    }
    fn append(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()> {
        self.append_header(name, value).map(|_| ())
    }
    fn edit_parts(&mut self, edit: impl FnOnce(&mut HeaderMap)) -> pingora::Result<()> {
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let taken = std::mem::replace(self, placeholder);
        // An origin-form target is rebuilt from the URI as it was; any other is kept verbatim.
        let from_uri = taken.uri.path_and_query().map(|p| p.as_str().as_bytes());
        let raw = (Some(taken.raw_path()) != from_uri).then(|| taken.raw_path().to_vec());
        let end_stream = taken.send_end_stream();
        let mut parts = http::request::Parts::from(taken);
        edit(&mut parts.headers);
        let mut rebuilt = RequestHeader::from(parts);
        if let Some(raw) = raw {
            rebuilt.set_raw_path(&raw)?;
        }
        if let Some(end) = end_stream {
            rebuilt.set_send_end_stream(end);
        }
        *self = rebuilt;
        Ok(())
    }
}

impl PingoraHeader for ResponseHeader {
    fn insert(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()> {
        self.insert_header(name, value)
    }
    fn append(&mut self, name: &'static str, value: HeaderValue) -> pingora::Result<()> {
        self.append_header(name, value).map(|_| ())
    }
    fn edit_parts(&mut self, edit: impl FnOnce(&mut HeaderMap)) -> pingora::Result<()> {
        let reason = self.get_reason_phrase();
        let reason = (reason != self.status.canonical_reason()).then(|| reason.map(str::to_string));
        let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
        let mut parts = http::response::Parts::from(std::mem::replace(self, placeholder));
        edit(&mut parts.headers);
        let mut rebuilt = ResponseHeader::from(parts);
        if let Some(reason) = reason {
            rebuilt.set_reason_phrase(reason.as_deref())?;
        }
        *self = rebuilt;
        Ok(())
    }
}

/// Applies the `edits` given (`None`: nothing to do) to a request about to go upstream or a
/// response about to go to the client. Method, target (byte for byte, also in absolute form),
/// status, reason phrase, version, extensions and every other header stay as they were.
pub fn apply<H: PingoraHeader, const N: usize>(
    header: &mut H,
    edits: [Option<Edit>; N],
    preserve_case: bool,
) -> pingora::Result<()> {
    let count = edits.iter().flatten().count();
    if count == 0 {
        return Ok(());
    }
    let edits = edits.into_iter().flatten();
    if preserve_case {
        for edit in edits {
            match edit {
                Edit::Insert(name, value) => header.insert(name.as_str(), value)?,
                Edit::Append(name, value) => header.append(name.as_str(), value)?,
            }
        }
        return Ok(());
    }
    header.edit_parts(|map| {
        map.reserve(count);
        for edit in edits {
            match edit {
                Edit::Insert(name, value) => {
                    map.insert(name.clone(), value);
                }
                Edit::Append(name, value) => {
                    map.append(name.clone(), value);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    static X_LEGACY_TOKEN: HeaderName = HeaderName::from_static("x-legacy-token");
    static SET_COOKIE: HeaderName = http::header::SET_COOKIE;

    fn wire_request(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn wire_response(resp: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        resp.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn incoming(target: &[u8]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", target, Some(3)).unwrap();
        req.append_header("Host", "shop.example").unwrap();
        req.append_header("X-Legacy-Token", "t1").unwrap();
        req.append_header("X-Legacy-Token", "t2").unwrap();
        req.extensions_mut().insert(7u32);
        req
    }

    fn edits() -> [Option<Edit>; 3] {
        [
            Some(Edit::Insert(&X_REQUEST_ID, HeaderValue::from_static("r-1"))),
            None,
            Some(Edit::Append(
                &X_LEGACY_TOKEN,
                HeaderValue::from_static("t3"),
            )),
        ]
    }

    #[test]
    fn a_request_keeps_everything_but_the_case_of_its_names() {
        let mut req = incoming(b"/api/orders?id=1");
        apply(&mut req, edits(), false).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.uri, "/api/orders?id=1");
        assert_eq!(req.raw_path(), b"/api/orders?id=1");
        assert_eq!(req.extensions.get::<u32>(), Some(&7));
        assert_eq!(req.headers["x-request-id"], "r-1");
        let tokens: Vec<_> = req.headers.get_all("x-legacy-token").iter().collect();
        assert_eq!(tokens, ["t1", "t2", "t3"]);
        assert_eq!(
            wire_request(&req),
            "Host: shop.example\r\nx-legacy-token: t1\r\nx-legacy-token: t2\r\nx-legacy-token: t3\r\nx-request-id: r-1\r\n"
        );
    }

    #[test]
    fn preserving_case_keeps_the_names_as_they_came() {
        let mut req = incoming(b"/api/orders");
        apply(&mut req, edits(), true).unwrap();
        assert_eq!(
            wire_request(&req),
            "Host: shop.example\r\nX-Legacy-Token: t1\r\nX-Legacy-Token: t2\r\nx-legacy-token: t3\r\nx-request-id: r-1\r\n"
        );
        assert_eq!(req.extensions.get::<u32>(), Some(&7));
    }

    #[test]
    fn an_absolute_form_target_is_kept_verbatim() {
        let target = b"http://shop.example/api/orders?id=1";
        let mut req = incoming(target);
        apply(&mut req, edits(), false).unwrap();
        assert_eq!(req.raw_path(), target);
        assert_eq!(req.uri.path(), "/api/orders");
        assert_eq!(req.headers["x-request-id"], "r-1");
    }

    #[test]
    fn no_edits_change_nothing() {
        let mut req = incoming(b"/x");
        apply(&mut req, [None, None], false).unwrap();
        assert!(req.has_case());
        assert!(wire_request(&req).contains("X-Legacy-Token: t1"));
    }

    #[test]
    fn a_response_keeps_its_status_and_reason() {
        let mut resp = ResponseHeader::build(418, Some(2)).unwrap();
        resp.set_reason_phrase(Some("Short And Stout")).unwrap();
        resp.append_header("Content-Type", "application/json")
            .unwrap();
        resp.append_header("X-Upstream", "a").unwrap();
        let edits = [
            Some(Edit::Insert(&X_REQUEST_ID, HeaderValue::from_static("r-2"))),
            Some(Edit::Append(&SET_COOKIE, HeaderValue::from_static("sid=1"))),
        ];
        apply(&mut resp, edits, false).unwrap();
        assert_eq!(resp.status, 418);
        assert_eq!(resp.get_reason_phrase(), Some("Short And Stout"));
        assert_eq!(
            wire_response(&resp),
            "Content-Type: application/json\r\nx-upstream: a\r\nx-request-id: r-2\r\nSet-Cookie: sid=1\r\n"
        );

        let mut canonical = ResponseHeader::build(200, None).unwrap();
        canonical.append_header("X-Upstream", "a").unwrap();
        let edits = [Some(Edit::Insert(
            &X_REQUEST_ID,
            HeaderValue::from_static("r-3"),
        ))];
        apply(&mut canonical, edits, true).unwrap();
        assert_eq!(canonical.get_reason_phrase(), Some("OK"));
        assert_eq!(
            wire_response(&canonical),
            "X-Upstream: a\r\nx-request-id: r-3\r\n"
        );
    }
}
