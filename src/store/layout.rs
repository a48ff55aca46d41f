//! The store's folders: every name below a store's root is spelled here and nowhere else.
//!
//! `ROOT/keys/` holds the signing keys `compose cache keygen` writes; `ROOT/v1/` (the format
//! version, [`STORE_VERSION`]) holds everything else, as drawn in [`super`]'s module doc.

use std::path::{Path, PathBuf};

use crate::hash::{DrvHash, Sha256};

/// Store format version; the store lives in `<root>/v<STORE_VERSION>/`.
pub const STORE_VERSION: u32 = 1;

/// Where runc keeps the state of a job's containers, in its work directory (in `tmp/`): the next
/// build alone on the store kills what a killed build left running, from there.
pub const RUNC_STATE: &str = "runc-state";

/// The prefix of the directory an image is unpacked into (in `rootfs/`) before it is renamed to
/// its manifest's digest: one found while no build runs is a killed build's leftover.
pub const UNPACKING_PREFIX: &str = ".unpack-";

/// The paths of one store, from its versioned directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout of the store at `root` (its versioned directory is `root/v1`).
    pub fn of_root(root: &Path) -> Layout {
        Layout { dir: root.join(format!("v{STORE_VERSION}")) }
    }

    /// Where signing keys are kept for the store at `root` (`compose cache keygen`).
    pub fn keys(root: &Path) -> PathBuf {
        root.join("keys")
    }

    /// The versioned directory everything lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folders made when a store is opened.
    pub fn made_on_open(&self) -> [PathBuf; 7] {
        [self.blobs(), self.records(), self.stat(), self.locks(), self.tmp(), self.verified(), self.chunks()]
    }

    /// The store's lock: shared by every build, exclusive for `gc`.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    pub fn blob(&self, d: &Sha256) -> PathBuf {
        self.blobs().join(d.hex())
    }

    pub fn records(&self) -> PathBuf {
        self.dir.join("records")
    }

    pub fn record(&self, d: &DrvHash) -> PathBuf {
        let h = d.hex();
        self.records().join(&h[..2]).join(format!("{h}.json"))
    }

    pub fn stat(&self) -> PathBuf {
        self.dir.join("stat")
    }

    pub fn stat_cache(&self, key: &str) -> PathBuf {
        self.stat().join(format!("{key}.bin"))
    }

    pub fn locks(&self) -> PathBuf {
        self.dir.join("locks")
    }

    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn verified(&self) -> PathBuf {
        self.dir.join("verified")
    }

    /// The verified marker of blob `d`.
    pub fn marker(&self, d: &Sha256) -> PathBuf {
        self.verified().join(d.hex())
    }

    pub fn chunks(&self) -> PathBuf {
        self.dir.join("chunks")
    }

    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    pub fn names(&self) -> PathBuf {
        self.dir.join("names")
    }

    pub fn exports(&self) -> PathBuf {
        self.dir.join("exports")
    }

    /// Unpacked images' root filesystems.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Markers of step records made with kept caches and not yet reproduced without them: they
    /// and what is made from them stay on this machine.
    pub fn unverified(&self) -> PathBuf {
        self.dir.join("unverified")
    }

    /// Steps' declared caches (see `store::caches`).
    pub fn caches(&self) -> PathBuf {
        self.dir.join("caches")
    }

    /// The whole logs of failed steps.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}
