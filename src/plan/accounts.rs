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
    pub timezone: Option<&'a str>,
    pub symlinks: &'a [(String, String)],
    /// What the packages' manager and maintainer scripts leave beyond the packages' own files,
    /// in the order they are put (a later entry replaces an earlier one at its path): the
    /// ecosystem's to say (`debian::effects`).
    pub packages: Vec<PlannedEntry>,
    /// passwd and group when neither base-passwd nor the base brings any: the ecosystem's.
    pub default_accounts: (&'a str, &'a str),
    /// A working directory to make (root, 0755).
    pub workdir: Option<&'a str>,
}

/// Entries of the metadata layer (sorted, parents first).
pub fn meta_entries(m: &MetaInputs<'_>) -> Vec<PlannedEntry> {
    let mut layer = LayerEntries::default();
    put_layout(&mut layer, m);
    put_accounts(&mut layer, m);
    for e in &m.packages {
        put(&mut layer, e.clone());
    }
    if let Some(tz) = m.timezone {
        put(&mut layer, PlannedEntry::symlink("/etc/localtime", &format!("/usr/share/zoneinfo/{tz}")));
        put(&mut layer, PlannedEntry::file("/etc/timezone", format!("{tz}\n").into_bytes(), 0o644));
    }
    layer.finish()
}

/// A metadata entry into its layer: it replaces one at the same path, unless one is a
/// directory and the other not (then it is left out).
fn put(layer: &mut LayerEntries, e: PlannedEntry) {
    let _ = layer.insert(e, SourceSpan::from(0..0));
}

/// A directory of the metadata layer.
fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> PlannedEntry {
    PlannedEntry { path: path.into(), kind: EntryKind::Dir, mode, uid, gid }
}

/// The base layout: the merged-`/usr` links, `/tmp`, `/root` and the working directory.
fn put_layout(layer: &mut LayerEntries, m: &MetaInputs<'_>) {
    for (link, target) in m.symlinks {
        put(layer, PlannedEntry::symlink(link, target));
    }
    put(layer, dir("/tmp", 0o1777, 0, 0));
    put(layer, dir("/root", 0o700, 0, 0));
    if let Some(w) = m.workdir {
        put(layer, dir(w, 0o755, 0, 0));
    }
}

/// `/etc/passwd` and `/etc/group` (base-passwd's masters, else the base's, else the ecosystem's defaults, with
/// `accounts` merged in), the shadow files, and the users' home directories.
fn put_accounts(layer: &mut LayerEntries, m: &MetaInputs<'_>) {
    let (mut passwd, mut group) = match (&m.masters, m.base_accounts) {
        (Some((p, g)), _) | (None, Some((p, g))) => (p.clone(), g.clone()),
        (None, None) => (m.default_accounts.0.to_string(), m.default_accounts.1.to_string()),
    };
    if let Some(a) = m.accounts {
        passwd = merge_db(
            &passwd,
            a.users.iter().map(|u| (u.name.clone(), format!("{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell))),
        );
        group = merge_db(&group, a.groups.iter().map(|g| (g.name.clone(), format!("{}:x:{}:{}", g.name, g.gid, g.members.join(",")))));
    }
    if m.write_accounts {
        if m.accounts.is_some() {
            for e in shadow_entries(&passwd, &group) {
                put(layer, e);
            }
        }
        put(layer, PlannedEntry::file("/etc/passwd", passwd.into_bytes(), 0o644));
        put(layer, PlannedEntry::file("/etc/group", group.into_bytes(), 0o644));
    }
    if let Some(a) = m.accounts {
        for u in &a.users {
            if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") || u.uid == 0 {
                continue;
            }
            put(layer, dir(&u.home, 0o755, u.uid, u.gid));
        }
    }
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

/// `/etc/shadow` and `/etc/gshadow` for `passwd` and `group`, as `useradd` leaves them for an
/// account without a password: locked (`!`) for the accounts of the spec (whose `passwd` entry
/// says `x`), `*` for the rest; no password ageing dates (so no clock in the image). Without
/// them `su` and PAM refuse the `x` accounts ("Authentication failure").
pub(super) fn shadow_entries(passwd: &str, group: &str) -> Vec<PlannedEntry> {
    let locked = |pw: Option<&str>| if pw == Some("x") { "!" } else { "*" };
    let mut shadow = String::new();
    for f in passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() > 2 && !f[0].is_empty()) {
        let _ = writeln!(shadow, "{}:{}::0:99999:7:::", f[0], locked(f.get(1).copied()));
    }
    let mut gshadow = String::new();
    for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() > 2 && !f[0].is_empty()) {
        let _ = writeln!(gshadow, "{}:{}::{}", f[0], locked(f.get(1).copied()), f.get(3).copied().unwrap_or(""));
    }
    // Debian: root:shadow 0640.
    let shadow_gid =
        group.lines().find_map(|l| l.strip_prefix("shadow:")).and_then(|r| r.split(':').nth(1)).and_then(|g| g.parse().ok()).unwrap_or(0);
    [("/etc/shadow", shadow), ("/etc/gshadow", gshadow)]
        .into_iter()
        .map(|(path, text)| PlannedEntry {
            path: path.into(),
            kind: EntryKind::File { size: text.len() as u64, content: Content::Inline(Arc::new(text.into_bytes())) },
            mode: 0o640,
            uid: 0,
            gid: shadow_gid,
        })
        .collect()
}

/// `/etc/passwd`, `/etc/group` and home directories for `accounts` (root always present).
pub(super) fn accounts_entries(a: &Accounts, inherited: Option<&(String, String)>) -> Vec<PlannedEntry> {
    let (passwd, group) = accounts_text(a, inherited);
    let shadow = shadow_entries(&passwd, &group);
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
    for e in shadow {
        push(e);
    }
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
    use crate::spec::{Group, User};

    fn user(name: &str, uid: u32, gid: u32, home: &str) -> User {
        User { name: name.into(), uid, gid, gecos: String::new(), home: home.into(), shell: "/sbin/nologin".into(), span: (0, 0).into() }
    }

    fn group(name: &str, gid: u32, members: &[&str]) -> Group {
        Group { name: name.into(), gid, members: members.iter().map(|m| m.to_string()).collect(), span: (0, 0).into() }
    }

    fn accounts(users: Vec<User>, groups: Vec<Group>) -> Accounts {
        Accounts { users, groups, span: (0, 0).into() }
    }

    fn name(s: &str) -> Owner {
        Owner::Name(s.into())
    }

    /// The bytes of the file entry at `path`.
    fn text_of(entries: &[PlannedEntry], path: &str) -> Option<String> {
        entries.iter().find(|e| e.path == path).and_then(|e| match &e.kind {
            EntryKind::File { content: Content::Inline(b), size } => {
                assert_eq!(*size, b.len() as u64, "size of {path}");
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        })
    }

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

    #[test]
    fn every_owner_form_resolves() {
        let ours = accounts(vec![user("app", 10001, 10001, "/home/app")], vec![group("staff", 50, &[])]);
        let ids = Ids::new(Some(&ours), None);
        assert_eq!(ids.resolve(&Owner::Ids(7, 8)), Ok((7, 8)));
        assert_eq!(ids.resolve(&name("root")), Ok((0, 0)), "root is always known");
        assert_eq!(ids.resolve(&name("app")), Ok((10001, 10001)), "a user alone gets its primary group");
        assert_eq!(ids.resolve(&name("app:staff")), Ok((10001, 50)));
        assert_eq!(ids.resolve(&name("app:0")), Ok((10001, 0)));
        assert_eq!(ids.resolve(&name("1000")), Ok((1000, 1000)), "a numeric user alone: gid = uid");
        assert_eq!(ids.resolve(&name("1000:2000")), Ok((1000, 2000)));
        assert_eq!(ids.resolve(&name("1000:staff")), Ok((1000, 50)));
        assert_eq!(ids.resolve(&name("ghost")), Err("unknown owner `ghost`: there is no user `ghost` in `accounts`".to_string()));
        assert_eq!(
            ids.resolve(&name("app:nogroup")),
            Err("unknown owner `app:nogroup`: there is no group `nogroup` in `accounts`".to_string())
        );
        assert_eq!(ids.help(), "known users: root, app; or give numeric ids as \"UID:GID\"");
    }

    #[test]
    fn check_user_accepts_known_names_and_numbers_only() {
        let ours = accounts(vec![user("app", 10001, 10001, "/home/app")], vec![group("app", 10001, &[])]);
        let ids = Ids::new(Some(&ours), None);
        for ok in ["app", "root", "0", "1000:1000", "app:app", "app:0", "65534:app"] {
            assert_eq!(ids.check_user(ok), Ok(()), "{ok}");
        }
        assert_eq!(ids.check_user("ghost"), Err("unknown user `ghost`: it is not in `accounts`".to_string()));
        assert_eq!(ids.check_user("app:ghosts"), Err("unknown group `ghosts`: it is not in `accounts`".to_string()));
    }

    #[test]
    fn accounts_replace_base_users_and_groups_of_the_same_name() {
        let inherited =
            ("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n".to_string(), "root:x:0:\nweb:x:33:\n".to_string());
        let ours = accounts(vec![user("web", 2000, 2001, "/srv"), user("root", 0, 0, "/root")], vec![group("web", 2001, &[])]);
        let ids = Ids::new(Some(&ours), Some(&inherited));
        assert_eq!(ids.resolve(&name("web")), Ok((2000, 2001)));
        assert_eq!(ids.resolve(&name("0:web")), Ok((0, 2001)));
        // Each name once: ours replaced the base's.
        assert_eq!(ids.users.iter().filter(|(n, _, _)| n == "web").count(), 1);
        assert_eq!(ids.groups.iter().filter(|(n, _)| n == "web").count(), 1);
    }

    #[test]
    fn accounts_text_without_a_base_starts_with_root() {
        let ours = accounts(vec![user("app", 10001, 10001, "/home/app")], vec![group("app", 10001, &["app", "ops"])]);
        let (passwd, group_text) = accounts_text(&ours, None);
        assert_eq!(passwd, "root:x:0:0:root:/root:/sbin/nologin\napp:x:10001:10001::/home/app:/sbin/nologin\n");
        assert_eq!(group_text, "root:x:0:\napp:x:10001:app,ops\n");

        // A spec that defines root gets its own root line, not a second one.
        let with_root = accounts(vec![user("root", 0, 0, "/root")], vec![group("root", 0, &[])]);
        let (passwd, group_text) = accounts_text(&with_root, None);
        assert_eq!(passwd, "root:x:0:0::/root:/sbin/nologin\n");
        assert_eq!(group_text, "root:x:0:\n");
    }

    #[test]
    fn accounts_text_merges_into_the_base_in_place_and_appends_in_spec_order() {
        let inherited = (
            "root:x:0:0:root:/root:/bin/sh\n\nappl:x:7:7::/:/bin/sh\napp:x:5:5::/:/bin/sh\nbin:x:2:2::/bin:/x".to_string(),
            "root:x:0:\napp:x:5:\n".to_string(),
        );
        let ours = accounts(
            vec![user("zed", 3000, 3000, "/z"), user("app", 1000, 1000, "/home/app"), user("abe", 3001, 3001, "/a")],
            vec![group("app", 1000, &[]), group("zed", 3000, &["app"])],
        );
        let (passwd, group_text) = accounts_text(&ours, Some(&inherited));
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\nappl:x:7:7::/:/bin/sh\napp:x:1000:1000::/home/app:/sbin/nologin\nbin:x:2:2::/bin:/x\n\
             zed:x:3000:3000::/z:/sbin/nologin\nabe:x:3001:3001::/a:/sbin/nologin\n"
        );
        assert_eq!(group_text, "root:x:0:\napp:x:1000:\nzed:x:3000:app\n");
        assert_eq!(accounts_text(&ours, Some(&inherited)), (passwd, group_text), "same inputs, same text");
    }

    #[test]
    fn accounts_entries_write_passwd_group_and_homes() {
        let ours = accounts(
            vec![user("app", 10001, 10002, "/home/app"), user("daemon", 1, 1, "/nonexistent"), user("svc", 20, 20, "/")],
            vec![group("app", 10002, &[])],
        );
        let entries = accounts_entries(&ours, None);
        let summary: Vec<(&str, u32, u32, u32)> = entries.iter().map(|e| (e.path.as_str(), e.mode, e.uid, e.gid)).collect();
        assert_eq!(
            summary,
            [
                ("/etc", 0o755, 0, 0),
                ("/etc/group", 0o644, 0, 0),
                ("/etc/gshadow", 0o640, 0, 0),
                ("/etc/passwd", 0o644, 0, 0),
                ("/etc/shadow", 0o640, 0, 0),
                ("/home", 0o755, 0, 0),
                ("/home/app", 0o755, 10001, 10002),
                ("/root", 0o700, 0, 0),
            ]
        );
        assert_eq!(text_of(&entries, "/etc/passwd"), Some(accounts_text(&ours, None).0));
        assert_eq!(text_of(&entries, "/etc/group").as_deref(), Some("root:x:0:\napp:x:10002:\n"));
    }

    #[test]
    fn encode_accounts_tells_none_from_empty_and_sees_every_field() {
        let hash = |a: Option<&Accounts>| {
            let mut e = Encoder::new("t");
            encode_accounts(&mut e, a);
            e.finish()
        };
        let base = accounts(vec![user("app", 1, 1, "/home/app")], vec![group("app", 1, &[])]);
        let empty = accounts(vec![], vec![]);
        assert_ne!(hash(None), hash(Some(&empty)));
        assert_eq!(hash(Some(&base)), hash(Some(&base.clone())));
        let mut other_home = base.clone();
        other_home.users[0].home = "/srv".into();
        let mut other_member = base.clone();
        other_member.groups[0].members.push("app".into());
        let mut spans_moved = base.clone();
        spans_moved.span = (5, 1).into();
        assert_ne!(hash(Some(&base)), hash(Some(&other_home)));
        assert_ne!(hash(Some(&base)), hash(Some(&other_member)));
        assert_eq!(hash(Some(&base)), hash(Some(&spans_moved)), "spans are not part of the hash");
    }

    const DEFAULT_PASSWD: &str = "root:*:0:0:root:/root:/bin/sh\n";
    const DEFAULT_GROUP: &str = "root:*:0:\n";

    fn meta<'a>(symlinks: &'a [(String, String)]) -> MetaInputs<'a> {
        MetaInputs {
            workdir: None,
            accounts: None,
            base_accounts: None,
            write_accounts: true,
            masters: None,
            timezone: None,
            symlinks,
            packages: Vec::new(),
            default_accounts: (DEFAULT_PASSWD, DEFAULT_GROUP),
        }
    }

    #[test]
    fn meta_entries_timezone_is_a_localtime_link_and_a_timezone_file() {
        let mut m = meta(&[]);
        m.timezone = Some("Europe/Paris");
        let entries = meta_entries(&m);
        let localtime = entries.iter().find(|e| e.path == "/etc/localtime").map(|e| (e.kind.clone(), e.mode));
        assert_eq!(localtime, Some((EntryKind::Symlink { target: "/usr/share/zoneinfo/Europe/Paris".into() }, 0o777)));
        assert_eq!(text_of(&entries, "/etc/timezone").as_deref(), Some("Europe/Paris\n"));

        let without = meta_entries(&meta(&[]));
        assert!(!without.iter().any(|e| e.path == "/etc/localtime" || e.path == "/etc/timezone"));
    }

    #[test]
    fn meta_entries_base_layout_links_and_default_accounts() {
        let links = vec![("/bin".to_string(), "usr/bin".to_string()), ("/lib".to_string(), "usr/lib".to_string())];
        let entries = meta_entries(&meta(&links));
        let summary: Vec<(&str, u32)> = entries.iter().map(|e| (e.path.as_str(), e.mode)).collect();
        assert_eq!(
            summary,
            [
                ("/bin", 0o777),
                ("/etc", 0o755),
                ("/etc/group", 0o644),
                ("/etc/passwd", 0o644),
                ("/lib", 0o777),
                ("/root", 0o700),
                ("/tmp", 0o1777),
            ]
        );
        assert_eq!(entries[0].kind, EntryKind::Symlink { target: "usr/bin".into() });
        // Without base-passwd and without a base: the ecosystem's default users and groups.
        assert_eq!(text_of(&entries, "/etc/passwd").as_deref(), Some(DEFAULT_PASSWD));
        assert_eq!(text_of(&entries, "/etc/group").as_deref(), Some(DEFAULT_GROUP));

        let mut kept = meta(&links);
        kept.write_accounts = false;
        assert!(!meta_entries(&kept).iter().any(|e| e.path.starts_with("/etc")), "write_accounts = false writes no passwd/group");
    }

    #[test]
    fn meta_entries_merge_accounts_into_the_masters_before_the_base() {
        let base = ("root:x:0:0:base:/root:/bin/sh\n".to_string(), "root:x:0:\n".to_string());
        let ours = accounts(vec![user("app", 10001, 10001, "/home/app"), user("admin", 0, 0, "/admin")], vec![group("app", 10001, &[])]);
        let mut m = meta(&[]);
        m.base_accounts = Some(&base);
        m.masters = Some((
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n".into(),
            "root:x:0:\ndaemon:x:1:\n".into(),
        ));
        m.accounts = Some(&ours);
        let entries = meta_entries(&m);
        assert_eq!(
            text_of(&entries, "/etc/passwd").as_deref(),
            Some(
                "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\napp:x:10001:10001::/home/app:/sbin/nologin\n\
                 admin:x:0:0::/admin:/sbin/nologin\n"
            )
        );
        assert_eq!(text_of(&entries, "/etc/group").as_deref(), Some("root:x:0:\ndaemon:x:1:\napp:x:10001:\n"));
        let home = entries.iter().find(|e| e.path == "/home/app").map(|e| (e.kind.clone(), e.mode, e.uid, e.gid));
        assert_eq!(home, Some((EntryKind::Dir, 0o755, 10001, 10001)));
        assert!(!entries.iter().any(|e| e.path == "/admin"), "no home directory is made for uid 0");

        // Without masters, the base's files are the starting point.
        m.masters = None;
        let from_base = meta_entries(&m);
        assert!(text_of(&from_base, "/etc/passwd").is_some_and(|p| p.starts_with("root:x:0:0:base:/root:/bin/sh\napp:")));
    }

    #[test]
    fn merge_db_replaces_by_exact_name() {
        let base = "apple:x:1:\n\napp:x:2:\n  \nzoo:x:3:";
        let merged =
            merge_db(base, [("app".to_string(), "app:x:20:".to_string()), ("new".to_string(), "new:x:4:".to_string())].into_iter());
        assert_eq!(merged, "apple:x:1:\napp:x:20:\nzoo:x:3:\nnew:x:4:\n");
        assert_eq!(merge_db("", std::iter::empty()), "\n");
    }
}
