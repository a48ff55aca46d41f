//! An image's `config` block: environment, labels, user, working directory,
//! stop signal, ports and volumes, and the commands (`entrypoint`, `cmd`,
//! `healthcheck`) in exec or shell form.

use kdl::{KdlEntry, KdlNode, KdlValue};

use super::super::values::{config_user, expose_string, go_duration, stop_signal, Bad};
use super::super::{ConfigSpec, Healthcheck};
use super::{
    head_span, value_span, Decoder, Node, Props, Seen, CONFIG_CHILDREN, USAGE_CMD, USAGE_CONFIG, USAGE_CONFIG_USER, USAGE_ENTRYPOINT,
    USAGE_EXPOSE, USAGE_HEALTHCHECK, USAGE_LABEL, USAGE_STOP_SIGNAL, USAGE_VOLUME,
};

/// A command as written: an argv, or one line for the shell.
enum Argv {
    Exec(Vec<String>),
    Shell(String),
}

impl Decoder {
    pub(super) fn config(&mut self, kdl: &KdlNode) -> ConfigSpec {
        let node = self.open(kdl, USAGE_CONFIG);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut cfg = ConfigSpec::default();
        let mut seen = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            let cname = c.name().value();
            if matches!(cname, "workdir" | "user" | "entrypoint" | "cmd" | "stop-signal" | "healthcheck") && !self.once(&mut seen, c) {
                continue;
            }
            match cname {
                "healthcheck" => cfg.healthcheck = self.healthcheck(c),
                "env" => self.env_into(c, &mut cfg.env),
                "label" => cfg.labels.extend(self.key_values(c, USAGE_LABEL, false)),
                "workdir" => cfg.workdir = self.workdir(c),
                "user" => {
                    if let Some(e) = self.single_string(c, USAGE_CONFIG_USER, "a user") {
                        let s = e.value().as_string().unwrap_or_default();
                        match config_user(s) {
                            Ok(()) => cfg.user = Some((s.to_owned(), value_span(e))),
                            Err(b) => self.bad("compose::spec::bad_user", value_span(e), b),
                        }
                    }
                }
                "stop-signal" => {
                    if let Some(e) = self.single_string(c, USAGE_STOP_SIGNAL, "a signal") {
                        let s = e.value().as_string().unwrap_or_default();
                        match stop_signal(s) {
                            Ok(()) => cfg.stop_signal = Some(s.to_owned()),
                            Err(b) => self.bad("compose::spec::bad_signal", value_span(e), b),
                        }
                    }
                }
                "entrypoint" => cfg.entrypoint = self.command(c, USAGE_ENTRYPOINT, 1, false),
                "cmd" => {
                    // One line may be the argument of an entrypoint that is a shell's `-c`
                    // (this config's or the base's): checked when planning, where both are known.
                    cfg.cmd = self.command(c, USAGE_CMD, 0, true);
                    cfg.cmd_span = Some(head_span(c));
                }
                "expose" => {
                    for p in self.expose(c) {
                        if !cfg.expose.contains(&p) {
                            cfg.expose.push(p);
                        }
                    }
                }
                "volume" => {
                    let node = self.open(c, USAGE_VOLUME);
                    self.leaf(&node);
                    self.props(&node, &[]);
                    for e in self.args(&node, 1, None, "at least one path") {
                        if let Some((p, _)) = self.path(e, "the volume") {
                            if !cfg.volumes.contains(&p) {
                                cfg.volumes.push(p);
                            }
                        }
                    }
                }
                _ => self.unknown_node(c, "config", CONFIG_CHILDREN),
            }
        }
        cfg
    }

    /// `cmd`/`entrypoint`: an argv (`min`+ strings) or, with `shell=#true`, one line run by
    /// `/bin/sh -c` (Docker's shell form). One argument holding whitespace without `shell` is
    /// refused: it would be taken as one program name.
    fn command(&mut self, kdl: &KdlNode, usage: &'static str, min: usize, one_line_ok: bool) -> Option<Vec<String>> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        let props = self.props(&node, &["shell"]);
        let args = self.args(&node, min, None, "at least one argument");
        let argv = self.argv(&node, &props, &args, one_line_ok)?;
        if args.len() < min {
            return None;
        }
        Some(match argv {
            Argv::Exec(v) => v,
            Argv::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
        })
    }

    /// The arguments of a command node: exec form, or one shell line with `shell=#true`.
    fn argv(&mut self, node: &Node<'_>, props: &Props<'_>, args: &[&KdlEntry], one_line_ok: bool) -> Option<Argv> {
        let shell = match props.get("shell") {
            None => false,
            Some(e) => match e.value() {
                KdlValue::Bool(b) => *b,
                _ => {
                    self.wrong_type(e, "#true or #false", "`shell`");
                    return None;
                }
            },
        };
        let mut out = Vec::new();
        for e in args {
            out.push(self.string(e, "each argument")?.to_owned());
        }
        if shell {
            if out.len() != 1 {
                self.push(
                    "compose::spec::shell_form",
                    format!("`{} shell=#true` takes one command line, not {} arguments", node.name, out.len()),
                    vec![(node.head, "one string expected".to_owned())],
                    Some(format!("join them into one line, or drop `shell=#true` to give an argv; usage: {}", node.usage)),
                );
                return None;
            }
            return out.pop().map(Argv::Shell);
        }
        if let ([line], [e], false) = (out.as_slice(), args, one_line_ok) {
            if line.trim().contains(char::is_whitespace) {
                let words: Vec<String> = line.split_whitespace().map(|w| format!("\"{w}\"")).collect();
                self.push(
                    "compose::spec::shell_form",
                    format!("`{}` is an argv, so `{line}` would be one program name", node.name),
                    vec![(value_span(e), "one argument holding spaces".to_owned())],
                    Some(format!(
                        "give each word as its own argument ({} {}), or run the line through a shell as Docker's shell form does: {} \"…\" shell=#true{}",
                        node.name,
                        words.join(" "),
                        node.name,
                        if node.name == "cmd" { " (a `cmd` line is fine under `entrypoint \"/bin/sh\" \"-c\"`)" } else { "" }
                    )),
                );
                return None;
            }
        }
        Some(Argv::Exec(out))
    }

    /// `healthcheck ARGV… [shell=#true] [interval= timeout= start-period= start-interval= retries=]`
    /// or `healthcheck #false` (Docker's `HEALTHCHECK NONE`).
    fn healthcheck(&mut self, kdl: &KdlNode) -> Option<Healthcheck> {
        let node = self.open(kdl, USAGE_HEALTHCHECK);
        self.leaf(&node);
        let props = self.props(&node, &["shell", "interval", "timeout", "start-period", "start-interval", "retries"]);
        let args = self.args(&node, 1, None, "a command, or #false");
        if let [e] = args.as_slice() {
            if let KdlValue::Bool(b) = e.value() {
                if *b {
                    self.wrong_type(e, "a command or #false", "the health check");
                    return None;
                }
                return Some(Healthcheck { test: vec!["NONE".into()], ..Healthcheck::default() });
            }
        }
        let test = match self.argv(&node, &props, &args, false)? {
            Argv::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
            Argv::Shell(line) => vec!["CMD-SHELL".into(), line],
        };
        let mut h = Healthcheck { test, ..Healthcheck::default() };
        for (key, slot) in [
            ("interval", &mut h.interval),
            ("timeout", &mut h.timeout),
            ("start-period", &mut h.start_period),
            ("start-interval", &mut h.start_interval),
        ] {
            if let Some(e) = props.get(key) {
                let v = self.string(e, key)?;
                match go_duration(v) {
                    Ok(ns) => *slot = ns,
                    Err(b) => {
                        self.bad("compose::spec::bad_duration", value_span(e), b);
                        return None;
                    }
                }
            }
        }
        if let Some(e) = props.get("retries") {
            h.retries = self.unsigned(e, "`retries`", 1_000_000)?;
        }
        Some(h)
    }

    fn expose(&mut self, kdl: &KdlNode) -> Vec<String> {
        let node = self.open(kdl, USAGE_EXPOSE);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one port");
        let mut out = Vec::new();
        for e in args {
            let at = value_span(e);
            let port = match e.value() {
                KdlValue::Integer(i) => match u16::try_from(*i) {
                    Ok(n) if n > 0 => Ok(format!("{n}/tcp")),
                    _ => Err(Bad::new(format!("port `{i}` is out of range"), "ports are 1 to 65535")),
                },
                KdlValue::String(s) => expose_string(s),
                _ => {
                    self.wrong_type(e, "an integer or a string", "a port");
                    continue;
                }
            };
            match port {
                Ok(p) => out.push(p),
                Err(b) => self.bad("compose::spec::bad_port", at, b),
            }
        }
        out
    }
}
