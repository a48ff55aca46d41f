//! Pass 1 of [`super::install_layer`]: the data tarball read once, in archive order, each
//! entry's metadata, kind and place checked, regular file contents spilled sequentially into
//! one temporary file (only offset, length and MD5 kept in memory).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use md5::{Digest, Md5};

use super::archive::{read_control_tar, visit_members, Flow, Member};
use super::names::{normalize_name, place, Placed};
use super::tree::{insert_node, Kind, Node};
use super::{entry_err, format_err, io_err, DebError, DebInfo, InstallOptions};

/// Sequential writer of file contents into the spill file.
pub(super) struct Spill<'a> {
    out: BufWriter<&'a File>,
    offset: u64,
    buf: Vec<u8>,
}

impl Spill<'_> {
    /// Copies exactly `len` bytes from `reader`, returning their offset and MD5.
    fn add(&mut self, reader: &mut dyn Read, len: u64) -> io::Result<(u64, [u8; 16])> {
        let start = self.offset;
        let mut md5 = Md5::new();
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
            let n = match reader.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file data ended after {} of {len} bytes", len - left),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            md5.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        self.offset += len;
        Ok((start, md5.finalize().into()))
    }
}

/// A regular file of the package, for the computed `md5sums`.
pub(super) struct Listed {
    /// Path as in the package, without leading `/` (before the merged-/usr rewrite).
    pub(super) package_path: String,
    /// Image path of the node holding it (a file, or a hardlink resolved later).
    pub(super) image_path: String,
}

/// Everything pass 1 learns from the data tarball.
pub(super) struct Scanned {
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) listed: Vec<Listed>,
    /// Every entry's path as in the package, in archive order, as dpkg's `info/*.list` has them
    /// (`/.` for the root).
    pub(super) dpkg_list: Vec<String>,
}

/// The pax `mtime` of an entry, if any (integer part; negative → 0).
fn pax_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<u64>> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(None);
    };
    for ext in extensions {
        let ext = ext?;
        if ext.key_bytes() == b"mtime" {
            let value = String::from_utf8_lossy(ext.value_bytes());
            let int = value.split('.').next().unwrap_or("").trim();
            if int.starts_with('-') {
                return Ok(Some(0));
            }
            return int.parse::<u64>().map(Some).map_err(|_| io::Error::other(format!("invalid pax mtime `{value}`")));
        }
    }
    Ok(None)
}

/// Pass 1: reads the control member and the data member of `deb` once, spilling file contents
/// into `spill_file`.
pub(super) fn read_package(deb: &Path, opts: &InstallOptions, spill_file: &File) -> Result<(DebInfo, Scanned), DebError> {
    let mut info = None;
    let mut scanned = None;
    {
        let mut spill = Spill { out: BufWriter::with_capacity(256 << 10, spill_file), offset: 0, buf: vec![0; 128 << 10] };
        visit_members(deb, |member, compression, reader| match member {
            Member::Control => {
                info = Some(read_control_tar(deb, reader, "none")?);
                Ok(Flow::Continue)
            }
            Member::Data => {
                scanned = Some(scan_data(deb, reader, compression, opts, &mut spill)?);
                Ok(Flow::Stop)
            }
        })?;
        spill.out.flush().map_err(io_err(deb, "writing the spill file"))?;
    }
    match (info, scanned) {
        (Some(info), Some(scanned)) => Ok((info, scanned)),
        _ => Err(format_err(deb, "no control.tar or data.tar member")),
    }
}

/// Reads the data tarball once, spilling file contents.
fn scan_data(
    deb: &Path,
    reader: &mut dyn Read,
    compression: &'static str,
    opts: &InstallOptions,
    spill: &mut Spill<'_>,
) -> Result<Scanned, DebError> {
    let member = if compression == "none" { "data.tar".to_owned() } else { format!("data.tar.{compression}") };
    let mut archive = tar::Archive::new(reader);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listed = Vec::new();
    let mut dpkg_list = Vec::new();
    let entries = archive.entries().map_err(io_err(deb, format!("reading {member}")))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(deb, format!("reading {member}")))?;
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: String| entry_err(deb, &shown, reason);
        let (mode, uid, gid, mtime) = entry_metadata(deb, &mut entry, &shown, &member, opts.epoch)?;

        let path = normalize_name(&raw).map_err(&bad)?;
        let Some(path) = path else {
            if etype.is_dir() {
                dpkg_list.push("/.".to_owned());
                continue;
            }
            return Err(bad("the root entry must be a directory".to_owned()));
        };
        dpkg_list.push(path.clone());
        let package_path = path[1..].to_owned();
        let kind = entry_kind(&entry, &raw, opts.merged_usr).map_err(&bad)?;
        let Some((path, moved)) = place_entry(path, &kind, opts.merged_usr).map_err(&bad)? else {
            continue;
        };

        let kind = match kind {
            Kind::File { .. } => {
                let len = entry.size();
                let (offset, md5) = spill.add(&mut entry, len).map_err(io_err(deb, format!("spilling `{shown}` of {member}")))?;
                Kind::File { offset, len, md5 }
            }
            other => other,
        };
        if matches!(kind, Kind::File { .. } | Kind::Hardlink(_)) {
            listed.push(Listed { package_path, image_path: path.clone() });
        }
        let node = Node { kind, mode, uid, gid, mtime, shown: shown.clone(), moved };
        insert_node(&mut nodes, path, node).map_err(&bad)?;
    }
    Ok(Scanned { nodes, listed, dpkg_list })
}

/// An entry's mode (`& 0o7777`), uid, gid and mtime (the pax one if any, clamped to `epoch`).
fn entry_metadata<R: Read>(
    deb: &Path,
    entry: &mut tar::Entry<'_, R>,
    shown: &str,
    member: &str,
    epoch: u64,
) -> Result<(u32, u32, u32, u64), DebError> {
    let bad = |reason: String| entry_err(deb, shown, reason);
    let header_err = |what: &str| io_err(deb, format!("reading the {what} of `{shown}` in {member}"));
    let header = entry.header();
    let mode = header.mode().map_err(header_err("mode"))? & 0o7777;
    let uid = header.uid().map_err(header_err("uid"))?;
    let gid = header.gid().map_err(header_err("gid"))?;
    let uid = u32::try_from(uid).map_err(|_| bad(format!("uid {uid} is too large")))?;
    let gid = u32::try_from(gid).map_err(|_| bad(format!("gid {gid} is too large")))?;
    let mut mtime = header.mtime().map_err(header_err("mtime"))?;
    if let Some(pax) = pax_mtime(entry).map_err(header_err("pax mtime"))? {
        mtime = pax;
    }
    Ok((mode, uid, gid, mtime.min(epoch)))
}

/// What a (non-root) entry is; a regular file's data is not read yet (offset, length and MD5
/// are zero). Symlink targets are kept as they are; hardlink targets are normalized and placed
/// like names. Device nodes, FIFOs, sparse files and unknown types are refused.
fn entry_kind<R: Read>(entry: &tar::Entry<'_, R>, raw: &[u8], merged_usr: bool) -> Result<Kind, String> {
    let etype = entry.header().entry_type();
    let link = || -> Result<String, String> {
        let bytes = entry.link_name_bytes().ok_or_else(|| "the link has no target".to_owned())?;
        String::from_utf8(bytes.into_owned()).map_err(|_| "the link target is not UTF-8".to_owned())
    };
    Ok(if etype.is_dir() {
        Kind::Dir
    } else if etype.is_symlink() {
        let target = link()?;
        if target.is_empty() || target.contains('\0') {
            return Err(format!("symlink target `{target}` is empty or contains NUL"));
        }
        Kind::Symlink(target)
    } else if etype.is_hard_link() {
        let target = link()?;
        let normalized = normalize_name(target.as_bytes())
            .map_err(|r| format!("hardlink target `{target}`: {r}"))?
            .ok_or_else(|| format!("hardlink target `{target}` is the root"))?;
        match place(normalized, merged_usr) {
            Placed::At(p, _) => Kind::Hardlink(p),
            Placed::TopDir(d) => return Err(format!("hardlink target `{target}` is the top directory `/{d}`")),
        }
    } else if etype.is_file() || etype.is_contiguous() {
        if raw.ends_with(b"/") {
            return Err("a regular file's name ends with `/`".to_owned());
        }
        Kind::File { offset: 0, len: 0, md5: [0; 16] }
    } else if etype.is_character_special() || etype.is_block_special() || etype.is_fifo() {
        return Err("device nodes and FIFOs are not supported (Debian packages do not ship them)".to_owned());
    } else if etype.is_gnu_sparse() {
        return Err("sparse files are not supported".to_owned());
    } else {
        return Err(format!("unsupported tar entry type `{}`", char::from(etype.as_byte()).escape_default()));
    })
}

/// Where an entry of `kind` at `path` goes in the image, and whether the merged-/usr rewrite
/// moved it; `None` for a top directory itself (`/bin`), which is dropped. A top-level symlink
/// `bin` → `usr/bin` is kept; any other top-level entry of those names is refused.
fn place_entry(path: String, kind: &Kind, merged_usr: bool) -> Result<Option<(String, bool)>, String> {
    match place(path, merged_usr) {
        Placed::At(p, moved) => Ok(Some((p, moved))),
        Placed::TopDir(d) => match kind {
            Kind::Dir => Ok(None),
            Kind::Symlink(t) if t.trim_start_matches('/').trim_end_matches('/') == format!("usr/{d}") => Ok(Some((format!("/{d}"), false))),
            _ => Err(format!("with merged /usr, `/{d}` may only be a directory or the symlink `/{d}` → `usr/{d}`")),
        },
    }
}

/// Reads `len` bytes at `offset` of the spill file.
pub(super) fn spill_range(file: &File, offset: u64, len: u64) -> io::Result<io::Take<&File>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    Ok(f.take(len))
}
