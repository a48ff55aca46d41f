//! Writing the spec: the KDL node model import builds ([`Node`]), its rendering (every string
//! escaped, never spliced into the text), and [`settle`], which parses what was written and
//! drops (and notes) whatever the spec parser still refuses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use kdl::{KdlDocument, KdlDocumentFormat, KdlEntry, KdlEntryFormat, KdlNode, KdlNodeFormat, KdlValue};

use super::{review, Note};

/// The first line of every imported spec.
pub(super) const HEADER: &str = "// Imported from a Dockerfile by `compose import`: review the notes it printed.\n";

/// Whether `c` is written as an escape in a KDL string: every control character (C0, DEL, C1),
/// line and paragraph separators, direction marks, embeddings and isolates, invisible
/// formatting characters and the BOM. KDL forbids most of them literally; the rest would make
/// the spec read differently from what it holds.
pub(super) fn kdl_escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `s` as a quoted KDL string: `"` and `\` escaped, newlines and tabs as `\n` and `\t`, and every
/// other character of [`kdl_escaped`] as `\u{…}`.
pub(crate) fn kdl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if kdl_escaped(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A property key or node name: bare when it is a plain name (an ASCII letter or `_`, then
/// letters, digits, `_` and `-`; not one of KDL's keywords), else a [`kdl_string`].
pub(super) fn kdl_key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(k, "true" | "false" | "null" | "inf" | "nan");
    if plain {
        k.to_string()
    } else {
        kdl_string(k)
    }
}

/// Where a `copy from=` copies from, named when the spec is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum FromRef {
    /// An earlier stage: its step if it has one, else its image.
    Stage(usize),
    /// A registry image that is no stage (index in the list of such images).
    External(usize),
}

/// A node of the spec being written: a KDL node (its name and entries), its children (a block
/// when `Some`), the Dockerfile line it translates (0: none), and for a `copy` out of a stage or
/// another image, where from.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) kdl: KdlNode,
    pub(super) children: Option<Vec<Node>>,
    pub(super) line: usize,
    pub(super) from: Option<FromRef>,
}

impl Node {
    pub(super) fn new(name: &str, line: usize) -> Node {
        Node { kdl: KdlNode::new(name), children: None, line, from: None }
    }

    pub(super) fn name(&self) -> &str {
        self.kdl.name().value()
    }

    /// With one more argument.
    pub(super) fn arg(mut self, v: impl Into<KdlValue>) -> Node {
        self.kdl.push(KdlEntry::new(v));
        self
    }

    /// With one more property.
    pub(super) fn prop(mut self, key: &str, v: impl Into<KdlValue>) -> Node {
        self.kdl.push(KdlEntry::new_prop(key, v));
        self
    }

    pub(super) fn block(mut self, children: Vec<Node>) -> Node {
        self.children = Some(children);
        self
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.kdl.entry(key).is_some()
    }

    pub(super) fn str_prop(&self, key: &str) -> Option<&str> {
        self.kdl.get(key).and_then(KdlValue::as_string)
    }

    /// The first argument, if a string.
    pub(super) fn first_arg(&self) -> Option<&str> {
        self.kdl.entries().iter().find(|e| e.name().is_none()).and_then(|e| e.value().as_string())
    }

    /// Sets `key` (in place if present, else last).
    pub(super) fn set(&mut self, key: &str, v: impl Into<KdlValue>) {
        match self.kdl.entry_mut(key) {
            Some(e) => e.set_value(v),
            None => self.kdl.push(KdlEntry::new_prop(key, v)),
        }
    }

    pub(super) fn unset(&mut self, key: &str) {
        self.kdl.entries_mut().retain(|e| e.name().is_none_or(|n| n.value() != key));
    }

    /// The node for notes: its name and first argument.
    pub(super) fn summary(&self) -> String {
        match self.first_arg() {
            Some(a) => format!("{} {}", self.name(), kdl_string(a)),
            None => self.name().to_string(),
        }
    }
}

pub(super) fn int(n: impl Into<i128>) -> KdlValue {
    KdlValue::Integer(n.into())
}

/// The KDL node of `n`, formatted: four spaces of indent per level, one node per line (blocks
/// open on the node's line and close on their own), a blank line before each top-level node,
/// every string a [`kdl_string`], every key a [`kdl_key`] (a label's always quoted), `mode`
/// and `dir-mode` in octal.
pub(super) fn to_kdl(n: &Node, depth: usize) -> KdlNode {
    let mut k = n.kdl.clone();
    let quote_keys = n.name() == "label";
    let octal = |e: &KdlEntry| e.name().is_some_and(|k| matches!(k.value(), "mode" | "dir-mode"));
    let name = k.name().value().to_string();
    k.name_mut().set_repr(kdl_key(&name));
    for e in k.entries_mut() {
        let repr = match e.value() {
            KdlValue::String(s) => kdl_string(s),
            KdlValue::Integer(i) if octal(e) => format!("0o{i:o}"),
            KdlValue::Integer(i) => i.to_string(),
            KdlValue::Bool(b) => format!("#{b}"),
            KdlValue::Float(f) => format!("{f:?}"),
            KdlValue::Null => "#null".into(),
        };
        if let Some(key) = e.name_mut() {
            let r = if quote_keys { kdl_string(key.value()) } else { kdl_key(key.value()) };
            key.set_repr(r);
        }
        e.set_format(KdlEntryFormat { value_repr: repr, leading: " ".into(), ..KdlEntryFormat::default() });
    }
    let leading = if depth == 0 { "\n".to_string() } else { "    ".repeat(depth) };
    k.set_format(KdlNodeFormat { leading, before_children: " ".into(), terminator: "\n".into(), ..KdlNodeFormat::default() });
    if let Some(children) = &n.children {
        let mut doc = KdlDocument::new();
        doc.nodes_mut().extend(children.iter().map(|c| to_kdl(c, depth + 1)));
        k.set_children(doc);
    }
    k
}

/// The spec text of `nodes`.
pub(super) fn render(nodes: &[Node]) -> String {
    let mut doc = KdlDocument::new();
    doc.set_format(KdlDocumentFormat { leading: HEADER.into(), trailing: String::new() });
    doc.nodes_mut().extend(nodes.iter().map(|n| to_kdl(n, 0)));
    doc.to_string()
}

/// The line (0-based) of each node [`render`] writes, by its path of child indices.
pub(super) fn node_lines(nodes: &[Node]) -> BTreeMap<usize, Vec<usize>> {
    fn walk(nodes: &[Node], depth: usize, path: &mut Vec<usize>, line: &mut usize, out: &mut BTreeMap<usize, Vec<usize>>) {
        for (i, n) in nodes.iter().enumerate() {
            if depth == 0 {
                *line += 1;
            }
            path.push(i);
            out.insert(*line, path.clone());
            *line += 1;
            if let Some(children) = &n.children {
                walk(children, depth + 1, path, line, out);
                *line += 1;
            }
            path.pop();
        }
    }
    let mut out = BTreeMap::new();
    let mut line = HEADER.matches('\n').count();
    walk(nodes, 0, &mut Vec::new(), &mut line, &mut out);
    out
}

/// Removes the node at `path`.
pub(super) fn remove_at(nodes: &mut Vec<Node>, path: &[usize]) -> Option<Node> {
    match path {
        [] => None,
        [i] => (*i < nodes.len()).then(|| nodes.remove(*i)),
        [i, rest @ ..] => remove_at(nodes.get_mut(*i)?.children.as_mut()?, rest),
    }
}

/// The spec of `nodes`, parsed before it is returned: a node the spec parser refuses is dropped
/// and its line noted for review, until what is left parses. Import checks what it writes as it
/// goes, so this is a last resort, for what those checks miss.
pub(super) fn settle(mut nodes: Vec<Node>, name: &str, notes: &mut Vec<Note>) -> String {
    for _ in 0..32 {
        let text = render(&nodes);
        let err = match crate::spec::parse_str(Path::new("compose.kdl"), &text) {
            Ok(_) => return text,
            Err(e) => e,
        };
        let lines = node_lines(&nodes);
        let mut drop: BTreeMap<Vec<usize>, String> = BTreeMap::new();
        for d in err.diagnostics() {
            let Some(span) = d.primary_span() else { continue };
            let source: &str = d.source.inner();
            let line = source.get(..span.offset()).map_or(0, |s| s.matches('\n').count());
            if let Some(path) = lines.get(&line) {
                drop.entry(path.clone()).or_insert_with(|| d.message.clone());
            }
        }
        if drop.is_empty() {
            break;
        }
        // Deepest and last first, so the paths left stay valid.
        for (path, message) in drop.into_iter().rev() {
            if let Some(n) = remove_at(&mut nodes, &path) {
                review(notes, n.line, &n.summary(), format!("not translated: compose refuses `{}` ({message})", n.summary()));
            }
        }
    }
    review(notes, 0, &format!("image {name}"), "the spec could not be written: nothing of the Dockerfile is translated".into());
    render(&[Node::new("image", 0).arg(name).block(Vec::new())])
}
