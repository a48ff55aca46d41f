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
//! So that dpkg, apt and scanners (Trivy, Syft, Grype) know the package, the same layer gets
//! dpkg's own files for it in `/var/lib/dpkg/info/` ([`INFO_DIR`]), under the name dpkg files it
//! under ([`dpkg_name`]: `name`, or `name:arch` for `Multi-Arch: same`):
//!
//! * `<name>.list`: every entry's path as in the package, in archive order (`/.` for the root);
//! * `<name>.md5sums`: the package's own `md5sums` control file verbatim, or, when it has none,
//!   one computed line per regular file (hardlinks included) in the same format,
//!   `<md5>  <path as in the package, without leading ./>`, sorted by path;
//! * `<name>.conffiles` when the package has conffiles, and its other control files (maintainer
//!   scripts, `triggers`, `shlibs`…).
//!
//! They are root's, mtime `epoch`, mode `0644` (`0755` for the executable control files). The
//! package's paragraph of the image's one `status` file ([`STATUS_FILE`]) goes to the caller
//! ([`InstalledLayer::status`]): the control paragraph with `Status: install ok installed` after
//! the `Package` line (an existing `Status` field is replaced), `Conffiles:` with the MD5 of each
//! conffile installed, fields in dpkg's order. See [`dpkg_status_entry`].
//!
//! # Files
//!
//! `archive.rs` reads the `ar` container and its control member, and pulls files out of the data
//! member ([`read_control`], [`read_files`]); `names.rs` normalizes entry names and places them
//! under merged `/usr`; `tree.rs` holds the package's entries in memory with the duplicate,
//! hardlink and parent rules; `scan.rs` is pass 1 (the data tarball read once, contents spilled);
//! `layer.rs` is [`install_layer`] and pass 2 (the layer written); `database.rs` makes the dpkg
//! database entries; `scripts.rs` holds what compose knows of maintainer scripts (base-files'
//! postinst emulated, the facts read from `postinst` and `triggers`).

mod archive;
mod database;
mod layer;
mod names;
mod scan;
mod scripts;
pub(in crate::debian) mod tree;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::layer::{LayerDigests, LayerError};

pub use archive::{read_control, read_files};
pub use database::{dpkg_name, dpkg_status_entry};
pub use layer::install_layer;

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
        database::control_field(&self.control, name)
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
    pub alternatives: Vec<crate::debian::effects::alternatives::Registration>,
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

#[cfg(test)]
mod tests;
