//! Classifying the parts of a `RUN` line: what is a statement about the image (apt installs
//! and clean-ups, accounts, directories, owners and modes, symlinks) becomes spec, the rest is
//! left to a build step.

use kdl::KdlValue;

use crate::spec::values as check;

use super::parse::words;
use super::stage::Stage;
use super::values::{absolute, image_path_ok};
use super::writer::{int, Node};

/// An octal mode the spec takes (at most 0o7777).
pub(super) fn octal_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// A RUN part that is not a command to run but a statement about the image; `None` leaves it
/// to a build step, as written (so what the spec could not say is still done, and flagged).
pub(super) fn classify(part: &str, stage: &mut Stage, line: usize) -> Option<String> {
    if let Some(rest) = part.strip_prefix("rm ") {
        return apt_cleanup(rest);
    }
    let words = words(part, true)?;
    let (cmd, args) = words.split_first()?;
    let cmd = cmd.rsplit('/').next().unwrap_or(cmd);
    match cmd {
        "apt-get" | "apt" => apt(args, stage),
        "true" | ":" => Some("no-op".into()),
        "groupadd" | "addgroup" => groupadd(args, stage),
        "useradd" | "adduser" => useradd(args, stage, line),
        "mkdir" => mkdir(args, stage, line),
        "chown" | "chmod" => chown_chmod(cmd, args, stage),
        "ln" => ln(args, stage, line),
        _ => None,
    }
}

/// `rm` of apt's lists and caches (or of temporary files): dropped, since compose writes none;
/// `None` leaves any other `rm` to a build step.
fn apt_cleanup(rest: &str) -> Option<String> {
    let paths: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with('-')).collect();
    let cleanable = |p: &str| {
        ["/var/lib/apt/lists", "/var/cache/apt", "/var/log/apt", "/var/cache/debconf", "/tmp/*", "/var/tmp/*"]
            .iter()
            .any(|c| p.starts_with(c))
    };
    if !paths.is_empty() && paths.iter().all(|p| cleanable(p)) {
        return Some("apt clean-up dropped (compose writes no lists or caches)".into());
    }
    None
}

/// `apt-get`/`apt`: an install becomes `packages` (with a Debian suite to take them from), updates
/// and clean-ups are dropped; `None` leaves the part to a build step.
fn apt(args: &[String], stage: &mut Stage) -> Option<String> {
    let sub = args.iter().find(|a| !a.starts_with('-'))?;
    match sub.as_str() {
        "update" | "clean" | "autoclean" | "autoremove" => Some(format!("`apt-get {sub}` dropped (nothing to clean)")),
        "install" => apt_install(args, stage),
        _ => None,
    }
}

/// `apt-get install`: `packages`, when the stage has a Debian suite to take them from and
/// every argument is a package (with a version or not) or an option that changes nothing the
/// spec says; `None` leaves it to a build step, which runs apt.
fn apt_install(args: &[String], stage: &mut Stage) -> Option<String> {
    // Without a Debian suite there is no repository to name: the step runs apt.
    stage.suite.as_ref()?;
    const QUIET: &[&str] = &["-y", "--yes", "--assume-yes", "-q", "-qq", "--quiet", "--no-install-recommends", "--no-install-suggests"];
    let mut pkgs = Vec::new();
    let mut skip = false;
    for a in args.iter().skip_while(|a| a.as_str() != "install").skip(1) {
        if skip {
            skip = false;
            continue;
        }
        match a.as_str() {
            "-o" => skip = true,
            a if QUIET.contains(&a) => {}
            a if a.starts_with('-') => return None,
            a => {
                let (name, version) = a.split_once('=').map_or((a, None), |(n, v)| (n, Some(v)));
                if !check::valid_package_name(name) || version.is_some_and(|v| !check::valid_package_version(v)) {
                    return None;
                }
                pkgs.push(a.to_string());
            }
        }
    }
    if args.iter().any(|a| a.starts_with('-') && !QUIET.contains(&a.as_str()) && a != "-o") {
        return None;
    }
    for p in &pkgs {
        let name = p.split('=').next().unwrap_or(p);
        if !stage.packages.iter().any(|q| q.split('=').next() == Some(name)) {
            stage.packages.push(p.clone());
        }
    }
    Some(format!(
        "packages {} (their maintainer scripts' effects are emulated; `maintainer-scripts \"run\"` runs them as apt does)",
        pkgs.join(" ")
    ))
}

/// `groupadd`/`addgroup`: a group of `accounts`; `None` leaves the part to a build step.
fn groupadd(args: &[String], stage: &mut Stage) -> Option<String> {
    let mut gid = None;
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-g" | "--gid" => gid = Some(it.next()?.parse::<u32>().ok()?),
            "-r" | "--system" | "-f" | "--force" => {}
            a if a.starts_with('-') => return None,
            a => name = Some(a.to_string()),
        }
    }
    let name = name.filter(|n| check::valid_account_name(n))?;
    if stage.groups.iter().any(|(n, _)| *n == name) {
        return None;
    }
    let gid = match gid {
        Some(g) => g,
        None => next_id(&mut stage.next_system_uid, true, |g| stage.groups.iter().any(|(_, x)| *x == g))?,
    };
    if stage.groups.iter().any(|(_, g)| *g == gid) {
        return None;
    }
    stage.groups.push((name.clone(), gid));
    Some(format!("accounts: group {name}"))
}

/// `useradd`/`adduser`: a user of `accounts` (and its group, when it has none named); `None` leaves
/// the part to a build step.
fn useradd(args: &[String], stage: &mut Stage, line: usize) -> Option<String> {
    let (mut uid, mut group, mut home, mut shell, mut gecos, mut system) = (None, None, None, None, None, false);
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-u" | "--uid" => uid = Some(it.next()?.parse::<u32>().ok()?),
            "-g" | "--gid" | "--ingroup" => group = Some(it.next()?.clone()),
            "-d" | "--home-dir" | "--home" => home = Some(it.next()?.clone()),
            "-s" | "--shell" => shell = Some(it.next()?.clone()),
            "-c" | "--comment" | "--gecos" => gecos = Some(it.next()?.clone()),
            "-r" | "--system" => system = true,
            "-m"
            | "--create-home"
            | "-M"
            | "--no-create-home"
            | "--disabled-password"
            | "--disabled-login"
            | "-N"
            | "--no-user-group"
            | "-U"
            | "--user-group"
            | "--group"
            | "-l"
            | "--no-log-init"
            | "-q"
            | "--quiet" => {}
            a if a.starts_with('-') => return None,
            a => name = Some(a.to_string()),
        }
    }
    let name = name.filter(|n| check::valid_account_name(n))?;
    // What the spec would refuse stays with useradd, in a step.
    let file_path = |p: &Option<String>| p.as_deref().is_none_or(|p| p != "/" && p.starts_with('/') && image_path_ok(p));
    if !file_path(&home) || !file_path(&shell) || gecos.as_deref().is_some_and(|g| g.contains([':', '\n', '\0'])) {
        return None;
    }
    if stage.users.iter().any(|(n, _, _)| *n == name) {
        return None;
    }
    let uid = match uid {
        Some(u) => u,
        None if system => next_id(&mut stage.next_system_uid, true, |u| stage.users.iter().any(|(_, x, _)| *x == u))?,
        None => next_id(&mut stage.next_uid, false, |u| stage.users.iter().any(|(_, x, _)| *x == u))?,
    };
    if stage.users.iter().any(|(_, u, _)| *u == uid) {
        return None;
    }
    let gid = user_gid(group.as_deref(), &name, uid, stage)?;
    let mut node = Node::new("user", line).arg(name.as_str()).prop("uid", int(uid)).prop("gid", int(gid));
    for (k, v) in [("home", home), ("shell", shell), ("gecos", gecos)] {
        if let Some(v) = v {
            node = node.prop(k, v);
        }
    }
    stage.users.push((name.clone(), uid, node));
    Some(format!("accounts: user {name}"))
}

/// The group of a new user `name` with `uid`: the one `group` names (a gid, or a group of the
/// stage), else the group named as the user, else a new one of that name with the uid as its
/// gid; `None` when that gid is taken or the named group is not known.
fn user_gid(group: Option<&str>, name: &str, uid: u32, stage: &mut Stage) -> Option<u32> {
    let gid = match group {
        None => match stage.groups.iter().find(|(g, _)| *g == name) {
            Some((_, g)) => *g,
            None if stage.groups.iter().any(|(_, g)| *g == uid) => return None,
            None => {
                stage.groups.push((name.to_string(), uid));
                uid
            }
        },
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => stage.groups.iter().find(|(n, _)| n == g).map(|(_, g)| *g)?,
        },
    };
    Some(gid)
}

/// `mkdir`: `dir` file operations; `None` leaves the part to a build step.
fn mkdir(args: &[String], stage: &mut Stage, line: usize) -> Option<String> {
    let mut mode = None;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" | "--parents" => {}
            "-m" | "--mode" => mode = Some(octal_mode(it.next()?)?),
            a if a.starts_with('-') => return None,
            a => paths.push(absolute(a, &stage.workdir)),
        }
    }
    if !paths.iter().all(|p| image_path_ok(p)) {
        return None;
    }
    for p in &paths {
        let mut node = Node::new("dir", line).arg(p.as_str());
        if let Some(m) = mode {
            node = node.prop("mode", int(m));
        }
        stage.made.insert(p.clone(), stage.files.len());
        stage.files.push(node);
    }
    Some(format!("files: dir {}", paths.join(" ")))
}

/// `chown`/`chmod` of what this stage made itself (a `dir` or a `copy`): its `owner` or `mode`;
/// `None` leaves the part to a build step.
fn chown_chmod(cmd: &str, args: &[String], stage: &mut Stage) -> Option<String> {
    let mut it = args.iter().filter(|a| !matches!(a.as_str(), "-R" | "--recursive" | "-h"));
    let value = it.next()?.clone();
    if value.starts_with('-') {
        return None;
    }
    let paths: Vec<String> = it.map(|p| absolute(p, &stage.workdir)).collect();
    let (key, v): (&str, KdlValue) = if cmd == "chown" {
        check::owner(&value).ok()?;
        ("owner", value.into())
    } else {
        ("mode", int(octal_mode(&value)?))
    };
    // Only what this stage made itself (a `dir` or a `copy`) can carry it.
    let lines: Vec<usize> = paths.iter().map(|p| stage.made.get(p.trim_end_matches('/')).copied()).collect::<Option<Vec<_>>>()?;
    if lines.iter().any(|i| stage.files.get(*i).is_none_or(|n| n.has(key))) {
        return None;
    }
    for i in lines {
        if let Some(n) = stage.files.get_mut(i) {
            n.set(key, v.clone());
        }
    }
    Some(format!("{cmd} on {}", paths.join(" ")))
}

/// `ln -s`: a `symlink` file operation; `None` leaves the part to a build step.
fn ln(args: &[String], stage: &mut Stage, line: usize) -> Option<String> {
    let flags: Vec<&String> = args.iter().filter(|a| a.starts_with('-')).collect();
    if !flags.iter().all(|f| matches!(f.as_str(), "-s" | "-sf" | "-fs" | "-snf" | "-sfn" | "-f" | "-n"))
        || !flags.iter().any(|f| f.contains('s'))
    {
        return None;
    }
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let [target, link] = rest.as_slice() else { return None };
    let link = absolute(link, &stage.workdir);
    if link.ends_with('/') || !image_path_ok(&link) || target.trim().is_empty() || target.contains('\0') {
        return None;
    }
    stage.files.push(Node::new("symlink", line).arg(link.as_str()).prop("target", target.as_str()));
    Some(format!("files: symlink {link}"))
}

/// The next free id from `counter` (counting down for system ids, up otherwise), skipping
/// those `used` says are taken; `None` when they run out.
pub(super) fn next_id(counter: &mut u32, down: bool, used: impl Fn(u32) -> bool) -> Option<u32> {
    loop {
        let id = *counter;
        *counter = if down { id.checked_sub(1)? } else { id.checked_add(1)? };
        if !used(id) {
            return Some(id);
        }
    }
}
