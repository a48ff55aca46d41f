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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::Content;

    fn span(n: usize) -> SourceSpan {
        SourceSpan::from(n..n + 1)
    }

    fn file(path: &str, text: &str, mode: u32, uid: u32, gid: u32) -> PlannedEntry {
        let bytes = Arc::new(text.as_bytes().to_vec());
        PlannedEntry {
            path: path.into(),
            kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(bytes) },
            mode,
            uid,
            gid,
        }
    }

    fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> PlannedEntry {
        PlannedEntry { path: path.into(), kind: EntryKind::Dir, mode, uid, gid }
    }

    fn symlink(path: &str, target: &str) -> PlannedEntry {
        PlannedEntry { path: path.into(), kind: EntryKind::Symlink { target: target.into() }, mode: 0o777, uid: 0, gid: 0 }
    }

    fn paths(entries: &[PlannedEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn insert(layer: &mut LayerEntries, e: PlannedEntry, at: usize) {
        assert!(layer.insert(e, span(at)).is_ok(), "insert at {at} conflicted");
    }

    #[test]
    fn a_deep_path_gets_root_owned_0755_parents() {
        let mut layer = LayerEntries::default();
        insert(&mut layer, file("/a/b/c", "x", 0o600, 1000, 1000), 0);
        let entries = layer.finish();
        assert_eq!(entries, vec![dir("/a", 0o755, 0, 0), dir("/a/b", 0o755, 0, 0), file("/a/b/c", "x", 0o600, 1000, 1000)]);
    }

    #[test]
    fn implicit_parents_keep_an_explicit_directory_and_yield_to_a_later_one() {
        let mut layer = LayerEntries::default();
        insert(&mut layer, dir("/srv", 0o700, 5, 6), 0);
        insert(&mut layer, file("/srv/www/index.html", "hi", 0o644, 0, 0), 1);
        insert(&mut layer, dir("/srv/www", 0o750, 7, 8), 2);
        let entries = layer.finish();
        assert_eq!(entries[0], dir("/srv", 0o700, 5, 6), "an existing directory is not replaced by an implicit parent");
        assert_eq!(entries[1], dir("/srv/www", 0o750, 7, 8), "a later explicit directory replaces the implicit one");
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn the_later_operation_on_a_path_wins() {
        let mut layer = LayerEntries::default();
        insert(&mut layer, file("/etc/motd", "one\n", 0o644, 0, 0), 0);
        insert(&mut layer, file("/etc/motd", "two\n", 0o600, 33, 44), 1);
        insert(&mut layer, dir("/var", 0o755, 0, 0), 2);
        insert(&mut layer, dir("/var", 0o710, 1, 2), 3);
        insert(&mut layer, file("/x", "file", 0o644, 0, 0), 4);
        insert(&mut layer, symlink("/x", "/elsewhere"), 5);
        let entries = layer.finish();
        assert_eq!(
            entries,
            vec![
                dir("/etc", 0o755, 0, 0),
                file("/etc/motd", "two\n", 0o600, 33, 44),
                dir("/var", 0o710, 1, 2),
                symlink("/x", "/elsewhere")
            ]
        );
    }

    #[test]
    fn a_directory_and_a_file_on_one_path_conflict_naming_both() {
        let mut layer = LayerEntries::default();
        insert(&mut layer, dir("/data", 0o755, 0, 0), 0);
        let Err(c) = layer.insert(file("/data", "x", 0o644, 0, 0), span(7)) else { panic!("a file over a directory was accepted") };
        assert_eq!(c.span, span(7), "the conflict points at the later operation");
        assert_eq!(c.message, "`/data` is a file here but an earlier operation made it a directory");
        assert!(c.help.is_some_and(|h| h.contains("`layer` block")));

        let mut layer = LayerEntries::default();
        insert(&mut layer, symlink("/data", "/srv"), 0);
        let Err(c) = layer.insert(dir("/data", 0o755, 0, 0), span(9)) else { panic!("a directory over a symlink was accepted") };
        assert_eq!(c.message, "`/data` is a directory here but an earlier operation made it a symlink");
        // The refused operation left nothing behind.
        assert_eq!(layer.finish(), vec![symlink("/data", "/srv")]);
    }

    #[test]
    fn a_file_where_a_parent_directory_is_needed_conflicts() {
        let mut layer = LayerEntries::default();
        insert(&mut layer, file("/opt/app", "bin", 0o755, 0, 0), 0);
        let Err(c) = layer.insert(file("/opt/app/conf/x", "y", 0o644, 0, 0), span(3)) else { panic!("a child of a file was accepted") };
        assert_eq!(c.message, "`/opt/app/conf/x` needs `/opt/app` to be a directory, but this layer already has a file there");
        assert!(c.help.is_none());
        // No implicit parent (`/opt/app/conf`) was added for the refused entry.
        assert_eq!(paths(&layer.finish()), ["/opt", "/opt/app"]);
    }

    #[test]
    fn entries_come_out_byte_sorted_with_parents_before_children() {
        let mut layer = LayerEntries::default();
        for (i, p) in ["/b", "/a/z", "/a-b", "/a/b/c", "/B", "/a.txt"].into_iter().enumerate() {
            insert(&mut layer, file(p, p, 0o644, 0, 0), i);
        }
        let entries = layer.finish();
        // Byte order: `-` (0x2d) and `.` (0x2e) sort before `/` (0x2f), upper case before lower.
        assert_eq!(paths(&entries), ["/B", "/a", "/a-b", "/a.txt", "/a/b", "/a/b/c", "/a/z", "/b"]);
        for (i, e) in entries.iter().enumerate() {
            if let Some(p) = parent(&e.path).filter(|p| *p != "/") {
                assert!(entries[..i].iter().any(|q| q.path == p), "{} comes before its parent {p}", e.path);
            }
        }
    }

    #[test]
    fn merged_usr_path_maps_the_top_level_library_and_binary_directories() {
        for (from, to) in [
            ("/bin", "/usr/bin"),
            ("/bin/x", "/usr/bin/x"),
            ("/sbin/x", "/usr/sbin/x"),
            ("/lib/x", "/usr/lib/x"),
            ("/lib32/x", "/usr/lib32/x"),
            ("/lib64/ld.so", "/usr/lib64/ld.so"),
            ("/libx32/x", "/usr/libx32/x"),
            ("/lib/a/b", "/usr/lib/a/b"),
        ] {
            assert_eq!(merged_usr_path(from).as_deref(), Some(to), "{from}");
        }
        for other in ["/usr/bin/x", "/etc/passwd", "/binary", "/library/x", "/lib64x/y", "/", "/opt/bin/x"] {
            assert_eq!(merged_usr_path(other), None, "{other}");
        }
    }

    #[test]
    fn a_merged_usr_layer_writes_bin_under_usr() {
        let mut layer = LayerEntries { merged_usr: true, ..LayerEntries::default() };
        insert(&mut layer, symlink("/bin/sh", "busybox"), 0);
        insert(&mut layer, file("/etc/motd", "m", 0o644, 0, 0), 1);
        assert_eq!(paths(&layer.finish()), ["/etc", "/etc/motd", "/usr", "/usr/bin", "/usr/bin/sh"]);

        let mut layer = LayerEntries::default();
        insert(&mut layer, symlink("/bin/sh", "busybox"), 0);
        assert_eq!(paths(&layer.finish()), ["/bin", "/bin/sh"]);
    }

    #[test]
    fn join_and_parent() {
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/srv/www", "a/b"), "/srv/www/a/b");
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(parent("relative"), None);
    }
}
