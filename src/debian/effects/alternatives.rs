//! `update-alternatives` without running maintainer scripts: the registrations a package's
//! `postinst` makes, read from the script, and the links and database dpkg's
//! `update-alternatives --install` would leave (auto mode: the highest priority wins).
//!
//! Reading a script is a small, conservative shell evaluation: line continuations, comments,
//! quotes, variables set by plain assignments (`basedir=/usr/lib/jvm/…`, `tools='java keytool'`),
//! `for NAME in WORDS; do … done` loops, and `update-alternatives --install LINK NAME PATH
//! PRIORITY [--slave LINK NAME PATH]…` commands. Conditions are not evaluated: every branch is
//! read, and what a branch would register is kept only if its paths exist in the image, as
//! `update-alternatives` itself refuses a missing master and skips a missing slave. A value made
//! by a command substitution (`$(…)`) is unknown: an assignment of one is ignored (the variable
//! keeps its value) and a command using one is skipped.

use super::Effects;
use crate::entry::PlannedEntry;
use std::collections::{BTreeMap, HashMap};

/// One `update-alternatives --install` call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    /// `(link, name, path)` of each `--slave`.
    pub slaves: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String, bool),
    Var(String, bool),
    /// A command substitution or arithmetic: its value is not known.
    Unknown,
}

type Word = Vec<Part>;

/// Words of one simple command, in order.
type Command = Vec<Word>;

/// Split a script into simple commands (separators: newline, `;`, `&&`, `||`, `|`, `&`).
fn commands(script: &str) -> Vec<Command> {
    let mut lexer = Lexer { chars: script.chars().collect(), out: Vec::new(), cmd: Vec::new(), word: Vec::new(), lit: String::new() };
    let mut i = 0;
    while i < lexer.chars.len() {
        i = lexer.step(i);
    }
    lexer.end_word();
    lexer.end_command();
    lexer.out
}

/// The state of [`commands`]: the commands read so far, the command, word and unquoted literal
/// being read.
struct Lexer {
    chars: Vec<char>,
    out: Vec<Command>,
    cmd: Command,
    word: Word,
    lit: String,
}

impl Lexer {
    /// Reads what starts at `chars[i]`; returns the index after it.
    fn step(&mut self, i: usize) -> usize {
        let chars = &self.chars;
        let c = chars[i];
        match c {
            '\\' if chars.get(i + 1) == Some(&'\n') => i + 2,
            '\\' => {
                if let Some(&n) = chars.get(i + 1) {
                    self.lit.push(n);
                }
                i + 2
            }
            '#' if self.lit.is_empty() && self.word.is_empty() => {
                let mut i = i;
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                i
            }
            '\'' => {
                let close = chars[i + 1..].iter().position(|&c| c == '\'').map_or(chars.len(), |p| i + 1 + p);
                let quoted: String = chars[i + 1..close.min(chars.len())].iter().collect();
                self.flush_lit();
                self.word.push(Part::Lit(quoted, true));
                close + 1
            }
            '"' => {
                self.flush_lit();
                self.double_quoted(i)
            }
            '`' => {
                let close = self.backquote_end(i);
                self.flush_lit();
                self.word.push(Part::Unknown);
                close + 1
            }
            '$' => {
                self.flush_lit();
                let (p, next) = self.dollar(i, false);
                self.word.push(p);
                next
            }
            ' ' | '\t' => {
                self.end_word();
                i + 1
            }
            '\n' | ';' | '&' | '|' => {
                self.end_word();
                self.end_command();
                i + 1
            }
            _ => {
                self.lit.push(c);
                i + 1
            }
        }
    }

    fn flush_lit(&mut self) {
        if !self.lit.is_empty() {
            self.word.push(Part::Lit(std::mem::take(&mut self.lit), false));
        }
    }

    fn end_word(&mut self) {
        self.flush_lit();
        if !self.word.is_empty() {
            self.cmd.push(std::mem::take(&mut self.word));
        }
    }

    fn end_command(&mut self) {
        if !self.cmd.is_empty() {
            self.out.push(std::mem::take(&mut self.cmd));
        }
    }

    /// The index of the backquote closing the one at `chars[i]` (the end when there is none).
    fn backquote_end(&self, i: usize) -> usize {
        self.chars[i + 1..].iter().position(|&c| c == '`').map_or(self.chars.len(), |p| i + 1 + p)
    }

    /// Reads the double-quoted string starting at `chars[i] == '"'` into the word; returns the
    /// index after its closing quote.
    fn double_quoted(&mut self, i: usize) -> usize {
        // An empty "" is still a word.
        self.word.push(Part::Lit(String::new(), true));
        let mut j = i + 1;
        let mut q = String::new();
        while j < self.chars.len() && self.chars[j] != '"' {
            match self.chars[j] {
                '\\' if j + 1 < self.chars.len() && "$`\"\\\n".contains(self.chars[j + 1]) => {
                    if self.chars[j + 1] != '\n' {
                        q.push(self.chars[j + 1]);
                    }
                    j += 2;
                }
                '$' => {
                    if !q.is_empty() {
                        self.word.push(Part::Lit(std::mem::take(&mut q), true));
                    }
                    let (p, next) = self.dollar(j, true);
                    self.word.push(p);
                    j = next;
                }
                '`' => {
                    let close = self.backquote_end(j);
                    self.word.push(Part::Unknown);
                    j = close + 1;
                }
                other => {
                    q.push(other);
                    j += 1;
                }
            }
        }
        if !q.is_empty() {
            self.word.push(Part::Lit(q, true));
        }
        j + 1
    }

    /// `$name`, `${name…}`, `$(…)`, `$((…))` starting at `chars[i] == '$'`; returns the part and
    /// the index after it.
    fn dollar(&self, i: usize, quoted: bool) -> (Part, usize) {
        let chars = &self.chars;
        match chars.get(i + 1).copied() {
            Some('(') => {
                let mut depth = 0;
                let mut j = i + 1;
                while j < chars.len() {
                    match chars[j] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                return (Part::Unknown, j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                (Part::Unknown, j)
            }
            Some('{') => {
                let close = chars[i..].iter().position(|&c| c == '}').map_or(chars.len(), |p| i + p);
                let inner: String = chars[i + 2..close.min(chars.len())].iter().collect();
                let part =
                    if inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') { Part::Var(inner, quoted) } else { Part::Unknown };
                (part, close + 1)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                (Part::Var(chars[i + 1..j].iter().collect(), quoted), j)
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => (Part::Var(c.to_string(), quoted), i + 2),
            _ => (Part::Lit("$".into(), quoted), i + 1),
        }
    }
}

/// The fields of a word (unquoted variables split on whitespace); `None` when it holds an
/// unknown value.
fn expand(word: &Word, vars: &HashMap<String, String>) -> Option<Vec<String>> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut any_quoted = false;
    for p in word {
        match p {
            Part::Unknown => return None,
            Part::Lit(s, q) => {
                any_quoted |= *q;
                if let Some(last) = fields.last_mut() {
                    last.push_str(s);
                }
            }
            Part::Var(name, true) => {
                any_quoted = true;
                if let Some(last) = fields.last_mut() {
                    last.push_str(vars.get(name).map_or("", String::as_str));
                }
            }
            Part::Var(name, false) => {
                let value = vars.get(name).map_or("", String::as_str);
                let mut split = value.split_whitespace();
                if let (Some(first), Some(last)) = (split.next(), fields.last_mut()) {
                    last.push_str(first);
                }
                fields.extend(split.map(str::to_owned));
            }
        }
    }
    if !any_quoted {
        fields.retain(|f| !f.is_empty());
    }
    Some(fields)
}

fn expand_all(cmd: &[Word], vars: &HashMap<String, String>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for w in cmd {
        out.extend(expand(w, vars)?);
    }
    Some(out)
}

/// A word that is a literal `NAME=…` assignment prefix: the name and the value's parts.
fn assignment(word: &Word) -> Option<(String, Word)> {
    let Some(Part::Lit(first, false)) = word.first() else { return None };
    let (name, rest) = first.split_once('=')?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return None;
    }
    let mut value: Word = Vec::new();
    if !rest.is_empty() {
        value.push(Part::Lit(rest.to_owned(), false));
    }
    value.extend(word[1..].iter().cloned().map(|p| match p {
        // An assignment's value is not split.
        Part::Var(n, _) => Part::Var(n, true),
        other => other,
    }));
    Some((name.to_owned(), value))
}

const KEYWORDS: &[&str] = &["if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "fi", "esac", "done", "time"];

/// The registrations `script` makes.
pub fn registrations(script: &str) -> Vec<Registration> {
    let cmds = commands(script);
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    run(&cmds, &mut vars, &mut out, 0);
    out
}

fn literal(word: &Word) -> Option<&str> {
    match word.as_slice() {
        [Part::Lit(s, false)] => Some(s.as_str()),
        _ => None,
    }
}

fn run(cmds: &[Command], vars: &mut HashMap<String, String>, out: &mut Vec<Registration>, depth: usize) {
    if depth > 8 {
        return;
    }
    let mut i = 0;
    while i < cmds.len() {
        let mut words: &[Word] = &cmds[i];
        while let Some(w) = words.first().and_then(literal) {
            if KEYWORDS.contains(&w) {
                words = &words[1..];
            } else {
                break;
            }
        }
        i += 1;
        let Some(first) = words.first() else { continue };
        if literal(first) == Some("for") {
            // for NAME in WORDS; do BODY; done (the `do` may start the body's first command).
            let Some(var) = words.get(1).and_then(literal).map(str::to_owned) else { continue };
            let list = if words.get(2).and_then(literal) == Some("in") { expand_all(&words[3..], vars) } else { None };
            let start = i;
            let mut nest = 1;
            while i < cmds.len() {
                let head: Vec<&str> = cmds[i].iter().filter_map(literal).collect();
                if head.first() == Some(&"for") || head.first() == Some(&"while") || head.first() == Some(&"until") {
                    nest += 1;
                }
                if head.contains(&"done") {
                    nest -= 1;
                    if nest == 0 {
                        break;
                    }
                }
                i += 1;
            }
            let body = cmds[start..i.min(cmds.len())].to_vec();
            i += 1;
            for value in list.unwrap_or_default() {
                vars.insert(var.clone(), value);
                run(&body, vars, out, depth + 1);
            }
            continue;
        }
        // Assignments (alone: `a=b c=d`; before a command they only set its environment).
        let assigns: Vec<(String, Word)> = words.iter().map_while(assignment).collect();
        if assigns.len() == words.len() {
            for (name, value) in assigns {
                if let Some(v) = expand(&value, vars) {
                    vars.insert(name, v.join(" "));
                }
            }
            continue;
        }
        let words = &words[assigns.len()..];
        match words.first().and_then(literal) {
            Some("unset") => {
                for w in &words[1..] {
                    if let Some(n) = literal(w) {
                        vars.remove(n);
                    }
                }
            }
            Some("update-alternatives") | Some("/usr/bin/update-alternatives") | Some("/usr/sbin/update-alternatives") => {
                if let Some(args) = expand_all(&words[1..], vars) {
                    if let Some(r) = parse_install(&args) {
                        out.push(r);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `--install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…` among `args`.
fn parse_install(args: &[String]) -> Option<Registration> {
    let mut i = 0;
    let mut reg: Option<Registration> = None;
    while i < args.len() {
        match args[i].as_str() {
            "--install" => {
                let [link, name, path, prio] = args.get(i + 1..i + 5)? else { return None };
                let priority = prio.parse().ok()?;
                reg = Some(Registration { link: link.clone(), name: name.clone(), path: path.clone(), priority, slaves: Vec::new() });
                i += 5;
            }
            "--slave" => {
                let [link, name, path] = args.get(i + 1..i + 4)? else { return None };
                reg.as_mut()?.slaves.push((link.clone(), name.clone(), path.clone()));
                i += 4;
            }
            "--altdir" | "--admindir" | "--log" => i += 2,
            _ => i += 1,
        }
    }
    reg.filter(|r| r.link.starts_with('/') && r.path.starts_with('/') && !r.name.is_empty() && !r.name.contains('/'))
}

/// What `update-alternatives --auto` leaves for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub name: String,
    pub link: String,
    /// The chosen path.
    pub path: String,
    /// `(link, name, path)` of the chosen registration's slaves whose path exists.
    pub slaves: Vec<(String, String, String)>,
    /// `/var/lib/dpkg/alternatives/NAME`, as update-alternatives writes it.
    pub admin: String,
}

/// Resolve every name registered by `regs` (in package order), keeping registrations whose path
/// exists: the highest priority wins (the first registered on a tie).
pub fn resolve(regs: &[Registration], exists: &dyn Fn(&str) -> bool) -> Vec<Alternative> {
    let mut by_name: BTreeMap<&str, Vec<&Registration>> = BTreeMap::new();
    for r in regs.iter().filter(|r| exists(&r.path)) {
        let list = by_name.entry(r.name.as_str()).or_default();
        if !list.iter().any(|o| o.path == r.path) {
            list.push(r);
        }
    }
    let mut out = Vec::new();
    for (name, list) in by_name {
        let Some(best) = list.iter().copied().reduce(|a, b| if b.priority > a.priority { b } else { a }) else { continue };
        // The slave names of every registration, in first-seen order (the admin file's list).
        let mut slave_names: Vec<(&str, &str)> = Vec::new();
        for r in &list {
            // A slave no registration can point anywhere was not passed (a branch that does not
            // run, such as `if false && …`): update-alternatives never saw it.
            for (link, sname, _) in &r.slaves {
                let anywhere = list.iter().any(|o| o.slaves.iter().any(|(_, n, p)| n == sname && exists(p)));
                if anywhere && !slave_names.iter().any(|(n, _)| n == sname) {
                    slave_names.push((sname.as_str(), link.as_str()));
                }
            }
        }
        let mut admin = format!("auto\n{}\n", best.link);
        for (sname, link) in &slave_names {
            admin.push_str(&format!("{sname}\n{link}\n"));
        }
        admin.push('\n');
        let mut sorted = list.clone();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for r in sorted {
            admin.push_str(&format!("{}\n{}\n", r.path, r.priority));
            for (sname, _) in &slave_names {
                let p = r.slaves.iter().find(|(_, n, p)| n == sname && exists(p)).map_or("", |(_, _, p)| p.as_str());
                admin.push_str(&format!("{p}\n"));
            }
        }
        admin.push('\n');
        out.push(Alternative {
            name: name.to_owned(),
            link: best.link.clone(),
            path: best.path.clone(),
            slaves: best.slaves.iter().filter(|(_, _, p)| exists(p)).cloned().collect(),
            admin,
        });
    }
    out
}

/// update-alternatives: LINK → /etc/alternatives/NAME → PATH, for the master and each slave,
/// and its database entry.
pub(super) fn put_alternatives(layer: &mut Vec<PlannedEntry>, m: &Effects) {
    let merged = m.merged_usr;
    let link = |path: &str, target: &str| {
        let path = if merged { crate::layer::merged_usr_path(path) } else { None }.unwrap_or_else(|| path.to_owned());
        PlannedEntry::symlink(&path, target)
    };
    for a in &m.alternatives {
        for (l, name, path) in std::iter::once((&a.link, &a.name, &a.path)).chain(a.slaves.iter().map(|(l, n, p)| (l, n, p))) {
            layer.push(link(&format!("/etc/alternatives/{name}"), path));
            layer.push(link(l, &format!("/etc/alternatives/{name}")));
        }
        layer.push(PlannedEntry::file(&format!("/var/lib/dpkg/alternatives/{}", a.name), a.admin.clone().into_bytes(), 0o644));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAWK: &str = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\\n            --slave /usr/bin/nawk nawk /usr/bin/mawk\nfi\n";

    const JDK: &str = r#"#!/bin/sh
set -e
priority=1711
basedir=/usr/lib/jvm/java-17-openjdk-amd64
mandir=$basedir/man
srcext=1.gz
dstext=1.gz
jre_tools='java keytool'
case "$1" in
configure)
    if [ -n "$multiarch" ] && [ "$DPKG_MAINTSCRIPT_ARCH" != $(dpkg --print-architecture) ]; then
	priority=$(expr $priority - 1)
    fi
    for i in $jre_tools; do
	unset slave1 slave2 || true
        if [ -e $mandir/man1/$i.$srcext ]; then
	    slave1="--slave \
		/usr/share/man/man1/$i.$dstext \
                $i.$dstext \
                $mandir/man1/$i.$srcext"
	fi
        update-alternatives \
            --install \
            /usr/bin/$i \
            $i \
            $basedir/bin/$i \
            $priority \
	    $slave1 $slave2
    done
    update-alternatives --install /usr/bin/jexec jexec $basedir/lib/jexec $priority --slave /usr/share/binfmts/jar jexec-binfmt `pwd`/jar
    ;;
esac
"#;

    #[test]
    fn reads_literal_calls_with_continuations_and_slaves() {
        let r = registrations(MAWK);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].link.as_str(), r[0].name.as_str(), r[0].path.as_str(), r[0].priority),
            ("/usr/bin/awk", "awk", "/usr/bin/mawk", 5)
        );
        assert_eq!(r[0].slaves[1], ("/usr/bin/nawk".to_string(), "nawk".to_string(), "/usr/bin/mawk".to_string()));
    }

    #[test]
    fn follows_variables_and_loops_and_skips_unknown_values() {
        let r = registrations(JDK);
        let names: Vec<(&str, &str, i64, usize)> =
            r.iter().map(|r| (r.name.as_str(), r.path.as_str(), r.priority, r.slaves.len())).collect();
        // The `$(expr …)` assignment is ignored; the jexec call uses a backquoted value: skipped.
        assert_eq!(
            names,
            [
                ("java", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", 1711, 1),
                ("keytool", "/usr/lib/jvm/java-17-openjdk-amd64/bin/keytool", 1711, 1)
            ]
        );
        assert_eq!(r[0].slaves[0].0, "/usr/share/man/man1/java.1.gz");
    }

    #[test]
    fn the_highest_priority_wins_and_missing_paths_are_dropped() {
        let regs = vec![
            Registration {
                link: "/usr/bin/pager".into(),
                name: "pager".into(),
                path: "/usr/bin/less".into(),
                priority: 77,
                slaves: vec![],
            },
            Registration { link: "/usr/bin/pager".into(), name: "pager".into(), path: "/bin/more".into(), priority: 50, slaves: vec![] },
            Registration {
                link: "/usr/bin/awk".into(),
                name: "awk".into(),
                path: "/usr/bin/gawk".into(),
                priority: 10,
                slaves: vec![("/usr/bin/nawk".into(), "nawk".into(), "/usr/bin/gawk".into())],
            },
        ];
        let exists = |p: &str| p != "/usr/bin/gawk";
        let alts = resolve(&regs, &exists);
        assert_eq!(alts.len(), 1, "gawk is not installed: {alts:?}");
        assert_eq!((alts[0].name.as_str(), alts[0].path.as_str()), ("pager", "/usr/bin/less"));
        assert_eq!(alts[0].admin, "auto\n/usr/bin/pager\n\n/bin/more\n50\n/usr/bin/less\n77\n\n");
    }
}
