//! An `image` block: its children, and the leaf nodes only an image has (tag,
//! platforms, base, epoch, repository, packages, maintainer scripts, variant,
//! compression). Accounts, files and layers, and config have modules of their own.

use kdl::KdlNode;
use miette::SourceSpan;

use crate::layer::Compression;

use super::super::values::{base_reference, platform, valid_package_name, valid_package_version, valid_tag, TAG_HELP};
use super::super::{Base, ConfigSpec, ImageSpec, PackageReq, Platform, Repository, Variant};
use super::{
    key_span, known_names_help, value_span, Decoder, Seen, IMAGE_CHILDREN, USAGE_BASE, USAGE_COMPRESSION, USAGE_EPOCH, USAGE_EXPORT,
    USAGE_IMAGE, USAGE_PACKAGES, USAGE_PLATFORMS, USAGE_REPOSITORY, USAGE_SCRIPTS, USAGE_TAG, USAGE_VARIANT,
};

/// The children of an image that may be given once.
const IMAGE_SINGLETONS: &[&str] =
    &["tag", "platforms", "base", "epoch", "accounts", "config", "export", "variant", "maintainer-scripts", "compression"];

/// The last second of year 9999, the latest time an RFC 3339 date can say.
const MAX_EPOCH: u64 = 253_402_300_799;

/// An image before its children are read: every default.
fn default_image(name: String, span: SourceSpan) -> ImageSpec {
    ImageSpec {
        name,
        span,
        tag: "latest".to_owned(),
        platforms: vec![Platform::linux_amd64()],
        base: Base::Scratch,
        epoch: None,
        repositories: Vec::new(),
        packages: Vec::new(),
        accounts: None,
        files: Vec::new(),
        layers: Vec::new(),
        config: ConfigSpec::default(),
        export: true,
        variant: Variant::Custom,
        run_scripts: false,
        compression: Compression::Gzip,
    }
}

/// Names that must be unique among an image's children.
struct ImageNames {
    /// Children that may be given once ([`IMAGE_SINGLETONS`]).
    singletons: Seen<String>,
    packages: Seen<String>,
    layers: Seen<String>,
}
impl Decoder {
    /// An `image` block, and the span of its name when the name is valid.
    pub(super) fn image(&mut self, kdl: &KdlNode) -> (ImageSpec, Option<SourceSpan>) {
        let node = self.open(kdl, USAGE_IMAGE);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "an image name");
        let name_entry = args.first().copied();
        let name = name_entry.and_then(|e| self.name(e, "image"));
        let name_span = name.as_ref().and(name_entry.map(value_span));
        let mut img = default_image(name.unwrap_or_default(), node.head);
        // The `build` block's defaults; the image's own nodes override them.
        img.compression = self.build.compression.unwrap_or(Compression::Gzip);
        img.epoch = self.build.epoch;
        let mut names = ImageNames { singletons: Seen::new(), packages: Seen::new(), layers: Seen::new() };
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            if IMAGE_SINGLETONS.contains(&c.name().value()) && !self.once(&mut names.singletons, c) {
                continue;
            }
            self.image_child(&mut img, c, &mut names);
        }
        (img, name_span)
    }

    /// One child of an image block, decoded into `img`.
    fn image_child(&mut self, img: &mut ImageSpec, c: &KdlNode, names: &mut ImageNames) {
        match c.name().value() {
            "tag" => {
                if let Some(t) = self.tag(c) {
                    img.tag = t;
                }
            }
            "platforms" => {
                if let Some(p) = self.platforms(c) {
                    img.platforms = p;
                }
            }
            "base" => {
                if let Some(b) = self.base(c) {
                    img.base = b;
                }
            }
            "epoch" => img.epoch = self.epoch(c),
            "repository" => {
                if let Some(r) = self.repository(c) {
                    img.repositories.push(r);
                }
            }
            "packages" => self.add_packages(img, c, &mut names.packages),
            "accounts" => img.accounts = Some(self.accounts(c)),
            "files" => img.files.extend(self.files_block(c)),
            "layer" => self.add_layer(img, c, &mut names.layers),
            "config" => img.config = self.config(c),
            "export" => {
                if let Some(b) = self.flag(c, USAGE_EXPORT) {
                    img.export = b;
                }
            }
            "maintainer-scripts" => {
                if let Some(run) = self.maintainer_scripts(c) {
                    img.run_scripts = run;
                }
            }
            "variant" => {
                if let Some(v) = self.variant(c) {
                    img.variant = v;
                }
            }
            "compression" => {
                if let Some(codec) = self.compression(c) {
                    img.compression = codec;
                }
            }
            _ => self.unknown_node(c, "image", IMAGE_CHILDREN),
        }
    }

    /// A `packages` node's packages onto the image's, each name once in the image.
    fn add_packages(&mut self, img: &mut ImageSpec, c: &KdlNode, seen: &mut Seen<String>) {
        for p in self.packages(c) {
            if let Some(first) = seen.first(p.name.clone(), p.span) {
                self.duplicate(
                    "compose::spec::duplicate_package",
                    format!("package `{}` is listed more than once", p.name),
                    p.span,
                    first,
                    "listed",
                );
            } else {
                img.packages.push(p);
            }
        }
    }

    /// A `layer` block onto the image's layers, each name once in the image.
    fn add_layer(&mut self, img: &mut ImageSpec, c: &KdlNode, seen: &mut Seen<String>) {
        if let Some((layer, at)) = self.layer(c) {
            if let Some(first) = seen.first(layer.name.clone(), at) {
                self.duplicate(
                    "compose::spec::duplicate_layer",
                    format!("layer `{}` is defined more than once in image `{}`", layer.name, img.name),
                    at,
                    first,
                    "defined",
                );
            } else {
                img.layers.push(layer);
            }
        }
    }

    /// `maintainer-scripts "run"` (true) or `"emulate"` (false).
    fn maintainer_scripts(&mut self, c: &KdlNode) -> Option<bool> {
        let e = self.single_string(c, USAGE_SCRIPTS, "`run` or `emulate`")?;
        match e.value().as_string().unwrap_or_default() {
            "run" => Some(true),
            "emulate" => Some(false),
            other => {
                self.push(
                    "compose::spec::bad_scripts",
                    format!("unknown maintainer-scripts mode `{other}`"),
                    vec![(value_span(e), "not a mode".to_owned())],
                    Some(known_names_help(other, &["run", "emulate"], "modes")),
                );
                None
            }
        }
    }

    /// `variant "custom"`, `"essential"` or `"minbase"`.
    fn variant(&mut self, c: &KdlNode) -> Option<Variant> {
        let e = self.single_string(c, USAGE_VARIANT, "a variant")?;
        match e.value().as_string().unwrap_or_default() {
            "custom" => Some(Variant::Custom),
            "essential" => Some(Variant::Essential),
            "minbase" => Some(Variant::Minbase),
            other => {
                let known = ["custom", "essential", "minbase"];
                let help = known_names_help(other, &known, "variants");
                self.push(
                    "compose::spec::bad_variant",
                    format!("unknown variant `{other}`"),
                    vec![(value_span(e), "not a variant".to_owned())],
                    Some(help),
                );
                None
            }
        }
    }

    /// `compression "gzip"` or `"zstd"`.
    pub(super) fn compression(&mut self, c: &KdlNode) -> Option<Compression> {
        let e = self.single_string(c, USAGE_COMPRESSION, "`gzip` or `zstd`")?;
        let name = e.value().as_string().unwrap_or_default();
        let codec = Compression::parse(name);
        if codec.is_none() {
            self.push(
                "compose::spec::bad_compression",
                format!("unknown compression `{name}`"),
                vec![(value_span(e), "not a compression".to_owned())],
                Some(known_names_help(name, &Compression::NAMES, "compressions")),
            );
        }
        codec
    }

    fn tag(&mut self, kdl: &KdlNode) -> Option<String> {
        let e = self.single_string(kdl, USAGE_TAG, "a tag")?;
        let t = e.value().as_string()?;
        if valid_tag(t) {
            Some(t.to_owned())
        } else {
            self.push(
                "compose::spec::bad_tag",
                format!("invalid tag `{t}`"),
                vec![(value_span(e), "invalid tag".to_owned())],
                Some(TAG_HELP.to_owned()),
            );
            None
        }
    }

    fn platforms(&mut self, kdl: &KdlNode) -> Option<Vec<Platform>> {
        let node = self.open(kdl, USAGE_PLATFORMS);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one platform");
        let mut out = Vec::new();
        let mut seen = Seen::new();
        let mut ok = !args.is_empty();
        for e in args {
            let Some(s) = self.string(e, "a platform") else {
                ok = false;
                continue;
            };
            match platform(s) {
                Ok(p) => {
                    if let Some(first) = seen.first(p.clone(), value_span(e)) {
                        self.duplicate(
                            "compose::spec::duplicate_platform",
                            format!("platform `{p}` is listed more than once"),
                            value_span(e),
                            first,
                            "listed",
                        );
                    } else {
                        out.push(p);
                    }
                }
                Err(b) => {
                    ok = false;
                    self.bad("compose::spec::bad_platform", value_span(e), b);
                }
            }
        }
        ok.then_some(out)
    }

    fn base(&mut self, kdl: &KdlNode) -> Option<Base> {
        let node = self.open(kdl, USAGE_BASE);
        self.leaf(&node);
        let props = self.props(&node, &["image"]);
        let args = self.args(&node, 0, Some(1), "");
        match (args.first(), props.get("image")) {
            (Some(a), Some(p)) => {
                self.push(
                    "compose::spec::bad_base",
                    "`base` takes a reference or `image=`, not both",
                    vec![(value_span(a), "a reference".to_owned()), (key_span(p), "and an image".to_owned())],
                    Self::usage(&node),
                );
                None
            }
            (None, None) => {
                if node.props.is_empty() {
                    self.push(
                        "compose::spec::missing_argument",
                        "`base` is missing a reference",
                        vec![(node.head, "expected a reference or image=\"NAME\"".to_owned())],
                        Self::usage(&node),
                    );
                }
                None
            }
            (Some(a), None) => {
                let s = self.string(a, "the base reference")?;
                match base_reference(s, value_span(a)) {
                    Ok(b) => Some(b),
                    Err(b) => {
                        self.bad("compose::spec::bad_base", value_span(a), b);
                        None
                    }
                }
            }
            (None, Some(p)) => {
                let s = self.string(p, "the base image name")?;
                if s.is_empty() {
                    self.push(
                        "compose::spec::bad_base",
                        "`base image=` needs an image name",
                        vec![(value_span(p), "empty name".to_owned())],
                        None,
                    );
                    return None;
                }
                Some(Base::Image { name: s.to_owned(), span: value_span(p) })
            }
        }
    }

    pub(super) fn epoch(&mut self, kdl: &KdlNode) -> Option<u64> {
        let node = self.open(kdl, USAGE_EPOCH);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a time in seconds");
        let e = args.first()?;
        // Up to the end of year 9999: image configs write it as an RFC 3339 date.
        self.unsigned(e, "the epoch", MAX_EPOCH)
    }

    pub(super) fn repository(&mut self, kdl: &KdlNode) -> Option<Repository> {
        let node = self.open(kdl, USAGE_REPOSITORY);
        self.leaf(&node);
        let props = self.props(&node, &["suite", "components", "keyring"]);
        let args = self.args(&node, 1, Some(1), "a repository name");
        let name = args.first().and_then(|e| self.nonempty(e, "the repository name"));
        let suite = self.require(&node, &props, "suite").and_then(|e| self.nonempty(e, "the suite"));
        let components = self
            .require(&node, &props, "components")
            .and_then(|e| self.nonempty(e, "components"))
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        let keyring = match props.get("keyring") {
            Some(e) => Some(self.nonempty(e, "the keyring")?),
            None => None,
        };
        Some(Repository { name: name?, suite: suite?, components: components?, keyring, span: node.head })
    }

    fn packages(&mut self, kdl: &KdlNode) -> Vec<PackageReq> {
        let node = self.open(kdl, USAGE_PACKAGES);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one package");
        let mut out = Vec::new();
        for e in args {
            let Some(s) = self.string(e, "a package") else {
                continue;
            };
            let at = value_span(e);
            let (name, version) = match s.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (s, None),
            };
            if !valid_package_name(name) {
                self.push(
                    "compose::spec::bad_package",
                    format!("invalid package name `{name}`"),
                    vec![(at, "invalid package name".to_owned())],
                    Some(
                        "package names are lowercase letters, digits, `+`, `-` and `.`; pin a \
                         version with \"NAME=VERSION\""
                            .to_owned(),
                    ),
                );
                continue;
            }
            if let Some(v) = version {
                if !valid_package_version(v) {
                    self.push(
                        "compose::spec::bad_package",
                        format!("invalid version `{v}` for package `{name}`"),
                        vec![(at, "invalid version".to_owned())],
                        Some("versions start with a digit, like \"NAME=1.36.1-6\"".to_owned()),
                    );
                    continue;
                }
            }
            out.push(PackageReq { name: name.to_owned(), version: version.map(str::to_owned), span: at });
        }
        out
    }
}
