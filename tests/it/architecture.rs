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
    ("layer", 1),
    ("reference", 1),
    ("entry", 1),
    ("tarcheck", 2),
    ("spec", 2),
    ("lock", 3),
    ("import", 3),
    ("oci", 3),
    ("record", 4),
    ("http", 4),
    ("registry", 4),
    ("sbom", 4),
    ("store", 5),
    ("source", 6),
    ("trust", 6),
    ("debian", 6),
    ("clients", 6),
    ("base", 7),
    ("resolution", 7),
    ("remote", 7),
    ("plan", 8),
    ("exec", 9),
    ("image", 10),
    ("ops", 11),
    ("cli", 12),
];

/// The package ecosystems: each a folder of its own, none using another, none used by the planner
/// (which gets what an ecosystem leaves in an image as entries, and its pins through the lock).
const ECOSYSTEMS: &[&str] = &["debian"];

/// Edges the levels allow but the design does not: (user, used, why).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("remote", "trust", "a shared cache moves bytes; whether to believe a record is `record`'s and `trust`'s"),
    ("plan", "exec", "planning does no I/O"),
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
    climbs.extend(forbidden_edges());
    assert!(climbs.is_empty(), "imports that climb back up:\n{}", climbs.join("\n"));
}

/// The edges between folders the design forbids whatever their levels: an ecosystem using
/// another, the planner using an ecosystem, and [`FORBIDDEN`].
fn forbidden_edges() -> Vec<String> {
    let mut found = Vec::new();
    for (rel, text) in sources() {
        let module = rel.split(['/', '.']).next().unwrap_or_default().to_string();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in uses(line) {
                let ecosystem_edge =
                    ECOSYSTEMS.contains(&used.as_str()) && used != module && (ECOSYSTEMS.contains(&module.as_str()) || module == "plan");
                if ecosystem_edge {
                    found.push(format!("{rel}:{}: `{module}` uses the ecosystem `{used}`: ecosystems stand alone", i + 1));
                }
                if let Some((_, _, why)) = FORBIDDEN.iter().find(|(from, to, _)| *from == module && *to == used) {
                    found.push(format!("{rel}:{}: `{module}` uses `{used}`: {why}", i + 1));
                }
            }
        }
    }
    found
}

#[test]
fn the_checker_sees_grouped_and_inline_uses() {
    assert_eq!(uses("use crate::{hash::Sha256, store::Store};"), ["hash", "store"]);
    assert_eq!(uses("let x = crate::ops::chain_message(e); mycrate::y"), ["ops"]);
}

/// Every `.rs` file under `src/`, with its path relative to `src/` and its text.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "rs") {
            let rel = entry.path().strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    out
}

/// The functions of `text` outside its test modules, as `(name, first line, length in lines)`.
/// The code is rustfmt's: a function ends at the first line that is its indentation and `}`.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        if code.starts_with("mod tests") || code.starts_with("pub(crate) mod tests") {
            // A test module runs to its closing brace; its functions are not measured.
            i = (i + 1..lines.len()).find(|&j| lines[j] == format!("{indent}}}")).unwrap_or(lines.len());
            continue;
        }
        let words = code.trim_start_matches("pub ").trim_start_matches("pub(crate) ").trim_start_matches("pub(super) ");
        let words = words.trim_start_matches("const ").trim_start_matches("async ").trim_start_matches("unsafe ");
        if let Some(rest) = words.strip_prefix("fn ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let close = format!("{indent}}}");
            // A declaration without a body (a trait's) ends at its `;` before any `{`.
            let body = (i..lines.len()).find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';'));
            if body.is_some_and(|j| lines[j].trim_end().ends_with('{')) {
                if let Some(end) = (i..lines.len()).find(|&j| lines[j] == close || (j == i && code.ends_with('}'))) {
                    out.push((name, i + 1, end - i + 1));
                }
            }
        }
        i += 1;
    }
    out
}

const MAX_FILE_LINES: usize = 1000;
const MAX_FUNCTION_LINES: usize = 100;

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let big: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(rel, text)| format!("src/{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(big.is_empty(), "files over {MAX_FILE_LINES} lines (split them by job):\n{}", big.join("\n"));
}

#[test]
fn no_function_outside_tests_is_over_a_hundred_lines() {
    let mut long = Vec::new();
    for (rel, text) in sources() {
        if rel.ends_with("tests.rs") {
            continue;
        }
        for (name, line, len) in functions(&text) {
            if len > MAX_FUNCTION_LINES {
                long.push(format!("src/{rel}:{line}: fn {name} is {len} lines"));
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FUNCTION_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_measure_finds_functions_and_skips_tests() {
    let text = "fn a() {\n    x();\n}\npub(crate) fn b(\n    y: u8,\n) -> u8 {\n    y\n}\ntrait T {\n    fn c(&self);\n}\n#[cfg(test)]\nmod tests {\n    fn d() {\n    }\n}\n";
    assert_eq!(functions(text), [("a".to_string(), 1, 3), ("b".to_string(), 4, 5)]);
}
