//! The execution seam: where the commands of a step or of maintainer scripts run.
//!
//! A job is prepared the same way whatever runs it (`job`: a root made of the store's
//! trees under an overlay, commands with a fixed environment, a tree captured at the end); an
//! [`Executor`] mounts that root and runs each command in it to its end. [`Runc`], the local
//! executor, runs them in runc with the hardening of [`super::sandbox`]; another executor (a
//! remote one, a rootless one) is a new implementation of this trait, not a change to the jobs.

use std::path::{Path, PathBuf};

use super::sandbox::{self, Command1, Ended, SandboxError};

/// Runs the commands of prepared jobs.
pub trait Executor: Send + Sync {
    /// Make `root` the merged view of `lowers` (leftmost on top) over which writes land in
    /// `upper` (`work` is the overlay's own work directory, on the same file system).
    fn mount(&self, lowers: &[&Path], upper: &Path, work: &Path, root: &Path) -> Result<(), SandboxError>;

    /// Undo [`Executor::mount`] (lazily: a process still holding it cannot keep it busy).
    fn unmount(&self, root: &Path);

    /// [`Executor::unmount`] as a function another thread may call after this executor is gone.
    fn unmounter(&self) -> fn(&Path);

    /// Run one command in its prepared root to its end, passing each line it prints to `line`;
    /// `work` is the job's own directory, for the executor's state.
    fn run(&self, work: &Path, cmd: &Command1<'_>, line: &mut dyn FnMut(&str)) -> Result<Ended, SandboxError>;
}

/// The local executor: runc on this machine, as root.
#[derive(Debug, Clone)]
pub struct Runc {
    path: PathBuf,
}

impl Runc {
    /// Find runc and check this process can run it as steps need.
    pub fn find() -> Result<Runc, SandboxError> {
        sandbox::runc().map(|path| Runc { path })
    }
}

impl Executor for Runc {
    fn mount(&self, lowers: &[&Path], upper: &Path, work: &Path, root: &Path) -> Result<(), SandboxError> {
        sandbox::mount_overlay(lowers, upper, work, root)
    }

    fn unmount(&self, root: &Path) {
        sandbox::unmount(root);
    }

    fn unmounter(&self) -> fn(&Path) {
        sandbox::unmount
    }

    fn run(&self, work: &Path, cmd: &Command1<'_>, line: &mut dyn FnMut(&str)) -> Result<Ended, SandboxError> {
        sandbox::run(&self.path, work, cmd, line)
    }
}
