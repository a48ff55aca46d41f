//! The one path of a sandboxed job (a build step, maintainer scripts): prepare a root (a work
//! directory in the store, the job's trees under an overlay with a writable upper), run its
//! commands through an [`Executor`] with the log streamed to the reporter and kept in the store,
//! and turn how a command ended into the job's error. What is captured at the end is the job's:
//! a step's output tree, the scripts' changes as a layer.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::executor::Executor;
use super::sandbox::{self, Command1};
use super::{trees, BuildError, Reporter};
use crate::plan::Derivation;
use crate::store::{Output, Store};

/// Lines of a failed step's log shown in the error.
pub(super) const TAIL: usize = 20;

/// A job's root, prepared: its work directory (removed on drop, the overlay unmounted first),
/// the overlay's upper directory (where the commands' writes land) and the mounted root.
pub(super) struct Root<'e> {
    pub executor: &'e dyn Executor,
    /// The job's name in errors ("step `x`", "maintainer scripts of y").
    pub step: String,
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub rootfs: PathBuf,
    /// The job's `/tmp` (mode 1777), shared by its commands.
    pub tmp: PathBuf,
    mounted: bool,
    _work: Option<tempfile::TempDir>,
}

impl<'e> Root<'e> {
    /// A work directory `PREFIX…` in the store's `tmp/` holding `upper/` (0755), the overlay's
    /// work directory, `rootfs/` and the job's `tmp/` (1777, its `/tmp`); `seed` then fills the work directory and the upper one
    /// before anything is mounted and returns the trees to put above `lower`; the overlay is
    /// mounted at `rootfs/`.
    pub fn prepare(
        executor: &'e dyn Executor,
        store: &Store,
        prefix: &str,
        step: String,
        lower: &Path,
        seed: impl FnOnce(&Path, &Path) -> Result<Vec<PathBuf>, BuildError>,
    ) -> Result<Root<'e>, BuildError> {
        let tmp_root = store.tmp_dir();
        let work = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp_root)
            .map_err(trees::io_error(&tmp_root, "cannot create a directory in"))?;
        let dir = work.path().to_path_buf();
        let (upper, ovl, rootfs, tmp) = (dir.join("upper"), dir.join("overlay-work"), dir.join("rootfs"), dir.join("tmp"));
        for d in [&upper, &ovl, &rootfs, &tmp] {
            fs::create_dir_all(d).map_err(trees::io_error(d, "cannot create"))?;
        }
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(trees::io_error(&upper, "cannot set the mode of"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(trees::io_error(&tmp, "cannot set the mode of"))?;
        let mut root = Root { executor, step, dir, upper, rootfs, tmp, mounted: false, _work: Some(work) };
        let above = seed(&root.dir, &root.upper)?;
        let mut lowers: Vec<&Path> = above.iter().map(PathBuf::as_path).collect();
        lowers.push(lower);
        executor.mount(&lowers, &root.upper, &ovl, &root.rootfs).map_err(|e| BuildError::Sandbox { step: root.step.clone(), source: e })?;
        root.mounted = true;
        Ok(root)
    }

    /// Unmount the root (its upper directory stays, to be read).
    pub fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            self.executor.unmount(&self.rootfs);
        }
    }
}

impl Drop for Root<'_> {
    /// The root is unmounted and its work directory removed (however deep a step left its `/tmp`
    /// or upper directory) on a thread of their own: the build goes on meanwhile, and
    /// [`settle`] waits for them before it returns.
    fn drop(&mut self) {
        let teardown = Teardown {
            unmount: std::mem::take(&mut self.mounted).then(|| (self.executor.unmounter(), self.rootfs.clone())),
            dir: self.dir.clone(),
            _work: self._work.take(),
        };
        let slot = Arc::new(Mutex::new(Some(teardown)));
        let theirs = Arc::clone(&slot);
        let take = |s: &Mutex<Option<Teardown>>| s.lock().unwrap_or_else(|e| e.into_inner()).take();
        match std::thread::Builder::new().name("job teardown".into()).spawn(move || take(&theirs).map(Teardown::run)) {
            Ok(t) => teardowns().push(t),
            Err(_) => drop(take(&slot).map(Teardown::run)),
        }
    }
}

/// What is left of a job once it is done: its root to unmount and its work directory to remove.
struct Teardown {
    /// How to unmount the root, and where it is (none when already unmounted).
    unmount: Option<(Unmount, PathBuf)>,
    dir: PathBuf,
    _work: Option<tempfile::TempDir>,
}

impl Teardown {
    fn run(self) {
        if let Some((unmount, rootfs)) = &self.unmount {
            unmount(rootfs);
        }
        crate::store::remove_any(&self.dir);
    }
}

/// An executor's unmount ([`Executor::unmounter`]).
type Unmount = fn(&Path);

/// A teardown under way on its own thread.
type Pending = std::thread::JoinHandle<Option<()>>;

/// The teardowns of jobs still under way.
fn teardowns() -> std::sync::MutexGuard<'static, Vec<Pending>> {
    static TEARDOWNS: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
    TEARDOWNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait until every job's root is unmounted and its work directory removed.
pub(super) fn settle() {
    let pending = std::mem::take(&mut *teardowns());
    for t in pending {
        let _ = t.join();
    }
}

/// What a job's commands report to: its derivation, the store (for a failed command's log), the
/// reporter, and how lines are redacted before anyone sees them.
pub(super) struct Context<'a> {
    pub drv: &'a Derivation,
    /// The image the job runs in, as the spec names it (for what it lacks).
    pub image: &'a str,
    pub store: &'a Store,
    pub reporter: &'a dyn Reporter,
    pub redact: &'a dyn Fn(&str) -> String,
}

/// Make `path` (and its parents) a directory with `mode`.
pub(super) fn make_dir(path: &Path, mode: u32) -> Result<(), BuildError> {
    fs::create_dir_all(path).map_err(trees::io_error(path, "cannot create"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(trees::io_error(path, "cannot set the mode of"))
}

/// Run one command of a step (or of the maintainer scripts) and turn how it ended into the
/// step's error when it did not succeed.
pub(super) fn command(root: &Root<'_>, cmd: &Command1<'_>, hermetic: bool, log: &mut Log, ctx: &Context<'_>) -> Result<(), BuildError> {
    let (step, drv, store, redact) = (root.step.as_str(), ctx.drv, ctx.store, ctx.redact);
    if sandbox::rootless() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            ctx.reporter.warning(
                "steps run rootless (in a user namespace of this user's): their memory, process and CPU limits cannot be \
                 enforced without cgroups of their own; their time and disk limits are",
            )
        });
    }
    log.line(&redact(&format!("$ {}", shell_words(cmd.args))));
    let ended = root
        .executor
        .run(&root.dir, cmd, &mut |line| {
            let reporter = ctx.reporter;
            let line = redact(line);
            reporter.step_line(drv, &line);
            log.line(&line);
        })
        .map_err(|e| BuildError::Sandbox { step: step.to_string(), source: e })?;
    // A process of it killed for want of memory fails the step even if the command went on to
    // succeed: its output may lack what that process would have made.
    if ended.code == 0 && ended.stopped.is_none() && !ended.out_of_memory {
        return Ok(());
    }
    let tail = log.tail.iter().cloned().collect::<Vec<_>>().join("\n");
    let kept = log.keep(store, drv);
    let command = redact(&shell_words(cmd.args));
    let l = cmd.limits;
    let why = match ended.stopped {
        Some(sandbox::Stopped::Interrupted) => return Err(BuildError::Interrupted),
        Some(sandbox::Stopped::Time(t)) => {
            format!("it ran past its time limit of {} (`limits {{ time \"…\" }}` raises it)", human_duration(t))
        }
        Some(sandbox::Stopped::Disk { limit, used }) => format!(
            "it wrote {} (its disk limit is {}; `limits {{ disk \"…\" }}` raises it)",
            crate::util::human_bytes(used),
            crate::util::human_bytes(limit)
        ),
        Some(sandbox::Stopped::StoreFull { free }) => format!(
            "the store's file system came down to {} free; the step was stopped before filling it (free some space, \
             or bound the step with `limits {{ disk \"…\" }}`)",
            crate::util::human_bytes(free)
        ),
        None if ended.out_of_memory => {
            format!(
                "the kernel killed it for want of memory: the step's memory limit is {} (`limits {{ memory \"…\" }}` raises it)",
                crate::util::human_bytes(l.memory)
            )
        }
        None => {
            let cannot_start = log.not_started.first().and_then(|l| super::diagnose::start_failure(l, &root.rootfs, ctx.image));
            return Err(BuildError::StepFailed {
                step: step.to_string(),
                command,
                code: ended.code,
                tail,
                log: kept,
                hermetic,
                diagnosis: Box::new(super::Diagnosis { network: log.network, cannot_start }),
            });
        }
    };
    let whole = kept.map(|p| format!(" (whole log: {})", p.display())).unwrap_or_default();
    Err(BuildError::StepStopped {
        step: step.to_string(),
        message: format!("`{command}`: {why}{whole}\n--- last lines of its log ---\n{tail}"),
    })
}

/// `90s` → "1m30s", as `limits` takes it.
pub(super) fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// A step's log: written to a store temporary as it comes (never held whole in memory), with its
/// last lines kept for the error message.
pub(super) struct Log {
    file: std::io::BufWriter<std::fs::File>,
    tmp: tempfile::NamedTempFile,
    tail: std::collections::VecDeque<String>,
    /// A line said a name could not be resolved or a network could not be reached.
    network: bool,
    /// The lines that say a program could not be started (runc's, `env`'s).
    not_started: Vec<String>,
}

/// Longest line of a log kept as is; longer ones are cut (the file keeps them whole).
const LINE_MAX: usize = 4096;

impl Log {
    pub(super) fn new(store: &Store) -> Result<Log, BuildError> {
        let tmp = store.temp_file()?;
        let file = crate::store::buffered(&tmp)?;
        Ok(Log { file, tmp, tail: std::collections::VecDeque::new(), network: false, not_started: Vec::new() })
    }

    pub(super) fn line(&mut self, line: &str) {
        use std::io::Write;
        let _ = writeln!(self.file, "{line}");
        self.network |= super::diagnose::tried_network(line);
        if self.not_started.len() < 4 && super::diagnose::not_started(line) {
            self.not_started.push(line.to_string());
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        let mut shown = line.to_string();
        if shown.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push('…');
        }
        self.tail.push_back(shown);
    }

    /// Into the store, as the step's `log` output.
    pub(super) fn commit(mut self, store: &Store) -> Result<Output, BuildError> {
        use std::io::Write;
        let path = self.tmp.path().to_path_buf();
        self.file.flush().map_err(trees::io_error(&path, "cannot write"))?;
        let f = std::fs::File::open(&path).map_err(trees::io_error(&path, "cannot read"))?;
        let (digest, size) = crate::hash::Sha256::of_reader(f).map_err(trees::io_error(&path, "cannot read"))?;
        store.commit_blob(self.tmp, &digest)?;
        Ok(Output { digest, size, media_type: super::TEXT_MEDIA_TYPE.into(), diff_id: None })
    }

    /// Keep a failed step's log in the store's `logs/` (failures are never cached as records).
    pub(super) fn keep(&mut self, store: &Store, drv: &Derivation) -> Option<PathBuf> {
        use std::io::Write;
        self.file.flush().ok()?;
        let dir = store.layout().logs();
        fs::create_dir_all(&dir).ok()?;
        let path = dir.join(format!("{}.log", drv.hash.hex()));
        fs::copy(self.tmp.path(), &path).ok()?;
        Some(path)
    }
}

/// An argv as a shell would read it back, for messages.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
