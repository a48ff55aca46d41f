//! The OCI reference grammar (distribution's `reference` package): registry hosts, repository
//! path components, tags. One definition, used where a spec is checked ([`crate::spec`]) and
//! where references are parsed for registry requests ([`crate::registry`]). Digests are
//! [`crate::hash::is_sha256_hex`].

/// A tag: letters, digits, `_`, `.` and `-`, 1 to 128 of them, not starting with `.` or `-`.
pub fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A repository path component: lower-case letters and digits, joined by single `.`, `_`, `__`
/// or runs of `-`.
pub fn valid_repo_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .all(|sep| sep.is_empty() || sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-'))
}

/// A repository path: components joined by `/`.
pub fn valid_repository(repository: &str) -> bool {
    repository.split('/').all(valid_repo_component)
}

/// A registry host: DNS labels of letters, digits and `-`, joined by `.`, with an optional port.
pub fn valid_registry_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
}

/// Does the first path component of a reference name a registry (a dot, a port, or
/// `localhost`) rather than a Docker Hub namespace?
pub fn names_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        assert!(
            valid_tag("1.4.2") && valid_tag("_x") && !valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag(&"a".repeat(129))
        );
        assert!(valid_repo_component("a-b__c.d") && valid_repo_component("a---b"));
        assert!(
            !valid_repo_component("Upper") && !valid_repo_component("a..b") && !valid_repo_component("-a") && !valid_repo_component("")
        );
        assert!(valid_repository("library/debian") && !valid_repository("x//y"));
        assert!(valid_registry_host("127.0.0.1:5000") && valid_registry_host("reg.example") && !valid_registry_host("reg:99999"));
        assert!(!valid_registry_host("a..b") && !valid_registry_host("host:"));
        assert!(names_registry("localhost") && names_registry("r.example") && !names_registry("library"));
    }
}
