//! The house stays one-way: a module of `src/` may use only the modules below it in the data
//! flow (the table in `src/lib.rs`'s overview). This reads the sources and fails on any
//! `crate::…` path (in code, not comments) that climbs back up, or names a module the table
//! does not know.

use std::collections::BTreeMap;
use std::path::Path;

/// Each module's level: a module may use only modules of a lower level. Keep in step with
/// `src/lib.rs`.
const LEVELS: &[(&str, u32)] = &[
    ("util", 0),
    ("hash", 0),
    ("layer", 0),
    ("reference", 1),
    ("tarcheck", 1),
    ("spec", 2),
    ("lock", 3),
    ("import", 3),
    ("oci", 3),
    ("store", 3),
    ("http", 4),
    ("registry", 4),
    ("source", 4),
    ("sbom", 4),
    ("apt", 5),
    ("clients", 5),
    ("base", 6),
    ("resolution", 6),
    ("remote", 6),
    ("plan", 7),
    ("exec", 8),
    ("image", 9),
    ("ops", 10),
];

fn uses(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `compose_crate::x` or `mycrate::x` are not ours.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn modules_only_use_those_below_them() {
    let levels: BTreeMap<&str, u32> = LEVELS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut climbs = Vec::new();
    let mut files = 0;
    for entry in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        files += 1;
        let module = rel.split(['/', '.']).next().unwrap().to_string();
        let Some(&level) = levels.get(module.as_str()) else {
            climbs.push(format!("{rel}: module `{module}` is not in the table of levels (tests/it/architecture.rs, src/lib.rs)"));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for used in uses(code) {
                if used == module {
                    continue;
                }
                match levels.get(used.as_str()) {
                    None => climbs.push(format!("{rel}:{}: uses `crate::{used}`, which the table of levels does not know", i + 1)),
                    Some(&l) if l >= level => climbs.push(format!(
                        "{rel}:{}: `{module}` (level {level}) uses `crate::{used}` (level {l}): a module may use only those below it",
                        i + 1
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    assert!(files > 30, "read only {files} files of {}", src.display());
    assert!(climbs.is_empty(), "imports that climb back up:\n{}", climbs.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_inline_uses() {
    assert_eq!(uses("use crate::{hash::Sha256, store::Store};"), ["hash", "store"]);
    assert_eq!(uses("let x = crate::ops::chain_message(e); mycrate::y"), ["ops"]);
}
