//! The value grammars: pure checks and normalizations of the strings a spec
//! writes (names, tags, packages, image paths, copy sources, owners,
//! platforms, ports, signals, base references), the tables they use and
//! "did you mean" suggestions.

use miette::SourceSpan;

use super::{Base, Owner, Platform};

// ---------------------------------------------------------------------------
// Where nodes belong, platform names, suggestions
// ---------------------------------------------------------------------------

/// Where a node name that is valid somewhere belongs.
pub(super) fn home_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "image" => "the top level of the file",
        "tag" | "platforms" | "base" | "epoch" | "repository" | "packages" | "accounts" | "files" | "layer" | "config" => {
            "an `image` block"
        }
        "copy" | "text" | "symlink" | "dir" => "a `files` or `layer` block",
        "group" => "an `accounts` block",
        "user" => "an `accounts` block (to create it) or a `config` block (to run as it)",
        "env" | "workdir" | "entrypoint" | "cmd" | "expose" | "volume" | "label" | "stop-signal" => "a `config` block",
        _ => return None,
    })
}

const GOOS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];
const GOARCH: &[&str] =
    &["386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x", "wasm"];

/// Common non-Go spellings of architectures.
fn arch_alias(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "x86-64" | "x64" => "amd64",
        "aarch64" | "armv8" => "arm64",
        "armhf" | "armel" | "armv7" | "armv7l" | "armv6" | "armv6l" | "armv5" => "arm",
        "i386" | "i486" | "i586" | "i686" | "x86" => "386",
        "ppc64el" => "ppc64le",
        "riscv" => "riscv64",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

/// The closest candidate to a misspelled `word`: within an edit distance of
/// a third of its length (at least 1, counting transpositions), or with a
/// Jaro-Winkler similarity of at least 0.85; the fewest edits win.
pub(super) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, f64, &'a str)> = None;
    for &c in candidates {
        let distance = strsim::osa_distance(word, c);
        let similarity = strsim::jaro_winkler(word, c);
        if distance > (c.chars().count() / 3).max(1) && similarity < 0.85 {
            continue;
        }
        let better = best.is_none_or(|(d, s, _)| (distance, -similarity) < (d, -s));
        if better {
            best = Some((distance, similarity, c));
        }
    }
    best.map(|(_, _, c)| c)
}

pub(super) fn one_of(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------
// Syntax checks on strings
// ---------------------------------------------------------------------------

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Image and layer names: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes.
pub(super) fn valid_image_name(s: &str) -> bool {
    s.len() <= 128 && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().all(is_name_char)
}

/// OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(super) fn valid_tag(s: &str) -> bool {
    crate::reference::valid_tag(s)
}

/// User and group names: `[A-Za-z_][A-Za-z0-9._-]*`, at most 32 bytes.
pub(crate) fn valid_account_name(s: &str) -> bool {
    s.len() <= 32 && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(is_name_char)
}

/// Debian package names: `[a-z0-9][a-z0-9+.-]+`.
pub(crate) fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-'))
}

/// Debian versions: `[A-Za-z0-9.+~:-]+` starting with a digit.
pub(crate) fn valid_package_version(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A problem with a string value: message, label, help.
pub(crate) struct Bad {
    pub(crate) message: String,
    pub(super) label: String,
    pub(super) help: Option<String>,
}

impl Bad {
    pub(super) fn new(message: impl Into<String>, label: impl Into<String>) -> Self {
        Bad { message: message.into(), label: label.into(), help: None }
    }

    pub(super) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Checks and normalizes an absolute path inside the image. Returns the
/// normalized path and whether it was written with a trailing slash.
pub(crate) fn image_path(s: &str) -> Result<(String, bool), Bad> {
    if s.contains('\0') {
        return Err(Bad::new("image paths must not contain NUL", "contains a NUL character"));
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(Bad::new(format!("image path `{s}` is not absolute"), "must start with `/`")
            .help(format!("paths in the image are absolute: write \"/{s}\"")));
    };
    if rest.is_empty() {
        return Ok(("/".to_owned(), true));
    }
    let trailing = rest.ends_with('/');
    let body = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = Vec::new();
    for part in body.split('/') {
        match part {
            "" => {
                return Err(Bad::new(format!("image path `{s}` has an empty component"), "contains `//`")
                    .help("write a single `/` between components"))
            }
            "." | ".." => {
                return Err(Bad::new(format!("image path `{s}` contains a `{part}` component"), format!("`{part}` is not allowed here"))
                    .help("write the path without `.` and `..` components"))
            }
            p => parts.push(p),
        }
    }
    Ok((format!("/{}", parts.join("/")), trailing))
}

/// Checks a copy source: absolute, or relative without escaping the spec
/// directory. Errors come with their code.
pub(crate) fn copy_source(s: &str) -> Result<(), (&'static str, Bad)> {
    if s.is_empty() {
        return Err((
            "compose::spec::bad_source",
            Bad::new("copy source is empty", "empty path").help("write \".\" to copy the spec directory itself"),
        ));
    }
    if s.contains('\0') {
        return Err(("compose::spec::bad_source", Bad::new("copy source must not contain NUL", "contains a NUL character")));
    }
    if s.starts_with('/') {
        return Ok(());
    }
    let mut depth: usize = 0;
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return Err((
                        "compose::spec::source_escapes",
                        Bad::new(format!("copy source `{s}` is outside the spec directory"), "escapes the spec directory").help(
                            "relative sources are resolved against the directory holding the \
                             spec file and must stay inside it; use an absolute path to copy \
                             from elsewhere",
                        ),
                    ));
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

pub(crate) fn owner(s: &str) -> Result<Owner, Bad> {
    if let Some((u, g)) = s.split_once(':') {
        // `user:group` with names (or a name and an id), resolved against `accounts` later.
        let part = |p: &str| valid_account_name(p) || (all_digits(p) && p.parse::<u32>().is_ok());
        if part(u) && part(g) && !(all_digits(u) && all_digits(g)) {
            return Ok(Owner::Name(s.to_owned()));
        }
        let ids = (all_digits(u) && all_digits(g)).then(|| (u.parse::<u32>(), g.parse::<u32>()));
        let help = if ids.is_some() || u.is_empty() || g.is_empty() || all_digits(u) || all_digits(g) {
            "numeric owners are two ids from 0 to 4294967295, like \"1000:1000\""
        } else {
            "write an account name (the file gets that user's group), \"user:group\" or numeric \"UID:GID\""
        };
        return match ids {
            Some((Ok(u), Ok(g))) => Ok(Owner::Ids(u, g)),
            _ => Err(Bad::new(format!("invalid owner `{s}`"), "expected an account name or \"UID:GID\"").help(help)),
        };
    }
    if all_digits(s) {
        // As Docker's `--chown=UID`: the group id is the user id.
        return match s.parse::<u32>() {
            Ok(n) => Ok(Owner::Ids(n, n)),
            Err(_) => Err(Bad::new(format!("invalid owner `{s}`"), "expected an account name or \"UID:GID\"")
                .help("numeric owners are ids from 0 to 4294967295")),
        };
    }
    if valid_account_name(s) {
        Ok(Owner::Name(s.to_owned()))
    } else {
        Err(Bad::new(format!("invalid owner `{s}`"), "expected an account name or \"UID:GID\"")
            .help("account names are letters, digits, `.`, `_` and `-`, starting with a letter or `_`"))
    }
}

pub(crate) fn config_user(s: &str) -> Result<(), Bad> {
    let ok = match s.split_once(':') {
        Some((u, g)) => {
            let part = |p: &str| valid_account_name(p) || (all_digits(p) && p.parse::<u32>().is_ok());
            part(u) && part(g)
        }
        None => (all_digits(s) && s.parse::<u32>().is_ok()) || valid_account_name(s),
    };
    if ok {
        Ok(())
    } else {
        Err(Bad::new(format!("invalid user `{s}`"), "expected a name, \"UID\" or \"UID:GID\""))
    }
}

pub(super) fn platform(s: &str) -> Result<Platform, Bad> {
    let parts: Vec<&str> = s.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, v] => (*os, *arch, Some(*v)),
        _ => {
            return Err(Bad::new(format!("invalid platform `{s}`"), "expected OS/ARCH or OS/ARCH/VARIANT")
                .help("write platforms like \"linux/amd64\" or \"linux/arm/v7\""))
        }
    };
    if !GOOS.contains(&os) {
        let b = Bad::new(format!("unknown operating system `{os}` in platform `{s}`"), "unknown operating system");
        return Err(match suggest(os, GOOS) {
            Some(m) => b.help(format!("did you mean `{m}`?")),
            None => b.help(format!("known systems: {}", GOOS.join(", "))),
        });
    }
    if !GOARCH.contains(&arch) {
        let b = Bad::new(format!("unknown architecture `{arch}` in platform `{s}`"), "unknown architecture");
        return Err(match arch_alias(arch).or_else(|| suggest(arch, GOARCH)) {
            Some(m) => b.help(format!("did you mean `{m}`? (platforms use Go's architecture names)")),
            None => b.help(format!("known architectures: {}", GOARCH.join(", "))),
        });
    }
    if let Some(v) = variant {
        let known: &[&str] = match arch {
            "arm" => &["v5", "v6", "v7", "v8"],
            "arm64" => &[
                "v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9", "v9", "v9.0", "v9.1", "v9.2", "v9.3",
                "v9.4", "v9.5",
            ],
            "amd64" => &["v1", "v2", "v3", "v4"],
            _ => &[],
        };
        if !known.contains(&v) {
            let b = Bad::new(format!("unknown variant `{v}` for architecture `{arch}` in platform `{s}`"), "unknown variant");
            return Err(if known.is_empty() {
                b.help(format!("`{arch}` has no variants: write \"{os}/{arch}\""))
            } else {
                b.help(format!("variants of `{arch}`: {}", known.join(", ")))
            });
        }
    }
    Ok(Platform { os: os.to_owned(), architecture: arch.to_owned(), variant: variant.map(str::to_owned) })
}

fn port_number(p: &str, written: &str) -> Result<u16, Bad> {
    if !all_digits(p) {
        return Err(Bad::new(format!("invalid port `{written}`"), "expected PORT or PORT/PROTOCOL")
            .help("write ports like 8080, \"8080/tcp\" or \"53/udp\""));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(Bad::new(format!("port `{p}` is out of range"), "ports are 1 to 65535")),
    }
}

pub(crate) fn expose_string(s: &str) -> Result<String, Bad> {
    let (p, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (s, "tcp".to_owned()),
    };
    let n = port_number(p, s)?;
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Bad::new(format!("unknown protocol in port `{s}`"), "expected tcp, udp or sctp"));
    }
    Ok(format!("{n}/{proto}"))
}

pub(crate) fn stop_signal(s: &str) -> Result<(), Bad> {
    let ok = if all_digits(s) {
        s.parse::<u8>().is_ok_and(|n| n > 0)
    } else {
        s.strip_prefix("SIG").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '+' | '-'))
        })
    };
    if ok {
        Ok(())
    } else {
        Err(Bad::new(format!("invalid stop signal `{s}`"), "expected a signal name like \"SIGTERM\" or a number"))
    }
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(crate::hash::is_sha256_hex)
}

use crate::reference::{names_registry, valid_registry_host, valid_repo_component};

pub(super) const TAG_HELP: &str = "tags are letters, digits, `_`, `.` and `-`, at most 128 characters, not \
     starting with `.` or `-`";

const BASE_HELP: &str = "write \"REGISTRY/REPO:TAG\", \"REGISTRY/REPO@sha256:DIGEST\", \"oci:PATH[:TAG]\", \
     \"oci-archive:PATH\", \"docker-archive:PATH\" or \"scratch\"";

pub(crate) fn base_reference(s: &str, span: SourceSpan) -> Result<Base, Bad> {
    if s == "scratch" {
        return Ok(Base::Scratch);
    }
    let needs_path = |kind: &str| Bad::new(format!("base reference `{s}` has no path"), format!("expected {kind}:PATH"));
    if let Some(rest) = s.strip_prefix("oci:") {
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t)),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(needs_path("oci"));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(Bad::new(format!("invalid tag `{t}` in base reference `{s}`"), "invalid tag").help(TAG_HELP));
            }
        }
        return Ok(Base::OciLayout { path: path.to_owned(), tag: tag.map(str::to_owned), span });
    }
    if let Some(path) = s.strip_prefix("oci-archive:") {
        if path.is_empty() {
            return Err(needs_path("oci-archive"));
        }
        return Ok(Base::OciArchive { path: path.to_owned(), span });
    }
    if let Some(path) = s.strip_prefix("docker-archive:") {
        if path.is_empty() {
            return Err(needs_path("docker-archive"));
        }
        return Ok(Base::DockerArchive { path: path.to_owned(), span });
    }
    let bad = |msg: String, label: &str| Bad::new(msg, label).help(BASE_HELP);
    if s.contains("://") {
        return Err(bad(format!("unsupported base reference `{s}`"), "URLs are not image references"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if !valid_digest(d) {
            return Err(bad(format!("invalid digest `{d}` in base reference `{s}`"), "expected sha256: and 64 lowercase hex digits"));
        }
    }
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|j| i > j) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(format!("invalid tag `{t}` in base reference `{s}`"), "invalid tag"));
        }
    }
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    // Docker's rule, which is what users type: no registry host means Docker Hub, and a
    // one-part name there is an official image under `library/`.
    let (host, repo, normalized): (&str, Vec<&str>, Option<String>) = if names_registry(first) && !rest.is_empty() {
        (first, rest, None)
    } else {
        let mut repo = vec![first];
        repo.extend(rest);
        if repo.len() == 1 {
            repo.insert(0, "library");
        }
        let full = format!("{DOCKER_HUB}/{}{}", repo.join("/"), &s[name.len()..]);
        (DOCKER_HUB, repo, Some(full))
    };
    if names_registry(first) && host != first {
        return Err(Bad::new(format!("base reference `{s}` names registry `{first}` but no repository"), "expected REGISTRY/REPO:TAG"));
    }
    if !valid_registry_host(host) {
        return Err(bad(format!("invalid registry `{host}` in base reference `{s}`"), "invalid registry host"));
    }
    if let Some(c) = repo.iter().find(|c| !valid_repo_component(c)) {
        return Err(bad(
            format!("invalid repository component `{c}` in base reference `{s}`"),
            "repository names are lowercase letters, digits and separators",
        ));
    }
    if tag.is_none() && digest.is_none() {
        return Err(Bad::new(format!("base reference `{s}` has neither a tag nor a digest"), "expected :TAG or @sha256:DIGEST")
            .help(format!("pin the base: \"{s}:TAG\" or \"{s}@sha256:DIGEST\"")));
    }
    Ok(Base::Registry { reference: normalized.unwrap_or_else(|| s.to_owned()), span })
}

/// Where references without a registry host point, by Docker's rule (the reference grammar's
/// default domain; the registry client resolves its API endpoint).
pub const DOCKER_HUB: &str = "docker.io";

/// A size in bytes: `"4GiB"`, `"512MiB"`, `"10KiB"` (powers of 1024), `"2GB"` (powers of 1000),
/// Docker's `"4g"`, `"512m"` (powers of 1024), or a number of bytes (`"1048576"`, `"64B"`).
pub fn byte_size(s: &str) -> Result<u64, Bad> {
    let bad = || {
        Bad::new(format!("invalid size `{s}`"), "expected a size").help("a number and a unit, e.g. \"4GiB\", \"512MiB\", \"10GB\", \"4g\"")
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim() {
        "" | "B" | "b" => 1.0,
        "KiB" | "k" | "K" => 1024.0,
        "MiB" | "m" | "M" => 1024.0 * 1024.0,
        "GiB" | "g" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "t" | "T" => 1024.0f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(bad()),
    };
    let v = n * scale;
    if !(v.is_finite() && v >= 1.0 && v < u64::MAX as f64 / 2.0) {
        return Err(bad());
    }
    Ok(v.round() as u64)
}

/// A duration as Docker's `HEALTHCHECK` options take it (Go's syntax: `30s`, `1m30s`, `500ms`,
/// `1.5h`), in nanoseconds.
pub fn go_duration(s: &str) -> Result<u64, Bad> {
    let bad = || {
        Bad::new(format!("invalid duration `{s}`"), "expected a duration")
            .help("a number and a unit, e.g. \"30s\", \"1m30s\", \"500ms\" (units: ns, us, ms, s, m, h)")
    };
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}
