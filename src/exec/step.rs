//! Running a build step: its image's root filesystem (unpacked once, shared read-only) under an
//! overlay with its inputs on top, each command in the sandbox with a fixed environment, its log
//! streamed to the reporter and kept in the store, its output captured as a normalised tree, and a
//! fixed-output step's result checked against its pin.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

use super::sandbox::{self, Bind, Command1};
use super::{output, trees, BuildError, Reporter};
use crate::plan::{Derivation, StepDrv};
use crate::store::{Output, Record, Store};

/// Host variables a fixed-output step sees without asking (proxies, certificate bundles, the
/// settings of language package managers), as Nix's `impureEnvVars`.
const PASS_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GOPROXY",
    "GOSUMDB",
    "GONOSUMDB",
    "GOPRIVATE",
    "GOINSECURE",
];
/// …and every variable with one of these prefixes.
const PASS_PREFIXES: &[&str] = &["PIP_", "npm_config_", "NPM_CONFIG_", "CARGO_REGISTRIES_", "CARGO_HTTP_", "UV_"];
/// Host files a fixed-output step sees, read-only, where the host has them: the resolver, the CA
/// bundle (a host behind a TLS-inspecting proxy trusts its CA there) and package-manager settings.
const PASS_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/npmrc"];
/// Passed variables whose value names a file a download needs (a CA bundle, a package manager's
/// settings): that file is mounted read-only too, if it is a regular file. Any other variable,
/// `pass-env "HOME"` or `SSH_AUTH_SOCK` included, passes its value and nothing else.
const PATH_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_CERT",
    "PIP_CONFIG_FILE",
    "PIP_CLIENT_CERT",
    "NPM_CONFIG_CAFILE",
    "npm_config_cafile",
    "NPM_CONFIG_USERCONFIG",
    "npm_config_userconfig",
    "CARGO_HTTP_CAINFO",
];
/// …and the one that names a directory of certificates.
const DIR_VARS: &[&str] = &["SSL_CERT_DIR"];

/// Secret values (and lines of them) shorter than this are not looked for in logs: they would
/// hide ordinary words.
const SECRET_MIN: usize = 4;

/// Lines of a failed step's log shown in the error.
const TAIL: usize = 20;

/// The removal of a step's work directory, unmounting its overlay first.
struct Work {
    dir: tempfile::TempDir,
    mounted: Option<PathBuf>,
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            sandbox::unmount(&m);
        }
    }
}

/// The environment of a step's commands: a fixed base, the image's `Env`, the host's passed
/// variables (fixed-output steps), then the step's own.
fn environment(s: &StepDrv, image_env: &[String]) -> Vec<String> {
    let home = if s.user.0 == 0 { "/root" } else { "/tmp" };
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), home.into()),
        ("TZ".into(), "UTC".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SOURCE_DATE_EPOCH".into(), s.epoch.to_string()),
    ];
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        if let Some((k, v)) = kv.split_once('=') {
            set(&mut env, k, v);
        }
    }
    if s.network {
        for (k, v) in passed_env(s) {
            set(&mut env, &k, &v);
        }
    }
    for (k, v) in &s.env {
        set(&mut env, k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The host variables a fixed-output step is given, sorted by name.
fn passed_env(s: &StepDrv) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| PASS_ENV.contains(&k.as_str()) || PASS_PREFIXES.iter().any(|p| k.starts_with(p)) || s.pass_env.contains(k))
        .collect();
    v.sort();
    v
}

/// The sandbox's limits of step `s`: its `limits`, the defaults for the rest.
fn limits_of(s: &StepDrv) -> sandbox::Limits {
    let d = sandbox::Limits::defaults();
    let l = &s.limits;
    sandbox::Limits {
        pids: l.pids.unwrap_or(d.pids),
        memory: l.memory.unwrap_or(d.memory),
        cpus: l.millicpus.map(|m| m as f64 / 1000.0).or(d.cpus),
        time: l.time.map(std::time::Duration::from_nanos).unwrap_or(d.time),
        disk: l.disk.or(d.disk),
    }
}

/// The host files a fixed-output step gets: [`PASS_FILES`], the files its passed variables name
/// where [`PATH_VARS`]/[`DIR_VARS`] say they are certificates or settings, and its
/// `mount-from-host` paths.
fn host_binds(s: &StepDrv) -> Vec<Bind> {
    let mut binds: Vec<Bind> = Vec::new();
    let mut add = |source: PathBuf, destination: String| {
        if !binds.iter().any(|b| b.destination == destination) {
            binds.push(Bind { source, destination });
        }
    };
    for f in PASS_FILES {
        if Path::new(f).is_file() {
            add(PathBuf::from(f), f.to_string());
        }
    }
    for (k, v) in passed_env(s) {
        let p = Path::new(&v);
        let (file, dir) = (PATH_VARS.contains(&k.as_str()), DIR_VARS.contains(&k.as_str()));
        if p.is_absolute() && !v.contains(':') && (file || dir) && public(p, dir) {
            add(p.to_path_buf(), v.clone());
        }
    }
    for (host, to) in &s.host_mounts {
        add(PathBuf::from(host), to.clone());
    }
    binds
}

/// The host account (from `/etc/passwd`) with uid `uid`, if that is not root: steps run as the
/// same uid on the host (there is no user namespace yet).
fn host_account(uid: u32) -> Option<String> {
    if uid == 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// Is `p` (followed to what it names) a regular file, or with `dir` a directory, that every user
/// may read? Certificates and package-manager settings are; `/etc/shadow`, `/root` and a socket
/// are not, and a variable naming one mounts nothing.
fn public(p: &Path, dir: bool) -> bool {
    fs::metadata(p).is_ok_and(|m| {
        let mode = m.permissions().mode();
        if dir {
            m.is_dir() && mode & 0o005 == 0o005
        } else {
            m.is_file() && mode & 0o004 != 0
        }
    })
}

/// A step's secrets, made present: variables to set, files to mount, and the values to keep out
/// of its log.
struct Present {
    env: Vec<(String, String)>,
    binds: Vec<Bind>,
    values: Vec<String>,
    /// Mount points the image did not have, removed before the output is captured.
    made: Vec<PathBuf>,
}

fn present_secrets(s: &StepDrv, secrets: &super::Secrets, dir: &Path, rootfs: &Path) -> Result<Present, BuildError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut p = Present { env: Vec::new(), binds: Vec::new(), values: Vec::new(), made: Vec::new() };
    for sec in &s.secrets {
        let Some(value) = secrets.get(&sec.id) else {
            if sec.required {
                return Err(BuildError::MissingSecret { step: s.step.clone(), id: sec.id.clone() });
            }
            continue;
        };
        let text = String::from_utf8_lossy(value).into_owned();
        // The value, and each of its lines (a tool prints a key or a netrc a line at a time).
        let lines = text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).map(str::to_string);
        for v in std::iter::once(text.trim().to_string()).chain(lines) {
            if v.len() >= SECRET_MIN && !p.values.contains(&v) {
                p.values.push(v);
            }
        }
        if let Some(var) = &sec.env {
            p.env.push((var.clone(), text.trim_end_matches(['\n', '\r']).to_string()));
        }
        if let Some(target) = &sec.target {
            fs::create_dir_all(dir).map_err(trees::io_error(dir, "cannot create"))?;
            let file = dir.join(&sec.id);
            {
                use std::io::Write;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o400)
                    .open(&file)
                    .map_err(trees::io_error(&file, "cannot write"))?;
                f.write_all(value).map_err(trees::io_error(&file, "cannot write"))?;
            }
            std::os::unix::fs::chown(&file, Some(s.user.0), Some(s.user.1))
                .map_err(trees::io_error(&file, "cannot change the owner of"))?;
            // The mount point and the directories above it that the image lacks.
            let mut missing = Vec::new();
            let mut at = PathBuf::from(target.trim_start_matches('/'));
            while !at.as_os_str().is_empty() && rootfs.join(&at).symlink_metadata().is_err() {
                missing.push(rootfs.join(&at));
                at = at.parent().map(Path::to_path_buf).unwrap_or_default();
            }
            p.made.extend(missing);
            p.binds.push(Bind { source: file, destination: target.clone() });
        }
    }
    Ok(p)
}

impl Present {
    /// `line` with every secret value replaced by `***`.
    fn redact(&self, line: &str) -> String {
        let mut l = line.to_string();
        // Longest first, so a line of the value never leaves the rest of a longer one showing.
        let mut values: Vec<&String> = self.values.iter().collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for v in values {
            if l.contains(v.as_str()) {
                l = l.replace(v.as_str(), "***");
            }
        }
        l
    }

    /// Remove the mount points the image did not have (deepest first).
    fn unmake(&self) {
        for m in &self.made {
            let _ = fs::remove_file(m).or_else(|_| fs::remove_dir(m));
        }
    }
}

/// Run one command of a step (or of the maintainer scripts) and turn how it ended into the
/// step's error when it did not succeed.
#[allow(clippy::too_many_arguments)]
fn command(
    runc: &Path,
    work: &Path,
    cmd: &Command1<'_>,
    step: &str,
    hermetic: bool,
    log: &mut Log,
    drv: &Derivation,
    store: &Store,
    reporter: &dyn Reporter,
    redact: &dyn Fn(&str) -> String,
) -> Result<(), BuildError> {
    log.line(&redact(&format!("$ {}", shell_words(cmd.args))));
    let ended = sandbox::run(runc, work, cmd, &mut |line| {
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
            return Err(BuildError::StepFailed { step: step.to_string(), command, code: ended.code, tail, log: kept, hermetic });
        }
    };
    let whole = kept.map(|p| format!(" (whole log: {})", p.display())).unwrap_or_default();
    Err(BuildError::StepStopped {
        step: step.to_string(),
        message: format!("`{command}`: {why}{whole}\n--- last lines of its log ---\n{tail}"),
    })
}

/// `90s` → "1m30s", as `limits` takes it.
fn human_duration(d: std::time::Duration) -> String {
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

/// Run step `s` (derivation `drv`); returns its log and its tree.
pub fn run_step(
    drv: &Derivation,
    s: &StepDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
    secrets: &super::Secrets,
    reporter: &dyn Reporter,
) -> Result<(Output, Output), BuildError> {
    let runc = sandbox::runc().map_err(|e| BuildError::Sandbox { step: s.step.clone(), source: e })?;
    let missing = |what: &'static str| BuildError::MissingOutput(format!("the image of step {}", s.step), what);
    let image = deps.get(&s.image).ok_or_else(|| missing("manifest"))?;
    let lower = trees::image_rootfs(store, image)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&output(image, "config")?.digest)?).map_err(|_| missing("config"))?;
    let image_env: Vec<String> = config
        .pointer("/config/Env")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();

    let tmp_root = store.tmp_dir();
    let dir = tempfile::Builder::new()
        .prefix("step-")
        .tempdir_in(&tmp_root)
        .map_err(trees::io_error(&tmp_root, "cannot create a directory in"))?;
    let mut work = Work { dir, mounted: None };
    let w = work.dir.path().to_path_buf();
    let (inputs, upper, ovl, rootfs) = (w.join("inputs"), w.join("upper"), w.join("overlay-work"), w.join("rootfs"));
    for d in [&inputs, &upper, &ovl, &rootfs] {
        fs::create_dir_all(d).map_err(trees::io_error(d, "cannot create"))?;
    }
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(trees::io_error(&upper, "cannot set the mode of"))?;
    if let Some(n) = s.inputs {
        let rec = deps.get(&n).ok_or_else(|| missing("inputs"))?;
        let layer = output(rec, "layer")?;
        trees::unpack(&store.blob_path(&layer.digest), &layer.media_type, &inputs)?;
    }
    // The output directory, empty and the step user's; a home for root.
    let out_dir = upper.join(s.output.trim_start_matches('/'));
    fs::create_dir_all(&out_dir).map_err(trees::io_error(&out_dir, "cannot create"))?;
    std::os::unix::fs::chown(&out_dir, Some(s.user.0), Some(s.user.1)).map_err(trees::io_error(&out_dir, "cannot change the owner of"))?;
    if s.user.0 == 0 && !lower.join("root").exists() {
        let home = upper.join("root");
        fs::create_dir_all(&home).map_err(trees::io_error(&home, "cannot create"))?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).map_err(trees::io_error(&home, "cannot set the mode of"))?;
    }
    let lowers: Vec<&Path> = if s.inputs.is_some() { vec![&inputs, &lower] } else { vec![&lower] };
    sandbox::mount_overlay(&lowers, &upper, &ovl, &rootfs).map_err(|e| BuildError::Sandbox { step: s.step.clone(), source: e })?;
    work.mounted = Some(rootfs.clone());

    // Inputs are read-only; a fixed-output step sees the host's resolver and named settings.
    let mut binds: Vec<Bind> = s
        .input_paths
        .iter()
        .map(|p| Bind { source: inputs.join(p.trim_start_matches('/')), destination: p.clone() })
        .filter(|b| b.source.symlink_metadata().is_ok_and(|m| !m.file_type().is_symlink()))
        .collect();
    for (host, _) in &s.host_mounts {
        if fs::symlink_metadata(host).is_err() {
            return Err(BuildError::Tree {
                message: format!("step `{}`: `mount-from-host \"{host}\"`: there is no such path on this host", s.step),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
            });
        }
    }
    if let Some(account) = host_account(s.user.0) {
        reporter.warning(&format!(
            "step `{}` runs as uid {}, which the host's account `{account}` has too: processes of `{account}` can read and \
             change the step (its secrets included) while it runs; run it as a uid no host account uses",
            s.step, s.user.0
        ));
    }
    if s.network {
        for b in host_binds(s) {
            if !binds.iter().any(|x| x.destination == b.destination) {
                binds.push(b);
            }
        }
    }
    let present = present_secrets(s, secrets, &w.join("secrets"), &rootfs)?;
    binds.extend(present.binds.iter().cloned());
    let mut env = environment(s, &image_env);
    env.extend(present.env.iter().map(|(k, v)| format!("{k}={v}")));
    let cwd = s.workdir.clone().unwrap_or_else(|| "/".into());
    let limits = limits_of(s);
    let mut log = Log::new(store)?;
    let redact = |l: &str| present.redact(l);
    for argv in &s.runs {
        let cmd = Command1 {
            rootfs: &rootfs,
            args: argv,
            env: &env,
            cwd: &cwd,
            user: s.user,
            network: s.network,
            binds: &binds,
            limits: &limits,
            upper: &upper,
        };
        command(&runc, &w, &cmd, &s.step, !s.network, &mut log, drv, store, reporter, &redact)?;
    }
    present.unmake();
    // The output as the step saw it: symlinks on the way are followed inside its root, and the
    // output itself must be a directory (never a link out of the sandbox).
    let captured = trees::resolve_in(&rootfs, &s.output)?;
    if !captured.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        log.keep(store, drv);
        return Err(BuildError::Tree {
            message: format!("step `{}`: its output `{}` is not a directory when it ends", s.step, s.output),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a directory"),
        });
    }
    let tree = trees::capture(&drv.name, &s.output, &captured, s.epoch, store)?;
    if let (Some(pin), Some(got)) = (s.pin, tree.diff_id) {
        if pin != got {
            log.keep(store, drv);
            return Err(BuildError::FixedOutputChanged { step: s.step.clone(), pinned: pin.to_string(), got: got.to_string() });
        }
    }
    Ok((log.commit(store)?, tree))
}

/// A step's log: written to a store temporary as it comes (never held whole in memory), with its
/// last lines kept for the error message.
struct Log {
    file: std::io::BufWriter<std::fs::File>,
    tmp: tempfile::NamedTempFile,
    tail: std::collections::VecDeque<String>,
}

/// Longest line of a log kept as is; longer ones are cut (the file keeps them whole).
const LINE_MAX: usize = 4096;

impl Log {
    fn new(store: &Store) -> Result<Log, BuildError> {
        let tmp = store.temp_file()?;
        let file = crate::store::buffered(&tmp)?;
        Ok(Log { file, tmp, tail: std::collections::VecDeque::new() })
    }

    fn line(&mut self, line: &str) {
        use std::io::Write;
        let _ = writeln!(self.file, "{line}");
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
    fn commit(mut self, store: &Store) -> Result<Output, BuildError> {
        use std::io::Write;
        let path = self.tmp.path().to_path_buf();
        self.file.flush().map_err(trees::io_error(&path, "cannot write"))?;
        let f = std::fs::File::open(&path).map_err(trees::io_error(&path, "cannot read"))?;
        let (digest, size) = crate::hash::Sha256::of_reader(f).map_err(trees::io_error(&path, "cannot read"))?;
        store.commit_blob(self.tmp, &digest)?;
        Ok(Output { digest, size, media_type: super::TEXT_MEDIA_TYPE.into(), diff_id: None })
    }

    /// Keep a failed step's log in the store's `logs/` (failures are never cached as records).
    fn keep(&mut self, store: &Store, drv: &Derivation) -> Option<PathBuf> {
        use std::io::Write;
        self.file.flush().ok()?;
        let dir = store.dir().join("logs");
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

/// Paths a `dpkg --configure -a` run changes that are noise, not the image's: logs, `-old`
/// backups, locks, ldconfig's aux-cache, our policy-rc.d, and what lives on the sandbox's own
/// mounts (`/tmp`, `/dev`, `/proc`, `/sys`; `/run` is the image's own here).
fn scripts_noise(rel: &str) -> bool {
    const EXACT: &[&str] = &[
        "usr/sbin/policy-rc.d",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/lock",
        "var/lib/dpkg/lock-frontend",
        "var/lib/dpkg/triggers/Lock",
    ];
    EXACT.contains(&rel)
        || rel.ends_with("-old") && (rel.starts_with("var/lib/dpkg/") || rel.starts_with("var/cache/debconf/"))
        || ["var/log/apt/", "tmp/", "dev/", "proc/", "sys/"].iter().any(|p| rel.starts_with(p))
        || ["tmp", "dev", "proc", "sys"].contains(&rel)
}

/// `maintainer-scripts "run"`: `dpkg --configure -a` over the packages root in the sandbox (no
/// network, services never started, debconf non-interactive, SOURCE_DATE_EPOCH set); what it
/// changes, deletions as OCI whiteouts, becomes a normalised layer.
pub fn run_scripts(
    drv: &Derivation,
    sc: &crate::plan::ScriptsDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
    reporter: &dyn Reporter,
) -> Result<(Output, Output), BuildError> {
    let step = format!("maintainer scripts of {}", sc.image);
    let runc = sandbox::runc().map_err(|e| BuildError::Sandbox { step: step.clone(), source: e })?;
    let root = deps.get(&sc.root).ok_or_else(|| BuildError::MissingOutput(format!("the packages root of {}", sc.image), "manifest"))?;
    let lower = trees::image_rootfs(store, root)?;
    for need in ["/usr/bin/dpkg", "/bin/sh"] {
        if trees::resolve_in(&lower, need)?.symlink_metadata().is_err() {
            return Err(BuildError::Tree {
                message: format!(
                    "image `{}`: maintainer-scripts \"run\" needs dpkg and a shell, and the image has no `{need}`; \
                     add `variant \"essential\"` (or the packages dpkg and dash)",
                    sc.image
                ),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
            });
        }
    }
    let tmp_root = store.tmp_dir();
    let dir = tempfile::Builder::new()
        .prefix("scripts-")
        .tempdir_in(&tmp_root)
        .map_err(trees::io_error(&tmp_root, "cannot create a directory in"))?;
    let mut work = Work { dir, mounted: None };
    let w = work.dir.path().to_path_buf();
    let (upper, ovl, rootfs) = (w.join("upper"), w.join("overlay-work"), w.join("rootfs"));
    for d in [&upper, &ovl, &rootfs] {
        fs::create_dir_all(d).map_err(trees::io_error(d, "cannot create"))?;
    }
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(trees::io_error(&upper, "cannot set the mode of"))?;
    // Services are never started (invoke-rc.d asks policy-rc.d, as mmdebstrap arranges).
    let policy = upper.join("usr/sbin/policy-rc.d");
    if let Some(parent) = policy.parent() {
        fs::create_dir_all(parent).map_err(trees::io_error(parent, "cannot create"))?;
    }
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(trees::io_error(&policy, "cannot write"))?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755)).map_err(trees::io_error(&policy, "cannot set the mode of"))?;
    sandbox::mount_overlay(&[&lower], &upper, &ovl, &rootfs).map_err(|e| BuildError::Sandbox { step: step.clone(), source: e })?;
    work.mounted = Some(rootfs.clone());
    let env: Vec<String> = [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("HOME", "/root".to_string()),
        ("TZ", "UTC".to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
        ("SOURCE_DATE_EPOCH", sc.epoch.to_string()),
        ("DEBIAN_FRONTEND", "noninteractive".to_string()),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true".to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    let argv: Vec<String> = ["dpkg", "--configure", "-a"].iter().map(|s| s.to_string()).collect();
    let mut log = Log::new(store)?;
    let limits = sandbox::Limits::defaults();
    let cmd = Command1 {
        rootfs: &rootfs,
        args: &argv,
        env: &env,
        cwd: "/",
        user: (0, 0),
        network: false,
        binds: &[],
        limits: &limits,
        upper: &upper,
    };
    command(&runc, &w, &cmd, &step, false, &mut log, drv, store, reporter, &|l| l.to_string())?;
    if let Some(m) = work.mounted.take() {
        sandbox::unmount(&m);
    }
    let entries = upper_entries(&upper)?;
    let layer = super::build_layer(&drv.name, &entries, sc.epoch, sc.compression, store)?;
    Ok((log.commit(store)?, layer))
}

/// The entries of an overlay's upper directory as a layer: what was added or changed, deletions
/// (overlayfs' 0:0 character devices) as `.wh.NAME`, opaque directories with `.wh..wh..opq`,
/// without the noise of [`scripts_noise`].
fn upper_entries(upper: &Path) -> Result<Vec<crate::plan::PlannedEntry>, BuildError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use crate::plan::{Content, EntryKind, PlannedEntry};
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(upper).min_depth(1).follow_links(false).follow_root_links(false) {
        let e = e.map_err(|e| {
            let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| upper.to_path_buf());
            trees::io_error(&p, "cannot read")(e.into())
        })?;
        let Some(rel) = e.path().strip_prefix(upper).ok().and_then(|r| r.to_str()).map(str::to_owned) else { continue };
        if scripts_noise(&rel) {
            continue;
        }
        let meta = e.path().symlink_metadata().map_err(trees::io_error(e.path(), "cannot read"))?;
        let ft = meta.file_type();
        let path = format!("/{rel}");
        let entry = |kind, mode| PlannedEntry { path: path.clone(), kind, mode, uid: meta.uid(), gid: meta.gid() };
        if ft.is_char_device() && meta.rdev() == 0 {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            let wh = format!("{dir}/.wh.{name}");
            let empty = std::sync::Arc::new(Vec::new());
            out.push(PlannedEntry {
                path: wh,
                kind: EntryKind::File { size: 0, content: Content::Inline(empty) },
                mode: 0o644,
                uid: 0,
                gid: 0,
            });
        } else if ft.is_dir() {
            out.push(entry(EntryKind::Dir, meta.mode() & 0o7777));
            if opaque(e.path()) {
                let empty = std::sync::Arc::new(Vec::new());
                out.push(PlannedEntry {
                    path: format!("{path}/.wh..wh..opq"),
                    kind: EntryKind::File { size: 0, content: Content::Inline(empty) },
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                });
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(trees::io_error(e.path(), "cannot read the link"))?;
            out.push(entry(EntryKind::Symlink { target: target.to_string_lossy().into_owned() }, 0o777));
        } else if ft.is_file() {
            out.push(entry(
                EntryKind::File { size: meta.len(), content: Content::Tree { abs: e.path().to_path_buf() } },
                meta.mode() & 0o7777,
            ));
        } else {
            return Err(BuildError::Tree {
                message: format!("maintainer scripts left a device, FIFO or socket at `{path}`"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "special file"),
            });
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// Is `dir` an overlayfs opaque directory (`trusted.overlay.opaque` = `y`)?
fn opaque(dir: &Path) -> bool {
    let (Ok(path), Ok(name)) = (std::ffi::CString::new(dir.display().to_string()), std::ffi::CString::new("trusted.overlay.opaque")) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}
