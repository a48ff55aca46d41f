//! Small helpers with no knowledge of images, specs or packages, shared by every module (the
//! bottom of the module graph; it uses no other module of the crate): an I/O error that names
//! its file, atomic file replacement, the one expander of `$` references, and an error with its
//! causes as one line.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O failure and the file it concerns: "failed to {action} `{path}`". Every module's error
/// enum wraps this one rather than carrying its own copy of the three fields.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} `{}`", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `map_err(io_err("read", &path))`: an [`IoError`] converted into the caller's error type.
pub fn io_err<'p, E: From<IoError>>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> E + 'p {
    move |source| E::from(IoError { action, path: path.to_path_buf(), source })
}

/// Replace `dest` with `bytes` atomically: a temporary file in `tmp_dir` (default: `dest`'s own
/// directory; it must be on the same file system), given `mode`, then renamed over `dest`. A
/// reader sees the old file or the new one, never a part; an interrupted write leaves `dest`
/// as it was.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, tmp_dir: Option<&Path>) -> Result<(), IoError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match tmp_dir {
        Some(d) => d,
        None => dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.")).tempfile_in(dir).map_err(io_err("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).map_err(io_err("set permissions of", tmp.path()))?;
    tmp.persist(dest).map_err(|e| IoError { action: "write", path: dest.to_path_buf(), source: e.error })?;
    Ok(())
}

/// The identity of a file as `stat` gives it (device, inode, size, modification and change
/// times to the nanosecond): what any write, truncation, `chmod` or replacement changes.
pub fn file_identity(m: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}-{}-{}-{}.{}-{}.{}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

/// How [`expand`] reads the `$` references of a string: what its callers differ in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expansion {
    /// `$NAME` is a reference as well as `${NAME}`.
    pub bare: bool,
    /// `${NAME:-default}` and `${NAME:+alternative}` are read; otherwise what is between the
    /// braces is a name, whatever it holds.
    pub operators: bool,
    /// `\$` is a literal `$` (and `\` before anything else stays).
    pub escapes: bool,
    /// A name the lookup does not know stays as written, and so does a `${` without its `}`
    /// (reading goes on after it); otherwise an unknown name expands to nothing, and an unclosed
    /// `${` keeps the rest of the string as written.
    pub keep_unknown: bool,
}

impl Expansion {
    /// Docker's `ENV`: `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME:+alternative}`, `\$`
    /// escapes; an unset name is empty.
    pub const DOCKER_ENV: Expansion = Expansion { bare: true, operators: true, escapes: true, keep_unknown: false };
    /// `$NAME` and `${NAME}` of the names the lookup knows; everything else as written.
    pub const KNOWN_NAMES: Expansion = Expansion { bare: true, operators: false, escapes: false, keep_unknown: true };
    /// `${NAME}` of the names the lookup knows; everything else as written.
    pub const KNOWN_BRACED: Expansion = Expansion { bare: false, operators: false, escapes: false, keep_unknown: true };
}

/// `value` with its `$` references replaced by what `lookup` gives for their names, read as
/// `how` says, in one pass: what a value holds is never expanded in turn. A name is ASCII
/// letters, digits and `_`, not starting with a digit; a `$` that starts no reference stays as
/// it is.
pub fn expand<'v>(value: &str, how: Expansion, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let specials: &[char] = if how.escapes { &['$', '\\'] } else { &['$'] };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(specials) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        rest = if let Some(after) = tail.strip_prefix('\\') {
            match after.strip_prefix('$') {
                Some(after) => {
                    out.push('$');
                    after
                }
                None => {
                    out.push('\\');
                    after
                }
            }
        } else if let Some(braced) = tail.strip_prefix("${") {
            expand_braced(braced, how, &lookup, &mut out)
        } else {
            expand_bare(&tail[1..], how, &lookup, &mut out)
        };
    }
    out.push_str(rest);
    out
}

/// A `${…}` reference (`braced` follows its `${`) written to `out`; what follows it.
fn expand_braced<'s, 'v>(braced: &'s str, how: Expansion, lookup: &impl Fn(&str) -> Option<&'v str>, out: &mut String) -> &'s str {
    let Some(end) = braced.find('}') else {
        out.push_str("${");
        if how.keep_unknown {
            return braced;
        }
        out.push_str(braced);
        return "";
    };
    let inner = &braced[..end];
    let operator = if how.operators { inner.find(":-").or_else(|| inner.find(":+")) } else { None };
    let (name, op) = match operator {
        Some(k) => (&inner[..k], Some((&inner[k..k + 2], &inner[k + 2..]))),
        None => (inner, None),
    };
    let set = lookup(name).filter(|v| !v.is_empty());
    match op {
        None => match lookup(name) {
            Some(v) => out.push_str(v),
            None if how.keep_unknown => {
                out.push_str("${");
                return braced;
            }
            None => {}
        },
        Some((":-", word)) => out.push_str(set.unwrap_or(word)),
        Some((_, word)) => out.push_str(if set.is_some() { word } else { "" }),
    }
    &braced[end + 1..]
}

/// A `$NAME` reference (`after` follows its `$`) written to `out`, or the `$` when it starts
/// none; what follows it.
fn expand_bare<'s, 'v>(after: &'s str, how: Expansion, lookup: &impl Fn(&str) -> Option<&'v str>, out: &mut String) -> &'s str {
    let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
    if !how.bare || name_len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('$');
        return after;
    }
    let name = &after[..name_len];
    match lookup(name) {
        Some(v) => out.push_str(v),
        None if how.keep_unknown => {
            out.push('$');
            out.push_str(name);
        }
        None => {}
    }
    &after[name_len..]
}

/// `value` with `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}` replaced from
/// `env` (`NAME=value` entries, the last of a name counting; an unset name is empty), as Docker
/// expands `ENV`; `\$` is a literal `$`, and a `$` not followed by a name stays as it is.
pub fn expand_env(value: &str, env: &[String]) -> String {
    expand(value, Expansion::DOCKER_ENV, |name: &str| {
        env.iter().rev().find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
    })
}

/// An error and its causes as one line: "outer: inner: innermost".
pub fn chain_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(next) = src {
        msg.push_str(": ");
        msg.push_str(&next.to_string());
        src = next.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] IoError);

    /// A lookup over `(name, value)` pairs, the first of a name counting.
    fn first<'v>(vars: &'v [(&str, &str)]) -> impl Fn(&str) -> Option<&'v str> {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn expand_as_docker_env_reads_every_form_and_empties_unknown_names() {
        let vars = [("A", "1"), ("E", ""), ("V", "$A")];
        let x = |s: &str| expand(s, Expansion::DOCKER_ENV, first(&vars));
        assert_eq!(x("$A ${A} x$Ay ${A}y $U. ${U}"), "1 1 x 1y . ");
        assert_eq!(x("${E:-d} ${U:-d} ${A:-d} ${A:+alt} ${E:+alt}"), "d d 1 alt ");
        assert_eq!(x("\\$A \\x $ $1 $-"), "$A \\x $ $1 $-");
        assert_eq!(x("$V"), "$A", "one pass: a value is not expanded in turn");
        assert_eq!(x("a ${A b"), "a ${A b", "an unclosed `${{` keeps the rest");
        assert_eq!(expand_env("$A ${A}", &["A=1".into(), "A=2".into()]), "2 2", "the last of a name counts");
    }

    #[test]
    fn expand_known_names_keeps_everything_else_as_written() {
        let vars = [("A", "1"), ("A", "2"), ("V", "$A")];
        let x = |s: &str| expand(s, Expansion::KNOWN_NAMES, first(&vars));
        assert_eq!(x("$A ${A} $AB ${AB} $U ${U}"), "1 1 $AB ${AB} $U ${U}");
        assert_eq!(x("${A:-d} \\$A $$A ${${A}} ${A $A"), "${A:-d} \\1 $1 ${1} ${A 1");
        assert_eq!(x("$V"), "$A", "one pass: a value is not expanded in turn");
    }

    #[test]
    fn expand_known_braced_replaces_only_braced_known_names() {
        let vars = [("A", "1"), ("V", "${A}")];
        let x = |s: &str| expand(s, Expansion::KNOWN_BRACED, first(&vars));
        assert_eq!(x("${A} $A ${U} ${A:-d} \\${A} $${A} ${V}"), "1 $A ${U} ${A:-d} \\1 $1 ${A}");
        assert_eq!(x("${ ${A"), "${ ${A");
    }

    #[test]
    fn chain_message_joins_every_cause() {
        let e = Outer(IoError { action: "read", path: "/x/y".into(), source: io::Error::other("boom") });
        assert_eq!(chain_message(&e), "outer: failed to read `/x/y`: boom");
    }

    #[test]
    fn write_atomic_replaces_with_mode_and_leaves_nothing_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.json");
        fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, b"new", 0o640, None).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        let err = write_atomic(&dir.path().join("missing/f"), b"x", 0o644, None).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

/// `url` without its credentials (`http://user:pass@host/…` → `http://***@host/…`): every URL
/// compose prints goes through here.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    /// Defect: a mirror's credentials (`http://user:pass@host/…`) were printed in errors.
    #[test]
    fn mirror_credentials_are_never_printed() {
        assert_eq!(redact_url("http://bob:s3cr3t@127.0.0.1:8080/pool/a.deb"), "http://***@127.0.0.1:8080/pool/a.deb");
        assert_eq!(redact_url("https://token@host/x?y=1"), "https://***@host/x?y=1");
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
        assert_eq!(redact_url("file:///srv/repo"), "file:///srv/repo");
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `4.0 GiB`, `2.0 TiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The name of the host account with uid `uid`, from `/etc/passwd`.
pub fn account_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}
