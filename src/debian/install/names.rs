//! Entry names: an archive name normalized to an image path (`./usr/bin/x` → `/usr/bin/x`, unsafe
//! names refused), and where a path lands under merged `/usr`.

use super::MERGED_USR_DIRS;

/// Normalizes an archive name to an image path (`./usr/bin/x` → `/usr/bin/x`); `None` for the
/// root (`./`, `.`). Rejects non-UTF-8, NUL, absolute names and `..`.
pub(super) fn normalize_name(raw: &[u8]) -> Result<Option<String>, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8".to_owned())?;
    if name.contains('\0') {
        return Err("the name contains a NUL byte".to_owned());
    }
    // Names go into line-based files (dpkg's lists and md5sums): no line breaks or other controls.
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("the name contains the control character {:?}; dpkg's line-based database could not hold it", c));
    }
    if name.starts_with('/') {
        return Err("absolute names are not allowed".to_owned());
    }
    let mut out = String::with_capacity(name.len() + 1);
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed".to_owned()),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Where a normalized path lands under merged /usr.
pub(super) enum Placed {
    /// At this path; `true` when the rewrite moved it.
    At(String, bool),
    /// It is one of the top directories themselves (`/bin`).
    TopDir(&'static str),
}

pub(super) fn place(path: String, merged_usr: bool) -> Placed {
    if !merged_usr {
        return Placed::At(path, false);
    }
    let rest = &path[1..];
    let (top, below) = match rest.split_once('/') {
        Some((t, b)) => (t, Some(b)),
        None => (rest, None),
    };
    match MERGED_USR_DIRS.iter().find(|d| **d == top) {
        None => Placed::At(path, false),
        Some(d) => match below {
            None => Placed::TopDir(d),
            Some(_) => Placed::At(format!("/usr{path}"), true),
        },
    }
}

/// Where a package path (`/bin/ls`) is in the image (`/usr/bin/ls` with merged /usr).
pub(super) fn place_path(path: &str, merged_usr: bool) -> String {
    match place(path.to_owned(), merged_usr) {
        Placed::At(p, _) => p,
        Placed::TopDir(d) => format!("/{d}"),
    }
}
