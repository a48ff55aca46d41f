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
        let paths: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with('-')).collect();
        let cleanable = |p: &str| {
            ["/var/lib/apt/lists", "/var/cache/apt", "/var/log/apt", "/var/cache/debconf", "/tmp/*", "/var/tmp/*"]
                .iter()
                .any(|c| p.starts_with(c))
        };
        if !paths.is_empty() && paths.iter().all(|p| cleanable(p)) {
            return Some("apt clean-up dropped (compose writes no lists or caches)".into());
        }
        return None;
    }
    let words = words(part, true)?;
    let (cmd, args) = words.split_first()?;
    let cmd = cmd.rsplit('/').next().unwrap_or(cmd);
    match cmd {
        "apt-get" | "apt" => {
            let sub = args.iter().find(|a| !a.starts_with('-'))?;
            match sub.as_str() {
                "update" | "clean" | "autoclean" | "autoremove" => Some(format!("`apt-get {sub}` dropped (nothing to clean)")),
                "install" => {
                    // Without a Debian suite there is no repository to name: the step runs apt.
                    stage.suite.as_ref()?;
                    const QUIET: &[&str] =
                        &["-y", "--yes", "--assume-yes", "-q", "-qq", "--quiet", "--no-install-recommends", "--no-install-suggests"];
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
                _ => None,
            }
        }
        "true" | ":" => Some("no-op".into()),
        "groupadd" | "addgroup" => {
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
        "useradd" | "adduser" => {
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
            let gid = match &group {
                None => match stage.groups.iter().find(|(g, _)| *g == name) {
                    Some((_, g)) => *g,
                    None if stage.groups.iter().any(|(_, g)| *g == uid) => return None,
                    None => {
                        stage.groups.push((name.clone(), uid));
                        uid
                    }
                },
                Some(g) => match g.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => stage.groups.iter().find(|(n, _)| n == g).map(|(_, g)| *g)?,
                },
            };
            let mut node = Node::new("user", line).arg(name.as_str()).prop("uid", int(uid)).prop("gid", int(gid));
            for (k, v) in [("home", home), ("shell", shell), ("gecos", gecos)] {
                if let Some(v) = v {
                    node = node.prop(k, v);
                }
            }
            stage.users.push((name.clone(), uid, node));
            Some(format!("accounts: user {name}"))
        }
        "mkdir" => {
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
        "chown" | "chmod" => {
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
        "ln" => {
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
        _ => None,
    }
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
