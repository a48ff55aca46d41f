//! Maintainer scripts as a job (`maintainer-scripts "run"`): `dpkg --configure -a` over an
//! image's packages root, and what it changes, deletions as whiteouts, as a normalised layer.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use petgraph::graph::NodeIndex;

use super::executor::Executor;
use super::job::{command, Context, Log, Root};
use super::sandbox::{self, Command1};
use super::{trees, BuildError, Reporter};
use crate::plan::{Derivation, ScriptsDrv};
use crate::store::{Output, Record, Store};

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
    executor: &dyn Executor,
    drv: &Derivation,
    sc: &ScriptsDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
    reporter: &dyn Reporter,
) -> Result<(Output, Output), BuildError> {
    let root = deps.get(&sc.root).ok_or_else(|| BuildError::MissingOutput(format!("the packages root of {}", sc.image), "manifest"))?;
    let lower = trees::image_rootfs(store, root)?;
    for need in ["/usr/bin/dpkg", "/bin/sh"] {
        if trees::resolve_in(&lower, need)?.symlink_metadata().is_err() {
            return Err(BuildError::BadTree(format!(
                "image `{}`: maintainer-scripts \"run\" needs dpkg and a shell, and the image has no `{need}`; \
                     add `variant \"essential\"` (or the packages dpkg and dash)",
                sc.image
            )));
        }
    }
    let mut root = Root::prepare(executor, store, "scripts-", format!("maintainer scripts of {}", sc.image), &lower, |_, upper| {
        // Services are never started (invoke-rc.d asks policy-rc.d, as mmdebstrap arranges).
        let policy = upper.join("usr/sbin/policy-rc.d");
        if let Some(parent) = policy.parent() {
            fs::create_dir_all(parent).map_err(trees::io_error(parent, "cannot create"))?;
        }
        fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(trees::io_error(&policy, "cannot write"))?;
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o755)).map_err(trees::io_error(&policy, "cannot set the mode of"))?;
        Ok(Vec::new())
    })?;
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
        rootfs: &root.rootfs,
        args: &argv,
        env: &env,
        cwd: "/",
        user: (0, 0),
        network: false,
        binds: &[],
        limits: &limits,
        upper: &root.upper,
        tmp: &root.tmp,
        caches: &[],
    };
    let ctx = Context { drv, store, reporter, redact: &|l| l.to_string(), image: &sc.image };
    command(&root, &cmd, false, &mut log, &ctx)?;
    root.unmount();
    let walk = trees::Walk { shown: "", what: "the changes of the maintainer scripts", overlay_upper: true, skip: &scripts_noise };
    let entries = trees::walk(&root.upper, &walk)?;
    let layer = super::build_layer(&drv.name, &entries, sc.epoch, sc.compression, store)?;
    Ok((log.commit(store)?, layer))
}
