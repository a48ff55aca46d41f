//! The entries of a layer as planned: a path, what it is (a directory, a file and where its bytes
//! come from, a symbolic link), its mode and numeric owners. Every part of a build that says what
//! goes into a layer speaks this: the planner, the ecosystems' effects, the executor that writes
//! layers and captures trees.

use std::path::PathBuf;
use std::sync::Arc;

use crate::hash::ContentHash;

/// What an entry in a planned layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64, content: Content },
    Symlink { target: String },
}

/// Where a planned file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Generated or written in the spec.
    Inline(Arc<Vec<u8>>),
    /// A local file; `abs` says where to read it and is never hashed; while it has identity
    /// `settled` (see `source::SourceEntry::settled`) it has content `hash`.
    Local { abs: PathBuf, hash: ContentHash, settled: Option<String> },
    /// A file of a tree made during the build (a step's output, an image's file system), read
    /// as it is: its identity is the derivation that made the tree.
    Tree { abs: PathBuf },
}

/// One entry of a planned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl PlannedEntry {
    /// A root-owned file holding `bytes`.
    pub fn file(path: &str, bytes: Vec<u8>, mode: u32) -> PlannedEntry {
        PlannedEntry {
            path: path.into(),
            kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(Arc::new(bytes)) },
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned symbolic link to `target`.
    pub fn symlink(path: &str, target: &str) -> PlannedEntry {
        PlannedEntry { path: path.into(), kind: EntryKind::Symlink { target: target.into() }, mode: 0o777, uid: 0, gid: 0 }
    }
}
