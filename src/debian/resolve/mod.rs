//! Dependency resolution: from requested package names (and optional exact versions) to the
//! closed set of `.deb`s to install, the way `apt-get install --no-install-recommends` would
//! choose them, but deterministically and without running anything.
//!
//! This module owns:
//! - [`Universe`]: every package of every configured repository for one architecture (plus
//!   `all`), indexed once by name (candidates, best first) and by provided virtual name;
//! - [`resolve`]: the closure of `Pre-Depends` and `Depends` over the requests, with
//!   alternatives, virtual packages, versioned provides, architecture qualifiers, `Conflicts`,
//!   `Breaks`, packages already installed in a base image, and bounded backtracking;
//! - [`parse_relations`] and friends: a small parser for relation fields (`a (>= 1) | b, c:any`);
//! - [`ResolveError`]: why a request cannot be met, with the dependency chain that led there.
//!
//! Its files: `universe.rs` (the index), `relations.rs` (the relation parsers), `resolver.rs`
//! (the search state and its queries) with `resolver/requests.rs` (the roots: requests, virtual
//! packages, essentials) and `resolver/search.rs` (the closure, backjumping and the final check);
//! here, the public types and [`resolve`].
//!
//! # Semantics
//!
//! - **Candidates** of a name are all packages of that name whose architecture is the native
//!   one or `all`, best first: highest version (Debian ordering), then lowest repository
//!   index, then filename (then sha256 and architecture, for full determinism).
//! - **Requests** select the best candidate, or exactly the pinned version. A request for a
//!   name that has no real package but is provided by exactly one package selects that
//!   provider; several providers are an error, as with apt. A requested package already
//!   installed at the pinned version, or (unpinned) at a version at least as high as the best
//!   candidate, is not added again; otherwise it replaces the installed one. `name:ARCH` is
//!   accepted for the native architecture.
//! - **Dependencies**: `Pre-Depends` then `Depends` of each selected package, breadth first
//!   in selection order. For each group (`a | b | c`): if any alternative is already satisfied
//!   by a selected or installed package, nothing is added. Otherwise the options, in order, are
//!   for each alternative: the best candidate of that name satisfying the version constraint,
//!   then the packages providing the name (a versioned relation is only met by a versioned
//!   `Provides` whose version satisfies it; an unversioned `Provides` only meets unversioned
//!   relations). Providers are ordered by `Priority` (required, important, standard,
//!   optional, extra, none), then name, then candidate order; one version per provider name.
//!   Options that would conflict with (or break, or be broken by) something already selected
//!   or installed, or whose name is already selected at another version, are skipped. The first
//!   remaining option is taken.
//! - **Backtracking**: when a group has several options, a choice point is recorded. When a
//!   later group cannot be satisfied, the resolver jumps back to the most recent choice point
//!   that contributed to the failure (conflict-directed backjumping: the choices that brought
//!   in the failing package or the packages blocking it) and takes its next option. Choice
//!   points that did not contribute are not revisited, so independent alternatives do not
//!   multiply. The search is bounded ([`MAX_BACKJUMPS`]); when it gives up or runs out of
//!   options, the error reported is the first failure met, i.e. the one on the path apt
//!   itself would have taken. Versions of one name are never a choice: only the best
//!   candidate meeting the relation is tried, so a broken new version never silently falls
//!   back to an old one.
//! - **Architecture qualifiers**: `foo:any` and `foo:native` are met by native or `all`
//!   packages (`:any` also by `Multi-Arch: allowed` installed packages of other
//!   architectures); `foo:ARCH` for a foreign architecture can only be met by an installed
//!   package of that architecture, otherwise it fails with a clear detail. An unqualified
//!   relation is also met by an installed `Multi-Arch: foreign` package of another
//!   architecture.
//! - **Installed packages** (the base image) satisfy relations when their version does; if
//!   not, a candidate is selected in their place (an upgrade; downgrades are refused).
//!   Their `Provides`, `Conflicts` and `Breaks` are known when the universe holds the same
//!   name, version and architecture. Their own dependencies are not re-checked.
//! - **Essential** packages are only added when requested, depended upon, or when
//!   [`ResolveOptions::add_essential`] is set.
//! - `Recommends`, `Suggests`, `Enhances` and `Replaces` play no part.
//! - The result is a function of the inputs only: hash maps are used for look-ups, never
//!   iterated to decide anything.

mod relations;
mod resolver;
mod universe;

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use crate::debian::types::Version;

pub use relations::{parse_provides, parse_relation, parse_relation_list, parse_relations, RelationError};
pub use universe::Universe;

use resolver::Resolver;

/// How many times the resolver may jump back to an earlier choice before giving up.
pub const MAX_BACKJUMPS: usize = 1_000;

/// How many dependency groups may be evaluated after the first failure before giving up.
const MAX_WORK_AFTER_FAILURE: usize = 200_000;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Index of a package in its [`Universe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PkgId(pub usize);

/// One package to install: `name`, or `name=version` with `version` set. `name` may carry
/// the native architecture (`curl:amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    /// Exact version pin.
    pub version: Option<String>,
}

impl Request {
    /// `name` or `name=version`.
    pub fn parse(s: &str) -> Request {
        match s.split_once('=') {
            Some((name, version)) => Request { name: name.trim().to_string(), version: Some(version.trim().to_string()) },
            None => Request { name: s.trim().to_string(), version: None },
        }
    }
}

/// Knobs of [`resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Add every `Essential: yes` package (best candidate) not already installed. Default:
    /// essential packages are only added when requested or depended upon.
    pub add_essential: bool,
}

/// The packages to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Packages to add, sorted by (name, version, architecture). Installed packages that
    /// already satisfy everything are not listed.
    pub packages: Vec<PkgId>,
    /// Why each package is there. The first entry is how it was brought in: `requested`,
    /// `essential`, or the chain of package names from a request (`curl → libcurl4`; a
    /// virtual package shows as `… → mail-transport-agent → exim4-daemon-light`). Further
    /// entries, sorted, are the other selected packages whose dependencies it satisfies.
    pub reasons: BTreeMap<PkgId, Vec<String>>,
}

/// `Conflicts` or `Breaks`: both forbid the two packages in one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Conflicts,
    Breaks,
}

impl RelationKind {
    fn verb(self) -> &'static str {
        match self {
            RelationKind::Conflicts => "conflicts with",
            RelationKind::Breaks => "breaks",
        }
    }
}

impl fmt::Display for RelationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelationKind::Conflicts => "Conflicts",
            RelationKind::Breaks => "Breaks",
        })
    }
}

/// Why [`resolve`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// A requested name is neither a package nor provided by one.
    #[error("unknown package `{name}`{}", did_you_mean(suggestion))]
    UnknownPackage { name: String, suggestion: Option<String> },

    /// A pinned version does not exist.
    #[error("no version {version} of `{name}`; available: {}", list_or_none(available))]
    NoVersion { name: String, version: String, available: Vec<String> },

    /// The same name was requested with two different pins.
    #[error("`{name}` is requested as both {first} and {second}")]
    ConflictingRequests { name: String, first: String, second: String },

    /// A requested virtual package has several providers and none is installed or requested.
    #[error(
        "`{name}` is a virtual package provided by {}; request one of them",
        providers.join(", ")
    )]
    AmbiguousVirtual { name: String, providers: Vec<String> },

    /// A relation cannot be met. `chain` leads from the request to the package holding the
    /// relation: the requested name, then each relation followed.
    #[error("{}{relation}: {detail}", chain_prefix(chain))]
    Unsatisfiable { chain: Vec<String>, relation: String, detail: String },

    /// Two packages that must both be installed cannot be: `a` holds `kind: relation` against
    /// `b`. Both are `name version` (prefixed `installed ` for base image packages).
    #[error("{a} {} {b} ({kind}: {relation})", kind.verb())]
    Conflict { a: String, b: String, kind: RelationKind, relation: String },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn chain_prefix(chain: &[String]) -> String {
    chain.iter().map(|c| format!("{c} → ")).collect()
}

/// Resolves `requests` against `u`, on top of the `installed` packages of a base image
/// (`(name, version, architecture)`). See the module documentation for the semantics.
pub fn resolve(
    u: &Universe,
    requests: &[Request],
    installed: &[(String, Version, String)],
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let mut r = Resolver::new(u, installed);
    r.add_requests(requests, options)?;
    r.run()?;
    r.finish()
}

#[cfg(test)]
mod tests;
