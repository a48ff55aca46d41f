//! A package's entries in memory, by image path: what each is ([`Kind`], [`Node`]), the
//! duplicate and collision rules ([`insert_node`]), hardlinks resolved to the file holding the
//! data, entries below a symlink or a non-directory refused, and missing parents added.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::layer::parent_of;

use super::{entry_err, DebError, DIR_MODE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::debian) enum Kind {
    Dir,
    /// Data at `offset..offset + len` of the spill file.
    File {
        offset: u64,
        len: u64,
        md5: [u8; 16],
    },
    Symlink(String),
    /// Image path of the target.
    Hardlink(String),
    /// Generated content (the dpkg database entries).
    Inline(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(in crate::debian) struct Node {
    pub(in crate::debian) kind: Kind,
    pub(in crate::debian) mode: u32,
    pub(in crate::debian) uid: u32,
    pub(in crate::debian) gid: u32,
    pub(in crate::debian) mtime: u64,
    /// The entry's name as in the archive, for messages.
    pub(in crate::debian) shown: String,
    /// Moved by the merged-/usr rewrite.
    pub(in crate::debian) moved: bool,
}

impl Node {
    fn same_content(&self, other: &Node) -> bool {
        let kind_eq = match (&self.kind, &other.kind) {
            (Kind::File { len: a, md5: ma, .. }, Kind::File { len: b, md5: mb, .. }) => a == b && ma == mb,
            (a, b) => a == b,
        };
        kind_eq && self.mode == other.mode && self.uid == other.uid && self.gid == other.gid
    }
}

/// Inserts a node, applying the duplicate/collision rules of the module documentation.
pub(super) fn insert_node(map: &mut BTreeMap<String, Node>, path: String, node: Node) -> Result<(), String> {
    use std::collections::btree_map::Entry as MapEntry;
    let mut slot = match map.entry(path) {
        MapEntry::Vacant(v) => {
            v.insert(node);
            return Ok(());
        }
        MapEntry::Occupied(o) => o,
    };
    let path = slot.key().clone();
    let old = slot.get_mut();
    if old.kind == Kind::Dir && node.kind == Kind::Dir {
        if old.same_content(&node) {
            old.mtime = old.mtime.min(node.mtime);
            old.moved &= node.moved;
            return Ok(());
        }
        if old.moved != node.moved {
            if old.moved {
                *old = node;
            }
            return Ok(());
        }
        return Err(format!("directory `{path}` is listed twice (also as `{}`) with different mode or owner", old.shown));
    }
    if old.same_content(&node) {
        old.mtime = old.mtime.min(node.mtime);
        old.moved &= node.moved;
        return Ok(());
    }
    if old.moved || node.moved {
        Err(format!("`{}` and `{}` both become `{path}` under merged /usr, and they differ", old.shown, node.shown))
    } else {
        Err(format!("`{path}` is listed twice (also as `{}`) with different content", old.shown))
    }
}

/// Follows hardlinks to the regular file holding the data.
fn resolve_hardlink<'a>(nodes: &'a BTreeMap<String, Node>, mut target: &'a str) -> Result<&'a str, String> {
    for _ in 0..=nodes.len() {
        match nodes.get(target).map(|n| &n.kind) {
            Some(Kind::File { .. }) => return Ok(target),
            Some(Kind::Hardlink(next)) => target = next,
            Some(Kind::Dir) => return Err(format!("hardlink target `{target}` is a directory")),
            Some(Kind::Symlink(_)) => return Err(format!("hardlink target `{target}` is a symlink")),
            Some(Kind::Inline(_)) => return Err(format!("hardlink target `{target}` is not part of the package")),
            None => return Err(format!("hardlink target `{target}` is not a regular file of this package")),
        }
    }
    Err(format!("hardlink target `{target}` is part of a hardlink cycle"))
}

/// Rejects entries below a symlink or another non-directory of the same layer.
pub(super) fn check_parents(deb: &Path, nodes: &BTreeMap<String, Node>) -> Result<(), DebError> {
    for (path, node) in nodes {
        let mut p = path.as_str();
        while let Some(parent) = parent_of(p) {
            match nodes.get(parent).map(|n| &n.kind) {
                None => p = parent,
                Some(Kind::Dir) => break,
                Some(Kind::Symlink(_)) => {
                    return Err(entry_err(deb, &node.shown, format!("`{path}` would be written through symlink `{parent}`")))
                }
                Some(_) => return Err(entry_err(deb, &node.shown, format!("`{path}` is below `{parent}`, which is not a directory"))),
            }
        }
    }
    Ok(())
}

/// Each hardlink of `nodes` (by image path) resolved to the regular file holding its data.
pub(super) fn resolve_hardlinks(deb: &Path, nodes: &BTreeMap<String, Node>) -> Result<HashMap<String, String>, DebError> {
    let mut resolved: HashMap<String, String> = HashMap::new();
    for (path, node) in nodes {
        if let Kind::Hardlink(target) = &node.kind {
            let file = resolve_hardlink(nodes, target).map_err(|r| entry_err(deb, &node.shown, r))?;
            resolved.insert(path.clone(), file.to_owned());
        }
    }
    Ok(resolved)
}

/// The MD5 of the regular file at `path`, or of the file the hardlink there resolves to.
pub(super) fn md5_of(nodes: &BTreeMap<String, Node>, resolved: &HashMap<String, String>, path: &str) -> Option<[u8; 16]> {
    let file = resolved.get(path).map_or(path, String::as_str);
    match nodes.get(file).map(|n| &n.kind) {
        Some(Kind::File { md5, .. }) => Some(*md5),
        _ => None,
    }
}

/// Adds the missing parent directories (`0755`, root, mtime `epoch`).
pub(super) fn add_missing_parents(nodes: &mut BTreeMap<String, Node>, epoch: u64) {
    let mut missing = BTreeSet::new();
    for path in nodes.keys() {
        let mut p = path.as_str();
        while let Some(parent) = parent_of(p) {
            if nodes.contains_key(parent) || !missing.insert(parent.to_owned()) {
                break;
            }
            p = parent;
        }
    }
    for path in missing {
        let node = Node { kind: Kind::Dir, mode: DIR_MODE, uid: 0, gid: 0, mtime: epoch, shown: path.clone(), moved: false };
        nodes.insert(path, node);
    }
}

/// For each hardlink group (the file and the hardlinks resolved to it), the byte-order-first
/// path, which carries the data in the layer, by the file's path.
pub(super) fn hardlink_primaries(resolved: &HashMap<String, String>) -> HashMap<&str, &str> {
    let mut primary: HashMap<&str, &str> = HashMap::new();
    for (link, file) in resolved {
        let p = primary.entry(file.as_str()).or_insert(file.as_str());
        if link.as_str() < *p {
            *p = link.as_str();
        }
    }
    primary
}
