//! The `.deb` container: the `ar` members in their order (`debian-binary`, `control.tar*`,
//! `data.tar*`, `_` members skipped), their decompression, the control files read out of the
//! control member ([`read_control`]), and wanted files pulled out of the data member
//! ([`read_files`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::names::normalize_name;
use super::{entry_err, format_err, io_err, DebError, DebInfo, MAX_CONTROL_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    Control,
    Data,
}

impl Member {
    fn stem(self) -> &'static str {
        match self {
            Member::Control => "control.tar",
            Member::Data => "data.tar",
        }
    }
}

/// Whether [`visit_members`] goes on to the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

fn compression_of(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "" => "none",
        ".xz" => "xz",
        ".zst" => "zst",
        ".gz" => "gz",
        ".lzma" => "lzma",
        _ => return None,
    })
}

fn decompressor<'a, R: Read + 'a>(reader: R, compression: &'static str) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
        "lzma" => Box::new(liblzma::read::XzDecoder::new_stream(reader, liblzma::stream::Stream::new_lzma_decoder(u64::MAX)?)),
        "zst" => Box::new(zstd::stream::read::Decoder::new(reader)?),
        "gz" => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        _ => Box::new(reader),
    })
}

/// Walks the members of a `.deb`: checks `debian-binary`, skips `_` members, and hands the
/// decompressed control and data tarballs (in that order) to `visit`, which may stop early.
/// Members `visit` does not read are skipped by seeking, never read.
pub(super) fn visit_members(
    deb: &Path,
    mut visit: impl FnMut(Member, &'static str, &mut dyn Read) -> Result<Flow, DebError>,
) -> Result<(), DebError> {
    let file = File::open(deb).map_err(io_err(deb, "opening"))?;
    let mut archive = ar::Archive::new(BufReader::with_capacity(256 << 10, file));
    let mut expect = 0; // 0: debian-binary, 1: control, 2: data
    while expect < 3 {
        let Some(member) = archive.next_entry() else {
            break;
        };
        let mut member = member.map_err(io_err(deb, "reading the ar archive"))?;
        let raw = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let name = raw.trim_end_matches([' ', '/']).to_owned();
        if expect == 0 {
            if name != "debian-binary" {
                return Err(format_err(deb, format!("first member is `{name}`, not `debian-binary`")));
            }
            let mut version = Vec::new();
            (&mut member).take(64).read_to_end(&mut version).map_err(io_err(deb, "reading debian-binary"))?;
            if !version.starts_with(b"2.") {
                return Err(format_err(
                    deb,
                    format!("unsupported format version `{}` (only 2.x is known)", String::from_utf8_lossy(&version).trim()),
                ));
            }
            expect = 1;
        } else if name.starts_with('_') {
            // Reserved for additions older readers must ignore (deb(5)).
        } else {
            let kind = if expect == 1 { Member::Control } else { Member::Data };
            let compression = name
                .strip_prefix(kind.stem())
                .and_then(compression_of)
                .ok_or_else(|| format_err(deb, format!("expected `{}[.xz|.zst|.gz]` but found member `{name}`", kind.stem())))?;
            if kind == Member::Control && compression == "lzma" {
                return Err(format_err(deb, "control.tar.lzma is not a valid member"));
            }
            let flow = {
                let mut reader = decompressor(&mut member, compression).map_err(io_err(deb, format!("decompressing `{name}`")))?;
                visit(kind, compression, &mut reader)?
            };
            // Skip whatever was not read without reading it (dropping a partly read member
            // would read the rest).
            member.seek(SeekFrom::End(0)).map_err(io_err(deb, format!("skipping member `{name}`")))?;
            if flow == Flow::Stop {
                return Ok(());
            }
            expect += 1;
            continue;
        }
        member.seek(SeekFrom::End(0)).map_err(io_err(deb, format!("skipping member `{name}`")))?;
    }
    if expect < 3 {
        let missing = ["debian-binary", "control.tar", "data.tar"][expect];
        return Err(format_err(deb, format!("no `{missing}` member")));
    }
    Ok(())
}

/// Reads `control`, `md5sums` and `conffiles` out of a decompressed control tarball.
pub(super) fn read_control_tar(deb: &Path, reader: &mut dyn Read, data_compression: &'static str) -> Result<DebInfo, DebError> {
    let ctx = "reading control.tar";
    let mut archive = tar::Archive::new(reader);
    let mut control = None;
    let mut md5sums = None;
    let mut conffiles = None;
    let mut postinst = None;
    let mut others: Vec<(String, Vec<u8>, u32)> = Vec::new();
    for entry in archive.entries().map_err(io_err(deb, ctx))? {
        let mut entry = entry.map_err(io_err(deb, ctx))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Ok(Some(name)) = normalize_name(&raw) else { continue };
        let member = name[1..].to_owned();
        // A control file at the top of control.tar, with a name dpkg accepts.
        if member.is_empty() || !member.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        if entry.size() > MAX_CONTROL_FILE {
            return Err(entry_err(
                deb,
                &shown,
                format!("control.tar member of {} bytes is larger than the {MAX_CONTROL_FILE} allowed", entry.size()),
            ));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io_err(deb, format!("reading control.tar member `{shown}`")))?;
        let text = || String::from_utf8(bytes.clone()).map_err(|_| entry_err(deb, &shown, "control.tar member is not UTF-8"));
        match member.as_str() {
            "control" => control = Some(text()?),
            "md5sums" => md5sums = Some(text()?),
            "conffiles" => conffiles = Some(text()?),
            other => {
                // Kept in dpkg's info/ as they are (a script may be any bytes).
                if other == "postinst" {
                    postinst = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                others.push((member.clone(), bytes, mode));
            }
        }
    }
    let control = control.ok_or_else(|| format_err(deb, "control.tar has no `control` file"))?;
    others.sort();
    Ok(DebInfo { control, md5sums, conffiles, postinst, others, data_compression })
}

/// Reads the control member of a `.deb` (and notes the data member's compression, without
/// reading it).
pub fn read_control(deb: &Path) -> Result<DebInfo, DebError> {
    let mut control = None;
    let mut data_compression = None;
    visit_members(deb, |member, compression, reader| match member {
        Member::Control => {
            control = Some(read_control_tar(deb, reader, "none")?);
            Ok(Flow::Continue)
        }
        Member::Data => {
            data_compression = Some(compression);
            Ok(Flow::Stop)
        }
    })?;
    match (control, data_compression) {
        (Some(info), Some(data_compression)) => Ok(DebInfo { data_compression, ..info }),
        _ => Err(format_err(deb, "no control.tar or data.tar member")),
    }
}

/// Wanted regular files by path, and wanted hardlinks as (path, target path).
type Collected = (BTreeMap<String, Vec<u8>>, Vec<(String, String)>);

/// One pass over the data tarball for [`read_files`]: regular files whose image path `want`
/// accepts are read; wanted hardlinks are returned as (path, target) to resolve afterwards.
fn collect_files(deb: &Path, want: &dyn Fn(&str) -> bool) -> Result<Collected, DebError> {
    let mut found = BTreeMap::new();
    let mut links = Vec::new();
    visit_members(deb, |member, _, reader| {
        if member == Member::Control {
            return Ok(Flow::Continue);
        }
        let ctx = "reading data.tar";
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(io_err(deb, ctx))? {
            let mut entry = entry.map_err(io_err(deb, ctx))?;
            let etype = entry.header().entry_type();
            if etype.is_pax_global_extensions() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let Some(path) = normalize_name(&raw).map_err(|r| entry_err(deb, &shown, r))? else {
                continue;
            };
            let is_file = etype.is_file() || etype.is_contiguous();
            if !is_file && !etype.is_hard_link() {
                continue;
            }
            if !want(&path) {
                continue;
            }
            if is_file {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(io_err(deb, format!("reading `{shown}` of data.tar")))?;
                found.insert(path, bytes);
            } else {
                let target = entry.link_name_bytes().unwrap_or(Cow::Borrowed(b""));
                let target = normalize_name(&target)
                    .map_err(|r| entry_err(deb, &shown, format!("hardlink target: {r}")))?
                    .ok_or_else(|| entry_err(deb, &shown, "hardlink to the root"))?;
                links.push((path, target));
            }
        }
        Ok(Flow::Stop)
    })?;
    Ok((found, links))
}

/// Reads the regular files (hardlinks resolved) of a `.deb`'s data whose normalized image path
/// (`/usr/share/base-passwd/passwd.master`, as in the package: no merged-/usr rewrite) `want`
/// accepts, as (path, bytes) sorted by path. Names are checked as by [`super::install_layer`]; a path
/// listed twice yields its last contents.
pub fn read_files(deb: &Path, want: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Vec<u8>)>, DebError> {
    let (mut found, links) = collect_files(deb, want)?;
    let missing: BTreeSet<String> = links.iter().filter(|(_, t)| !found.contains_key(t)).map(|(_, t)| t.clone()).collect();
    let extra = if missing.is_empty() { BTreeMap::new() } else { collect_files(deb, &|p: &str| missing.contains(p))?.0 };
    for (path, target) in links {
        let bytes = found
            .get(&target)
            .or_else(|| extra.get(&target))
            .cloned()
            .ok_or_else(|| entry_err(deb, &path, format!("hardlink target `{target}` is not a regular file of this package")))?;
        found.insert(path, bytes);
    }
    Ok(found.into_iter().collect())
}
