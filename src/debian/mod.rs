//! Debian repositories (an edge client): where to fetch from ([`sources`]), InRelease
//! verification and Release parsing ([`release`]), `Packages` indexes ([`index`]), the resolver
//! ([`resolve`]), reading `.deb`s into layers ([`deb`]), and loading a repository for one
//! architecture with its indexes cached in the store by sha256 ([`repo`]).

pub mod alternatives;
pub mod certs;
pub mod deb;
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
