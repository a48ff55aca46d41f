//! The `Packages` index of a repository: decompressing it (`.xz`, `.gz`, plain), checking it
//! against the size and SHA256 the signed `Release` lists, and parsing its stanzas into
//! [`Package`]s, including the relationship fields (`Depends:` and friends), whose parser
//! [`parse_relations`] is public for the lockfile and spec pins.
//!
//! The stanza parser is hand-written for speed (bookworm's 63,000 amd64 stanzas parse in well
//! under a second in release builds): it borrows field values from the input and only allocates
//! for the fields it keeps.

use std::io::Read;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::debian::types::{ArchQual, Dep, DepList, MultiArch, Op, Package, Provide, Version};

#[derive(Debug, Error)]
pub enum IndexError {
    #[error("failed to decompress `{what}`: {source}")]
    Decompress {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decompress `{what}`: unsupported compression (expected `.xz`, `.gz` or none)")]
    UnsupportedCompression { what: String },
    #[error("size mismatch for `{what}`: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("checksum mismatch for `{what}`: expected sha256 {expected}, got {actual}")]
    HashMismatch { what: String, expected: String, actual: String },
    #[error("failed to parse `Packages`: line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("failed to parse `Packages`: stanza at line {line}{}: missing `{field}` field", package_suffix(.package))]
    MissingField { line: usize, field: &'static str, package: Option<String> },
    #[error("failed to parse `Packages`: package `{package}` (stanza at line {line}), field `{field}`: {reason}")]
    Field { package: String, line: usize, field: &'static str, reason: String },
    #[error("failed to parse relation `{text}`: {reason}")]
    Relation { text: String, reason: String },
}

fn package_suffix(p: &Option<String>) -> String {
    match p {
        Some(name) => format!(" (package `{name}`)"),
        None => String::new(),
    }
}

/// Decompress an index according to the suffix of `path_hint` (`.xz`, `.gz`, anything else
/// without a compression suffix is returned as is). `path_hint` also names the data in errors.
pub fn decompress(path_hint: &str, data: &[u8]) -> Result<Vec<u8>, IndexError> {
    let err = |source| IndexError::Decompress { what: path_hint.to_string(), source };
    let mut out = Vec::new();
    if path_hint.ends_with(".xz") {
        out.reserve(data.len().saturating_mul(6));
        liblzma::read::XzDecoder::new_multi_decoder(data).read_to_end(&mut out).map_err(err)?;
    } else if path_hint.ends_with(".gz") {
        out.reserve(data.len().saturating_mul(5));
        flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).map_err(err)?;
    } else if [".bz2", ".lzma", ".zst", ".lz4", ".Z"].iter().any(|s| path_hint.ends_with(s)) {
        return Err(IndexError::UnsupportedCompression { what: path_hint.to_string() });
    } else {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Check `data` against the size and hex SHA256 (case-insensitive) a `Release` file lists for it;
/// `what` names it in errors.
pub fn check_sha256(data: &[u8], expected_hex: &str, expected_size: u64, what: &str) -> Result<(), IndexError> {
    let actual_size = data.len() as u64;
    if actual_size != expected_size {
        return Err(IndexError::SizeMismatch { what: what.to_string(), expected: expected_size, actual: actual_size });
    }
    let actual = hex::encode(Sha256::digest(data));
    if !actual.eq_ignore_ascii_case(expected_hex.trim()) {
        return Err(IndexError::HashMismatch { what: what.to_string(), expected: expected_hex.trim().to_ascii_lowercase(), actual });
    }
    Ok(())
}

/// Fields of a stanza that are kept; the discriminant indexes [`Stanza::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    Package,
    Version,
    Architecture,
    MultiArch,
    Essential,
    Priority,
    Section,
    Source,
    Homepage,
    Maintainer,
    Description,
    Depends,
    PreDepends,
    Provides,
    Conflicts,
    Breaks,
    Replaces,
    Filename,
    Size,
    Sha256,
    InstalledSize,
}

const FIELDS: [(&str, F); 21] = [
    ("Package", F::Package),
    ("Version", F::Version),
    ("Architecture", F::Architecture),
    ("Multi-Arch", F::MultiArch),
    ("Essential", F::Essential),
    ("Priority", F::Priority),
    ("Section", F::Section),
    ("Source", F::Source),
    ("Homepage", F::Homepage),
    ("Maintainer", F::Maintainer),
    ("Description", F::Description),
    ("Depends", F::Depends),
    ("Pre-Depends", F::PreDepends),
    ("Provides", F::Provides),
    ("Conflicts", F::Conflicts),
    ("Breaks", F::Breaks),
    ("Replaces", F::Replaces),
    ("Filename", F::Filename),
    ("Size", F::Size),
    ("SHA256", F::Sha256),
    ("Installed-Size", F::InstalledSize),
];

impl F {
    fn name(self) -> &'static str {
        FIELDS[self as usize].0
    }

    fn lookup(name: &str) -> Option<F> {
        let exact = match name {
            "Package" => Some(F::Package),
            "Version" => Some(F::Version),
            "Architecture" => Some(F::Architecture),
            "Multi-Arch" => Some(F::MultiArch),
            "Essential" => Some(F::Essential),
            "Priority" => Some(F::Priority),
            "Section" => Some(F::Section),
            "Source" => Some(F::Source),
            "Homepage" => Some(F::Homepage),
            "Maintainer" => Some(F::Maintainer),
            "Description" => Some(F::Description),
            "Depends" => Some(F::Depends),
            "Pre-Depends" => Some(F::PreDepends),
            "Provides" => Some(F::Provides),
            "Conflicts" => Some(F::Conflicts),
            "Breaks" => Some(F::Breaks),
            "Replaces" => Some(F::Replaces),
            "Filename" => Some(F::Filename),
            "Size" => Some(F::Size),
            "SHA256" => Some(F::Sha256),
            "Installed-Size" => Some(F::InstalledSize),
            _ => None,
        };
        // deb822 field names are case-insensitive; the exact spelling is the common case.
        exact.or_else(|| FIELDS.iter().find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name)).map(|(_, f)| *f))
    }
}

/// Field values of one stanza, borrowed from the index text. A value spans its first line and any
/// continuation lines (newlines included); `Description` keeps only its first line.
struct Stanza<'a> {
    values: [Option<&'a str>; FIELDS.len()],
    line: usize,
}

impl<'a> Stanza<'a> {
    fn get(&self, f: F) -> Option<&'a str> {
        self.values[f as usize]
    }

    fn required(&self, f: F) -> Result<&'a str, IndexError> {
        match self.get(f).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(IndexError::MissingField {
                line: self.line,
                field: f.name(),
                package: self.get(F::Package).map(|p| p.trim().to_string()).filter(|p| !p.is_empty()),
            }),
        }
    }

    fn opt(&self, f: F) -> Option<String> {
        self.get(f).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
    }
}

/// Parse a `Packages` index. Every package gets `repository` as its repository index.
///
/// Stanzas are separated by blank lines; field names are case-insensitive; unknown fields are
/// ignored. `Package`, `Version`, `Architecture`, `Filename`, `Size` and `SHA256` are required.
pub fn parse_packages(text: &str, repository: usize) -> Result<Vec<Package>, IndexError> {
    let mut out = Vec::with_capacity(text.len() / 900);
    let mut stanza = Stanza { values: [None; FIELDS.len()], line: 0 };
    let mut in_stanza = false;
    // The field the previous line belonged to (for continuation lines) and its value's start.
    let mut last: Option<(F, usize)> = None;
    let mut pos = 0;
    let mut line_no = 0;
    let len = text.len();
    while pos < len {
        line_no += 1;
        let end = text[pos..].find('\n').map_or(len, |i| pos + i);
        let line = &text[pos..end];
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line_start = pos;
        pos = end + 1;

        let first = line.as_bytes().first().copied();
        if line.trim().is_empty() {
            if in_stanza {
                out.push(build_package(&stanza, repository)?);
                stanza.values = [None; FIELDS.len()];
                in_stanza = false;
            }
            last = None;
            continue;
        }
        if matches!(first, Some(b' ' | b'\t')) {
            if !in_stanza {
                return Err(IndexError::Syntax { line: line_no, reason: "continuation line outside of a stanza".into() });
            }
            if let Some((f, start)) = last {
                if f != F::Description {
                    stanza.values[f as usize] = Some(&text[start..line_start + line.len()]);
                }
            }
            continue;
        }
        if first == Some(b'#') && !in_stanza {
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err(IndexError::Syntax { line: line_no, reason: format!("expected `Field: value`, got `{}`", truncate(line)) });
        };
        if !in_stanza {
            in_stanza = true;
            stanza.line = line_no;
        }
        let name = &line[..colon];
        match F::lookup(name) {
            Some(f) => {
                let value_start = line_start + colon + 1;
                stanza.values[f as usize] = Some(&text[value_start..line_start + line.len()]);
                last = Some((f, value_start));
            }
            None => last = None,
        }
    }
    if in_stanza {
        out.push(build_package(&stanza, repository)?);
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn build_package(st: &Stanza<'_>, repository: usize) -> Result<Package, IndexError> {
    let name = st.required(F::Package)?;
    let field_err = |field: F, reason: String| IndexError::Field { package: name.to_string(), line: st.line, field: field.name(), reason };
    let version = parse_version(st.required(F::Version)?).map_err(|e| field_err(F::Version, e))?;
    let architecture = st.required(F::Architecture)?.to_string();
    let filename = st.required(F::Filename)?.to_string();
    let size_text = st.required(F::Size)?;
    let size: u64 = size_text.parse().map_err(|_| field_err(F::Size, format!("`{size_text}` is not a size in bytes")))?;
    let sha = st.required(F::Sha256)?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(field_err(F::Sha256, format!("`{}` is not a hex sha256", truncate(sha))));
    }
    let sha256 = sha.to_ascii_lowercase();

    let multi_arch = match st.get(F::MultiArch).map(str::trim) {
        None | Some("") => MultiArch::No,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "no" => MultiArch::No,
            "same" => MultiArch::Same,
            "foreign" => MultiArch::Foreign,
            "allowed" => MultiArch::Allowed,
            _ => return Err(field_err(F::MultiArch, format!("unknown value `{v}` (expected no, same, foreign or allowed)"))),
        },
    };
    let essential = match st.get(F::Essential).map(str::trim) {
        None | Some("") => false,
        Some(v) if v.eq_ignore_ascii_case("yes") => true,
        Some(v) if v.eq_ignore_ascii_case("no") => false,
        Some(v) => return Err(field_err(F::Essential, format!("unknown value `{v}` (expected yes or no)"))),
    };
    let installed_size = match st.get(F::InstalledSize).map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| field_err(F::InstalledSize, format!("`{v}` is not a size in KiB")))?),
    };
    let source = st.get(F::Source).and_then(|v| {
        let v = v.trim();
        let name = v.split(|c: char| c == '(' || c.is_whitespace()).next()?;
        (!name.is_empty()).then(|| name.to_string())
    });

    let relations = |f: F| -> Result<DepList, IndexError> {
        match st.get(f) {
            None => Ok(Vec::new()),
            Some(v) => relations_inner(v).map_err(|e| field_err(f, e)),
        }
    };
    let flat =
        |f: F| -> Result<Vec<Dep>, IndexError> {
            relations(f)?
                .into_iter()
                .map(|mut group| {
                    if group.len() == 1 {
                        Ok(group.remove(0))
                    } else {
                        Err(field_err(f, "alternatives (`|`) are not allowed here".into()))
                    }
                })
                .collect()
        };
    let provides = flat(F::Provides)?
        .into_iter()
        .map(|d| match d.constraint {
            None => Ok(Provide { name: d.name, version: None }),
            Some((Op::Eq, v)) => Ok(Provide { name: d.name, version: Some(v) }),
            Some((op, _)) => Err(field_err(F::Provides, format!("`{}` uses `{}`; only `=` is allowed in Provides", d.name, op.as_str()))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Package {
        name: name.to_string(),
        version,
        architecture,
        multi_arch,
        essential,
        priority: st.opt(F::Priority),
        section: st.opt(F::Section),
        source,
        homepage: st.opt(F::Homepage),
        maintainer: st.opt(F::Maintainer),
        description: st.opt(F::Description),
        depends: relations(F::Depends)?,
        pre_depends: relations(F::PreDepends)?,
        provides,
        conflicts: flat(F::Conflicts)?,
        breaks: flat(F::Breaks)?,
        replaces: flat(F::Replaces)?,
        filename,
        size,
        sha256,
        installed_size,
        repository,
    })
}

/// Parse a relationship field (`Depends:` syntax): comma-separated groups of `|`-separated
/// alternatives, each `name[:arch] [(op version)]`. Architecture restriction lists (`[amd64]`)
/// and build profiles (`<!nocheck>`) are accepted and ignored. The obsolete operators `<` and `>`
/// mean `<=` and `>=`, as in dpkg. Empty groups (e.g. a trailing comma) are skipped.
pub fn parse_relations(field: &str) -> Result<DepList, IndexError> {
    relations_inner(field).map_err(|reason| IndexError::Relation { text: field.trim().to_string(), reason })
}

fn relations_inner(field: &str) -> Result<DepList, String> {
    let mut out = Vec::new();
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::with_capacity(1);
        for alt in group.split('|') {
            alts.push(parse_dep(alt)?);
        }
        out.push(alts);
    }
    Ok(out)
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_')
}

fn parse_dep(text: &str) -> Result<Dep, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty alternative".into());
    }
    let b = s.as_bytes();
    let name_end = b.iter().position(|&c| !is_name_char(c)).unwrap_or(b.len());
    if name_end == 0 {
        return Err(format!("`{s}` does not start with a package name"));
    }
    let name = &s[..name_end];
    let mut rest = &s[name_end..];

    let mut arch = None;
    if let Some(r) = rest.strip_prefix(':') {
        let end = r.bytes().position(|c| !is_name_char(c)).unwrap_or(r.len());
        let a = &r[..end];
        arch = Some(match a {
            "any" => ArchQual::Any,
            "native" => ArchQual::Native,
            "" => return Err(format!("`{s}` has an empty architecture qualifier")),
            _ => ArchQual::Arch(a.to_string()),
        });
        rest = &r[end..];
    }

    rest = rest.trim_start();
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or_else(|| format!("`{s}` has an unclosed `(`"))?;
        let inner = r[..close].trim();
        let (op, ver) = if let Some(v) = inner.strip_prefix("<<") {
            (Op::Lt, v)
        } else if let Some(v) = inner.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = inner.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = inner.strip_prefix(">>") {
            (Op::Gt, v)
        } else if let Some(v) = inner.strip_prefix('=') {
            (Op::Eq, v)
        } else if let Some(v) = inner.strip_prefix('<') {
            (Op::Le, v)
        } else if let Some(v) = inner.strip_prefix('>') {
            (Op::Ge, v)
        } else {
            return Err(format!("`{s}` has no relation operator (expected <<, <=, =, >= or >>)"));
        };
        let ver = ver.trim();
        if ver.is_empty() {
            return Err(format!("`{s}` has an operator but no version"));
        }
        let version = parse_version(ver).map_err(|e| format!("`{s}`: {e}"))?;
        constraint = Some((op, version));
        rest = r[close + 1..].trim_start();
    }

    // Architecture restrictions and build profiles: accepted, ignored.
    loop {
        let close = match rest.as_bytes().first() {
            Some(b'[') => ']',
            Some(b'<') => '>',
            _ => break,
        };
        let end = rest.find(close).ok_or_else(|| format!("`{s}` has an unclosed `{}`", &rest[..1]))?;
        rest = rest[end + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected `{rest}` in `{s}`"));
    }
    Ok(Dep { name: name.to_string(), arch, constraint })
}

fn is_upstream_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b':' | b'~' | b'-')
}

fn is_revision_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'~')
}

/// Parse a Debian version. Produces exactly what `debversion::Version::from_str` produces, but
/// without a regex for the common case (the index holds a few hundred thousand versions).
pub(crate) fn parse_version(s: &str) -> Result<Version, String> {
    let b = s.as_bytes();
    if b.is_empty() || !b.iter().all(|&c| is_upstream_char(c)) {
        return s.parse::<Version>().map_err(|e| format!("invalid version `{s}`: {e}"));
    }
    let mut epoch = None;
    let mut rest = s;
    if let Some(colon) = s.find(':') {
        let digits = &s[..colon];
        if !digits.is_empty() && colon + 1 < s.len() && digits.bytes().all(|c| c.is_ascii_digit()) {
            match digits.parse::<u32>() {
                Ok(e) => {
                    epoch = Some(e);
                    rest = &s[colon + 1..];
                }
                Err(_) => return s.parse::<Version>().map_err(|e| format!("invalid version `{s}`: {e}")),
            }
        }
    }
    let mut upstream = rest;
    let mut revision = None;
    if let Some(dash) = rest.rfind('-') {
        let rev = &rest[dash + 1..];
        if dash > 0 && !rev.is_empty() && rev.bytes().all(is_revision_char) {
            upstream = &rest[..dash];
            revision = Some(rev.to_string());
        }
    }
    Ok(Version { epoch, upstream_version: upstream.to_string(), debian_revision: revision })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::str::FromStr;

    const SHA: &str = "5e4a1a7f3c1e2b7f9a36f3d0b1c9d5f47e4a7d1e6c5b4a39281706f5e4d3c2b1";

    fn stanza(extra: &str) -> String {
        format!(
            "Package: foo\nVersion: 1.0-1\nArchitecture: amd64\n{extra}\
             Filename: pool/main/f/foo/foo_1.0-1_amd64.deb\nSize: 1234\nSHA256: {SHA}\n"
        )
    }

    #[test]
    fn full_stanza() {
        let text = "Package: curl\n\
Source: curl (7.88.1-10)\n\
Version: 7.88.1-10+deb12u8\n\
Installed-Size: 500\n\
Maintainer: Alessandro Ghedini <ghedo@debian.org>\n\
Architecture: amd64\n\
Multi-Arch: foreign\n\
Essential: yes\n\
Pre-Depends: libc6 (>= 2.34), dpkg:any (>= 1.19)\n\
Depends: libc6 (>= 2.34), libcurl4 (= 7.88.1-10+deb12u8), zlib1g (>= 1:1.1.4) | zlib-ng:native, python3:any, gcc:arm64 (<< 13) [amd64 i386] <!nocheck> <!cross>\n\
Provides: curl-bin (= 7.88.1), web-client\n\
Conflicts: curl-old\n\
Breaks: curl-old (<< 7)\n\
Replaces: curl-old (<< 7), other\n\
Description: command line tool for transferring data with URL syntax\n curl is a command line tool for transferring data with URL syntax, supporting\n .\n many protocols.\n\
Homepage: https://example.invalid/curl/\n\
Description-md5: 0123\n\
Tag: implemented-in::c, interface::commandline\n\
Section: web\n\
Priority: optional\n\
Filename: pool/main/c/curl/curl_7.88.1-10+deb12u8_amd64.deb\n\
Size: 315532\n\
SHA256: 5E4A1A7F3C1E2B7F9A36F3D0B1C9D5F47E4A7D1E6C5B4A39281706F5E4D3C2B1\n";
        let pkgs = parse_packages(text, 3).expect("parse");
        assert_eq!(pkgs.len(), 1);
        let p = &pkgs[0];
        assert_eq!(p.name, "curl");
        assert_eq!(p.version, Version::from_str("7.88.1-10+deb12u8").expect("v"));
        assert_eq!(p.architecture, "amd64");
        assert_eq!(p.multi_arch, MultiArch::Foreign);
        assert!(p.essential);
        assert_eq!(p.priority.as_deref(), Some("optional"));
        assert_eq!(p.section.as_deref(), Some("web"));
        assert_eq!(p.source.as_deref(), Some("curl"));
        assert_eq!(p.homepage.as_deref(), Some("https://example.invalid/curl/"));
        assert_eq!(p.maintainer.as_deref(), Some("Alessandro Ghedini <ghedo@debian.org>"));
        assert_eq!(p.description.as_deref(), Some("command line tool for transferring data with URL syntax"));
        assert_eq!(p.filename, "pool/main/c/curl/curl_7.88.1-10+deb12u8_amd64.deb");
        assert_eq!(p.size, 315532);
        assert_eq!(p.sha256, SHA);
        assert_eq!(p.installed_size, Some(500));
        assert_eq!(p.repository, 3);
        assert_eq!(p.id(), "curl=7.88.1-10+deb12u8");

        let shown: Vec<Vec<String>> = p.depends.iter().map(|g| g.iter().map(|d| d.to_string()).collect()).collect();
        assert_eq!(
            shown,
            vec![
                vec!["libc6 (>= 2.34)".to_string()],
                vec!["libcurl4 (= 7.88.1-10+deb12u8)".to_string()],
                vec!["zlib1g (>= 1:1.1.4)".to_string(), "zlib-ng:native".to_string()],
                vec!["python3:any".to_string()],
                vec!["gcc:arm64 (<< 13)".to_string()],
            ]
        );
        assert_eq!(p.depends[3][0].arch, Some(ArchQual::Any));
        assert_eq!(p.depends[4][0].arch, Some(ArchQual::Arch("arm64".into())));
        let (op, v) = p.depends[2][0].constraint.as_ref().expect("constraint");
        assert_eq!(*op, Op::Ge);
        assert_eq!(v.epoch, Some(1));
        assert_eq!(p.pre_depends.len(), 2);
        assert_eq!(p.pre_depends[1][0].to_string(), "dpkg:any (>= 1.19)");
        assert_eq!(
            p.provides,
            vec![
                Provide { name: "curl-bin".into(), version: Some(Version::from_str("7.88.1").expect("v")) },
                Provide { name: "web-client".into(), version: None }
            ]
        );
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.breaks[0].to_string(), "curl-old (<< 7)");
        assert_eq!(p.replaces.len(), 2);
    }

    #[test]
    fn minimal_and_multiple_stanzas() {
        let text = format!(
            "\n\n{}\n\n{}\n{}",
            stanza(""),
            stanza("Multi-Arch: same\n").replace("Package: foo", "Package: bar"),
            stanza("").replace("Package: foo", "package: baz")
        );
        let pkgs = parse_packages(&text, 0).expect("parse");
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["foo", "bar", "baz"]);
        let foo = &pkgs[0];
        assert_eq!(foo.multi_arch, MultiArch::No);
        assert!(!foo.essential);
        assert!(foo.depends.is_empty() && foo.provides.is_empty());
        assert_eq!(foo.description, None);
        assert_eq!(foo.installed_size, None);
        assert_eq!(pkgs[1].multi_arch, MultiArch::Same);
        // CRLF and no trailing newline.
        let crlf = stanza("").replace('\n', "\r\n");
        let pkgs = parse_packages(crlf.trim_end(), 0).expect("crlf");
        assert_eq!(pkgs[0].sha256, SHA);
        assert!(parse_packages("", 0).expect("empty").is_empty());
    }

    #[test]
    fn folded_relation_field() {
        let text = stanza("Depends: a,\n b (>= 1)\n | c,\n d\n");
        let p = &parse_packages(&text, 0).expect("parse")[0];
        assert_eq!(p.depends.len(), 3);
        assert_eq!(p.depends[1].len(), 2);
    }

    #[test]
    fn errors_name_stanza_and_field() {
        let text = format!("{}\n{}", stanza(""), stanza("").replace("Size: 1234\n", ""));
        let e = parse_packages(&text, 0).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, IndexError::MissingField { line: 8, field: "Size", .. }), "{msg}");
        assert!(msg.contains("line 8") && msg.contains("`foo`"), "{msg}");

        let e = parse_packages("Version: 1\nArchitecture: all\n", 0).unwrap_err();
        assert!(e.to_string().contains("line 1") && e.to_string().contains("`Package`"));

        let e = parse_packages(&stanza("Depends: a (>= )\n"), 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("package `foo`") && msg.contains("`Depends`"), "{msg}");

        let e = parse_packages(&stanza("Conflicts: a | b\n"), 0).unwrap_err();
        assert!(e.to_string().contains("`Conflicts`"), "{e}");
        let e = parse_packages(&stanza("Provides: a (>= 1)\n"), 0).unwrap_err();
        assert!(e.to_string().contains("only `=`"), "{e}");
        let e = parse_packages(&stanza("Multi-Arch: sometimes\n"), 0).unwrap_err();
        assert!(e.to_string().contains("`Multi-Arch`"), "{e}");
        let e = parse_packages(&stanza("Essential: maybe\n"), 0).unwrap_err();
        assert!(e.to_string().contains("`Essential`"), "{e}");
        let e = parse_packages(&stanza("Installed-Size: lots\n"), 0).unwrap_err();
        assert!(e.to_string().contains("`Installed-Size`"), "{e}");
        let e = parse_packages(&stanza("").replace("Size: 1234", "Size: -1"), 0).unwrap_err();
        assert!(e.to_string().contains("`Size`"), "{e}");
        let e = parse_packages(&stanza("").replace(SHA, "abc"), 0).unwrap_err();
        assert!(e.to_string().contains("`SHA256`"), "{e}");
        let e = parse_packages(&stanza("").replace("1.0-1\n", "1.0 beta\n"), 0).unwrap_err();
        assert!(e.to_string().contains("`Version`"), "{e}");
        let e = parse_packages("Package: x\nno colon\n", 0).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_packages(" leading continuation\n", 0).unwrap_err();
        assert!(matches!(e, IndexError::Syntax { line: 1, .. }), "{e}");
    }

    #[test]
    fn relations() {
        let d = parse_relations("").expect("empty");
        assert!(d.is_empty());
        let d = parse_relations("a, b:any (<= 2), c (< 3) | d (> 4),").expect("parse");
        assert_eq!(d.len(), 3);
        assert_eq!(d[1][0].to_string(), "b:any (<= 2)");
        assert_eq!(d[2][0].constraint.as_ref().map(|c| c.0), Some(Op::Le));
        assert_eq!(d[2][1].constraint.as_ref().map(|c| c.0), Some(Op::Ge));
        let d = parse_relations("foo [!amd64] <!nocheck>, bar(>>1.0)").expect("parse");
        assert_eq!(d[0][0].to_string(), "foo");
        assert_eq!(d[1][0].to_string(), "bar (>> 1.0)");
        for bad in ["a | ", "(>= 1)", "a (>= 1", "a (~ 1)", "a b", "a:", "a [amd64", "a (= 1 2)"] {
            let e = parse_relations(bad).unwrap_err();
            assert!(e.to_string().starts_with("failed to parse relation"), "{bad}: {e}");
        }
    }

    #[test]
    fn version_fast_path_matches_debversion() {
        for v in [
            "1.0",
            "1.0-1",
            "1:2.3-4",
            "2:1.2-3-4",
            "1.2.3~rc1-0ubuntu1",
            "0.9+git20200101-1+b2",
            "1.0-",
            "1:",
            "a:b",
            "1:1.0:2-3",
            "10:20",
            "1.0-r:c",
            "7.88.1-10+deb12u8",
            "3.0.11-1~deb12u2",
            "1:9.18.28-1~deb12u2",
            "2.36-9+deb12u9",
            "-1",
            "99999999999:1",
        ] {
            let ours = parse_version(v);
            let theirs = Version::from_str(v);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.epoch, b.epoch, "{v}");
                    assert_eq!(a.upstream_version, b.upstream_version, "{v}");
                    assert_eq!(a.debian_revision, b.debian_revision, "{v}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{v}: ours {ours:?} theirs {theirs:?}"),
            }
        }
        assert!(parse_version("").is_err());
        assert!(parse_version("1 0").is_err());
    }

    #[test]
    fn decompress_and_checksum() {
        let plain = stanza("").repeat(50).into_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("gz");
        let gz = gz.finish().expect("gz");
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&plain).expect("xz");
        let xz = xz.finish().expect("xz");

        assert_eq!(decompress("main/binary-amd64/Packages.gz", &gz).expect("gz"), plain);
        assert_eq!(decompress("main/binary-amd64/Packages.xz", &xz).expect("xz"), plain);
        assert_eq!(decompress("main/binary-amd64/Packages", &plain).expect("plain"), plain);
        let e = decompress("Packages.xz", &gz).unwrap_err();
        assert!(e.to_string().contains("failed to decompress `Packages.xz`"), "{e}");
        assert!(decompress("Packages.gz", b"not gzip").is_err());
        assert!(matches!(decompress("Packages.bz2", b""), Err(IndexError::UnsupportedCompression { .. })));

        let hash = hex::encode(Sha256::digest(&xz));
        check_sha256(&xz, &hash, xz.len() as u64, "Packages.xz").expect("ok");
        check_sha256(&xz, &hash.to_uppercase(), xz.len() as u64, "Packages.xz").expect("case");
        let e = check_sha256(&xz, &hash, 1, "Packages.xz").unwrap_err().to_string();
        assert!(e.contains("`Packages.xz`") && e.contains("expected 1 bytes"), "{e}");
        let e = check_sha256(&xz, SHA, xz.len() as u64, "Packages.xz").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(SHA) && msg.contains(&hash), "{msg}");
    }

    /// Parse a real `Packages` file (plain, `.xz` or `.gz`) named by `COMPOSE_TEST_PACKAGES`.
    #[test]
    fn real_packages_file() {
        let Some(path) = std::env::var_os("COMPOSE_TEST_PACKAGES") else {
            return;
        };
        let path = std::path::PathBuf::from(path);
        let raw = std::fs::read(&path).expect("read");
        let t0 = std::time::Instant::now();
        let data = decompress(&path.to_string_lossy(), &raw).expect("decompress");
        let t1 = std::time::Instant::now();
        let text = std::str::from_utf8(&data).expect("utf8");
        let pkgs = parse_packages(text, 0).expect("parse");
        let t2 = std::time::Instant::now();
        eprintln!("{} packages; decompress {:?}, parse {:?}", pkgs.len(), t1 - t0, t2 - t1);
        assert!(pkgs.len() > 1000);
        // The fast version parser agrees with debversion on every version in the file.
        for p in &pkgs {
            let v = p.version.to_string();
            let theirs = Version::from_str(&v).expect("debversion");
            assert_eq!(p.version.epoch, theirs.epoch, "{v}");
            assert_eq!(p.version.upstream_version, theirs.upstream_version, "{v}");
            assert_eq!(p.version.debian_revision, theirs.debian_revision, "{v}");
        }
        let stanzas = text.matches("\nPackage: ").count() + usize::from(text.starts_with("Package: "));
        assert_eq!(pkgs.len(), stanzas);
    }
}
