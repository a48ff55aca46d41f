//! Image-path rules: the normal form of an entry's path ([`check_image_path`]), its parent, and
//! where a merged-`/usr` system keeps the top directories it moved under `/usr`.

/// Checks that `path` is an absolute, normalized image path other than `/`.
pub(super) fn check_image_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with `/`");
    };
    if rest.is_empty() {
        return Err("`/` itself is never an entry");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for component in rest.split('/') {
        match component {
            "" => return Err("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return Err("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The top directories a merged-`/usr` system (Debian bookworm and later) keeps under `/usr`,
/// with links at the root (`/bin` → `usr/bin`).
pub const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/bin/x` → `/usr/bin/x` (and `/bin` → `/usr/bin`) for the [`MERGED_USR_DIRS`]; `None` for
/// every other path.
pub fn merged_usr_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let top = rest.split('/').next().unwrap_or(rest);
    MERGED_USR_DIRS.contains(&top).then(|| format!("/usr{path}"))
}

/// The parent of a checked image path, or `None` for a top-level entry.
pub fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}
