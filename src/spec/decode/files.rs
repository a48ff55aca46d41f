//! File operations: the `files` and `layer` blocks of an image and the
//! `copy`, `text`, `symlink` and `dir` nodes they hold (a step's inputs are
//! the same nodes).

use kdl::KdlNode;
use miette::SourceSpan;

use super::super::values::copy_source;
use super::super::{FileOp, LayerSpec, OwnerSpec};
use super::{value_span, Decoder, Props, FILE_CHILDREN, USAGE_COPY, USAGE_DIR, USAGE_FILES, USAGE_LAYER, USAGE_SYMLINK, USAGE_TEXT};

impl Decoder {
    /// A `files` block: its file operations.
    pub(super) fn files_block(&mut self, kdl: &KdlNode) -> Vec<FileOp> {
        let node = self.open(kdl, USAGE_FILES);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        self.ops(kdl)
    }

    pub(super) fn layer(&mut self, kdl: &KdlNode) -> Option<(LayerSpec, SourceSpan)> {
        let node = self.open(kdl, USAGE_LAYER);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a layer name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.name(e, "layer"));
        let ops = self.ops(kdl);
        Some((LayerSpec { name: name?, ops, span: node.head }, value_span(name_e?)))
    }

    /// The children of a `files` or `layer` block.
    fn ops(&mut self, parent: &KdlNode) -> Vec<FileOp> {
        let context = parent.name().value();
        let children = parent.children().map_or(&[][..], |d| d.nodes());
        let mut out = Vec::new();
        for c in children {
            let op = match c.name().value() {
                "copy" | "text" | "symlink" | "dir" => self.file_op(c),
                _ => {
                    self.unknown_node(c, context, FILE_CHILDREN);
                    None
                }
            };
            out.extend(op);
        }
        out
    }

    /// One `copy`, `text`, `symlink` or `dir` node (the names of [`FILE_CHILDREN`]).
    pub(super) fn file_op(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        match kdl.name().value() {
            "copy" => self.copy(kdl),
            "text" => self.text(kdl),
            "symlink" => self.symlink(kdl),
            _ => self.dir(kdl),
        }
    }

    fn opt_mode(&mut self, props: &Props, key: &str) -> Result<Option<u32>, ()> {
        match props.get(key) {
            Some(e) => self.mode(e).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn opt_owner(&mut self, props: &Props) -> Result<Option<OwnerSpec>, ()> {
        match props.get("owner") {
            Some(e) => self.owner(e).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn copy(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_COPY);
        self.leaf(&node);
        let props = self.props(&node, &["to", "mode", "dir-mode", "owner", "from"]);
        let args = self.args(&node, 1, Some(1), "a source path");
        let from = props.get("from").map(|e| self.name(e, "step or image").map(|n| (n, value_span(e))));
        let src = args.first().and_then(|e| {
            if from.is_some() {
                // A path in the step's output or the image's file system.
                return self.path(e, "the path to copy").map(|(p, _)| (p, value_span(e)));
            }
            let s = self.string(e, "the copy source")?;
            match copy_source(s) {
                Ok(()) => Some((s.to_owned(), value_span(e))),
                Err((code, b)) => {
                    self.bad(code, value_span(e), b);
                    None
                }
            }
        });
        let to = self.require(&node, &props, "to").and_then(|e| self.path(e, "the destination"));
        let mode = self.opt_mode(&props, "mode");
        let dir_mode = self.opt_mode(&props, "dir-mode");
        let owner = self.opt_owner(&props);
        let ((src, src_span), (to, trailing)) = (src?, to?);
        Some(FileOp::Copy {
            src,
            src_span,
            to_dir: trailing,
            to,
            mode: mode.ok()?,
            dir_mode: dir_mode.ok()?,
            owner: owner.ok()?,
            from: match from {
                Some(f) => Some(f?),
                None => None,
            },
            span: node.head,
        })
    }

    fn text(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_TEXT);
        self.leaf(&node);
        let props = self.props(&node, &["mode", "owner"]);
        let what = if node.args.is_empty() { "a path and the file's content" } else { "the file's content" };
        let args = self.args(&node, 2, Some(2), what);
        let path = args.first().and_then(|e| self.file_path(e, "the path"));
        let content = args.get(1).and_then(|e| self.string(e, "the content")).map(str::to_owned);
        let mode = self.opt_mode(&props, "mode");
        let owner = self.opt_owner(&props);
        Some(FileOp::Text { path: path?, content: content?, mode: mode.ok()?, owner: owner.ok()?, span: node.head })
    }

    fn symlink(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_SYMLINK);
        self.leaf(&node);
        let props = self.props(&node, &["target", "owner"]);
        let args = self.args(&node, 1, Some(1), "a path");
        let path = args.first().and_then(|e| self.file_path(e, "the link path"));
        let target = self.require(&node, &props, "target").and_then(|e| self.nonempty(e, "the link target"));
        let owner = self.opt_owner(&props);
        Some(FileOp::Symlink { path: path?, target: target?, owner: owner.ok()?, span: node.head })
    }

    fn dir(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_DIR);
        self.leaf(&node);
        let props = self.props(&node, &["mode", "owner"]);
        let args = self.args(&node, 1, Some(1), "a path");
        let path = args.first().and_then(|e| self.path(e, "the directory"));
        let mode = self.opt_mode(&props, "mode");
        let owner = self.opt_owner(&props);
        Some(FileOp::Dir { path: path?.0, mode: mode.ok()?, owner: owner.ok()?, span: node.head })
    }
}
