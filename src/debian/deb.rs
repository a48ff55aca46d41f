//! Reading `.deb` packages and installing them as image layers, without running maintainer
//! scripts.
//!
//! A `.deb` is an `ar` archive of `debian-binary` (`2.0\n`), `control.tar[.xz|.zst|.gz]` and
//! `data.tar[.xz|.zst|.gz|.lzma]`, in that order (members whose names start with `_` are skipped,
//! as dpkg does). [`read_control`] reads the control member; [`install_layer`] turns the data
//! member into **one** reproducible layer through [`crate::layer::LayerWriter`]; [`read_files`]
//! pulls selected files out of the data member.
//!
//! # How a package becomes a layer ([`install_layer`])
//!
//! The data tarball is read **once**, in archive order. Regular file contents are spilled
//! sequentially into one anonymous temporary file in `spill_dir` (only offset, length and MD5
//! are kept in memory), so memory grows with the number of entries, never with the package's
//! bytes. The layer is then written in byte order of path, reading each file back from the spill
//! file. The result depends only on the set of entries, not on their order in the archive.
//!
//! Normalization, in order:
//!
//! * **Names.** A leading `./` (and any `.` or empty component) is dropped; the root entry
//!   (`./`) is dropped. Rejected, naming the `.deb` and the entry: names that are not UTF-8 or
//!   contain NUL, absolute names (`/etc/passwd`), names with a `..` component.
//! * **Kinds.** Directories, regular files, symlinks and hardlinks are kept. Device nodes,
//!   FIFOs and sparse files are rejected (normal Debian packages have none). A pax global
//!   header is ignored.
//! * **Metadata.** The mode is kept exactly (`& 0o7777`: setuid, setgid, sticky kept), uid and
//!   gid numerically (names dropped), `mtime = min(archive mtime, epoch)`.
//! * **Merged `/usr`** (`InstallOptions::merged_usr`, bookworm and later): every entry under
//!   `bin/`, `sbin/`, `lib/`, `lib32/`, `lib64/`, `libx32/` moves to `usr/<same>`, and so do
//!   hardlink targets, so no layer ever holds a `/bin` *directory* that would replace the
//!   `/bin → usr/bin` symlink of the base. The top directories themselves are dropped; a
//!   top-level *symlink* `bin → usr/bin` (or `/usr/bin`), as trixie's `base-files` ships, is
//!   kept; any other top-level entry of those names is an error. Symlink targets are never
//!   rewritten: they are resolved inside the image, where `/bin` is the symlink, exactly as on
//!   a merged-/usr system running dpkg.
//! * **Duplicates and collisions** (a path listed twice, or `bin/x` and `usr/bin/x` under merged
//!   `/usr`): two directories merge (equal mode/uid/gid: the earlier mtime wins; different ones:
//!   the entry that was not moved by the merged-/usr rewrite wins, and if neither or both were
//!   moved it is an error). Two non-directories merge only when identical (same kind, same
//!   content or target, same mode, uid and gid); otherwise it is an error.
//! * **Symlinks** may point anywhere (absolute or relative; they are interpreted inside the
//!   image), but an entry below a symlink of the same package (`a` → …, then `a/b`) is rejected:
//!   it would be written through the link. An entry below a non-directory is rejected too.
//! * **Hardlinks** must name a regular file of this package (the target is normalized like a
//!   name: absolute targets and `..` are rejected). In the layer, the byte-order-first path of
//!   each hardlink group carries the data and every other path of the group is a hardlink to
//!   it, all with the file's metadata, whatever order the archive had.
//! * **Parents.** Missing parent directories are added (`0755`, root, mtime `epoch`).
//!
//! # dpkg database entries
//!
//! So that scanners (Trivy, Syft, Grype) recognise the package, the same layer gets the
//! distroless-style per-package database, named after the `Package` field only (as distroless
//! does, even where architectures could clash):
//!
//! * `/var/lib/dpkg/status.d/<name>`: the control paragraph from the `.deb`, with a
//!   `Status: install ok installed` line inserted right after the `Package` line (the line
//!   rules_distroless inserts when it builds a status file; an existing `Status` field is
//!   replaced), ending with exactly one newline;
//! * `/var/lib/dpkg/status.d/<name>.md5sums`: the package's own `md5sums` control file
//!   verbatim, or, when it has none, one computed line per regular file (hardlinks included) in
//!   the same format, `<md5>  <path as in the package, without leading ./>`, sorted by path.
//!
//! Both are mode `0644`, root, mtime `epoch`. See [`dpkg_status_entry`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::layer::{Entry, EntryKind, LayerDigests, LayerError, LayerWriter};

/// Largest control-archive member (`control`, `md5sums`, `conffiles`) read into memory.
pub const MAX_CONTROL_FILE: u64 = 64 << 20;

/// Directory of the per-package dpkg database files written into each layer.
pub const INFO_DIR: &str = "/var/lib/dpkg/info";

/// The image's dpkg status file (written once per image, from every package's paragraph).
pub const STATUS_FILE: &str = "/var/lib/dpkg/status";

/// Top-level directories that are symlinks into `/usr` on a merged-/usr system.
pub use crate::layer::MERGED_USR_DIRS;

const DIR_MODE: u32 = 0o755;
const DB_FILE_MODE: u32 = 0o644;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// What the control member of a `.deb` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// The `control` file text.
    pub control: String,
    /// The `md5sums` file text, if the package has one.
    pub md5sums: Option<String>,
    /// The `conffiles` file text, if the package has one.
    pub conffiles: Option<String>,
    /// The `postinst` script, if the package has one (read for what it registers, never run).
    pub postinst: Option<String>,
    /// The other control files (maintainer scripts, `triggers`, `shlibs`, `symbols`,
    /// `templates`, `config`…): name, bytes, mode. dpkg keeps them in `info/`.
    pub others: Vec<(String, Vec<u8>, u32)>,
    /// Compression of the data member: `"xz"`, `"zst"`, `"gz"`, `"lzma"` or `"none"`.
    pub data_compression: &'static str,
}

impl DebInfo {
    /// The value of a control field (name compared case-insensitively), continuation lines
    /// joined with `\n`, surrounding whitespace trimmed. `None` when absent.
    pub fn field(&self, name: &str) -> Option<String> {
        control_field(&self.control, name)
    }

    /// The `Package` field, checked to be a valid Debian package name (it names files).
    pub fn package(&self) -> Result<String, String> {
        let name = self.field("Package").ok_or_else(|| "the control file has no `Package` field".to_owned())?;
        let valid = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'));
        if valid {
            Ok(name)
        } else {
            Err(format!("invalid package name `{name}` in the control file"))
        }
    }
}

/// Options of [`install_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Every mtime is clamped to this (`min(archive mtime, epoch)`); added entries get it.
    pub epoch: u64,
    /// Rewrite `bin/`, `sbin/`, `lib*/` entries into `usr/` (bookworm and later).
    pub merged_usr: bool,
    /// Reproduce the effects compose knows of the package's maintainer scripts in the layer
    /// (base-files' links and defaults); off when the scripts will run.
    pub emulate: bool,
    /// Image paths of regular files whose contents the caller wants too (e.g. the copyright
    /// file), read from the one pass over the data (no second decompression).
    pub keep: Vec<String>,
}

/// What [`install_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledLayer {
    /// Digests and sizes of the layer.
    pub digests: LayerDigests,
    /// Where its chunks are (with a chunk cache; see [`crate::layer::LayerWriter::finish_with_chunks`]).
    pub chunks: Vec<crate::layer::ChunkRecord>,
    /// Image paths (`/usr/bin/curl`) of the package's regular files, hardlinks and symlinks,
    /// sorted, after normalization; not directories, not added parents, not the dpkg database
    /// entries. For conflict detection between packages.
    pub files: Vec<String>,
    /// Lower-case hex MD5 of each regular file (hardlinks included), by image path.
    pub file_md5: BTreeMap<String, String>,
    /// Contents of the [`InstallOptions::keep`] paths the package has as regular files (or
    /// hardlinks to them).
    pub kept: BTreeMap<String, Vec<u8>>,
    /// The package's paragraph of the dpkg `status` file: its control file with
    /// `Status: install ok installed` and, for conffiles, `Conffiles:` with their MD5s.
    pub status: String,
    /// What its `postinst` registers with `update-alternatives`, and the triggers it is interested in.
    pub facts: ScriptFacts,
}

/// What compose learns from a package's maintainer scripts and control files without running
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScriptFacts {
    /// The name dpkg files its database entries under (`name` or `name:arch`).
    pub db_name: String,
    pub alternatives: Vec<super::alternatives::Registration>,
    /// `interest` lines of its `triggers` file: (trigger, noawait).
    pub interests: Vec<(String, bool)>,
}

/// Errors reading or installing a `.deb`. Each names the `.deb` file.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Reading the `.deb`, decompressing it, or using the spill file failed.
    #[error("{}: {context}: {source}", .deb.display())]
    Io {
        deb: PathBuf,
        context: String,
        #[source]
        source: io::Error,
    },
    /// A member's compressed data does not decode (a damaged or cut download).
    #[error("{}: the .deb is damaged: {context} failed, its data does not decompress to a tar archive ({source})", .deb.display())]
    Damaged {
        deb: PathBuf,
        context: String,
        #[source]
        source: io::Error,
    },
    /// The file is not a `.deb` this module can read.
    #[error("{}: not a valid .deb: {reason}", .deb.display())]
    Format { deb: PathBuf, reason: String },
    /// An entry of the data (or control) archive was rejected.
    #[error("{}: entry `{entry}`: {reason}", .deb.display())]
    Entry { deb: PathBuf, entry: String, reason: String },
    /// The layer writer refused an entry or failed to write.
    #[error("{}: writing the layer: {source}", .deb.display())]
    Layer {
        deb: PathBuf,
        #[source]
        source: LayerError,
    },
}

fn io_err(deb: &Path, context: impl Into<String>) -> impl FnOnce(io::Error) -> DebError {
    let deb = deb.to_path_buf();
    let context = context.into();
    move |source| {
        // Reading a member fails this way when its compressed bytes are damaged: the
        // decompressor or the tar reader then reports what it choked on, which alone says little.
        let damaged = matches!(source.kind(), io::ErrorKind::InvalidData | io::ErrorKind::Other | io::ErrorKind::UnexpectedEof);
        if damaged && context.starts_with("reading") {
            DebError::Damaged { deb, context, source }
        } else {
            DebError::Io { deb, context, source }
        }
    }
}

fn format_err(deb: &Path, reason: impl Into<String>) -> DebError {
    DebError::Format { deb: deb.to_path_buf(), reason: reason.into() }
}

fn entry_err(deb: &Path, entry: &str, reason: impl Into<String>) -> DebError {
    DebError::Entry { deb: deb.to_path_buf(), entry: entry.to_owned(), reason: reason.into() }
}

// ---------------------------------------------------------------------------
// The ar container
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
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
enum Flow {
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
fn visit_members(deb: &Path, mut visit: impl FnMut(Member, &'static str, &mut dyn Read) -> Result<Flow, DebError>) -> Result<(), DebError> {
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
fn read_control_tar(deb: &Path, reader: &mut dyn Read, data_compression: &'static str) -> Result<DebInfo, DebError> {
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

// ---------------------------------------------------------------------------
// Control files and the dpkg database entry
// ---------------------------------------------------------------------------

/// Splits a control paragraph into fields: (name, full text of the field including its
/// continuation lines, each line with its `\n`).
fn control_fields(control: &str) -> Vec<(&str, &str)> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut start: Option<(usize, &str)> = None;
    let mut offset = 0;
    for line in control.split_inclusive('\n') {
        let is_continuation = line.starts_with([' ', '\t']);
        if !is_continuation {
            if let Some((s, name)) = start.take() {
                fields.push((name, &control[s..offset]));
            }
            if line.trim().is_empty() {
                // Blank line: end of the paragraph.
                break;
            }
            let name = line.split(':').next().unwrap_or("").trim();
            start = Some((offset, name));
        }
        offset += line.len();
    }
    if let Some((s, name)) = start {
        fields.push((name, &control[s..offset]));
    }
    fields
}

fn control_field(control: &str, name: &str) -> Option<String> {
    control_fields(control).into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, text)| {
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_owned()
    })
}

/// The two dpkg database files for a package: the `status.d/<name>` paragraph (the control
/// file with `Status: install ok installed` inserted after the `Package` line, or first when
/// there is none; an existing `Status` field is replaced; exactly one trailing newline) and the
/// package's own `md5sums` (`None` when the package has none; [`install_layer`] then computes
/// one).
pub fn dpkg_status_entry(info: &DebInfo) -> (String, Option<String>) {
    const STATUS: &str = "Status: install ok installed\n";
    let mut out = String::with_capacity(info.control.len() + STATUS.len() + 1);
    let fields = control_fields(&info.control);
    let has_package = fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("Package"));
    if !has_package {
        out.push_str(STATUS);
    }
    for (name, text) in fields {
        if name.eq_ignore_ascii_case("Status") {
            continue;
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
        if name.eq_ignore_ascii_case("Package") {
            out.push_str(STATUS);
        }
    }
    (out, info.md5sums.clone())
}

/// Effects of a package's maintainer scripts that compose reproduces in the package's own layer,
/// exactly, without running them. base-files' postinst (first configuration): `/var/run` and
/// `/var/lock` become links to `/run` and `/run/lock` (mode 1777); the top-level and
/// `/usr/local` directories; `/var/mail` (2775, group mail) and the `/var/spool/mail` link;
/// `/root/.profile`, `/root/.bashrc`, `/etc/profile` and `/etc/motd` from its defaults; the
/// `/etc/dpkg/origins/default` link.
fn emulate_postinst(package: &str, nodes: &mut BTreeMap<String, Node>, epoch: u64) {
    if package != "base-files" {
        return;
    }
    let mut dir = |path: &str, mode: u32| {
        nodes.entry(path.to_owned()).or_insert(Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: epoch,
            shown: path.to_owned(),
            moved: false,
        });
    };
    dir("/run", 0o755);
    dir("/run/lock", 0o1777);
    for d in ["/mnt", "/srv", "/opt", "/etc/opt", "/var/opt", "/media"] {
        dir(d, 0o755);
    }
    for d in ["/usr/local", "/usr/local/share", "/usr/local/share/man", "/usr/local/bin", "/usr/local/games", "/usr/local/lib"] {
        dir(d, 0o755);
    }
    for d in ["/usr/local/include", "/usr/local/sbin", "/usr/local/src", "/usr/local/etc"] {
        dir(d, 0o755);
    }
    nodes.entry("/var/mail".to_owned()).or_insert(Node {
        kind: Kind::Dir,
        mode: 0o2775,
        uid: 0,
        gid: 8,
        mtime: epoch,
        shown: "/var/mail".to_owned(),
        moved: false,
    });
    // install_from_default: copies of the defaults, as `cp -p` makes them.
    for (from, to) in
        [("dot.profile", "/root/.profile"), ("dot.bashrc", "/root/.bashrc"), ("profile", "/etc/profile"), ("motd", "/etc/motd")]
    {
        let source = nodes.get(&format!("/usr/share/base-files/{from}")).filter(|n| matches!(n.kind, Kind::File { .. })).cloned();
        if let (Some(mut n), false) = (source, nodes.contains_key(to)) {
            n.shown = to.to_owned();
            n.moved = false;
            nodes.insert(to.to_owned(), n);
        }
    }
    let origins = nodes.contains_key("/etc/dpkg/origins/debian");
    let mut link = |path: &str, target: &str| {
        nodes.entry(path.to_owned()).or_insert(Node {
            kind: Kind::Symlink(target.to_owned()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: epoch,
            shown: path.to_owned(),
            moved: false,
        });
    };
    link("/var/spool/mail", "../mail");
    link("/usr/local/man", "share/man");
    if origins {
        link("/etc/dpkg/origins/default", "debian");
    }
    for (path, target) in [("/var/run", "/run"), ("/var/lock", "/run/lock")] {
        let empty_dir = matches!(nodes.get(path).map(|n| &n.kind), Some(Kind::Dir))
            && !nodes.keys().any(|k| k.strip_prefix(path).is_some_and(|r| r.starts_with('/')));
        if empty_dir {
            if let Some(n) = nodes.get_mut(path) {
                n.kind = Kind::Symlink(target.to_owned());
                n.mode = 0o777;
            }
        }
    }
}

/// The name dpkg files a package's database entries under: `name:arch` for `Multi-Arch: same`
/// packages (which may be installed for several architectures), else `name`.
pub fn dpkg_name(info: &DebInfo, name: &str) -> String {
    let same = info.field("Multi-Arch").is_some_and(|m| m.eq_ignore_ascii_case("same"));
    match (same, info.field("Architecture")) {
        (true, Some(arch)) if arch != "all" => format!("{name}:{arch}"),
        _ => name.to_owned(),
    }
}

/// A status paragraph with a `Conffiles:` field (each conffile with the MD5 of what was
/// installed, as dpkg records it), placed before `Description` (dpkg's order); unchanged when the
/// package has no conffiles.
fn with_conffiles(status: &str, conffiles: Option<&str>, md5_of: &dyn Fn(&str) -> Option<String>) -> String {
    let lines: Vec<String> = conffiles
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| p.starts_with('/'))
        .map(|p| format!(" {p} {}", md5_of(p).unwrap_or_else(|| "newconffile".to_owned())))
        .collect();
    if lines.is_empty() {
        return status.to_owned();
    }
    let field = format!("Conffiles:\n{}\n", lines.join("\n"));
    let mut out = String::with_capacity(status.len() + field.len());
    let mut placed = false;
    for (name, text) in control_fields(status) {
        if !placed && name.eq_ignore_ascii_case("Description") {
            out.push_str(&field);
            placed = true;
        }
        if name.eq_ignore_ascii_case("Conffiles") {
            continue;
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    if !placed {
        out.push_str(&field);
    }
    out
}

/// The fields of a status paragraph in the order dpkg writes them (lib/dpkg's field table), the
/// others after them in their own order.
fn dpkg_field_order(paragraph: &str) -> String {
    const ORDER: &[&str] = &[
        "Package",
        "Essential",
        "Protected",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Origin",
        "Maintainer",
        "Bugs",
        "Architecture",
        "Multi-Arch",
        "Source",
        "Version",
        "Config-Version",
        "Replaces",
        "Provides",
        "Depends",
        "Pre-Depends",
        "Recommends",
        "Suggests",
        "Breaks",
        "Conflicts",
        "Enhances",
        "Conffiles",
        "Description",
        "Triggers-Pending",
        "Triggers-Awaited",
    ];
    let fields = control_fields(paragraph);
    let rank = |name: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(name)).unwrap_or(ORDER.len());
    let mut sorted: Vec<(usize, usize, &str)> = fields.iter().enumerate().map(|(i, (n, t))| (rank(n), i, *t)).collect();
    sorted.sort();
    let mut out = String::with_capacity(paragraph.len());
    for (_, _, text) in sorted {
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Where a package path (`/bin/ls`) is in the image (`/usr/bin/ls` with merged /usr).
fn place_path(path: &str, merged_usr: bool) -> String {
    match place(path.to_owned(), merged_usr) {
        Placed::At(p, _) => p,
        Placed::TopDir(d) => format!("/{d}"),
    }
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Normalizes an archive name to an image path (`./usr/bin/x` → `/usr/bin/x`); `None` for the
/// root (`./`, `.`). Rejects non-UTF-8, NUL, absolute names and `..`.
fn normalize_name(raw: &[u8]) -> Result<Option<String>, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8".to_owned())?;
    if name.contains('\0') {
        return Err("the name contains a NUL byte".to_owned());
    }
    // Names go into line-based files (dpkg's lists and md5sums): no line breaks or other controls.
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("the name contains the control character {:?}; dpkg's line-based database could not hold it", c));
    }
    if name.starts_with('/') {
        return Err("absolute names are not allowed".to_owned());
    }
    let mut out = String::with_capacity(name.len() + 1);
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed".to_owned()),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Where a normalized path lands under merged /usr.
enum Placed {
    /// At this path; `true` when the rewrite moved it.
    At(String, bool),
    /// It is one of the top directories themselves (`/bin`).
    TopDir(&'static str),
}

fn place(path: String, merged_usr: bool) -> Placed {
    if !merged_usr {
        return Placed::At(path, false);
    }
    let rest = &path[1..];
    let (top, below) = match rest.split_once('/') {
        Some((t, b)) => (t, Some(b)),
        None => (rest, None),
    };
    match MERGED_USR_DIRS.iter().find(|d| **d == top) {
        None => Placed::At(path, false),
        Some(d) => match below {
            None => Placed::TopDir(d),
            Some(_) => Placed::At(format!("/usr{path}"), true),
        },
    }
}

use crate::layer::parent_of;

// ---------------------------------------------------------------------------
// Reading the data tarball
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
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
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    /// The entry's name as in the archive, for messages.
    shown: String,
    /// Moved by the merged-/usr rewrite.
    moved: bool,
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
fn insert_node(map: &mut BTreeMap<String, Node>, path: String, node: Node) -> Result<(), String> {
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

/// Sequential writer of file contents into the spill file.
struct Spill<'a> {
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
struct Listed {
    /// Path as in the package, without leading `/` (before the merged-/usr rewrite).
    package_path: String,
    /// Image path of the node holding it (a file, or a hardlink resolved later).
    image_path: String,
}

/// Everything pass 1 learns from the data tarball.
struct Scanned {
    nodes: BTreeMap<String, Node>,
    listed: Vec<Listed>,
    /// Every entry's path as in the package, in archive order, as dpkg's `info/*.list` has them
    /// (`/.` for the root).
    dpkg_list: Vec<String>,
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

/// Pass 1 of [`install_layer`]: reads the data tarball once, spilling file contents.
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
        let header = entry.header();
        let etype = header.entry_type();
        if etype.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: String| entry_err(deb, &shown, reason);
        let header_err = |what: &str| io_err(deb, format!("reading the {what} of `{shown}` in {member}"));
        let mode = header.mode().map_err(header_err("mode"))? & 0o7777;
        let uid = header.uid().map_err(header_err("uid"))?;
        let gid = header.gid().map_err(header_err("gid"))?;
        let uid = u32::try_from(uid).map_err(|_| bad(format!("uid {uid} is too large")))?;
        let gid = u32::try_from(gid).map_err(|_| bad(format!("gid {gid} is too large")))?;
        let mut mtime = header.mtime().map_err(header_err("mtime"))?;
        if let Some(pax) = pax_mtime(&mut entry).map_err(header_err("pax mtime"))? {
            mtime = pax;
        }
        let mtime = mtime.min(opts.epoch);

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
        let is_file = etype.is_file() || etype.is_contiguous();

        // Link targets.
        let link = || -> Result<String, DebError> {
            let bytes = entry.link_name_bytes().ok_or_else(|| bad("the link has no target".to_owned()))?;
            String::from_utf8(bytes.into_owned()).map_err(|_| bad("the link target is not UTF-8".to_owned()))
        };
        let kind = if etype.is_dir() {
            Kind::Dir
        } else if etype.is_symlink() {
            let target = link()?;
            if target.is_empty() || target.contains('\0') {
                return Err(bad(format!("symlink target `{target}` is empty or contains NUL")));
            }
            Kind::Symlink(target)
        } else if etype.is_hard_link() {
            let target = link()?;
            let normalized = normalize_name(target.as_bytes())
                .map_err(|r| bad(format!("hardlink target `{target}`: {r}")))?
                .ok_or_else(|| bad(format!("hardlink target `{target}` is the root")))?;
            match place(normalized, opts.merged_usr) {
                Placed::At(p, _) => Kind::Hardlink(p),
                Placed::TopDir(d) => return Err(bad(format!("hardlink target `{target}` is the top directory `/{d}`"))),
            }
        } else if is_file {
            if raw.ends_with(b"/") {
                return Err(bad("a regular file's name ends with `/`".to_owned()));
            }
            Kind::File { offset: 0, len: 0, md5: [0; 16] }
        } else if etype.is_character_special() || etype.is_block_special() || etype.is_fifo() {
            return Err(bad("device nodes and FIFOs are not supported (Debian packages do not ship them)".to_owned()));
        } else if etype.is_gnu_sparse() {
            return Err(bad("sparse files are not supported".to_owned()));
        } else {
            return Err(bad(format!("unsupported tar entry type `{}`", char::from(etype.as_byte()).escape_default())));
        };

        let (path, moved) = match place(path, opts.merged_usr) {
            Placed::At(p, moved) => (p, moved),
            Placed::TopDir(d) => match &kind {
                Kind::Dir => continue,
                Kind::Symlink(t) if t.trim_start_matches('/').trim_end_matches('/') == format!("usr/{d}") => (format!("/{d}"), false),
                _ => {
                    return Err(bad(format!(
                        "with merged /usr, `/{d}` may only be a directory or the symlink \
                         `/{d}` → `usr/{d}`"
                    )))
                }
            },
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
fn check_parents(deb: &Path, nodes: &BTreeMap<String, Node>) -> Result<(), DebError> {
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

/// Reads `len` bytes at `offset` of the spill file.
fn spill_range(file: &File, offset: u64, len: u64) -> io::Result<io::Take<&File>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    Ok(f.take(len))
}

/// Streams the package's data tarball into ONE normalized layer written to `sink`, with its
/// dpkg database entries (see the module documentation for every rule). File contents are
/// spilled to an anonymous temporary file in `spill_dir` while reading. The package name for
/// the database entries is the control file's `Package` field.
pub fn install_layer<W: Write>(
    deb: &Path,
    opts: &InstallOptions,
    mut writer: LayerWriter<W>,
    spill_dir: &Path,
) -> Result<(W, InstalledLayer), DebError> {
    let spill_file = tempfile::tempfile_in(spill_dir).map_err(io_err(deb, format!("creating a spill file in {}", spill_dir.display())))?;
    let mut info = None;
    let mut scanned = None;
    {
        let mut spill = Spill { out: BufWriter::with_capacity(256 << 10, &spill_file), offset: 0, buf: vec![0; 128 << 10] };
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
    let (Some(info), Some(scanned)) = (info, scanned) else {
        return Err(format_err(deb, "no control.tar or data.tar member"));
    };
    let Scanned { mut nodes, listed, dpkg_list } = scanned;
    let name = info.package().map_err(|r| format_err(deb, r))?;

    // Hardlinks: resolve each to its file, before the database entries join the map.
    let mut resolved: HashMap<String, String> = HashMap::new();
    for (path, node) in &nodes {
        if let Kind::Hardlink(target) = &node.kind {
            let file = resolve_hardlink(&nodes, target).map_err(|r| entry_err(deb, &node.shown, r))?;
            resolved.insert(path.clone(), file.to_owned());
        }
    }

    // What the caller gets about the package's own files.
    let md5_of = |path: &str| -> Option<[u8; 16]> {
        let file = resolved.get(path).map_or(path, String::as_str);
        match nodes.get(file).map(|n| &n.kind) {
            Some(Kind::File { md5, .. }) => Some(*md5),
            _ => None,
        }
    };
    let mut files = Vec::new();
    let mut file_md5 = BTreeMap::new();
    for (path, node) in &nodes {
        match node.kind {
            Kind::File { .. } | Kind::Hardlink(_) => {
                files.push(path.clone());
                if let Some(md5) = md5_of(path) {
                    file_md5.insert(path.clone(), hex::encode(md5));
                }
            }
            Kind::Symlink(_) => files.push(path.clone()),
            Kind::Dir | Kind::Inline(_) => {}
        }
    }

    let mut kept = BTreeMap::new();
    for want in &opts.keep {
        let file = resolved.get(want).map_or(want.as_str(), String::as_str);
        if let Some(Kind::File { offset, len, .. }) = nodes.get(file).map(|n| &n.kind) {
            let mut v = Vec::with_capacity(*len as usize);
            spill_range(&spill_file, *offset, *len)
                .and_then(|mut r| r.read_to_end(&mut v))
                .map_err(io_err(deb, "reading the spill file"))?;
            kept.insert(want.clone(), v);
        }
    }

    // The dpkg database entries.
    let (status, md5sums) = dpkg_status_entry(&info);
    let md5sums = md5sums.unwrap_or_else(|| {
        let mut lines: Vec<(&str, String)> =
            listed.iter().filter_map(|l| md5_of(&l.image_path).map(|m| (l.package_path.as_str(), hex::encode(m)))).collect();
        lines.sort();
        lines.dedup();
        lines.into_iter().map(|(p, m)| format!("{m}  {p}\n")).collect()
    });
    // dpkg's own database files: info/<name>.list, .md5sums, .conffiles; the status paragraph
    // goes to the caller, for the image's one `status` file.
    let db = dpkg_name(&info, &name);
    let mut list: String = dpkg_list.iter().map(|p| format!("{p}\n")).collect();
    if list.is_empty() {
        list.push_str("/.\n");
    }
    let mut db_files = vec![(format!("{INFO_DIR}/{db}.list"), list), (format!("{INFO_DIR}/{db}.md5sums"), md5sums)];
    if let Some(c) = info.conffiles.as_ref().filter(|c| !c.trim().is_empty()) {
        db_files.push((format!("{INFO_DIR}/{db}.conffiles"), c.clone()));
    }
    let status = dpkg_field_order(&with_conffiles(&status, info.conffiles.as_deref(), &|p: &str| {
        md5_of(&place_path(p, opts.merged_usr)).map(hex::encode)
    }));
    // The package's other control files: maintainer scripts (executable), triggers, shlibs…
    let mut db_files: Vec<(String, Vec<u8>, u32)> = db_files.into_iter().map(|(p, c)| (p, c.into_bytes(), DB_FILE_MODE)).collect();
    for (member, bytes, mode) in &info.others {
        let mode = if *mode & 0o111 != 0 { 0o755 } else { DB_FILE_MODE };
        db_files.push((format!("{INFO_DIR}/{db}.{member}"), bytes.clone(), mode));
    }
    for (path, content, mode) in db_files {
        if nodes.contains_key(&path) {
            return Err(entry_err(deb, &path, "the package ships a file at its own dpkg database path"));
        }
        let node = Node { kind: Kind::Inline(content), mode, uid: 0, gid: 0, mtime: opts.epoch, shown: path.clone(), moved: false };
        nodes.insert(path, node);
    }

    if opts.emulate {
        emulate_postinst(&name, &mut nodes, opts.epoch);
    }
    check_parents(deb, &nodes)?;

    // Missing parents.
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
        let node = Node { kind: Kind::Dir, mode: DIR_MODE, uid: 0, gid: 0, mtime: opts.epoch, shown: path.clone(), moved: false };
        nodes.insert(path, node);
    }

    // Hardlink groups: the byte-order-first path carries the data.
    let mut primary: HashMap<&str, &str> = HashMap::new();
    for (link, file) in &resolved {
        let p = primary.entry(file.as_str()).or_insert(file.as_str());
        if link.as_str() < *p {
            *p = link.as_str();
        }
    }

    // Write the layer.
    let layer_err = |source| DebError::Layer { deb: deb.to_path_buf(), source };
    for (path, node) in &nodes {
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
                let file = resolved.get(path).map_or(path.as_str(), String::as_str);
                let file_node = nodes.get(file).ok_or_else(|| entry_err(deb, &node.shown, "hardlink target vanished"))?;
                meta = file_node;
                let first = primary.get(file).copied().unwrap_or(file);
                if first == path.as_str() {
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
        let entry = Entry { path: path.clone(), kind, mode: meta.mode, uid: meta.uid, gid: meta.gid, mtime: meta.mtime };
        match data_of {
            None => writer.append(&entry, None),
            Some(Kind::Inline(bytes)) => writer.append(&entry, Some(&mut &bytes[..])),
            Some(Kind::File { offset, len, .. }) => {
                let mut data = spill_range(&spill_file, *offset, *len).map_err(io_err(deb, "reading the spill file"))?;
                writer.append(&entry, Some(&mut data))
            }
            Some(_) => return Err(entry_err(deb, &node.shown, "no data for a file entry")),
        }
        .map_err(layer_err)?;
    }
    let (sink, digests, chunks) = writer.finish_with_chunks().map_err(layer_err)?;
    let interests = info
        .others
        .iter()
        .filter(|(n, _, _)| n == "triggers")
        .flat_map(|(_, b, _)| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    match (w.next(), w.next()) {
                        (Some("interest" | "interest-await"), Some(t)) => Some((t.to_owned(), false)),
                        (Some("interest-noawait"), Some(t)) => Some((t.to_owned(), true)),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let facts = ScriptFacts {
        db_name: db.clone(),
        alternatives: info.postinst.as_deref().map(super::alternatives::registrations).unwrap_or_default(),
        interests,
    };
    Ok((sink, InstalledLayer { digests, chunks, files, file_md5, kept, status, facts }))
}

// ---------------------------------------------------------------------------
// read_files
// ---------------------------------------------------------------------------

/// One pass over the data tarball for [`read_files`]: regular files whose image path `want`
/// accepts are read; wanted hardlinks are returned as (path, target) to resolve afterwards.
/// Wanted regular files by path, and wanted hardlinks as (path, target path).
type Collected = (BTreeMap<String, Vec<u8>>, Vec<(String, String)>);

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
/// accepts, as (path, bytes) sorted by path. Names are checked as by [`install_layer`]; a path
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;
    use std::time::{Duration, UNIX_EPOCH};

    const EPOCH: u64 = 1_700_000_000;
    const OLD: u64 = 1_000_000_000;
    const LONG: &str = "a-very-long-file-name-that-does-not-fit-the-one-hundred-byte-ustar-name-field-\
                        at-all-because-it-goes-on-and-on-and-on.txt";

    const CONTROL: &str = "Package: testpkg\nVersion: 1:1.0-1\nArchitecture: amd64\n\
                           Maintainer: Test <test@example.org>\nInstalled-Size: 12\n\
                           Description: a test package\n multi-line description\n .\n end\n";

    // ---- building .debs -----------------------------------------------------------------

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).expect("set mtime");
    }

    /// The test package's tree (with `DEBIAN/`), under `root`.
    fn make_tree(root: &Path, with_md5sums: bool) {
        write(&root.join("DEBIAN/control"), CONTROL.as_bytes(), 0o644);
        write(&root.join("etc/testpkg.conf"), b"key = value\n", 0o644);
        write(&root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
        write(&root.join("usr/bin/suid"), b"\x7fELF setuid", 0o755);
        fs::set_permissions(root.join("usr/bin/suid"), fs::Permissions::from_mode(0o4755)).expect("chmod suid");
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/hard")).expect("hardlink");
        symlink("tool", root.join("usr/bin/link")).expect("symlink");
        write(&root.join("bin/mytool"), b"mytool", 0o755);
        write(&root.join("lib/x86_64-linux-gnu/libfoo.so.1"), b"\x7fELF lib", 0o644);
        symlink("libfoo.so.1", root.join("lib/x86_64-linux-gnu/libfoo.so")).expect("symlink");
        write(&root.join("usr/share/doc/testpkg/README"), b"read me\n", 0o644);
        set_mtime(&root.join("usr/share/doc/testpkg/README"), OLD);
        write(&root.join("usr/share/testpkg").join(LONG), b"long name\n", 0o600);
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod dir");
            for e in fs::read_dir(&d).expect("readdir") {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_dir() {
                    dirs.push(e.path());
                }
            }
        }
        if with_md5sums {
            let mut sums = String::new();
            for rel in ["bin/mytool", "etc/testpkg.conf", "usr/bin/hard", "usr/bin/suid", "usr/bin/tool"] {
                let data = fs::read(root.join(rel)).expect("read");
                sums.push_str(&format!("{}  {rel}\n", hex::encode(Md5::digest(&data))));
            }
            write(&root.join("DEBIAN/md5sums"), sums.as_bytes(), 0o644);
        }
    }

    /// Builds the test package with `dpkg-deb -Z<compression>`.
    fn dpkg_build(dir: &Path, compression: &str, with_md5sums: bool) -> PathBuf {
        let root = dir.join(format!("root-{compression}-{with_md5sums}"));
        make_tree(&root, with_md5sums);
        let out = dir.join(format!("testpkg-{compression}-{with_md5sums}.deb"));
        let status = Command::new("dpkg-deb")
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("--root-owner-group")
            .arg(format!("-Z{compression}"))
            .arg("--build")
            .arg(&root)
            .arg(&out)
            .output()
            .expect("run dpkg-deb");
        assert!(status.status.success(), "dpkg-deb failed: {}", String::from_utf8_lossy(&status.stderr));
        out
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 1).read_to_end(&mut out).expect("xz");
        out
    }

    fn ar_deb(path: &Path, control_tar_xz: &[u8], data_member: &str, data: &[u8]) {
        let mut b = ar::Builder::new(fs::File::create(path).expect("create deb"));
        for (name, bytes) in [("debian-binary", &b"2.0\n"[..]), ("control.tar.xz", control_tar_xz), (data_member, data)] {
            b.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).expect("ar append");
        }
    }

    fn control_tar_xz(control: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(control.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "./control", control.as_bytes()).expect("control");
        xz(&b.into_inner().expect("tar"))
    }

    /// A raw tar entry, names written byte for byte (no validation).
    struct Raw<'a> {
        name: &'a [u8],
        kind: tar::EntryType,
        mode: u32,
        link: &'a [u8],
        data: &'a [u8],
    }

    fn raw(name: &str, kind: tar::EntryType, link: &str, data: &'static [u8]) -> Raw<'static> {
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let link: &'static str = Box::leak(link.to_owned().into_boxed_str());
        Raw {
            name: name.as_bytes(),
            kind,
            mode: if kind == tar::EntryType::Directory { 0o755 } else { 0o644 },
            link: link.as_bytes(),
            data,
        }
    }

    fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
            h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
            h.set_entry_type(e.kind);
            h.set_mode(e.mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(EPOCH + 100);
            h.set_size(e.data.len() as u64);
            h.set_cksum();
            b.append(&h, e.data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn craft_deb(dir: &Path, file: &str, entries: &[Raw<'_>]) -> PathBuf {
        let path = dir.join(file);
        ar_deb(&path, &control_tar_xz(CONTROL), "data.tar.xz", &xz(&raw_tar(entries)));
        path
    }

    /// Rebuilds `deb` with the entries of its data tarball in reverse order.
    fn reversed_deb(deb: &Path, out: &Path) {
        let mut archive = ar::Archive::new(fs::File::open(deb).expect("open"));
        let mut control = Vec::new();
        let mut data = Vec::new();
        while let Some(m) = archive.next_entry() {
            let mut m = m.expect("member");
            let name = String::from_utf8_lossy(m.header().identifier()).into_owned();
            if name.starts_with("control.tar") {
                m.read_to_end(&mut control).expect("control");
            } else if name.starts_with("data.tar") {
                let mut d = liblzma::read::XzDecoder::new(&mut m);
                d.read_to_end(&mut data).expect("data");
            }
        }
        struct E {
            header: tar::Header,
            path: Vec<u8>,
            link: Option<Vec<u8>>,
            data: Vec<u8>,
        }
        let mut entries = Vec::new();
        let mut tar_in = tar::Archive::new(&data[..]);
        for e in tar_in.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read");
            entries.push(E {
                header: e.header().clone(),
                path: e.path_bytes().into_owned(),
                link: e.link_name_bytes().map(Cow::into_owned),
                data: bytes,
            });
        }
        entries.reverse();
        let mut b = tar::Builder::new(Vec::new());
        for mut e in entries {
            let path = String::from_utf8(e.path).expect("utf8");
            match e.link {
                Some(link) => {
                    let link = String::from_utf8(link).expect("utf8");
                    b.append_link(&mut e.header, &path, &link).expect("link");
                }
                None => b.append_data(&mut e.header, &path, &e.data[..]).expect("data"),
            }
        }
        let tarball = b.into_inner().expect("tar");
        let mut w = ar::Builder::new(fs::File::create(out).expect("create"));
        for (name, bytes) in [("debian-binary", b"2.0\n".to_vec()), ("control.tar.xz", control), ("data.tar.xz", xz(&tarball))] {
            w.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), &bytes[..]).expect("ar");
        }
    }

    // ---- reading layers -----------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Hdr {
        path: String,
        typ: u8,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        data: Vec<u8>,
    }

    fn read_layer(gz: &[u8]) -> Vec<Hdr> {
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
        for e in archive.entries().expect("entries") {
            let mut e = e.expect("entry");
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            assert_eq!(h.username_bytes(), Some(&b""[..]), "uname dropped");
            assert_eq!(h.groupname_bytes(), Some(&b""[..]), "gname dropped");
            out.push(Hdr {
                path: String::from_utf8(e.path_bytes().into_owned()).expect("utf8 path"),
                typ: h.entry_type().as_byte(),
                mode: h.mode().expect("mode"),
                uid: h.uid().expect("uid"),
                gid: h.gid().expect("gid"),
                mtime: h.mtime().expect("mtime"),
                link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).expect("utf8 link")),
                data,
            });
        }
        out
    }

    fn install(deb: &Path, merged_usr: bool) -> (Vec<u8>, InstalledLayer) {
        let spill = tempfile::tempdir().expect("spill dir");
        let opts = InstallOptions { epoch: EPOCH, merged_usr, emulate: true, keep: vec![] };
        install_layer(deb, &opts, LayerWriter::new(Vec::new()), spill.path()).expect("install")
    }

    fn find<'a>(layer: &'a [Hdr], path: &str) -> &'a Hdr {
        layer.iter().find(|h| h.path == path).unwrap_or_else(|| panic!("no `{path}` in layer: {:#?}", paths(layer)))
    }

    fn paths(layer: &[Hdr]) -> Vec<&str> {
        layer.iter().map(|h| h.path.as_str()).collect()
    }

    fn md5_hex(data: &[u8]) -> String {
        hex::encode(Md5::digest(data))
    }

    fn install_err(deb: &Path, merged_usr: bool) -> String {
        let spill = tempfile::tempdir().expect("spill dir");
        let opts = InstallOptions { epoch: EPOCH, merged_usr, emulate: true, keep: vec![] };
        match install_layer(deb, &opts, LayerWriter::new(Vec::new()), spill.path()) {
            Ok(_) => panic!("{} was accepted", deb.display()),
            Err(e) => e.to_string(),
        }
    }

    // ---- tests --------------------------------------------------------------------------

    #[test]
    fn installs_a_dpkg_built_package_with_merged_usr() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "xz", true);
        let (gz, installed) = install(&deb, true);
        let layer = read_layer(&gz);
        let long = format!("usr/share/testpkg/{LONG}");
        let expected = vec![
            "etc/",
            "etc/testpkg.conf",
            "usr/",
            "usr/bin/",
            "usr/bin/hard",
            "usr/bin/link",
            "usr/bin/mytool",
            "usr/bin/suid",
            "usr/bin/tool",
            "usr/lib/",
            "usr/lib/x86_64-linux-gnu/",
            "usr/lib/x86_64-linux-gnu/libfoo.so",
            "usr/lib/x86_64-linux-gnu/libfoo.so.1",
            "usr/share/",
            "usr/share/doc/",
            "usr/share/doc/testpkg/",
            "usr/share/doc/testpkg/README",
            "usr/share/testpkg/",
            long.as_str(),
            "var/",
            "var/lib/",
            "var/lib/dpkg/",
            "var/lib/dpkg/info/",
            "var/lib/dpkg/info/testpkg.list",
            "var/lib/dpkg/info/testpkg.md5sums",
        ];
        assert_eq!(paths(&layer), expected);

        // Every header, field by field.
        for h in &layer {
            assert_eq!((h.uid, h.gid), (0, 0), "{}", h.path);
            let is_dir = h.path.ends_with('/');
            match h.path.as_str() {
                "usr/bin/suid" => {
                    assert_eq!((h.typ, h.mode), (b'0', 0o4755));
                    assert_eq!(h.data, b"\x7fELF setuid");
                }
                "usr/bin/hard" => {
                    // Byte-order-first path of the hardlink group carries the data.
                    assert_eq!((h.typ, h.mode), (b'0', 0o755));
                    assert_eq!(h.data, b"#!/bin/sh\necho tool\n");
                }
                "usr/bin/tool" => {
                    assert_eq!((h.typ, h.mode), (b'1', 0o755));
                    assert_eq!(h.link.as_deref(), Some("usr/bin/hard"));
                    assert!(h.data.is_empty());
                }
                "usr/bin/link" => {
                    assert_eq!((h.typ, h.mode), (b'2', 0o777));
                    assert_eq!(h.link.as_deref(), Some("tool"));
                }
                "usr/bin/mytool" => {
                    assert_eq!((h.typ, h.mode), (b'0', 0o755));
                    assert_eq!(h.data, b"mytool");
                }
                "usr/lib/x86_64-linux-gnu/libfoo.so" => {
                    assert_eq!(h.typ, b'2');
                    assert_eq!(h.link.as_deref(), Some("libfoo.so.1"));
                }
                "usr/lib/x86_64-linux-gnu/libfoo.so.1" => {
                    assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o644, &b"\x7fELF lib"[..]));
                }
                "etc/testpkg.conf" => {
                    assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o644, &b"key = value\n"[..]));
                }
                "usr/share/doc/testpkg/README" => {
                    assert_eq!((h.typ, h.mode), (b'0', 0o644));
                    assert_eq!(h.mtime, OLD, "older mtimes are kept");
                }
                p if p == long => {
                    assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o600, &b"long name\n"[..]));
                }
                p if p.starts_with("var/lib/dpkg/info/testpkg.") => {
                    assert_eq!((h.typ, h.mode), (b'0', 0o644));
                }
                _ => {
                    assert!(is_dir, "unexpected {h:?}");
                    assert_eq!((h.typ, h.mode), (b'5', 0o755), "{}", h.path);
                }
            }
            if h.path != "usr/share/doc/testpkg/README" {
                assert_eq!(h.mtime, EPOCH, "{} clamped", h.path);
            }
        }

        // The dpkg database entries: the status paragraph for the image's status file, the list of
        // every path as in the package (archive order, before the merged-/usr rewrite), md5sums.
        let status_text = installed.status.clone();
        let list = String::from_utf8(find(&layer, "var/lib/dpkg/info/testpkg.list").data.clone()).expect("utf8");
        assert!(list.starts_with("/.\n") && list.contains("\n/bin/mytool\n") && !list.contains("/usr/bin/mytool"), "{list}");
        assert_eq!(
            status_text,
            "Package: testpkg\nStatus: install ok installed\nInstalled-Size: 12\n\
             Maintainer: Test <test@example.org>\nArchitecture: amd64\nVersion: 1:1.0-1\n\
             Description: a test package\n multi-line description\n .\n end\n",
            "dpkg's field order"
        );
        let sums = find(&layer, "var/lib/dpkg/info/testpkg.md5sums");
        let info = read_control(&deb).expect("control");
        assert_eq!(Some(String::from_utf8(sums.data.clone()).expect("utf8")), info.md5sums);

        // What the caller gets back.
        assert_eq!(
            installed.files,
            vec![
                "/etc/testpkg.conf".to_owned(),
                "/usr/bin/hard".to_owned(),
                "/usr/bin/link".to_owned(),
                "/usr/bin/mytool".to_owned(),
                "/usr/bin/suid".to_owned(),
                "/usr/bin/tool".to_owned(),
                "/usr/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
                "/usr/lib/x86_64-linux-gnu/libfoo.so.1".to_owned(),
                "/usr/share/doc/testpkg/README".to_owned(),
                format!("/{long}"),
            ]
        );
        assert_eq!(installed.file_md5.len(), 8);
        assert_eq!(installed.file_md5["/usr/bin/tool"], md5_hex(b"#!/bin/sh\necho tool\n"));
        assert_eq!(installed.file_md5["/usr/bin/hard"], md5_hex(b"#!/bin/sh\necho tool\n"));
        assert_eq!(installed.file_md5["/usr/bin/mytool"], md5_hex(b"mytool"));
        assert_eq!(installed.digests.size, gz.len() as u64);
        let mut tar_bytes = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).expect("gunzip");
        assert_eq!(installed.digests.uncompressed_size, tar_bytes.len() as u64);
        use sha2::Digest as _;
        let diff_id: [u8; 32] = sha2::Sha256::digest(&tar_bytes).into();
        assert_eq!(installed.digests.diff_id, diff_id);
    }

    #[test]
    fn without_merged_usr_paths_stay() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "xz", true);
        let (gz, installed) = install(&deb, false);
        let layer = read_layer(&gz);
        for p in ["bin/", "bin/mytool", "lib/", "lib/x86_64-linux-gnu/libfoo.so.1"] {
            find(&layer, p);
        }
        assert!(!paths(&layer).contains(&"usr/bin/mytool"));
        assert!(installed.files.contains(&"/bin/mytool".to_owned()));
    }

    #[test]
    fn all_compressions_give_the_same_layer_and_it_is_reproducible() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut digests = Vec::new();
        for (flag, name) in [("xz", "xz"), ("gzip", "gz"), ("zstd", "zst"), ("none", "none")] {
            let deb = dpkg_build(dir.path(), flag, true);
            assert_eq!(read_control(&deb).expect("control").data_compression, name);
            let (a, da) = install(&deb, true);
            let (b, db) = install(&deb, true);
            assert_eq!(a, b, "{flag}: same bytes twice");
            assert_eq!(da, db);
            digests.push((flag, da.digests, a));
        }
        for (flag, d, bytes) in &digests[1..] {
            assert_eq!(*d, digests[0].1, "{flag} vs xz");
            assert_eq!(*bytes, digests[0].2, "{flag} vs xz");
        }
    }

    #[test]
    fn archive_order_does_not_matter() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "xz", true);
        let rev = dir.path().join("reversed.deb");
        reversed_deb(&deb, &rev);
        // The reversal really changed the data order.
        let names = |d: &Path| {
            let out = Command::new("dpkg-deb").arg("-c").arg(d).output().expect("dpkg-deb -c");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_ne!(names(&deb), names(&rev));
        let (a, _) = install(&deb, true);
        let (b, _) = install(&rev, true);
        // Everything but dpkg's file list, which is in archive order, as dpkg writes it.
        let without_list = |gz: &[u8]| {
            read_layer(gz)
                .into_iter()
                .map(|mut h| {
                    if h.path.ends_with(".list") {
                        h.data.clear();
                    }
                    h
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(without_list(&a), without_list(&b));
        let list = |gz: &[u8]| read_layer(gz).into_iter().find(|h| h.path.ends_with(".list")).map(|h| h.data).unwrap_or_default();
        let sorted = |v: Vec<u8>| {
            let mut l: Vec<String> = String::from_utf8(v).expect("utf8").lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(list(&a)), sorted(list(&b)));
    }

    #[test]
    fn computes_md5sums_when_the_package_has_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "zstd", false);
        assert_eq!(read_control(&deb).expect("control").md5sums, None);
        let (gz, _) = install(&deb, true);
        let layer = read_layer(&gz);
        let sums = String::from_utf8(find(&layer, "var/lib/dpkg/info/testpkg.md5sums").data.clone()).expect("utf8");
        let tool = md5_hex(b"#!/bin/sh\necho tool\n");
        let expected = format!(
            "{}  bin/mytool\n{}  etc/testpkg.conf\n{}  lib/x86_64-linux-gnu/libfoo.so.1\n\
             {tool}  usr/bin/hard\n{}  usr/bin/suid\n{tool}  usr/bin/tool\n\
             {}  usr/share/doc/testpkg/README\n{}  usr/share/testpkg/{LONG}\n",
            md5_hex(b"mytool"),
            md5_hex(b"key = value\n"),
            md5_hex(b"\x7fELF lib"),
            md5_hex(b"\x7fELF setuid"),
            md5_hex(b"read me\n"),
            md5_hex(b"long name\n"),
        );
        assert_eq!(sums, expected);
    }

    #[test]
    fn read_control_reads_the_control_member() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "gzip", true);
        let info = read_control(&deb).expect("control");
        assert_eq!(info.control, CONTROL);
        assert_eq!(info.data_compression, "gz");
        assert_eq!(info.conffiles, None);
        assert!(info.md5sums.as_deref().is_some_and(|s| s.contains("  usr/bin/tool\n")));
        assert_eq!(info.package().as_deref(), Ok("testpkg"));
        assert_eq!(info.field("version").as_deref(), Some("1:1.0-1"));
        assert_eq!(info.field("Description").as_deref(), Some("a test package\nmulti-line description\n.\nend"));
    }

    #[test]
    fn read_files_returns_wanted_files_sorted() {
        let dir = tempfile::tempdir().expect("tmp");
        let deb = dpkg_build(dir.path(), "xz", true);
        let got = read_files(&deb, &|p: &str| p.starts_with("/usr/share/") || p == "/etc/testpkg.conf").expect("read_files");
        assert_eq!(
            got,
            vec![
                ("/etc/testpkg.conf".to_owned(), b"key = value\n".to_vec()),
                ("/usr/share/doc/testpkg/README".to_owned(), b"read me\n".to_vec()),
                (format!("/usr/share/testpkg/{LONG}"), b"long name\n".to_vec()),
            ]
        );
        // Either member of the hardlink pair, alone (whichever the archive stores as the link).
        for p in ["/usr/bin/hard", "/usr/bin/tool"] {
            let got = read_files(&deb, &|q: &str| q == p).expect("read_files");
            assert_eq!(got, vec![(p.to_owned(), b"#!/bin/sh\necho tool\n".to_vec())]);
        }
        // Package paths, no merged-/usr rewrite; symlinks are not files.
        let got = read_files(&deb, &|p: &str| p.starts_with("/lib/")).expect("read_files");
        assert_eq!(got, vec![("/lib/x86_64-linux-gnu/libfoo.so.1".to_owned(), b"\x7fELF lib".to_vec())]);
    }

    #[test]
    fn rejects_malicious_entries() {
        use tar::EntryType::{Directory as D, Fifo, Link, Regular as F, Symlink as S};
        let dir = tempfile::tempdir().expect("tmp");
        let cases: Vec<(&str, Vec<Raw<'static>>, &str)> = vec![
            (
                "dotdot",
                vec![raw("./../etc/passwd", F, "", b"root::0:0::/:/bin/sh\n")],
                "entry `./../etc/passwd`: `..` components are not allowed",
            ),
            ("absolute", vec![raw("/etc/passwd", F, "", b"x")], "entry `/etc/passwd`: absolute names are not allowed"),
            // Issue 12, defect 10: a newline in a name injected a line into dpkg's md5sums.
            (
                "newline-in-name",
                vec![raw("./usr/bin/x\nd41d8cd98f00b204e9800998ecf8427e  etc/shadow", F, "", b"x")],
                "the name contains the control character '\\n'",
            ),
            (
                "hardlink-dotdot",
                vec![raw("./x", F, "", b"x"), raw("./y", Link, "../../x", b"")],
                "entry `./y`: hardlink target `../../x`: `..` components are not allowed",
            ),
            (
                "hardlink-absolute",
                vec![raw("./y", Link, "/etc/shadow", b"")],
                "entry `./y`: hardlink target `/etc/shadow`: absolute names are not allowed",
            ),
            (
                "hardlink-missing",
                vec![raw("./y", Link, "./nothere", b"")],
                "hardlink target `/nothere` is not a regular file of this package",
            ),
            ("hardlink-dir", vec![raw("./d/", D, "", b""), raw("./y", Link, "./d", b"")], "hardlink target `/d` is a directory"),
            (
                "write-through",
                vec![raw("./a", S, "/etc", b""), raw("./a/passwd", F, "", b"x")],
                "entry `./a/passwd`: `/a/passwd` would be written through symlink `/a`",
            ),
            (
                "write-through-deep",
                vec![raw("./usr/", D, "", b""), raw("./usr/lib", S, "../etc", b""), raw("./usr/lib/x/y/z", F, "", b"x")],
                "`/usr/lib/x/y/z` would be written through symlink `/usr/lib`",
            ),
            ("below-file", vec![raw("./f", F, "", b"x"), raw("./f/g", F, "", b"y")], "`/f/g` is below `/f`, which is not a directory"),
            ("fifo", vec![raw("./fifo", Fifo, "", b"")], "entry `./fifo`: device nodes and FIFOs are not supported"),
            (
                "chardev",
                vec![raw("./dev/null", tar::EntryType::Char, "", b"")],
                "entry `./dev/null`: device nodes and FIFOs are not supported",
            ),
            (
                "duplicate",
                vec![raw("./f", F, "", b"x"), raw("f", F, "", b"y")],
                "entry `f`: `/f` is listed twice (also as `./f`) with different content",
            ),
        ];
        for (file, entries, message) in cases {
            let deb = craft_deb(dir.path(), &format!("{file}.deb"), &entries);
            let err = install_err(&deb, true);
            assert!(err.contains(message) && err.contains(&deb.display().to_string()), "{file}: got `{err}`, want `{message}`");
        }

        // Issue 12, defect 12: a corrupt xz stream said "numeric field was not a number: when
        // getting cksum" and nothing of a damaged download.
        let good = craft_deb(dir.path(), "good.deb", &[raw("./usr/", D, "", b""), raw("./usr/x", F, "", &[7u8; 4000])]);
        let mut bytes = fs::read(&good).expect("read");
        let member = bytes.windows(11).position(|w| w == b"data.tar.xz").expect("data member");
        // Past the ar header (60 bytes) and the xz stream header, into the compressed data.
        for b in &mut bytes[member + 60 + 24..member + 60 + 40] {
            *b ^= 0x5a;
        }
        let damaged = dir.path().join("damaged.deb");
        fs::write(&damaged, bytes).expect("write");
        let err = install_err(&damaged, true);
        assert!(err.contains("the .deb is damaged") && err.contains("data.tar"), "{err}");

        // Names that are not UTF-8.
        let deb = craft_deb(dir.path(), "latin1.deb", &[Raw { name: b"./caf\xe9", kind: F, mode: 0o644, link: b"", data: b"x" }]);
        let err = install_err(&deb, true);
        assert!(err.contains("the name is not UTF-8"), "{err}");
        // read_files checks names too.
        let deb = craft_deb(dir.path(), "abs2.deb", &[raw("/etc/passwd", F, "", b"x")]);
        let err = read_files(&deb, &|_: &str| true).expect_err("absolute").to_string();
        assert!(err.contains("absolute names are not allowed"), "{err}");
    }

    #[test]
    fn merged_usr_collisions() {
        use tar::EntryType::{Directory as D, Regular as F, Symlink as S};
        let dir = tempfile::tempdir().expect("tmp");
        // Different contents: error.
        let deb = craft_deb(dir.path(), "clash.deb", &[raw("./bin/x", F, "", b"one"), raw("./usr/bin/x", F, "", b"two")]);
        let err = install_err(&deb, true);
        assert!(err.contains("`./bin/x` and `./usr/bin/x` both become `/usr/bin/x` under merged /usr"), "{err}");
        // Without merged /usr they are different paths.
        let (gz, _) = install(&deb, false);
        assert!(paths(&read_layer(&gz)).contains(&"bin/x"));

        // Identical: merged. Directories merge; the top-level symlink is kept.
        let deb = craft_deb(
            dir.path(),
            "same.deb",
            &[
                raw("./", D, "", b""),
                raw("./bin", S, "usr/bin", b""),
                raw("./usr/", D, "", b""),
                raw("./usr/bin/", D, "", b""),
                raw("./usr/bin/x", F, "", b"same"),
                raw("./lib/", D, "", b""),
                raw("./lib/y", F, "", b"y"),
                raw("./sbin/x", F, "", b"same"),
                raw("./usr/sbin/x", F, "", b"same"),
            ],
        );
        let (gz, installed) = install(&deb, true);
        let layer = read_layer(&gz);
        let lp = paths(&layer);
        assert_eq!(&lp[..7], &["bin", "usr/", "usr/bin/", "usr/bin/x", "usr/lib/", "usr/lib/y", "usr/sbin/"]);
        assert_eq!(lp[7], "usr/sbin/x");
        assert_eq!(find(&layer, "bin").link.as_deref(), Some("usr/bin"));
        assert_eq!(find(&layer, "usr/lib/").mode, 0o755);
        assert!(installed.files.contains(&"/bin".to_owned()));

        // A top-level `lib` that is anything else is refused.
        let deb = craft_deb(dir.path(), "badlib.deb", &[raw("./lib", S, "/opt/lib", b"")]);
        let err = install_err(&deb, true);
        assert!(err.contains("may only be a directory or the symlink"), "{err}");

        // A hardlink through the old path is rewritten with it.
        let deb =
            craft_deb(dir.path(), "hl.deb", &[raw("./bin/z", F, "", b"z"), raw("./usr/bin/zz", tar::EntryType::Link, "./bin/z", b"")]);
        let (gz, _) = install(&deb, true);
        let layer = read_layer(&gz);
        assert_eq!(find(&layer, "usr/bin/z").data, b"z");
        assert_eq!(find(&layer, "usr/bin/zz").link.as_deref(), Some("usr/bin/z"));
    }

    #[test]
    fn format_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let not_ar = dir.path().join("not.deb");
        fs::write(&not_ar, b"hello").expect("write");
        let err = read_control(&not_ar).expect_err("not ar").to_string();
        assert!(err.contains("reading the ar archive"), "{err}");

        let bz = dir.path().join("bz.deb");
        ar_deb(&bz, &control_tar_xz(CONTROL), "data.tar.bz2", b"BZh");
        let err = read_control(&bz).expect_err("bz2").to_string();
        assert!(err.contains("found member `data.tar.bz2`"), "{err}");

        let noname = dir.path().join("noname.deb");
        ar_deb(&noname, &control_tar_xz("Version: 1\n"), "data.tar.xz", &xz(&raw_tar(&[])));
        let err = install_err(&noname, true);
        assert!(err.contains("no `Package` field"), "{err}");

        let missing = dir.path().join("missing.deb");
        let mut b = ar::Builder::new(fs::File::create(&missing).expect("create"));
        b.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"2.0\n"[..]).expect("ar");
        drop(b);
        let err = read_control(&missing).expect_err("missing").to_string();
        assert!(err.contains("no `control.tar` member"), "{err}");
    }

    #[test]
    fn other_containers_underscore_members_and_pax_mtime() {
        let dir = tempfile::tempdir().expect("tmp");
        // A pax mtime overrides the header's; the clamp still applies.
        let mut b = tar::Builder::new(Vec::new());
        let mut pax = Vec::new();
        pax.extend_from_slice(b"19 mtime=1234.5678\n");
        let mut ph = tar::Header::new_ustar();
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_size(pax.len() as u64);
        ph.set_mode(0o644);
        ph.set_uid(0);
        ph.set_gid(0);
        ph.set_mtime(0);
        ph.set_path("././@PaxHeader").expect("pax path");
        ph.set_cksum();
        b.append(&ph, &pax[..]).expect("pax");
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(EPOCH + 5);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(3);
        h.set_path("./old").expect("path");
        h.set_cksum();
        b.append(&h, &b"old"[..]).expect("file");
        let tarball = b.into_inner().expect("tar");

        let lzma = {
            let opts = liblzma::stream::LzmaOptions::new_preset(1).expect("preset");
            let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).expect("encoder");
            let mut out = Vec::new();
            liblzma::read::XzEncoder::new_stream(&tarball[..], stream).read_to_end(&mut out).expect("lzma");
            out
        };
        let mut layers = Vec::new();
        for (member, data, compression) in [("data.tar", tarball.clone(), "none"), ("data.tar.lzma", lzma, "lzma")] {
            let path = dir.path().join(format!("{compression}.deb"));
            let control = control_tar_xz(CONTROL);
            let mut w = ar::Builder::new(fs::File::create(&path).expect("create"));
            for (name, bytes) in [
                ("debian-binary", &b"2.0\n"[..]),
                ("_gpgorigin", &b"signature"[..]),
                ("control.tar.xz", &control[..]),
                ("_extra", &b"x"[..]),
                (member, &data[..]),
                ("trailing-member", &b"ignored"[..]),
            ] {
                w.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).expect("ar");
            }
            drop(w);
            assert_eq!(read_control(&path).expect("control").data_compression, compression);
            let (gz, _) = install(&path, true);
            let layer = read_layer(&gz);
            assert_eq!(find(&layer, "old").mtime, 1234);
            layers.push(gz);
        }
        assert_eq!(layers[0], layers[1]);
    }

    #[test]
    fn status_entry_format() {
        let info = DebInfo {
            control: "Package: a\nStatus: purge ok not-installed\nVersion: 1\nDescription: x\n y".to_owned(),
            md5sums: None,
            conffiles: None,
            postinst: None,
            others: Vec::new(),
            data_compression: "xz",
        };
        let (status, md5sums) = dpkg_status_entry(&info);
        assert_eq!(status, "Package: a\nStatus: install ok installed\nVersion: 1\nDescription: x\n y\n");
        assert_eq!(md5sums, None);
    }
}
