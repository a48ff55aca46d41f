//! An image's `accounts` block: its `group` and `user` nodes, with names and
//! ids unique within the block.

use kdl::KdlNode;
use miette::SourceSpan;

use super::super::values::valid_account_name;
use super::super::{Accounts, Group, User};
use super::{value_span, Decoder, Seen, ACCOUNT_CHILDREN, USAGE_ACCOUNTS, USAGE_GROUP, USAGE_USER};

impl Decoder {
    /// Records an account's name and id, reporting a name or id defined before. True when both
    /// are new.
    fn unique_account(
        &mut self,
        kind: &str,
        (name, name_at): (&String, SourceSpan),
        (id, id_at): (u32, SourceSpan),
        names: &mut Seen<String>,
        ids: &mut Seen<u32>,
    ) -> bool {
        let mut ok = true;
        if let Some(first) = names.first(name.clone(), name_at) {
            ok = false;
            let msg = format!("{kind} `{name}` is defined more than once");
            self.duplicate("compose::spec::duplicate_account", msg, name_at, first, "defined");
        }
        if let Some(first) = ids.first(id, id_at) {
            ok = false;
            let msg = format!("{kind} id {id} is used by more than one {kind}");
            self.duplicate("compose::spec::duplicate_account", msg, id_at, first, "used");
        }
        ok
    }

    pub(super) fn accounts(&mut self, kdl: &KdlNode) -> Accounts {
        let node = self.open(kdl, USAGE_ACCOUNTS);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut acc = Accounts { groups: Vec::new(), users: Vec::new(), span: node.head };
        let mut group_names = Seen::new();
        let mut gids = Seen::new();
        let mut user_names = Seen::new();
        let mut uids = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            match c.name().value() {
                "group" => {
                    let Some((g, name_at, id_at)) = self.group(c) else {
                        continue;
                    };
                    let ids = (g.gid, id_at);
                    if self.unique_account("group", (&g.name, name_at), ids, &mut group_names, &mut gids) {
                        acc.groups.push(g);
                    }
                }
                "user" => {
                    let Some((u, name_at, id_at)) = self.user(c) else {
                        continue;
                    };
                    let ids = (u.uid, id_at);
                    if self.unique_account("user", (&u.name, name_at), ids, &mut user_names, &mut uids) {
                        acc.users.push(u);
                    }
                }
                _ => self.unknown_node(c, "accounts", ACCOUNT_CHILDREN),
            }
        }
        acc
    }

    fn group(&mut self, kdl: &KdlNode) -> Option<(Group, SourceSpan, SourceSpan)> {
        let node = self.open(kdl, USAGE_GROUP);
        self.leaf(&node);
        let props = self.props(&node, &["gid", "members"]);
        let args = self.args(&node, 1, Some(1), "a group name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.account_name(e, "group"));
        let gid_e = self.require(&node, &props, "gid");
        let gid = gid_e.and_then(|e| self.id(e, "the group id"));
        let mut members = Vec::new();
        let mut members_ok = true;
        if let Some(e) = props.get("members") {
            match self.string(e, "members") {
                Some(s) => {
                    for m in s.split_whitespace() {
                        if valid_account_name(m) {
                            members.push(m.to_owned());
                        } else {
                            members_ok = false;
                            self.push(
                                "compose::spec::bad_name",
                                format!("invalid member name `{m}`"),
                                vec![(value_span(e), "invalid name".to_owned())],
                                Some("members are user names separated by spaces".to_owned()),
                            );
                        }
                    }
                }
                None => members_ok = false,
            }
        }
        let (name, gid, name_e, gid_e) = (name?, gid?, name_e?, gid_e?);
        members_ok.then(|| (Group { name, gid, members, span: node.head }, value_span(name_e), value_span(gid_e)))
    }

    fn user(&mut self, kdl: &KdlNode) -> Option<(User, SourceSpan, SourceSpan)> {
        let node = self.open(kdl, USAGE_USER);
        self.leaf(&node);
        let props = self.props(&node, &["uid", "gid", "home", "shell", "gecos"]);
        let args = self.args(&node, 1, Some(1), "a user name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.account_name(e, "user"));
        let uid_e = self.require(&node, &props, "uid");
        let uid = uid_e.and_then(|e| self.id(e, "the user id"));
        let mut ok = true;
        let gid = match props.get("gid") {
            Some(e) => {
                let g = self.id(e, "the group id");
                ok &= g.is_some();
                g
            }
            None => None,
        };
        let mut path_prop = |this: &mut Self, key: &str| match props.get(key) {
            Some(e) => {
                let p = this.file_path(e, &format!("the {key} directory"));
                ok &= p.is_some();
                p
            }
            None => None,
        };
        let home = path_prop(self, "home");
        let shell = path_prop(self, "shell");
        let gecos = match props.get("gecos") {
            Some(e) => match self.string(e, "gecos") {
                Some(s) if s.contains([':', '\n', '\0']) => {
                    ok = false;
                    self.push(
                        "compose::spec::bad_value",
                        "gecos must not contain `:` or line breaks",
                        vec![(value_span(e), "not allowed in /etc/passwd".to_owned())],
                        None,
                    );
                    None
                }
                Some(s) => Some(s.to_owned()),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let (name, uid, name_e, uid_e) = (name?, uid?, name_e?, uid_e?);
        if !ok {
            return None;
        }
        let home = home.unwrap_or_else(|| format!("/home/{name}"));
        Some((
            User {
                gid: gid.unwrap_or(uid),
                home,
                shell: shell.unwrap_or_else(|| "/sbin/nologin".to_owned()),
                gecos: gecos.unwrap_or_default(),
                name,
                uid,
                span: node.head,
            },
            value_span(name_e),
            value_span(uid_e),
        ))
    }
}
