//! Values out of a Dockerfile made fit for the spec: names for images and steps, `ARG`/`ENV`
//! substitution, paths in the image and in the build context, environment names and registry
//! references.

use crate::spec::values as check;
use crate::util::Expansion;

/// A name usable for an image or step: lowercase letters, digits, `-`, starting with a letter,
/// at most 100 characters (room for the suffixes import adds).
pub(super) fn name_of(s: &str) -> String {
    let mut n = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (n.is_empty() || n.ends_with('-'))) {
            n.push(c);
        }
        if n.len() >= 100 {
            break;
        }
    }
    let n = n.trim_end_matches('-');
    if n.is_empty() || !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("img-{n}").trim_end_matches('-').to_string()
    } else {
        n.to_string()
    }
}

/// Substitute `ARG`s and `ENV`s as Docker does in instructions other than `RUN`.
pub(super) fn subst(s: &str, vars: &[(String, String)]) -> String {
    let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    crate::util::expand_env(s, &env)
}

/// `path` made absolute against `workdir`, normalised.
pub(super) fn absolute(path: &str, workdir: &str) -> String {
    let joined = if path.starts_with('/') { path.to_string() } else { format!("{}/{path}", workdir.trim_end_matches('/')) };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = format!("/{}", parts.join("/"));
    if path.ends_with('/') && s != "/" {
        s.push('/');
    }
    s
}

/// A `COPY` source as Docker reads it: a path in the build context, whatever it says. A leading
/// `/` and `..` cannot leave the context: `/etc/passwd` is the context's `etc/passwd`, `../x`
/// its `x`, `/a/../../b` its `b`. Relative, without `.` or `..` components (`.` for the context
/// itself), a trailing `/` kept.
pub(super) fn in_context(src: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return ".".into();
    }
    let mut s = parts.join("/");
    if src.ends_with('/') {
        s.push('/');
    }
    s
}

/// Whether the spec takes `p` as a path in the image.
pub(super) fn image_path_ok(p: &str) -> bool {
    check::image_path(p).is_ok()
}

/// Why `k` cannot name an environment variable, if it cannot.
pub(super) fn env_name_problem(k: &str) -> Option<String> {
    if k.is_empty() {
        Some("a variable without a name".into())
    } else if k.contains('=') {
        Some(format!("the name `{k}` holds `=`"))
    } else if k.contains('\0') {
        Some(format!("the name `{k}` holds a NUL character"))
    } else {
        None
    }
}

/// The registry reference the spec writes for an image `FROM` or `--from` names, with Docker's
/// default tag (`latest`) when it has none; `Err`: why it is none. Only registry images: what
/// the spec reads as a local image (`oci:PATH`, `oci-archive:PATH`, `docker-archive:PATH`)
/// would be read from this machine.
pub(super) fn registry_ref(image: &str) -> Result<String, String> {
    if image.is_empty() {
        return Err("it names no image".into());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let reference = if image.contains('@') || last.contains(':') { image.to_string() } else { format!("{image}:latest") };
    match check::base_reference(&reference, miette::SourceSpan::from(0..0)) {
        Ok(crate::spec::Base::Registry { .. }) => Ok(reference),
        Ok(_) => Err(format!("`{image}` is not a registry image")),
        Err(b) => Err(b.message),
    }
}

/// `${VAR}` and `$VAR` of `args` replaced (the first of a name counting), other references
/// kept as written.
pub(super) fn expand_args_only(v: &str, args: &[(String, String)]) -> String {
    // Every name the ARGs define is replaced; a name only ENV defines stays a reference.
    crate::util::expand(v, Expansion::KNOWN_NAMES, |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()))
}
