//! Decoding values: one KDL entry into a checked value (a string, an integer,
//! an id, a mode, an owner, an image path, a name), and the leaf node shapes
//! built on them that several blocks share (one string, one flag, a list of
//! strings, `NAME="value"` properties, `env`, `workdir`).

use kdl::{KdlEntry, KdlNode, KdlValue};

use super::super::values::{image_path, owner, valid_account_name, valid_image_name};
use super::super::OwnerSpec;
use super::{value_span, Decoder, USAGE_ENV, USAGE_WORKDIR};

fn type_name(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "string",
        KdlValue::Integer(_) => "integer",
        KdlValue::Float(_) => "float",
        KdlValue::Bool(_) => "boolean",
        KdlValue::Null => "null",
    }
}

impl Decoder {
    pub(super) fn wrong_type(&mut self, e: &KdlEntry, expected: &str, what: &str) {
        let v = e.value();
        let help = match (expected, v) {
            ("a string", KdlValue::Integer(_) | KdlValue::Float(_)) => {
                let repr = e.format().map_or_else(|| v.to_string(), |f| f.value_repr.clone());
                Some(format!("quote it: \"{repr}\""))
            }
            _ => None,
        };
        self.push(
            "compose::spec::wrong_type",
            format!("expected {expected}, found {}", type_name(v)),
            vec![(value_span(e), format!("{what} must be {expected}"))],
            help,
        );
    }

    pub(super) fn string<'n>(&mut self, e: &'n KdlEntry, what: &str) -> Option<&'n str> {
        match e.value() {
            KdlValue::String(s) => Some(s),
            _ => {
                self.wrong_type(e, "a string", what);
                None
            }
        }
    }

    pub(super) fn unsigned(&mut self, e: &KdlEntry, what: &str, max: u64) -> Option<u64> {
        match e.value() {
            KdlValue::Integer(i) => match u64::try_from(*i) {
                Ok(v) if v <= max => Some(v),
                _ => {
                    self.push(
                        "compose::spec::out_of_range",
                        format!("{what} {i} is out of range"),
                        vec![(value_span(e), format!("must be between 0 and {max}"))],
                        None,
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(e, "an integer", what);
                None
            }
        }
    }

    pub(super) fn id(&mut self, e: &KdlEntry, what: &str) -> Option<u32> {
        self.unsigned(e, what, u64::from(u32::MAX)).map(|v| v as u32)
    }

    pub(super) fn mode(&mut self, e: &KdlEntry) -> Option<u32> {
        let KdlValue::Integer(v) = *e.value() else {
            let help = match e.value() {
                KdlValue::String(s) if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                    format!("write it as an octal integer: 0o{}", s.trim_start_matches('0'))
                }
                _ => "modes are octal integers, like 0o644".to_owned(),
            };
            self.push(
                "compose::spec::wrong_type",
                format!("expected an integer, found {}", type_name(e.value())),
                vec![(value_span(e), "modes must be octal integers".to_owned())],
                Some(help),
            );
            return None;
        };
        let at = value_span(e);
        let repr = e.format().map_or("", |f| f.value_repr.as_str());
        let digits = repr.trim_start_matches(['+', '-']);
        let octal = digits.starts_with("0o");
        if v < 0 {
            self.push(
                "compose::spec::bad_mode",
                format!("mode `{repr}` is negative"),
                vec![(at, "must be between 0o0 and 0o7777".to_owned())],
                None,
            );
            return None;
        }
        if !octal && v > 7 {
            let plain: String = digits.chars().filter(|c| *c != '_').collect();
            let base = if plain.starts_with("0x") {
                "hexadecimal"
            } else if plain.starts_with("0b") {
                "binary"
            } else {
                "decimal"
            };
            let suggestion = if base == "decimal" && plain.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                Some(format!("0o{}", plain.trim_start_matches('0')))
            } else if base != "decimal" && v <= 0o7777 {
                Some(format!("0o{v:o}"))
            } else {
                None
            };
            let message = match &suggestion {
                Some(s) => format!("modes are octal: write {s}"),
                None => "modes are octal: write them with the `0o` prefix, like 0o755".to_owned(),
            };
            self.push(
                "compose::spec::bad_mode",
                message,
                vec![(at, format!("written in {base}"))],
                Some(format!("`{repr}` is read as the {base} number {v}, not as an octal mode")),
            );
            return None;
        }
        if v > 0o7777 {
            self.push(
                "compose::spec::bad_mode",
                format!("mode {repr} is out of range"),
                vec![(at, "must be at most 0o7777".to_owned())],
                None,
            );
            return None;
        }
        Some(v as u32)
    }

    pub(super) fn owner(&mut self, e: &KdlEntry) -> Option<OwnerSpec> {
        let s = self.string(e, "the owner")?;
        let at = value_span(e);
        match owner(s) {
            Ok(owner) => Some(OwnerSpec { owner, span: at }),
            Err(b) => {
                self.bad("compose::spec::bad_owner", at, b);
                None
            }
        }
    }

    pub(super) fn path(&mut self, e: &KdlEntry, what: &str) -> Option<(String, bool)> {
        let s = self.string(e, what)?;
        match image_path(s) {
            Ok(p) => Some(p),
            Err(b) => {
                self.bad("compose::spec::bad_path", value_span(e), b);
                None
            }
        }
    }

    /// An image path naming a file (not `/`).
    pub(super) fn file_path(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let (p, _) = self.path(e, what)?;
        if p == "/" {
            self.push("compose::spec::bad_path", "`/` is the root directory", vec![(value_span(e), format!("{what} cannot be `/`"))], None);
            return None;
        }
        Some(p)
    }

    pub(super) fn name(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, &format!("the {what} name"))?;
        if valid_image_name(s) {
            Some(s.to_owned())
        } else {
            self.push(
                "compose::spec::bad_name",
                format!("invalid {what} name `{s}`"),
                vec![(value_span(e), "invalid name".to_owned())],
                Some("names are letters, digits, `.`, `_` and `-`, starting with a letter or digit".to_owned()),
            );
            None
        }
    }

    pub(super) fn account_name(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, &format!("the {what} name"))?;
        if valid_account_name(s) {
            Some(s.to_owned())
        } else {
            self.push(
                "compose::spec::bad_name",
                format!("invalid {what} name `{s}`"),
                vec![(value_span(e), "invalid name".to_owned())],
                Some(
                    "account names are at most 32 letters, digits, `.`, `_` and `-`, starting with \
                     a letter or `_`"
                        .to_owned(),
                ),
            );
            None
        }
    }

    /// A non-empty (not all-blank) string without NUL.
    pub(super) fn nonempty(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, what)?;
        if s.trim().is_empty() || s.contains('\0') {
            self.push("compose::spec::bad_value", format!("{what} must not be empty"), vec![(value_span(e), "empty".to_owned())], None);
            return None;
        }
        Some(s.to_owned())
    }

    /// A leaf node with exactly one string argument and no properties.
    pub(super) fn single_string<'n>(&mut self, kdl: &'n KdlNode, usage: &'static str, what: &str) -> Option<&'n KdlEntry> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), what);
        let e = args.first().copied()?;
        self.string(e, &format!("the {}", node.name))?;
        Some(e)
    }

    /// A leaf node with one boolean argument (`#true` / `#false`).
    pub(super) fn flag(&mut self, kdl: &KdlNode, usage: &'static str) -> Option<bool> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "#true or #false");
        let e = args.first()?;
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(e, "#true or #false", "the value");
                None
            }
        }
    }

    /// `min`+ string arguments, no properties.
    pub(super) fn strings(&mut self, kdl: &KdlNode, usage: &'static str, min: usize) -> Option<Vec<String>> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, min, None, "at least one argument");
        let mut out = Vec::new();
        let mut ok = args.len() >= min;
        for e in args {
            match self.string(e, "each argument") {
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `env` and `label`: string properties, in order, no arguments.
    pub(super) fn key_values(&mut self, kdl: &KdlNode, usage: &'static str, env: bool) -> Vec<(String, String)> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.args(&node, 0, Some(0), "");
        if node.props.is_empty() {
            self.push(
                "compose::spec::missing_property",
                format!("`{}` needs at least one NAME=\"value\" property", node.name),
                vec![(node.head, "nothing to set".to_owned())],
                Self::usage(&node),
            );
        }
        let mut out = Vec::new();
        for &e in &node.props {
            let Some(id) = e.name() else { continue };
            let key = id.value();
            let value = self.string(e, "the value");
            let problem = if key.is_empty() {
                Some(if env { "environment variable name is empty".to_owned() } else { "label key is empty".to_owned() })
            } else if env && key.contains('=') {
                Some(format!("environment variable name `{key}` contains `=`"))
            } else if key.contains('\0') || value.is_some_and(|v| v.contains('\0')) {
                Some("NUL characters are not allowed here".to_owned())
            } else {
                None
            };
            if let Some(message) = problem {
                let code = if env { "compose::spec::bad_env" } else { "compose::spec::bad_label" };
                self.push(code, message, vec![(id.span(), "invalid name".to_owned())], None);
                continue;
            }
            if let Some(v) = value {
                out.push((key.to_owned(), v.to_owned()));
            }
        }
        out
    }

    /// An `env` node: its variables, in order, into `env`; a name given again replaces the
    /// earlier value in place.
    pub(super) fn env_into(&mut self, kdl: &KdlNode, env: &mut Vec<(String, String)>) {
        for (k, v) in self.key_values(kdl, USAGE_ENV, true) {
            match env.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
    }

    /// A `workdir` node: one image path.
    pub(super) fn workdir(&mut self, kdl: &KdlNode) -> Option<String> {
        let e = self.single_string(kdl, USAGE_WORKDIR, "a directory")?;
        self.path(e, "the working directory").map(|p| p.0)
    }
}
