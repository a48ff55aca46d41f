//! Where to fetch a repository from. A spec names repositories by name, suite and components,
//! never by host, so the mirror URL is resolved at run time, in this order:
//!
//! 1. `--mirror NAME=URL` flags,
//! 2. the environment variable `COMPOSE_MIRROR_<NAME>` (upper-cased, `-` and other characters
//!    that cannot appear in a variable name become `_`),
//! 3. the host's apt sources below a root directory (normally `/`): `etc/apt/sources.list`, then
//!    `etc/apt/sources.list.d/*.list` and `*.sources` in sorted file-name order; the first `deb`
//!    entry whose suites contain the repository's suite wins.
//!
//! This module owns parsing of both apt source formats (one-line and deb822), the `--mirror` flag
//! syntax and the resolution order. It does no network access.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A resolved mirror for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Base URL of the archive (the directory holding `dists/` and `pool/`), no trailing slash.
    pub url: String,
    /// Where the URL came from, for messages and the lockfile's provenance.
    pub origin: MirrorOrigin,
}

/// Where a [`Mirror`] URL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorOrigin {
    /// A `--mirror NAME=URL` flag.
    Flag,
    /// An environment variable; holds the variable's name.
    Env(String),
    /// An apt source file of the host; holds the file's path.
    HostSources(PathBuf),
}

impl fmt::Display for MirrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorOrigin::Flag => f.write_str("--mirror flag"),
            MirrorOrigin::Env(var) => write!(f, "environment variable `{var}`"),
            MirrorOrigin::HostSources(path) => write!(f, "`{}`", path.display()),
        }
    }
}

/// One `deb` / `deb-src` entry of the host's apt sources (one URI and one suite each; a deb822
/// stanza with several URIs or suites yields several entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    /// `deb` or `deb-src`.
    pub kind: String,
    /// The URI as written, trailing slashes removed.
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `signed-by=` / `Signed-By:` if given (a path or fingerprints, as written).
    pub signed_by: Option<String>,
    /// `arch=` / `Architectures:` if given.
    pub architectures: Vec<String>,
    /// File the entry was read from.
    pub file: PathBuf,
    /// 1-based line of the entry (of the stanza's first line for deb822).
    pub line: usize,
}

#[derive(Debug, Error)]
pub enum SourcesError {
    #[error(
        "no mirror for repository `{repo}` (suite `{suite}`): pass `--mirror {repo}=URL`, \
         set `{var}=URL`, or add a `deb` source for suite `{suite}` to {dir}/"
    )]
    NoMirror { repo: String, suite: String, var: String, dir: String },
    #[error("invalid `--mirror` value `{value}`: {reason}")]
    BadFlag { value: String, reason: String },
    #[error("invalid mirror URL `{url}` in environment variable `{var}`: {reason}")]
    BadEnv { var: String, url: String, reason: String },
    #[error("failed to read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse `{path}` line {line}: {reason}")]
    Parse { path: PathBuf, line: usize, reason: String },
}

/// Parse a `--mirror NAME=URL` value. The URL must be `http://`, `https://` or `file://`; trailing
/// slashes are removed.
pub fn parse_mirror_flag(s: &str) -> Result<(String, String), SourcesError> {
    let bad = |reason: &str| SourcesError::BadFlag { value: s.to_string(), reason: reason.to_string() };
    let (name, url) = s.split_once('=').ok_or_else(|| bad("expected NAME=URL"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the repository name is empty"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(bad("the repository name may only contain letters, digits, `-`, `_` and `.`"));
    }
    let url = check_url(url.trim()).map_err(|reason| bad(&reason))?;
    Ok((name.to_string(), url))
}

/// Name of the environment variable that can hold the mirror of repository `repo_name`.
pub fn env_var_name(repo_name: &str) -> String {
    let mut var = String::from("COMPOSE_MIRROR_");
    var.extend(repo_name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    var
}

/// Resolve the mirror of repository `repo_name` (suite `suite`): flags first (the last flag for a
/// name wins), then `COMPOSE_MIRROR_<NAME>` through `env` (an empty value counts as unset), then
/// the apt sources below `root` (normally `/`): the first enabled `deb` entry whose suite equals
/// `suite`. Host entries whose URI is not `http://`, `https://` or `file://` (e.g.
/// `mirror+http://`, `cdrom:`) are passed over. A malformed host source file is an error naming
/// the file and line, as it is for apt.
pub fn resolve_mirror(
    repo_name: &str,
    suite: &str,
    flags: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
    root: &Path,
) -> Result<Mirror, SourcesError> {
    if let Some((_, url)) = flags.iter().rev().find(|(name, _)| name == repo_name) {
        let url = check_url(url.trim()).map_err(|reason| SourcesError::BadFlag { value: format!("{repo_name}={url}"), reason })?;
        return Ok(Mirror { url, origin: MirrorOrigin::Flag });
    }

    let var = env_var_name(repo_name);
    if let Some(value) = env(&var).filter(|v| !v.trim().is_empty()) {
        let url = check_url(value.trim()).map_err(|reason| SourcesError::BadEnv { var: var.clone(), url: value.clone(), reason })?;
        return Ok(Mirror { url, origin: MirrorOrigin::Env(var) });
    }

    for source in host_sources(root)? {
        if source.kind == "deb" && source.suite == suite && url_scheme_ok(&source.uri) {
            return Ok(Mirror { url: source.uri, origin: MirrorOrigin::HostSources(source.file) });
        }
    }

    Err(SourcesError::NoMirror {
        repo: repo_name.to_string(),
        suite: suite.to_string(),
        var,
        dir: root.join("etc/apt/sources.list.d").display().to_string(),
    })
}

/// All enabled entries of the apt sources below `root`, in apt's order: `etc/apt/sources.list`,
/// then `etc/apt/sources.list.d/*.list` and `*.sources` sorted by file name. Files with other
/// suffixes are ignored; missing files and directories are not an error.
pub fn host_sources(root: &Path) -> Result<Vec<HostSource>, SourcesError> {
    let mut out = Vec::new();
    let main = root.join("etc/apt/sources.list");
    if let Some(text) = read_optional(&main)? {
        parse_one_line(&text, &main, &mut out)?;
    }

    let dir = root.join("etc/apt/sources.list.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(SourcesError::Read { path: dir, source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourcesError::Read { path: dir.clone(), source })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // apt ignores hidden files and names with characters outside [A-Za-z0-9_.-].
        if name.starts_with('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            continue;
        }
        if name.ends_with(".list") || name.ends_with(".sources") {
            files.push(name.to_string());
        }
    }
    files.sort();
    for name in files {
        let path = dir.join(&name);
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        if name.ends_with(".list") {
            parse_one_line(&text, &path, &mut out)?;
        } else {
            parse_deb822(&text, &path, &mut out)?;
        }
    }
    Ok(out)
}

fn read_optional(path: &Path) -> Result<Option<String>, SourcesError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourcesError::Read { path: path.to_path_buf(), source }),
    }
}

/// Validate a mirror URL and strip trailing slashes.
fn check_url(url: &str) -> Result<String, String> {
    if url.is_empty() {
        return Err("the URL is empty".into());
    }
    if !url_scheme_ok(url) {
        return Err("the URL must start with `http://`, `https://` or `file://`".into());
    }
    if url.chars().any(char::is_whitespace) {
        return Err("the URL contains whitespace".into());
    }
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed.split_once("://").map(|(_, r)| r).unwrap_or("");
    if rest.is_empty() {
        return Err("the URL has no host or path".into());
    }
    Ok(trimmed.to_string())
}

fn url_scheme_ok(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("file://")
}

fn is_disabled(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "no" | "false" | "0")
}

/// Parse the one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`.
fn parse_one_line(text: &str, path: &Path, out: &mut Vec<HostSource>) -> Result<(), SourcesError> {
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let err = |reason: String| SourcesError::Parse { path: path.to_path_buf(), line: line_no, reason };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = split_word(line);
        if kind != "deb" && kind != "deb-src" {
            return Err(err(format!("unknown type `{kind}` (expected `deb` or `deb-src`)")));
        }
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        let mut architectures = Vec::new();
        let mut enabled = true;
        if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or_else(|| err("unterminated `[` option list".into()))?;
            for opt in after[..close].split_whitespace() {
                let Some((key, value)) = opt.split_once('=') else {
                    return Err(err(format!("option `{opt}` is not KEY=VALUE")));
                };
                let key = key.trim_end_matches(['+', '-']);
                match key {
                    "signed-by" => signed_by = Some(value.to_string()),
                    "arch" => {
                        architectures = value.split(',').map(str::to_string).collect();
                    }
                    "enabled" => enabled = !is_disabled(value),
                    _ => {}
                }
            }
            rest = after[close + 1..].trim_start();
        }
        let mut words = rest.split_whitespace();
        let uri = words.next().ok_or_else(|| err("missing URI".into()))?.trim_end_matches('/').to_string();
        let suite = words.next().ok_or_else(|| err("missing suite".into()))?.to_string();
        let components: Vec<String> = words.map(str::to_string).collect();
        if !enabled {
            continue;
        }
        out.push(HostSource {
            kind: kind.to_string(),
            uri,
            suite,
            components,
            signed_by,
            architectures,
            file: path.to_path_buf(),
            line: line_no,
        });
    }
    Ok(())
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Parse the deb822 format (`Types:`, `URIs:`, `Suites:`, `Components:`, `Signed-By:`,
/// `Architectures:`, `Enabled:`). Comment lines (`#`) are skipped without ending a stanza.
fn parse_deb822(text: &str, path: &Path, out: &mut Vec<HostSource>) -> Result<(), SourcesError> {
    // (start line, fields as (name, value, line))
    let mut stanza: Vec<(String, String, usize)> = Vec::new();
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (idx, raw) in lines.iter().enumerate() {
        let line_no = idx + 1;
        if raw.starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            if !stanza.is_empty() {
                finish_deb822_stanza(std::mem::take(&mut stanza), start, path, out)?;
            }
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let Some(last) = stanza.last_mut() else {
                return Err(SourcesError::Parse {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: "continuation line outside of a field".into(),
                });
            };
            let cont = raw.trim();
            if cont != "." {
                last.1.push(' ');
                last.1.push_str(cont);
            }
            continue;
        }
        let Some((name, value)) = raw.split_once(':') else {
            return Err(SourcesError::Parse {
                path: path.to_path_buf(),
                line: line_no,
                reason: format!("expected `Field: value`, got `{}`", raw.trim()),
            });
        };
        if stanza.is_empty() {
            start = line_no;
        }
        stanza.push((name.trim().to_ascii_lowercase(), value.trim().to_string(), line_no));
    }
    if !stanza.is_empty() {
        finish_deb822_stanza(stanza, start, path, out)?;
    }
    Ok(())
}

fn finish_deb822_stanza(
    stanza: Vec<(String, String, usize)>,
    start: usize,
    path: &Path,
    out: &mut Vec<HostSource>,
) -> Result<(), SourcesError> {
    let get = |name: &str| stanza.iter().rev().find(|(n, _, _)| n == name).map(|(_, v, _)| v.as_str());
    if get("enabled").is_some_and(is_disabled) {
        return Ok(());
    }
    let missing =
        |field: &str| SourcesError::Parse { path: path.to_path_buf(), line: start, reason: format!("stanza has no `{field}` field") };
    let types: Vec<&str> = get("types").ok_or_else(|| missing("Types"))?.split_whitespace().collect();
    let uris: Vec<&str> = get("uris").ok_or_else(|| missing("URIs"))?.split_whitespace().collect();
    let suites: Vec<&str> = get("suites").ok_or_else(|| missing("Suites"))?.split_whitespace().collect();
    let components: Vec<String> = get("components").unwrap_or("").split_whitespace().map(str::to_string).collect();
    let signed_by = get("signed-by").map(str::to_string);
    let architectures: Vec<String> = get("architectures").unwrap_or("").split_whitespace().map(str::to_string).collect();
    for kind in &types {
        if *kind != "deb" && *kind != "deb-src" {
            return Err(SourcesError::Parse {
                path: path.to_path_buf(),
                line: start,
                reason: format!("unknown type `{kind}` (expected `deb` or `deb-src`)"),
            });
        }
        for uri in &uris {
            for suite in &suites {
                out.push(HostSource {
                    kind: kind.to_string(),
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                    architectures: architectures.clone(),
                    file: path.to_path_buf(),
                    line: start,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            root,
            "etc/apt/sources.list",
            "# a comment\n\
             deb-src http://src.example.invalid/debian bookworm main\n\
             \n\
             deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg] http://one.example.invalid/debian/ sid main contrib # trailing\n\
             deb [ enabled=no ] http://off.example.invalid/debian trixie main\n",
        );
        write(
            root,
            "etc/apt/sources.list.d/b-debian.sources",
            "Types: deb\n\
             # a comment inside the stanza\n\
             URIs: http://two.example.invalid/debian http://three.example.invalid/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \n\
             Types: deb deb-src\n\
             URIs: http://sec.example.invalid/debian-security/\n\
             Suites: bookworm-security\n\
             Components: main\n",
        );
        write(
            root,
            "etc/apt/sources.list.d/a-disabled.sources",
            "Enabled: no\n\
             Types: deb\n\
             URIs: http://disabled.example.invalid/debian\n\
             Suites: bookworm trixie\n\
             Components: main\n",
        );
        write(
            root,
            "etc/apt/sources.list.d/c-extra.list",
            "deb http://four.example.invalid/debian bookworm main\n\
             deb http://five.example.invalid/debian trixie main\n",
        );
        write(root, "etc/apt/sources.list.d/0-ignored.list.disabled-by-farm", "deb http://ignored.example.invalid/debian trixie main\n");
        write(
            root,
            "etc/apt/sources.list.d/0-ignored.sources.disabled-by-farm",
            "Types: deb\nURIs: http://ignored.example.invalid/x\nSuites: trixie\n",
        );
        dir
    }

    #[test]
    fn flag_parsing() {
        assert_eq!(
            parse_mirror_flag("debian=http://m.example.invalid/debian/").expect("ok"),
            ("debian".into(), "http://m.example.invalid/debian".into())
        );
        assert_eq!(parse_mirror_flag("local=file:///srv/mirror").expect("ok").1, "file:///srv/mirror");
        assert!(parse_mirror_flag("debian").is_err());
        assert!(parse_mirror_flag("=http://x.invalid").is_err());
        let e = parse_mirror_flag("debian=ftp://x.invalid/debian").unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        assert!(parse_mirror_flag("debian=http://").is_err());
        assert!(parse_mirror_flag("deb ian=http://x.invalid").is_err());
    }

    #[test]
    fn env_var_names() {
        assert_eq!(env_var_name("debian"), "COMPOSE_MIRROR_DEBIAN");
        assert_eq!(env_var_name("debian-security"), "COMPOSE_MIRROR_DEBIAN_SECURITY");
        assert_eq!(env_var_name("my.repo"), "COMPOSE_MIRROR_MY_REPO");
    }

    #[test]
    fn order_flag_env_host() {
        let dir = tree();
        let root = dir.path();
        let env_map: HashMap<String, String> =
            [("COMPOSE_MIRROR_DEBIAN".to_string(), "https://env.example.invalid/debian/".to_string())].into();
        let env = |k: &str| env_map.get(k).cloned();
        let flags = vec![
            ("debian".to_string(), "http://a.example.invalid".to_string()),
            ("debian".to_string(), "http://flag.example.invalid/".to_string()),
            ("other".to_string(), "http://o.example.invalid".to_string()),
        ];

        let m = resolve_mirror("debian", "bookworm", &flags, &env, root).expect("flag");
        assert_eq!(m.url, "http://flag.example.invalid");
        assert_eq!(m.origin, MirrorOrigin::Flag);

        let m = resolve_mirror("debian", "bookworm", &[], &env, root).expect("env");
        assert_eq!(m.url, "https://env.example.invalid/debian");
        assert_eq!(m.origin, MirrorOrigin::Env("COMPOSE_MIRROR_DEBIAN".into()));

        let m = resolve_mirror("debian", "bookworm", &[], &no_env, root).expect("host");
        assert_eq!(m.url, "http://two.example.invalid/debian");
        assert_eq!(m.origin, MirrorOrigin::HostSources(root.join("etc/apt/sources.list.d/b-debian.sources")));
    }

    #[test]
    fn host_matching() {
        let dir = tree();
        let root = dir.path();
        let get = |suite: &str| resolve_mirror("r", suite, &[], &no_env, root);

        // sources.list comes first.
        let m = get("sid").expect("sid");
        assert_eq!(m.url, "http://one.example.invalid/debian");
        assert_eq!(m.origin, MirrorOrigin::HostSources(root.join("etc/apt/sources.list")));
        // Second suite of a multi-suite stanza.
        assert_eq!(get("bookworm-updates").expect("updates").url, "http://two.example.invalid/debian");
        assert_eq!(get("bookworm-security").expect("security").url, "http://sec.example.invalid/debian-security");
        // `enabled=no` in sources.list and `Enabled: no` stanza skipped; `.disabled-by-farm`
        // ignored; so trixie comes from c-extra.list.
        assert_eq!(get("trixie").expect("trixie").url, "http://five.example.invalid/debian");
        // deb-src never matches.
        let e = get("buster").unwrap_err().to_string();
        assert!(e.contains("--mirror r=URL"), "{e}");
        assert!(e.contains("COMPOSE_MIRROR_R=URL"), "{e}");
        assert!(e.contains("suite `buster`"), "{e}");
        assert!(e.contains("sources.list.d/"), "{e}");
    }

    #[test]
    fn host_source_details() {
        let dir = tree();
        let all = host_sources(dir.path()).expect("parse");
        let sid = all.iter().find(|s| s.suite == "sid").expect("sid");
        assert_eq!(sid.kind, "deb");
        assert_eq!(sid.components, vec!["main", "contrib"]);
        assert_eq!(sid.architectures, vec!["amd64", "arm64"]);
        assert_eq!(sid.signed_by.as_deref(), Some("/usr/share/keyrings/x.gpg"));
        assert_eq!(sid.line, 4);
        // 2 URIs x 2 suites.
        let b = all.iter().filter(|s| s.file.ends_with("b-debian.sources") && s.kind == "deb").count();
        assert_eq!(b, 5);
        assert!(all.iter().all(|s| !s.uri.contains("disabled")));
        assert!(all.iter().all(|s| !s.uri.contains("ignored")));
        assert!(all.iter().all(|s| !s.uri.contains("off.example")));
        assert!(all.iter().any(|s| s.kind == "deb-src" && s.suite == "bookworm-security"));
    }

    #[test]
    fn empty_root_and_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = resolve_mirror("debian", "bookworm", &[], &no_env, dir.path()).unwrap_err();
        assert!(matches!(e, SourcesError::NoMirror { .. }));

        write(dir.path(), "etc/apt/sources.list", "deb\n");
        let e = host_sources(dir.path()).unwrap_err().to_string();
        assert!(e.contains("sources.list` line 1"), "{e}");

        write(dir.path(), "etc/apt/sources.list", "");
        write(dir.path(), "etc/apt/sources.list.d/x.sources", "Types: deb\nSuites: bookworm\n");
        let e = host_sources(dir.path()).unwrap_err().to_string();
        assert!(e.contains("URIs"), "{e}");
    }

    #[test]
    fn bad_env_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = |_: &str| Some("mirror.example.invalid".to_string());
        let e = resolve_mirror("debian", "bookworm", &[], &env, dir.path()).unwrap_err();
        assert!(e.to_string().contains("COMPOSE_MIRROR_DEBIAN"), "{e}");
        // Empty counts as unset.
        let env = |_: &str| Some(String::new());
        let e = resolve_mirror("debian", "bookworm", &[], &env, dir.path()).unwrap_err();
        assert!(matches!(e, SourcesError::NoMirror { .. }));
    }
}
