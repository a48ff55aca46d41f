//! The Debian ecosystem (an edge client), by job:
//!
//! - [`repository`]: the repository client: where to fetch from, the keyring and `InRelease`
//!   verification, the `Release` file, the `Packages` indexes, and loading a repository for one
//!   architecture with its indexes cached in the store by sha256;
//! - [`resolve`]: the resolver, from requested names to the closed set of packages to install;
//! - [`install`]: reading `.deb`s and installing each as one layer with its dpkg database entries;
//! - [`effects`]: what the package manager and maintainer scripts leave in an image, which
//!   compose reproduces without running them, one file each: `accounts` (base-passwd's masters
//!   and defaults, as passwd and group text for the metadata layer), `alternatives`
//!   (`update-alternatives`) and `certs` (the CA trust stores), as entries the planner puts in the
//!   metadata layer, and `base_files` (base-files' postinst, reproduced in that package's own
//!   layer);
//! - [`types`]: the package model they share; and, here, [`debian_arch`].

pub mod effects;
pub mod install;
pub mod repository;
pub mod resolve;
pub mod types;

/// Map an OCI platform architecture (and variant) to Debian's architecture name.
pub fn debian_arch(architecture: &str, variant: Option<&str>) -> Option<&'static str> {
    Some(match (architecture, variant) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", Some("v7")) | ("arm", None) => "armhf",
        ("arm", Some("v5")) | ("arm", Some("v6")) => "armel",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("mips64le", _) => "mips64el",
        ("riscv64", _) => "riscv64",
        _ => return None,
    })
}
