//! Small helpers with no knowledge of images, specs or packages, shared by every module (the
//! bottom of the module graph; it uses no other module of the crate): an I/O error that names
//! its file, atomic file replacement, and an error with its causes as one line.

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

/// `value` with `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}` replaced from
/// `env` (`NAME=value` entries; an unset name is empty), as Docker expands `ENV`; `\$` is a
/// literal `$`, and a `$` not followed by a name stays as it is.
pub fn expand_env(value: &str, env: &[String]) -> String {
    let lookup =
        |name: &str| -> Option<&str> { env.iter().rev().find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v)) };
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(['$', '\\']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("\\$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
        } else if let Some(braced) = tail.strip_prefix("${") {
            match braced.find('}') {
                Some(end) => {
                    let inner = &braced[..end];
                    let (name, op) = match inner.find(":-").or_else(|| inner.find(":+")) {
                        Some(k) => (&inner[..k], Some((&inner[k..k + 2], &inner[k + 2..]))),
                        None => (inner, None),
                    };
                    let set = lookup(name).filter(|v| !v.is_empty());
                    match op {
                        None => out.push_str(lookup(name).unwrap_or("")),
                        Some((":-", word)) => out.push_str(set.unwrap_or(word)),
                        Some((_, word)) => out.push_str(if set.is_some() { word } else { "" }),
                    }
                    rest = &braced[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            let name_len = tail[1..].find(|c: char| !is_name(c)).unwrap_or(tail.len() - 1);
            if name_len == 0 || tail[1..].starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = &tail[1..];
            } else {
                out.push_str(lookup(&tail[1..1 + name_len]).unwrap_or(""));
                rest = &tail[1 + name_len..];
            }
        }
    }
    out.push_str(rest);
    out
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

    /// Issue 12, defect 6: mirror credentials were printed in errors.
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
