//! The stand-in is a second implementation, not the services' code again: it may use service-kit
//! only for generic plumbing (HTTP set-up and metrics, the pool, the migration runner), never its
//! domain modules, error body, extractors, tokens, passwords or money.

use std::path::Path;

/// service-kit modules the monolith may use: plumbing with no shop rule in it.
const PLUMBING: &[&str] = &["http", "db", "migrate"];

/// Every `service_kit::<module>` in `source` whose module is not plumbing, as `line: text`.
fn domain_uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("service_kit::") {
            let after = &rest[at + "service_kit::".len()..];
            let module: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // A grouped import (`service_kit::{…}`) or a glob names nothing checkable: refused.
            if !PLUMBING.contains(&module.as_str()) {
                found.push(format!("{}: {}", n + 1, line.trim()));
                break;
            }
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_catches_domain_modules() {
    let sample = "use service_kit::http::observe;\n\
                  pub use service_kit::products::*;\n\
                  let e = service_kit::error::ApiError::NotFound(\"x\");\n\
                  use service_kit::{db, users};\n\
                  service_kit::migrate::run(&pool, M);";
    assert_eq!(
        domain_uses(sample),
        [
            "2: pub use service_kit::products::*;",
            "3: let e = service_kit::error::ApiError::NotFound(\"x\");",
            "4: use service_kit::{db, users};",
        ]
    );
}

#[test]
fn the_monolith_uses_no_domain_code_of_service_kit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut offending = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for hit in domain_uses(&text) {
            offending.push(format!("{}:{hit}", file.display()));
        }
    }
    assert!(
        offending.is_empty(),
        "legacy-monolith must not use service-kit's domain code (only {PLUMBING:?}):\n{}",
        offending.join("\n")
    );
}
