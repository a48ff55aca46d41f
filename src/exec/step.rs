//! A build step as a job: its image's root filesystem (unpacked once, shared read-only) under an
//! overlay with its inputs on top; its environment, limits, read-only mounts, secrets and
//! declared caches (`super::caches`); its output captured as a normalised tree, and a fixed-output step's result checked against its
//! pin. Preparing the root and running the commands is [`super::job`]'s, for scripts too.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

use super::caches::{self, CacheUse};
use super::executor::Executor;
use super::job::{command, make_dir, Context, Log, Root};
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

/// The environment of a step's commands: a fixed base (with the platform it runs on and the one
/// it builds for, as buildx names them), the image's `Env`, the host's passed
/// variables (fixed-output steps), then the step's own.
fn environment(s: &StepDrv, image_env: &[String], runs_on: &str) -> Vec<String> {
    let home = if s.user.0 == 0 { "/root" } else { "/tmp" };
    let t = &s.target;
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), home.into()),
        ("TZ".into(), "UTC".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SOURCE_DATE_EPOCH".into(), s.epoch.to_string()),
        // As buildx sets them; the platform it runs on is its image's (never this host's).
        ("BUILDPLATFORM".into(), runs_on.into()),
        ("TARGETPLATFORM".into(), t.to_string()),
        ("TARGETOS".into(), t.os.clone()),
        ("TARGETARCH".into(), t.architecture.clone()),
        ("TARGETVARIANT".into(), t.variant.clone().unwrap_or_default()),
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

/// The host account (from `/etc/passwd`) with uid `uid`, if that is not root: when compose runs
/// as root, steps run as the same uid on the host.
fn host_account(uid: u32) -> Option<String> {
    if uid == 0 {
        return None;
    }
    crate::util::account_name(uid)
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

/// How a step runs: through what, with which secrets, on which platform, with which caches.
pub(super) struct RunWith<'a> {
    pub executor: &'a dyn Executor,
    pub secrets: &'a super::Secrets,
    /// The platform of the image it runs in (`linux/arm64`).
    pub platform: String,
    /// Whose its caches are (`ExecOptions::cache_scope`).
    pub scope: &'a str,
    pub caches: CacheUse,
    /// The image it runs in, as the spec names it.
    pub image: String,
}

/// Run step `s` (derivation `drv`); returns its log and its tree.
pub(super) fn run_step(
    how: &RunWith<'_>,
    drv: &Derivation,
    s: &StepDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
    reporter: &dyn Reporter,
) -> Result<(Output, Output), BuildError> {
    super::emulation::check(&s.step, &how.platform, false)?;
    let image = deps.get(&s.image).ok_or_else(|| BuildError::MissingOutput(format!("the image of step {}", s.step), "manifest"))?;
    // The image's kept tree is checked while a hermetic step runs over it (its result, its
    // caches' contents and its log are all it can leave, and each is thrown away if the check
    // fails); a step with the network, secrets or host paths runs only over a checked tree.
    let (lower, sealing) = if s.network || !s.secrets.is_empty() || !s.host_mounts.is_empty() {
        (trees::image_rootfs(store, image)?, None)
    } else {
        trees::image_rootfs_checked_after(store, image)?
    };
    let ran = run_over(how, drv, s, (image, deps), store, reporter, &lower);
    match sealing.map(|s| s.held(store, lower)) {
        Some(false) => {
            // It had changed since it was unpacked: nothing made over it stands, what the step
            // left in its caches included.
            reporter.warning(&format!(
                "the unpacked root filesystem of step `{}`'s image had changed since compose unpacked it: it is unpacked \
                 again from the store and the step runs again",
                s.step
            ));
            if how.caches == CacheUse::Kept {
                caches::forget(s, &how.platform, how.scope, store);
            }
            let lower = trees::image_rootfs(store, image)?;
            run_over(how, drv, s, (image, deps), store, reporter, &lower)
        }
        _ => ran,
    }
}

/// One run of step `s` over `lower`, the root filesystem of its image (whose record comes with
/// the records of what the step needs).
fn run_over(
    how: &RunWith<'_>,
    drv: &Derivation,
    s: &StepDrv,
    (image, deps): (&Record, &HashMap<NodeIndex, Record>),
    store: &Store,
    reporter: &dyn Reporter,
    lower: &Path,
) -> Result<(Output, Output), BuildError> {
    let (executor, secrets) = (how.executor, how.secrets);
    let missing = |what: &'static str| BuildError::MissingOutput(format!("the image of step {}", s.step), what);
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&output(image, "config")?.digest)?).map_err(|_| missing("config"))?;
    let image_env: Vec<String> = config
        .pointer("/config/Env")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let inputs = match s.inputs {
        Some(n) => Some(output(deps.get(&n).ok_or_else(|| missing("inputs"))?, "layer")?),
        None => None,
    };
    // The caches first: the inputs' times are decided under their leases.
    let waiting = |path: &str| reporter.step_line(drv, &format!("waiting for its cache `{path}`, which another build is using"));
    let leased = caches::lease(s, &how.platform, how.scope, how.caches, store, &waiting)?;
    let root = Root::prepare(executor, store, "step-", s.step.clone(), lower, |dir, upper| {
        // The output directory, empty and the step user's; a home for root.
        let out_dir = upper.join(s.output.trim_start_matches('/'));
        fs::create_dir_all(&out_dir).map_err(trees::io_error(&out_dir, "cannot create"))?;
        std::os::unix::fs::chown(&out_dir, Some(s.user.0), Some(s.user.1))
            .map_err(trees::io_error(&out_dir, "cannot change the owner of"))?;
        if s.user.0 == 0 && !lower.join("root").exists() {
            make_dir(&upper.join("root"), 0o700)?;
        }
        let Some(layer) = inputs else { return Ok(Vec::new()) };
        let dir = dir.join("inputs");
        fs::create_dir_all(&dir).map_err(trees::io_error(&dir, "cannot create"))?;
        trees::unpack(&store.blob_path(&layer.digest), &layer.media_type, &dir)?;
        cache_mount_points(s, &dir)?;
        caches::settle_directories(&dir, s.epoch)?;
        leased.freshen_inputs(&dir)?;
        Ok(vec![dir])
    })?;
    let cache_binds = leased.binds(s, &root.dir, &root.rootfs)?;
    let binds = binds(s, &root.dir.join("inputs"), reporter)?;
    let present = present_secrets(s, secrets, &root.dir.join("secrets"), &root.rootfs)?;
    let binds: Vec<Bind> = binds.into_iter().chain(present.binds.iter().cloned()).collect();
    let mut env = environment(s, &image_env, &how.platform);
    env.extend(present.env.iter().map(|(k, v)| format!("{k}={v}")));
    let cwd = s.workdir.clone().unwrap_or_else(|| "/".into());
    let limits = limits_of(s);
    let mut log = Log::new(store)?;
    let redact = |l: &str| present.redact(l);
    let ctx = Context { drv, store, reporter, redact: &redact, image: &how.image };
    for argv in &s.runs {
        let cmd = Command1 {
            rootfs: &root.rootfs,
            args: argv,
            env: &env,
            cwd: &cwd,
            user: s.user,
            network: s.network,
            binds: &binds,
            limits: &limits,
            upper: &root.upper,
            tmp: &root.tmp,
            caches: &cache_binds,
        };
        command(&root, &cmd, !s.network, &mut log, &ctx)?;
    }
    present.unmake();
    let tree = capture(drv, s, &root, &mut log, store)?;
    Ok((log.commit(store)?, tree))
}

/// The mount point of each cache inside an input directory (`/src/target` in `/src`), made in the
/// unpacked inputs: the inputs are mounted read-only, and nothing of them may lie where a cache
/// would hide it.
fn cache_mount_points(s: &StepDrv, inputs: &Path) -> Result<(), BuildError> {
    for c in &s.caches {
        if !s.input_paths.iter().any(|p| c.path != *p && crate::spec::path_within(&c.path, p)) {
            continue;
        }
        // Component by component, never through a link: the inputs are the spec's, and a link
        // among them points wherever it likes on this host.
        let mut at = inputs.to_path_buf();
        for part in c.path.trim_start_matches('/').split('/') {
            at.push(part);
            match at.symlink_metadata() {
                Err(_) => make_dir(&at, 0o755)?,
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(BuildError::BadTree(format!(
                        "step `{}`: its inputs hold `{}` (not a directory) on the way to its cache `{}`",
                        s.step,
                        at.strip_prefix(inputs).map(|p| format!("/{}", p.display())).unwrap_or_default(),
                        c.path
                    )))
                }
            }
        }
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() && fs::read_dir(&at).map_or(true, |mut d| d.next().is_none()) => {}
            _ => {
                return Err(BuildError::BadTree(format!(
                    "step `{}`: its inputs hold `{}`, where its cache is mounted: the cache would hide it (leave it out of the \
                     copy, e.g. with an ignore file, or move the cache)",
                    s.step, c.path
                )))
            }
        }
    }
    Ok(())
}

/// The read-only mounts of a step: its inputs; a fixed-output step's host settings; each
/// `mount-from-host` path, which must exist. Warns when the step's uid is a host account's.
fn binds(s: &StepDrv, inputs: &Path, reporter: &dyn Reporter) -> Result<Vec<Bind>, BuildError> {
    let mut binds: Vec<Bind> = s
        .input_paths
        .iter()
        .map(|p| Bind { source: inputs.join(p.trim_start_matches('/')), destination: p.clone() })
        .filter(|b| b.source.symlink_metadata().is_ok_and(|m| !m.file_type().is_symlink()))
        .collect();
    for (host, _) in &s.host_mounts {
        if fs::symlink_metadata(host).is_err() {
            return Err(BuildError::BadTree(format!(
                "step `{}`: `mount-from-host \"{host}\"`: there is no such path on this host",
                s.step
            )));
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
    Ok(binds)
}

/// The output as the step saw it: symlinks on the way are followed inside its root, and the
/// output itself must be a directory (never a link out of the sandbox); a fixed-output step's
/// must be its pin.
fn capture(drv: &Derivation, s: &StepDrv, root: &Root<'_>, log: &mut Log, store: &Store) -> Result<Output, BuildError> {
    let captured = trees::resolve_in(&root.rootfs, &s.output)?;
    if !captured.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        log.keep(store, drv);
        return Err(BuildError::BadTree(format!("step `{}`: its output `{}` is not a directory when it ends", s.step, s.output)));
    }
    let tree = trees::capture(&drv.name, &s.output, &captured, s.epoch, store)?;
    if let (Some(pin), Some(got)) = (s.pin, tree.diff_id) {
        if pin != got {
            log.keep(store, drv);
            return Err(BuildError::FixedOutputChanged { step: s.step.clone(), pinned: pin.to_string(), got: got.to_string() });
        }
    }
    Ok(tree)
}
