//! [`install_layer`]: a package's data member as ONE normalized layer with its dpkg database
//! entries. Pass 1 ([`super::scan`]) reads the `.deb` once into a tree of entries and a spill
//! file; then the package's own files are listed for the caller, the database entries and
//! emulated script effects join the tree, missing parents are added, and pass 2 writes the tree
//! into the layer in byte order of path.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::layer::{ChunkRecord, Entry, EntryKind, LayerDigests, LayerWriter};

use super::database::{database_entries, dpkg_name};
use super::scan::{read_package, spill_range, Scanned};
use super::scripts::script_facts;
use super::tree::{add_missing_parents, check_parents, hardlink_primaries, md5_of, resolve_hardlinks, Kind, Node};
use super::{entry_err, format_err, io_err, DebError, InstallOptions, InstalledLayer};
use crate::debian::effects::base_files::emulate_postinst;

/// Streams the package's data tarball into ONE normalized layer written to `sink`, with its
/// dpkg database entries (see the module documentation for every rule). File contents are
/// spilled to an anonymous temporary file in `spill_dir` while reading. The package name for
/// the database entries is the control file's `Package` field.
pub fn install_layer<W: Write>(
    deb: &Path,
    opts: &InstallOptions,
    writer: LayerWriter<W>,
    spill_dir: &Path,
) -> Result<(W, InstalledLayer), DebError> {
    let spill_file = tempfile::tempfile_in(spill_dir).map_err(io_err(deb, format!("creating a spill file in {}", spill_dir.display())))?;
    let (info, Scanned { mut nodes, listed, dpkg_list }) = read_package(deb, opts, &spill_file)?;
    let name = info.package().map_err(|r| format_err(deb, r))?;

    // Hardlinks: resolve each to its file, before the database entries join the map.
    let resolved = resolve_hardlinks(deb, &nodes)?;

    // What the caller gets about the package's own files.
    let (files, file_md5) = package_files(&nodes, &resolved);
    let kept = read_kept(deb, &opts.keep, &nodes, &resolved, &spill_file)?;

    // The dpkg database entries.
    let db = dpkg_name(&info, &name);
    let md5 = |path: &str| md5_of(&nodes, &resolved, path);
    let (status, db_files) = database_entries(&info, &db, &listed, &dpkg_list, &md5, opts.merged_usr);
    add_database_files(deb, &mut nodes, db_files, opts.epoch)?;

    if opts.emulate {
        emulate_postinst(&name, &mut nodes, opts.epoch);
    }
    check_parents(deb, &nodes)?;
    add_missing_parents(&mut nodes, opts.epoch);

    let (sink, digests, chunks) = write_layer(deb, writer, &nodes, &resolved, &spill_file)?;
    let facts = script_facts(&info, db);
    Ok((sink, InstalledLayer { digests, chunks, files, file_md5, kept, status, facts }))
}

/// Image paths of the package's regular files, hardlinks and symlinks (sorted), and the
/// lower-case hex MD5 of each regular file, hardlinks included.
fn package_files(nodes: &BTreeMap<String, Node>, resolved: &HashMap<String, String>) -> (Vec<String>, BTreeMap<String, String>) {
    let mut files = Vec::new();
    let mut file_md5 = BTreeMap::new();
    for (path, node) in nodes {
        match node.kind {
            Kind::File { .. } | Kind::Hardlink(_) => {
                files.push(path.clone());
                if let Some(md5) = md5_of(nodes, resolved, path) {
                    file_md5.insert(path.clone(), hex::encode(md5));
                }
            }
            Kind::Symlink(_) => files.push(path.clone()),
            Kind::Dir | Kind::Inline(_) => {}
        }
    }
    (files, file_md5)
}

/// Contents of the `keep` paths the package has as regular files (or hardlinks to them), read
/// back from the spill file.
fn read_kept(
    deb: &Path,
    keep: &[String],
    nodes: &BTreeMap<String, Node>,
    resolved: &HashMap<String, String>,
    spill_file: &File,
) -> Result<BTreeMap<String, Vec<u8>>, DebError> {
    let mut kept = BTreeMap::new();
    for want in keep {
        let file = resolved.get(want).map_or(want.as_str(), String::as_str);
        if let Some(Kind::File { offset, len, .. }) = nodes.get(file).map(|n| &n.kind) {
            let mut v = Vec::with_capacity(*len as usize);
            spill_range(spill_file, *offset, *len)
                .and_then(|mut r| r.read_to_end(&mut v))
                .map_err(io_err(deb, "reading the spill file"))?;
            kept.insert(want.clone(), v);
        }
    }
    Ok(kept)
}

/// Adds the dpkg database files `(path, bytes, mode)` to the tree (root, mtime `epoch`); a
/// package that ships a file at one of those paths is refused.
fn add_database_files(
    deb: &Path,
    nodes: &mut BTreeMap<String, Node>,
    db_files: Vec<(String, Vec<u8>, u32)>,
    epoch: u64,
) -> Result<(), DebError> {
    for (path, content, mode) in db_files {
        if nodes.contains_key(&path) {
            return Err(entry_err(deb, &path, "the package ships a file at its own dpkg database path"));
        }
        let node = Node { kind: Kind::Inline(content), mode, uid: 0, gid: 0, mtime: epoch, shown: path.clone(), moved: false };
        nodes.insert(path, node);
    }
    Ok(())
}

/// Pass 2: writes every node into the layer in byte order of path, reading file contents back
/// from the spill file. In each hardlink group the byte-order-first path carries the data and
/// the others are hardlinks to it, all with the file's metadata.
fn write_layer<W: Write>(
    deb: &Path,
    mut writer: LayerWriter<W>,
    nodes: &BTreeMap<String, Node>,
    resolved: &HashMap<String, String>,
    spill_file: &File,
) -> Result<(W, LayerDigests, Vec<ChunkRecord>), DebError> {
    let primary = hardlink_primaries(resolved);
    let layer_err = |source| DebError::Layer { deb: deb.to_path_buf(), source };
    for (path, node) in nodes {
        let (entry, data_of) = layer_entry(deb, path, node, nodes, resolved, &primary)?;
        match data_of {
            None => writer.append(&entry, None),
            Some(Kind::Inline(bytes)) => writer.append(&entry, Some(&mut &bytes[..])),
            Some(Kind::File { offset, len, .. }) => {
                let mut data = spill_range(spill_file, *offset, *len).map_err(io_err(deb, "reading the spill file"))?;
                writer.append(&entry, Some(&mut data))
            }
            Some(_) => return Err(entry_err(deb, &node.shown, "no data for a file entry")),
        }
        .map_err(layer_err)?;
    }
    writer.finish_with_chunks().map_err(layer_err)
}

/// The layer entry for `node` at `path`, and the node kind holding its data (`None` for entries
/// without data: directories, symlinks, hardlinks that do not carry the group's data).
fn layer_entry<'n>(
    deb: &Path,
    path: &str,
    node: &'n Node,
    nodes: &'n BTreeMap<String, Node>,
    resolved: &HashMap<String, String>,
    primary: &HashMap<&str, &str>,
) -> Result<(Entry, Option<&'n Kind>), DebError> {
    let mut meta = node;
    let mut data_of: Option<&Kind> = None;
    let kind = match &node.kind {
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink(target) => EntryKind::Symlink { target: target.clone() },
        Kind::Inline(bytes) => {
            data_of = Some(&node.kind);
            EntryKind::File { size: bytes.len() as u64 }
        }
        Kind::File { .. } | Kind::Hardlink(_) => {
            let file = resolved.get(path).map_or(path, String::as_str);
            let file_node = nodes.get(file).ok_or_else(|| entry_err(deb, &node.shown, "hardlink target vanished"))?;
            meta = file_node;
            let first = primary.get(file).copied().unwrap_or(file);
            if first == path {
                data_of = Some(&file_node.kind);
                match file_node.kind {
                    Kind::File { len, .. } => EntryKind::File { size: len },
                    _ => return Err(entry_err(deb, &node.shown, "hardlink target is not a file")),
                }
            } else {
                EntryKind::Hardlink { target: first.to_owned() }
            }
        }
    };
    let entry = Entry { path: path.to_owned(), kind, mode: meta.mode, uid: meta.uid, gid: meta.gid, mtime: meta.mtime };
    Ok((entry, data_of))
}
