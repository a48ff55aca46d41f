//! Accounts and the metadata layer: owner resolution (`Ids`) against `accounts` and the base's
//! passwd/group, the passwd/group text and entries an image gets, how `accounts` enter a hash, and
//! the metadata layer's entries (passwd/group, CA bundle, time zone, merged-/usr links, `/tmp`).

use std::fmt::Write as _;
use std::sync::Arc;

use miette::SourceSpan;

use super::entries::LayerEntries;
use super::{Content, EntryKind, PlannedEntry};
use crate::hash::Encoder;
use crate::spec::{Accounts, Owner};

pub(super) fn encode_accounts(e: &mut Encoder, a: Option<&Accounts>) {
    let Some(a) = a else {
        e.opt_str(None);
        return;
    };
    e.list(a.groups.len());
    for g in &a.groups {
        e.str(&g.name).u64(g.gid as u64).list(g.members.len());
        for m in &g.members {
            e.str(m);
        }
    }
    e.list(a.users.len());
    for u in &a.users {
        e.str(&u.name).u64(u.uid as u64).u64(u.gid as u64).str(&u.gecos).str(&u.home).str(&u.shell);
    }
}

/// The metadata layer's entries, from what the build read out of the packages.
pub struct MetaInputs<'a> {
    pub accounts: Option<&'a Accounts>,
    pub base_accounts: Option<&'a (String, String)>,
    pub write_accounts: bool,
    /// base-passwd's `passwd.master` and `group.master`.
    pub masters: Option<(String, String)>,
    /// `(path, PEM)` of every certificate ca-certificates ships, sorted by path.
    pub certificates: Vec<(String, Vec<u8>)>,
    pub timezone: Option<&'a str>,
    pub symlinks: &'a [(String, String)],
}

/// Entries of the metadata layer (sorted, parents first).
pub fn meta_entries(m: &MetaInputs<'_>) -> Vec<PlannedEntry> {
    let (mut passwd, mut group) = match (&m.masters, m.base_accounts) {
        (Some((p, g)), _) | (None, Some((p, g))) => (p.clone(), g.clone()),
        (None, None) => ("root:x:0:0:root:/root:/sbin/nologin\n".to_string(), "root:x:0:\n".to_string()),
    };
    if let Some(a) = m.accounts {
        passwd = merge_db(
            &passwd,
            a.users.iter().map(|u| (u.name.clone(), format!("{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell))),
        );
        group = merge_db(&group, a.groups.iter().map(|g| (g.name.clone(), format!("{}:x:{}:{}", g.name, g.gid, g.members.join(",")))));
    }
    let file = |path: &str, bytes: Vec<u8>, mode: u32| PlannedEntry {
        path: path.into(),
        kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(Arc::new(bytes)) },
        mode,
        uid: 0,
        gid: 0,
    };
    let dir = |path: &str, mode: u32, uid: u32, gid: u32| PlannedEntry { path: path.into(), kind: EntryKind::Dir, mode, uid, gid };
    let mut layer = LayerEntries::default();
    let span = SourceSpan::from(0..0);
    let mut push = |e: PlannedEntry| {
        let _ = layer.insert(e, span);
    };
    for (link, target) in m.symlinks {
        push(PlannedEntry { path: link.clone(), kind: EntryKind::Symlink { target: target.clone() }, mode: 0o777, uid: 0, gid: 0 });
    }
    push(dir("/tmp", 0o1777, 0, 0));
    push(dir("/root", 0o700, 0, 0));
    if m.write_accounts {
        push(file("/etc/passwd", passwd.into_bytes(), 0o644));
        push(file("/etc/group", group.into_bytes(), 0o644));
    }
    if let Some(a) = m.accounts {
        for u in &a.users {
            if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") || u.uid == 0 {
                continue;
            }
            push(dir(&u.home, 0o755, u.uid, u.gid));
        }
    }
    if !m.certificates.is_empty() {
        // update-ca-certificates: every certificate, PEM, in the order of its sorted list.
        let mut bundle = Vec::new();
        for (_, pem) in &m.certificates {
            bundle.extend_from_slice(pem);
            if !pem.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        push(file("/etc/ssl/certs/ca-certificates.crt", bundle, 0o644));
        let conf: String =
            m.certificates.iter().filter_map(|(p, _)| p.strip_prefix("/usr/share/ca-certificates/")).map(|p| format!("{p}\n")).collect();
        push(file("/etc/ca-certificates.conf", conf.into_bytes(), 0o644));
    }
    if let Some(tz) = m.timezone {
        push(PlannedEntry {
            path: "/etc/localtime".into(),
            kind: EntryKind::Symlink { target: format!("/usr/share/zoneinfo/{tz}") },
            mode: 0o777,
            uid: 0,
            gid: 0,
        });
        push(file("/etc/timezone", format!("{tz}\n").into_bytes(), 0o644));
    }
    layer.finish()
}

/// Replace lines of a passwd/group-style file by name, appending new names in order.
fn merge_db(base: &str, entries: impl Iterator<Item = (String, String)>) -> String {
    let mut lines: Vec<String> = base.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    for (name, line) in entries {
        let prefix = format!("{name}:");
        match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
            Some(l) => *l = line,
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Users and groups known to an image: `root`, the base's `/etc/passwd` and `/etc/group`, then
/// `accounts` (which win).
pub(super) struct Ids {
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32)>,
}

impl Ids {
    pub(super) fn new(accounts: Option<&Accounts>, inherited: Option<&(String, String)>) -> Ids {
        let mut users = vec![("root".to_string(), 0, 0)];
        let mut groups = vec![("root".to_string(), 0)];
        if let Some((passwd, group)) = inherited {
            for f in passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
                if let (Some(name), Some(Ok(uid)), Some(Ok(gid))) = (f.first(), f.get(2).map(|v| v.parse()), f.get(3).map(|v| v.parse())) {
                    if !name.is_empty() && !users.iter().any(|(n, _, _)| n == name) {
                        users.push((name.to_string(), uid, gid));
                    }
                }
            }
            for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
                if let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|v| v.parse())) {
                    if !name.is_empty() && !groups.iter().any(|(n, _)| n == name) {
                        groups.push((name.to_string(), gid));
                    }
                }
            }
        }
        if let Some(a) = accounts {
            for u in &a.users {
                users.retain(|(n, _, _)| n != &u.name);
                users.push((u.name.clone(), u.uid, u.gid));
            }
            for g in &a.groups {
                groups.retain(|(n, _)| n != &g.name);
                groups.push((g.name.clone(), g.gid));
            }
        }
        Ids { users, groups }
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.iter().find(|(n, _, _)| n == name).map(|(_, u, g)| (*u, *g))
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g)
    }

    /// `NAME`, `UID`, `NAME:GROUP`, `UID:GID` and mixes.
    pub(super) fn resolve(&self, owner: &Owner) -> Result<(u32, u32), String> {
        match owner {
            Owner::Ids(u, g) => Ok((*u, *g)),
            Owner::Name(s) => {
                let (u, g) = match s.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (s.as_str(), None),
                };
                let (uid, primary) = match u.parse::<u32>() {
                    Ok(n) => (n, n),
                    Err(_) => self.user(u).ok_or_else(|| format!("unknown owner `{s}`: there is no user `{u}` in `accounts`"))?,
                };
                let gid = match g {
                    None => primary,
                    Some(g) => match g.parse::<u32>() {
                        Ok(n) => n,
                        Err(_) => self.group(g).ok_or_else(|| format!("unknown owner `{s}`: there is no group `{g}` in `accounts`"))?,
                    },
                };
                Ok((uid, gid))
            }
        }
    }

    pub(super) fn check_user(&self, user: &str) -> Result<(), String> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        if u.parse::<u32>().is_err() && self.user(u).is_none() {
            return Err(format!("unknown user `{u}`: it is not in `accounts`"));
        }
        if let Some(g) = g {
            if g.parse::<u32>().is_err() && self.group(g).is_none() {
                return Err(format!("unknown group `{g}`: it is not in `accounts`"));
            }
        }
        Ok(())
    }

    pub(super) fn help(&self) -> String {
        let names: Vec<&str> = self.users.iter().map(|(n, _, _)| n.as_str()).collect();
        format!("known users: {}; or give numeric ids as \"UID:GID\"", names.join(", "))
    }
}

/// `/etc/passwd` and `/etc/group` for `accounts`: merged into the base's (`inherited`), or root
/// plus the accounts.
pub(super) fn accounts_text(a: &Accounts, inherited: Option<&(String, String)>) -> (String, String) {
    let user_line = |u: &crate::spec::User| format!("{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell);
    let group_line = |g: &crate::spec::Group| format!("{}:x:{}:{}", g.name, g.gid, g.members.join(","));
    if let Some((p, g)) = inherited {
        return (
            merge_db(p, a.users.iter().map(|u| (u.name.clone(), user_line(u)))),
            merge_db(g, a.groups.iter().map(|g| (g.name.clone(), group_line(g)))),
        );
    }
    let mut passwd = String::new();
    let mut group = String::new();
    if !a.users.iter().any(|u| u.name == "root") {
        passwd.push_str("root:x:0:0:root:/root:/sbin/nologin\n");
    }
    if !a.groups.iter().any(|g| g.name == "root") {
        group.push_str("root:x:0:\n");
    }
    for u in &a.users {
        let _ = writeln!(passwd, "{}", user_line(u));
    }
    for g in &a.groups {
        let _ = writeln!(group, "{}", group_line(g));
    }
    (passwd, group)
}

/// `/etc/passwd`, `/etc/group` and home directories for `accounts` (root always present).
pub(super) fn accounts_entries(a: &Accounts, inherited: Option<&(String, String)>) -> Vec<PlannedEntry> {
    let (passwd, group) = accounts_text(a, inherited);
    let file = |path: &str, text: String| PlannedEntry {
        path: path.into(),
        kind: EntryKind::File { size: text.len() as u64, content: Content::Inline(Arc::new(text.into_bytes())) },
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut layer = LayerEntries::default();
    let span = a.span;
    let mut push = |e: PlannedEntry| {
        // Home directories may clash with nothing here but each other; first one wins.
        let _ = layer.insert(e, span);
    };
    push(file("/etc/passwd", passwd));
    push(file("/etc/group", group));
    if !a.users.iter().any(|u| u.name == "root") {
        push(PlannedEntry { path: "/root".into(), kind: EntryKind::Dir, mode: 0o700, uid: 0, gid: 0 });
    }
    for u in &a.users {
        if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") {
            continue;
        }
        let mode = if u.uid == 0 { 0o700 } else { 0o755 };
        push(PlannedEntry { path: u.home.clone(), kind: EntryKind::Dir, mode, uid: u.uid, gid: u.gid });
    }
    layer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_against_the_base_accounts_then_ours() {
        let inherited = (
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbroken line\napp:x:5:5::/:/bin/sh\n".to_string(),
            "root:x:0:\nwww-data:x:33:\nstaff:x:50:\n".to_string(),
        );
        let ours = Accounts {
            users: vec![crate::spec::User {
                name: "app".into(),
                uid: 1000,
                gid: 1000,
                gecos: String::new(),
                home: "/".into(),
                shell: "/bin/sh".into(),
                span: (0, 0).into(),
            }],
            groups: vec![],
            span: (0, 0).into(),
        };
        let ids = Ids::new(Some(&ours), Some(&inherited));
        assert_eq!(ids.resolve(&Owner::Name("www-data".into())), Ok((33, 33)));
        assert_eq!(ids.resolve(&Owner::Name("www-data:staff".into())), Ok((33, 50)));
        assert_eq!(ids.resolve(&Owner::Name("app".into())), Ok((1000, 1000)), "accounts win over the base");
        assert!(ids.resolve(&Owner::Name("nobody".into())).is_err());
        assert!(ids.check_user("www-data:staff").is_ok());
        let scratch = Ids::new(None, None);
        assert!(scratch.resolve(&Owner::Name("www-data".into())).is_err());
    }
}
