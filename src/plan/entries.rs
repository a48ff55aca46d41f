//! The rules that merge file operations into one layer's entry list: implicit parent directories,
//! later operation wins, a path that is a directory in one operation and not in another refused;
//! merged-/usr path mapping. Entries come out byte-sorted by path, parents first.

use std::collections::BTreeMap;

use miette::SourceSpan;

use super::{EntryKind, PlannedEntry};

pub(super) fn join(dir: &str, rel: &str) -> String {
    if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

pub(super) struct Conflict {
    pub(super) span: SourceSpan,
    pub(super) message: String,
    pub(super) help: Option<String>,
}

#[derive(Default)]
pub(super) struct LayerEntries {
    /// path → (entry, span of the op that wrote it; None for implicit parents)
    pub(super) map: BTreeMap<String, (PlannedEntry, Option<SourceSpan>)>,
    /// Write `/bin`, `/sbin`, `/lib*` paths under `/usr` (the image has merged-/usr links).
    pub(super) merged_usr: bool,
}

pub use crate::layer::merged_usr_path;

impl LayerEntries {
    pub(super) fn insert(&mut self, mut entry: PlannedEntry, span: SourceSpan) -> Result<(), Conflict> {
        if self.merged_usr {
            if let Some(p) = merged_usr_path(&entry.path) {
                entry.path = p;
            }
        }
        // Parents: implicit directories, unless something is already there.
        let mut p = parent(&entry.path);
        let mut missing = Vec::new();
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            match self.map.get(dir) {
                Some((e, _)) if e.kind == EntryKind::Dir => break,
                Some((e, _)) => {
                    return Err(Conflict {
                        span,
                        message: format!(
                            "`{}` needs `{dir}` to be a directory, but this layer already has a {} there",
                            entry.path,
                            kind_word(&e.kind)
                        ),
                        help: None,
                    });
                }
                None => missing.push(dir.to_string()),
            }
            p = parent(dir);
        }
        match self.map.get(&entry.path) {
            Some((old, _)) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {}
            Some((old, _)) if (old.kind == EntryKind::Dir) != (entry.kind == EntryKind::Dir) => {
                return Err(Conflict {
                    span,
                    message: format!(
                        "`{}` is a {} here but an earlier operation made it a {}",
                        entry.path,
                        kind_word(&entry.kind),
                        kind_word(&old.kind)
                    ),
                    help: Some(
                        "a path can't be both a directory and a file in one layer; put one of them in a `layer` block of its own".into(),
                    ),
                });
            }
            _ => {}
        }
        for dir in missing {
            let implicit = PlannedEntry { path: dir.clone(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0 };
            self.map.insert(dir, (implicit, None));
        }
        // Later operations win.
        self.map.insert(entry.path.clone(), (entry, Some(span)));
        Ok(())
    }

    pub(super) fn finish(self) -> Vec<PlannedEntry> {
        // BTreeMap<String> iterates in byte order of the path: parents before children.
        self.map.into_values().map(|(e, _)| e).collect()
    }
}

fn kind_word(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "file",
        EntryKind::Symlink { .. } => "symlink",
    }
}
