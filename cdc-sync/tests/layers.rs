//! The crate reads one way: model ← config ← source, apply ← backfill, verify ← transport ←
//! pipeline ← control. A module naming one of a higher layer (through `crate::`) fails this test.

use std::path::Path;

/// Layer of each top-level module; a module may use its own layer's or lower ones.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("metrics", 0),
    ("model", 1),
    ("config", 2),
    ("source", 3),
    ("apply", 3),
    ("backfill", 4),
    ("verify", 4),
    ("check", 4),
    ("transport", 5),
    ("pipeline", 6),
    ("control", 7),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for path in all {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "bin" || top == "lib" {
            continue;
        }
        let Some(own) = layer(top) else {
            wrong.push(format!("{}: module `{top}` has no layer", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                checked += 1;
                match layer(&used) {
                    Some(l) if l <= own => {}
                    _ => wrong.push(format!(
                        "{}:{}: `{top}` uses `crate::{used}`",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} imports seen");
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}
