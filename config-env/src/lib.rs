//! `${NAME}` references in config files, expanded from the environment when the file is loaded,
//! so that secrets (database URLs, tokens) reach strangler-proxy and cdc-sync the way Kubernetes
//! hands them over, while the rest of the file stays in a ConfigMap.

/// Replaces each `${NAME}` in a config file with the environment variable `NAME`, so that
/// secrets (database URLs, admin tokens) can come from the environment, as Kubernetes hands them
/// over; `$${` stays a literal `${`, and comment lines are left as they are. An unset or
/// malformed reference names its line.
pub fn expand(text: &str, get: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix("${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let end = tail
                    .find('}')
                    .ok_or_else(|| format!("line {}: `${{` without a closing `}}`", n + 1))?;
                let name = &tail[..end];
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!(
                        "line {}: `${{{name}}}` is not an environment variable name",
                        n + 1
                    ));
                }
                let value = get(name).ok_or_else(|| {
                    format!("line {}: environment variable {name} is not set", n + 1)
                })?;
                out.push_str(&value);
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB_URL" => Some("mysql://u:p@db:3306/flags".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_are_replaced_and_literals_kept() {
        let text =
            "# ${NAME} in a comment\nurl = \"${DB_URL}\"\nx = \"$${DB_URL} costs $5 ${EMPTY}\"\n";
        assert_eq!(
            expand(text, env).unwrap(),
            "# ${NAME} in a comment\nurl = \"mysql://u:p@db:3306/flags\"\nx = \"${DB_URL} costs $5 \"\n"
        );
    }

    #[test]
    fn unset_and_malformed_references_name_their_line() {
        let err = expand("a = 1\ntoken = \"${ADMIN_TOKEN}\"\n", env).unwrap_err();
        assert_eq!(err, "line 2: environment variable ADMIN_TOKEN is not set");
        let err = expand("a = \"${DB_URL\"\n", env).unwrap_err();
        assert!(
            err.starts_with("line 1:") && err.contains("closing"),
            "{err}"
        );
        let err = expand("\n\na = \"${1X}\"\n", env).unwrap_err();
        assert!(err.starts_with("line 3:") && err.contains("1X"), "{err}");
    }
}
