//! Shared types of the Debian side: packages as the `Packages` index describes them, and their
//! relationships. Parsed by `repository::index`, consumed by `resolve` and by `crate::resolution`,
//! which turns a resolution into lockfile entries.

use std::fmt;

pub use debversion::Version;

/// `Multi-Arch:` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

/// A version relation operator: `<<`, `<=`, `=`, `>=`, `>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Does `v` satisfy `v OP bound`?
    pub fn matches(self, v: &Version, bound: &Version) -> bool {
        use std::cmp::Ordering::*;
        let c = v.cmp(bound);
        match self {
            Op::Lt => c == Less,
            Op::Le => c != Greater,
            Op::Eq => c == Equal,
            Op::Ge => c != Less,
            Op::Gt => c == Greater,
        }
    }
}

/// Architecture qualifier on a dependency: `foo:any`, `foo:native`, `foo:amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchQual {
    Any,
    Native,
    Arch(String),
}

/// One relation: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub arch: Option<ArchQual>,
    pub constraint: Option<(Op, Version)>,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            None => {}
            Some(ArchQual::Any) => f.write_str(":any")?,
            Some(ArchQual::Native) => f.write_str(":native")?,
            Some(ArchQual::Arch(a)) => write!(f, ":{a}")?,
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// `Depends:`-style field: all groups must hold; within a group, any alternative (`a | b`).
pub type DepList = Vec<Vec<Dep>>;

/// One `Provides:` entry, optionally versioned (`foo (= 1.2)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<Version>,
}

/// A binary package from a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Version,
    /// `amd64`, `arm64`, …, or `all`.
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: Option<String>,
    pub section: Option<String>,
    pub source: Option<String>,
    pub homepage: Option<String>,
    pub maintainer: Option<String>,
    pub description: Option<String>,
    pub depends: DepList,
    pub pre_depends: DepList,
    pub provides: Vec<Provide>,
    pub conflicts: Vec<Dep>,
    pub breaks: Vec<Dep>,
    pub replaces: Vec<Dep>,
    /// Path of the `.deb` below the mirror root: `pool/main/c/curl/curl_…_amd64.deb`.
    pub filename: String,
    pub size: u64,
    /// Lower-case hex sha256 of the `.deb`.
    pub sha256: String,
    pub installed_size: Option<u64>,
    /// Index of the repository (in spec order) the package came from.
    pub repository: usize,
}

impl Package {
    /// `name=version`, for messages.
    pub fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}
