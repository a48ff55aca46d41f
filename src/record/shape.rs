//! Each record kind's shape, and whether a record fits the derivation it claims to be.
//!
//! A record names its kind in words (`"layer"`, `"step"`…); [`Kind`] is that word as a type, with
//! the outputs a record of the kind has: each output's name, media type and whether it is a layer
//! (with a `diff_id`). [`shape_problem`] says what is wrong with a record for its kind from the
//! record alone; [`fits`] adds what the derivation itself pins ([`Expected`]). Every lookup (the
//! store, a shared cache) goes through [`fits`]: a record that does not fit is ignored rather
//! than allowed to fail the build later.

use crate::hash::Sha256;
use crate::layer;
use crate::oci;

use super::Record;

/// A `.deb` as fetched.
pub const DEB_MEDIA_TYPE: &str = "application/vnd.debian.binary-package";
/// The files of a package layer and their owners (JSON).
pub const FILES_MEDIA_TYPE: &str = "application/vnd.compose.layer-files.v1+json";
/// The licences a package's copyright file names (JSON).
pub const LICENCES_MEDIA_TYPE: &str = "application/vnd.compose.licences.v1+json";
/// What a package's maintainer scripts would do, read from the package (JSON).
pub const FACTS_MEDIA_TYPE: &str = "application/vnd.compose.script-facts.v1+json";
/// Build logs and dpkg status texts.
pub const TEXT_MEDIA_TYPE: &str = "text/plain; charset=utf-8";
/// The kind of the record of what compose read from an external base (passwd, group, dpkg
/// database): written by `base`, not by a derivation of the plan; local only.
pub const BASE_FILES_KIND: &str = "base-files";
/// The media type of that record's `files` output: path → base64 of the content (JSON).
pub const BASE_FILES_MEDIA_TYPE: &str = "application/json";

/// The kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Files and directories of a spec, as one layer.
    Layer,
    /// The metadata layer (accounts, CA bundle, time zone…).
    Meta,
    /// A downloaded `.deb`.
    Fetch,
    /// A base image's layer, as its registry or layout has it.
    Blob,
    /// One package's layer, with what the build read out of it.
    Deb,
    /// Several packages' layers as one.
    Merged,
    /// An image's config and manifest.
    Image,
    /// A multi-platform index.
    Index,
    /// A build step's output tree and log.
    Step,
    /// The layer maintainer scripts left, and their log.
    Scripts,
    /// What compose read from an external base.
    BaseFiles,
}

/// One output of a kind: its name, its media type ([`Media`]) and whether it is a layer.
#[derive(Debug, Clone, Copy)]
pub struct OutputShape {
    pub name: &'static str,
    pub media: Media,
    pub layer: bool,
}

/// The media type an output must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Exactly this one.
    Exactly(&'static str),
    /// A layer compose wrote: gzip or zstd, as its derivation says.
    OurLayer,
    /// The derivation's to say (a base's layer): any layer media type compose can read.
    AnyLayer,
}

const fn out(name: &'static str, media: Media, layer: bool) -> OutputShape {
    OutputShape { name, media, layer }
}

const OUR_LAYER: OutputShape = out("layer", Media::OurLayer, true);
const LOG: OutputShape = out("log", Media::Exactly(TEXT_MEDIA_TYPE), false);
const FILES: OutputShape = out("files", Media::Exactly(FILES_MEDIA_TYPE), false);

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Layer,
        Kind::Meta,
        Kind::Fetch,
        Kind::Blob,
        Kind::Deb,
        Kind::Merged,
        Kind::Image,
        Kind::Index,
        Kind::Step,
        Kind::Scripts,
        Kind::BaseFiles,
    ];

    /// The word a record names its kind with.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Meta => "meta",
            Kind::Fetch => "fetch",
            Kind::Blob => "blob",
            Kind::Deb => "deb",
            Kind::Merged => "merged",
            Kind::Image => "image",
            Kind::Index => "index",
            Kind::Step => "step",
            Kind::Scripts => "scripts",
            Kind::BaseFiles => BASE_FILES_KIND,
        }
    }

    /// The kind a record's word names, if compose knows it.
    pub fn parse(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == word)
    }

    /// The outputs a record of this kind has, sorted by name.
    pub fn outputs(self) -> &'static [OutputShape] {
        const LAYER: &[OutputShape] = &[OUR_LAYER];
        const FETCH: &[OutputShape] = &[out("file", Media::Exactly(DEB_MEDIA_TYPE), false)];
        const BLOB: &[OutputShape] = &[out("file", Media::AnyLayer, true)];
        const DEB: &[OutputShape] = &[
            out("facts", Media::Exactly(FACTS_MEDIA_TYPE), false),
            FILES,
            OUR_LAYER,
            out("licences", Media::Exactly(LICENCES_MEDIA_TYPE), false),
            out("status", Media::Exactly(TEXT_MEDIA_TYPE), false),
        ];
        const MERGED: &[OutputShape] = &[FILES, OUR_LAYER];
        const IMAGE: &[OutputShape] = &[
            out("config", Media::Exactly(oci::CONFIG_MEDIA_TYPE), false),
            out("manifest", Media::Exactly(oci::MANIFEST_MEDIA_TYPE), false),
        ];
        const INDEX: &[OutputShape] = &[out("index", Media::Exactly(oci::INDEX_MEDIA_TYPE), false)];
        const STEP: &[OutputShape] = &[LOG, out("tree", Media::OurLayer, true)];
        const SCRIPTS: &[OutputShape] = &[OUR_LAYER, LOG];
        const BASE_FILES: &[OutputShape] = &[out("files", Media::Exactly(BASE_FILES_MEDIA_TYPE), false)];
        match self {
            Kind::Layer | Kind::Meta => LAYER,
            Kind::Fetch => FETCH,
            Kind::Blob => BLOB,
            Kind::Deb => DEB,
            Kind::Merged => MERGED,
            Kind::Image => IMAGE,
            Kind::Index => INDEX,
            Kind::Step => STEP,
            Kind::Scripts => SCRIPTS,
            Kind::BaseFiles => BASE_FILES,
        }
    }

    /// Is output `name` of this kind a tree compose wrote (a layer, a step's output), one that
    /// must keep [`crate::tarcheck::Rules::Compose`]? A base's layer is the base's, pinned by
    /// its digest.
    pub fn is_compose_tree(self, name: &str) -> bool {
        self.outputs().iter().any(|o| o.name == name && o.layer && o.media != Media::AnyLayer)
    }
}

/// What is wrong with `rec` for its kind, from the record alone: unknown kind, other outputs,
/// a media type not of that output, a layer without a `diff_id` or another output with one.
pub fn shape_problem(rec: &Record) -> Option<String> {
    let Some(kind) = Kind::parse(&rec.kind) else { return Some(format!("unknown kind `{}`", rec.kind)) };
    let shape = kind.outputs();
    if !rec.outputs.keys().map(String::as_str).eq(shape.iter().map(|s| s.name)) {
        let names: Vec<&str> = rec.outputs.keys().map(String::as_str).collect();
        return Some(format!("its outputs are {names:?}, not {:?}", shape.iter().map(|s| s.name).collect::<Vec<_>>()));
    }
    shape.iter().find_map(|s| {
        let o = &rec.outputs[s.name];
        let fits = match s.media {
            Media::OurLayer => [layer::GZIP_MEDIA_TYPE, layer::ZSTD_MEDIA_TYPE].contains(&o.media_type.as_str()),
            Media::Exactly(m) => m == o.media_type,
            Media::AnyLayer => layer::DiffIdWriter::new(&o.media_type).is_some(),
        };
        if !fits {
            Some(format!("output `{}` has media type `{}`", s.name, o.media_type))
        } else if s.layer != o.diff_id.is_some() {
            Some(format!("output `{}` {} a diff_id", s.name, if s.layer { "lacks" } else { "has" }))
        } else {
            None
        }
    })
}

/// What a derivation expects of its record: its kind, and what it pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub kind: Kind,
    pub pins: Pins,
}

/// What a derivation fixes about its outputs before they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pins {
    /// Nothing beyond the kind's shape (an image, an index, a step nobody pinned).
    Nothing,
    /// A download's sha256 and size (`file`).
    File { digest: Sha256, size: u64 },
    /// A base layer's digest, size, media type and diff_id (`file`).
    Blob { digest: Sha256, size: u64, media_type: String, diff_id: Sha256 },
    /// A fixed-output step's tree (`tree`'s diff_id).
    Tree { diff_id: Sha256 },
    /// The media type of the `layer` output (the derivation's compression).
    LayerMedia(&'static str),
}

/// Does `rec` fit a derivation that expects `want`? Its kind and the shape of its outputs, and
/// what the derivation pins. A record (remote, or in a store from an older compose) that does not
/// is ignored rather than allowed to fail the build later.
pub fn fits(want: &Expected, rec: &Record) -> bool {
    if rec.kind != want.kind.name() || shape_problem(rec).is_some() {
        return false;
    }
    let out = |name: &str| &rec.outputs[name];
    match &want.pins {
        Pins::Nothing => true,
        Pins::File { digest, size } => out("file").digest == *digest && out("file").size == *size,
        Pins::Blob { digest, size, media_type, diff_id } => {
            let o = out("file");
            (o.digest, o.size, o.media_type.as_str(), o.diff_id) == (*digest, *size, media_type.as_str(), Some(*diff_id))
        }
        Pins::Tree { diff_id } => out("tree").diff_id == Some(*diff_id),
        Pins::LayerMedia(m) => out("layer").media_type == *m,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hash::DrvHash;
    use crate::record::{Output, RECORD_VERSION};

    fn output(media_type: &str, diff_id: Option<Sha256>) -> Output {
        Output { digest: Sha256([1; 32]), size: 10, media_type: media_type.into(), diff_id }
    }

    fn record(kind: Kind, outputs: &[(&str, Output)]) -> Record {
        let outputs: BTreeMap<String, Output> = outputs.iter().map(|(n, o)| (n.to_string(), o.clone())).collect();
        Record { version: RECORD_VERSION, drv: DrvHash([2; 32]), kind: kind.name().into(), outputs, inputs: BTreeMap::new() }
    }

    fn step(tree: Sha256) -> Record {
        record(Kind::Step, &[("log", output(TEXT_MEDIA_TYPE, None)), ("tree", output(layer::GZIP_MEDIA_TYPE, Some(tree)))])
    }

    #[test]
    fn every_kind_is_named_by_its_word_and_has_sorted_outputs() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
            let names: Vec<&str> = k.outputs().iter().map(|o| o.name).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "{k:?}");
        }
        assert_eq!(Kind::parse("nonsense"), None);
    }

    #[test]
    fn a_record_fits_only_its_own_kind_shape_and_pins() {
        let tree = Sha256([3; 32]);
        let unpinned = Expected { kind: Kind::Step, pins: Pins::Nothing };
        assert!(fits(&unpinned, &step(tree)));
        assert!(fits(&Expected { kind: Kind::Step, pins: Pins::Tree { diff_id: tree } }, &step(tree)));
        // A fixed-output step's record whose tree is not the pinned one.
        assert!(!fits(&Expected { kind: Kind::Step, pins: Pins::Tree { diff_id: Sha256([4; 32]) } }, &step(tree)));
        // Another kind's word.
        assert!(!fits(&Expected { kind: Kind::Scripts, pins: Pins::Nothing }, &step(tree)));
        // A layer output without its diff_id, an extra output, a wrong media type.
        let no_diff = record(Kind::Step, &[("log", output(TEXT_MEDIA_TYPE, None)), ("tree", output(layer::GZIP_MEDIA_TYPE, None))]);
        assert_eq!(shape_problem(&no_diff).as_deref(), Some("output `tree` lacks a diff_id"));
        assert!(!fits(&unpinned, &no_diff));
        let mut extra = step(tree);
        extra.outputs.insert("more".into(), output(TEXT_MEDIA_TYPE, None));
        assert!(!fits(&unpinned, &extra));
        // Trees are written as zstd; records of gzip ones, made by earlier versions, still fit.
        let zstd_tree = record(Kind::Step, &[("log", output(TEXT_MEDIA_TYPE, None)), ("tree", output(layer::ZSTD_MEDIA_TYPE, Some(tree)))]);
        assert!(fits(&unpinned, &zstd_tree));
        let plain_tree = record(Kind::Step, &[("log", output(TEXT_MEDIA_TYPE, None)), ("tree", output(TEXT_MEDIA_TYPE, Some(tree)))]);
        assert!(!fits(&unpinned, &plain_tree));
    }

    #[test]
    fn downloads_base_layers_and_layers_fit_what_their_derivation_pins() {
        let file = record(Kind::Fetch, &[("file", output(DEB_MEDIA_TYPE, None))]);
        assert!(fits(&Expected { kind: Kind::Fetch, pins: Pins::File { digest: Sha256([1; 32]), size: 10 } }, &file));
        assert!(!fits(&Expected { kind: Kind::Fetch, pins: Pins::File { digest: Sha256([1; 32]), size: 11 } }, &file));
        let diff = Sha256([5; 32]);
        let blob = record(Kind::Blob, &[("file", output(layer::GZIP_MEDIA_TYPE, Some(diff)))]);
        let pinned = |media_type: &str| Pins::Blob { digest: Sha256([1; 32]), size: 10, media_type: media_type.into(), diff_id: diff };
        assert!(fits(&Expected { kind: Kind::Blob, pins: pinned(layer::GZIP_MEDIA_TYPE) }, &blob));
        assert!(!fits(&Expected { kind: Kind::Blob, pins: pinned(layer::ZSTD_MEDIA_TYPE) }, &blob));
        let gz = record(Kind::Layer, &[("layer", output(layer::GZIP_MEDIA_TYPE, Some(diff)))]);
        assert!(fits(&Expected { kind: Kind::Layer, pins: Pins::LayerMedia(layer::GZIP_MEDIA_TYPE) }, &gz));
        assert!(!fits(&Expected { kind: Kind::Layer, pins: Pins::LayerMedia(layer::ZSTD_MEDIA_TYPE) }, &gz));
    }

    #[test]
    fn only_trees_compose_wrote_keep_its_rules() {
        assert!(Kind::Step.is_compose_tree("tree"));
        assert!(Kind::Layer.is_compose_tree("layer"));
        assert!(!Kind::Step.is_compose_tree("log"));
        assert!(!Kind::Blob.is_compose_tree("file"));
    }
}
