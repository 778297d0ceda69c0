//! Path matching: exact paths, patterns with `{param}` segments (`/api/users/{id}` matches one
//! non-empty segment per parameter), and prefixes that respect segment boundaries.

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Pattern(Vec<Segment>),
    Prefix(String),
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param,
}

impl PathMatch {
    /// `path` (exact or pattern) or `prefix`; errors say what is wrong with the text.
    pub fn parse(path: Option<&str>, prefix: Option<&str>) -> Result<Self, String> {
        match (path, prefix) {
            (Some(p), None) => {
                if !p.starts_with('/') {
                    return Err(format!("path {p:?} must start with /"));
                }
                if !p.contains('{') {
                    return Ok(Self::Exact(p.to_string()));
                }
                let mut segments = Vec::new();
                for s in p[1..].split('/') {
                    if s.starts_with('{') && s.ends_with('}') && s.len() > 2 {
                        segments.push(Segment::Param);
                    } else if s.contains('{') || s.contains('}') {
                        return Err(format!(
                            "path {p:?}: a parameter must be a whole segment like {{id}}"
                        ));
                    } else {
                        segments.push(Segment::Literal(s.to_string()));
                    }
                }
                Ok(Self::Pattern(segments))
            }
            (None, Some(p)) if p.starts_with('/') => {
                Ok(Self::Prefix(p.trim_end_matches('/').to_string()))
            }
            (None, Some(p)) => Err(format!("prefix {p:?} must start with /")),
            (Some(_), Some(_)) => Err("give either path or prefix, not both".into()),
            (None, None) => Err("give a path or a prefix".into()),
        }
    }

    /// Whether `path` (without query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/' || p.is_empty())
            }
            Self::Pattern(segments) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segments {
                    match (seg, parts.next()) {
                        (Segment::Literal(l), Some(p)) if l == p => {}
                        (Segment::Param, Some(p)) if !p.is_empty() => {}
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_pattern_and_prefix() {
        let exact = PathMatch::parse(Some("/api/users/me"), None).unwrap();
        assert!(exact.matches("/api/users/me"));
        assert!(!exact.matches("/api/users/me/"));
        let pat = PathMatch::parse(Some("/api/users/{id}"), None).unwrap();
        assert!(pat.matches("/api/users/42"));
        assert!(!pat.matches("/api/users/"));
        assert!(!pat.matches("/api/users/42/orders"));
        let pat2 = PathMatch::parse(Some("/api/orders/{id}/cancel"), None).unwrap();
        assert!(pat2.matches("/api/orders/7/cancel"));
        assert!(!pat2.matches("/api/orders/7/refund"));
        let prefix = PathMatch::parse(None, Some("/api/products/")).unwrap();
        assert!(prefix.matches("/api/products"));
        assert!(prefix.matches("/api/products/9/inventory"));
        assert!(!prefix.matches("/api/productsX"));
    }

    #[test]
    fn bad_paths_are_explained() {
        assert!(
            PathMatch::parse(Some("api"), None)
                .unwrap_err()
                .contains("start with /")
        );
        assert!(
            PathMatch::parse(Some("/a/x{id}"), None)
                .unwrap_err()
                .contains("whole segment")
        );
        assert!(
            PathMatch::parse(Some("/a"), Some("/b"))
                .unwrap_err()
                .contains("not both")
        );
        assert!(PathMatch::parse(None, None).is_err());
    }
}
