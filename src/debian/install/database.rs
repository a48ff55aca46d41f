//! The dpkg database entries of a package: its control paragraph split into fields, its
//! `status` paragraph (with `Status:` and `Conffiles:`, fields in dpkg's order), the name dpkg
//! files it under, and the `info/` files (`.list`, `.md5sums`, `.conffiles`, the other control
//! files) written into its layer.

use super::names::place_path;
use super::scan::Listed;
use super::{DebInfo, DB_FILE_MODE, INFO_DIR};

/// Splits a control paragraph into fields: (name, full text of the field including its
/// continuation lines, each line with its `\n`).
pub(super) fn control_fields(control: &str) -> Vec<(&str, &str)> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut start: Option<(usize, &str)> = None;
    let mut offset = 0;
    for line in control.split_inclusive('\n') {
        let is_continuation = line.starts_with([' ', '\t']);
        if !is_continuation {
            if let Some((s, name)) = start.take() {
                fields.push((name, &control[s..offset]));
            }
            if line.trim().is_empty() {
                // Blank line: end of the paragraph.
                break;
            }
            let name = line.split(':').next().unwrap_or("").trim();
            start = Some((offset, name));
        }
        offset += line.len();
    }
    if let Some((s, name)) = start {
        fields.push((name, &control[s..offset]));
    }
    fields
}

pub(super) fn control_field(control: &str, name: &str) -> Option<String> {
    control_fields(control).into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, text)| {
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_owned()
    })
}

/// A package's `status` paragraph as its control file gives it (`Status: install ok installed`
/// inserted after the `Package` line, or first when there is none; an existing `Status` field is
/// replaced; exactly one trailing newline) and its own `md5sums` (`None` when the package has
/// none; [`super::install_layer`] then computes one).
pub fn dpkg_status_entry(info: &DebInfo) -> (String, Option<String>) {
    const STATUS: &str = "Status: install ok installed\n";
    let mut out = String::with_capacity(info.control.len() + STATUS.len() + 1);
    let fields = control_fields(&info.control);
    let has_package = fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("Package"));
    if !has_package {
        out.push_str(STATUS);
    }
    for (name, text) in fields {
        if name.eq_ignore_ascii_case("Status") {
            continue;
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
        if name.eq_ignore_ascii_case("Package") {
            out.push_str(STATUS);
        }
    }
    (out, info.md5sums.clone())
}

/// The name dpkg files a package's database entries under: `name:arch` for `Multi-Arch: same`
/// packages (which may be installed for several architectures), else `name`.
pub fn dpkg_name(info: &DebInfo, name: &str) -> String {
    let same = info.field("Multi-Arch").is_some_and(|m| m.eq_ignore_ascii_case("same"));
    match (same, info.field("Architecture")) {
        (true, Some(arch)) if arch != "all" => format!("{name}:{arch}"),
        _ => name.to_owned(),
    }
}

/// A status paragraph with a `Conffiles:` field (each conffile with the MD5 of what was
/// installed, as dpkg records it), placed before `Description` (dpkg's order); unchanged when the
/// package has no conffiles.
fn with_conffiles(status: &str, conffiles: Option<&str>, md5_of: &dyn Fn(&str) -> Option<String>) -> String {
    let lines: Vec<String> = conffiles
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| p.starts_with('/'))
        .map(|p| format!(" {p} {}", md5_of(p).unwrap_or_else(|| "newconffile".to_owned())))
        .collect();
    if lines.is_empty() {
        return status.to_owned();
    }
    let field = format!("Conffiles:\n{}\n", lines.join("\n"));
    let mut out = String::with_capacity(status.len() + field.len());
    let mut placed = false;
    for (name, text) in control_fields(status) {
        if !placed && name.eq_ignore_ascii_case("Description") {
            out.push_str(&field);
            placed = true;
        }
        if name.eq_ignore_ascii_case("Conffiles") {
            continue;
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    if !placed {
        out.push_str(&field);
    }
    out
}

/// The fields of a status paragraph in the order dpkg writes them (lib/dpkg's field table), the
/// others after them in their own order.
fn dpkg_field_order(paragraph: &str) -> String {
    const ORDER: &[&str] = &[
        "Package",
        "Essential",
        "Protected",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Origin",
        "Maintainer",
        "Bugs",
        "Architecture",
        "Multi-Arch",
        "Source",
        "Version",
        "Config-Version",
        "Replaces",
        "Provides",
        "Depends",
        "Pre-Depends",
        "Recommends",
        "Suggests",
        "Breaks",
        "Conflicts",
        "Enhances",
        "Conffiles",
        "Description",
        "Triggers-Pending",
        "Triggers-Awaited",
    ];
    let fields = control_fields(paragraph);
    let rank = |name: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(name)).unwrap_or(ORDER.len());
    let mut sorted: Vec<(usize, usize, &str)> = fields.iter().enumerate().map(|(i, (n, t))| (rank(n), i, *t)).collect();
    sorted.sort();
    let mut out = String::with_capacity(paragraph.len());
    for (_, _, text) in sorted {
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The package's files in dpkg's `info/` directory ([`INFO_DIR`]), as (path, bytes, mode):
/// `<db>.list` (every entry as in the package, in archive order), `<db>.md5sums` (the package's
/// own, or one line per regular file of `listed`), `<db>.conffiles`, and its other control files
/// (maintainer scripts executable; triggers, shlibs…); and its `status` paragraph, for the
/// image's one `status` file, with `Conffiles:` and in dpkg's field order. `md5_of` gives the
/// MD5 of a regular file by image path.
pub(super) fn database_entries(
    info: &DebInfo,
    db: &str,
    listed: &[Listed],
    dpkg_list: &[String],
    md5_of: &dyn Fn(&str) -> Option<[u8; 16]>,
    merged_usr: bool,
) -> (String, Vec<(String, Vec<u8>, u32)>) {
    let (status, md5sums) = dpkg_status_entry(info);
    let md5sums = md5sums.unwrap_or_else(|| {
        let mut lines: Vec<(&str, String)> =
            listed.iter().filter_map(|l| md5_of(&l.image_path).map(|m| (l.package_path.as_str(), hex::encode(m)))).collect();
        lines.sort();
        lines.dedup();
        lines.into_iter().map(|(p, m)| format!("{m}  {p}\n")).collect()
    });
    let mut list: String = dpkg_list.iter().map(|p| format!("{p}\n")).collect();
    if list.is_empty() {
        list.push_str("/.\n");
    }
    let mut db_files = vec![(format!("{INFO_DIR}/{db}.list"), list), (format!("{INFO_DIR}/{db}.md5sums"), md5sums)];
    if let Some(c) = info.conffiles.as_ref().filter(|c| !c.trim().is_empty()) {
        db_files.push((format!("{INFO_DIR}/{db}.conffiles"), c.clone()));
    }
    let status = dpkg_field_order(&with_conffiles(&status, info.conffiles.as_deref(), &|p: &str| {
        md5_of(&place_path(p, merged_usr)).map(hex::encode)
    }));
    let mut db_files: Vec<(String, Vec<u8>, u32)> = db_files.into_iter().map(|(p, c)| (p, c.into_bytes(), DB_FILE_MODE)).collect();
    for (member, bytes, mode) in &info.others {
        let mode = if *mode & 0o111 != 0 { 0o755 } else { DB_FILE_MODE };
        db_files.push((format!("{INFO_DIR}/{db}.{member}"), bytes.clone(), mode));
    }
    (status, db_files)
}
