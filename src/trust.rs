//! The deep check of a stored record: what `compose cache verify` reads beyond each blob's digest.
//!
//! [`crate::record`] decides from a record alone whether it fits its derivation (every lookup
//! does that); this reads its blobs: layers decompress to their `diff_id`, the trees compose
//! wrote keep [`tarcheck::Rules::Compose`] (what could damage a later build), an image's manifest
//! names its config and stored layers, an index names stored manifests, base files parse.

use crate::hash::Sha256;
use crate::layer;
use crate::oci;
use crate::record::shape::{shape_problem, Kind, BASE_FILES_KIND};
use crate::store::{Output, Record, Store};
use crate::tarcheck;

/// What `compose cache verify` finds wrong with stored record `rec` beyond its blobs' digests:
/// a shape that does not fit its kind, a layer whose uncompressed bytes are not its `diff_id`,
/// a tree compose wrote (a step's output, a layer) that breaks the rules of one
/// ([`tarcheck::Rules::Compose`]: what could damage a later build), an image whose manifest does
/// not parse or does not name its config and stored layers, an index that does not parse or
/// names manifests the store lacks, base files that do not parse.
pub fn problem(store: &Store, rec: &Record) -> Option<String> {
    if let Some(p) = shape_problem(rec) {
        return Some(p);
    }
    for (name, o) in &rec.outputs {
        let Some(want) = o.diff_id else { continue };
        let path = store.blob_path(&o.digest);
        let got = if Kind::parse(&rec.kind).is_some_and(|k| k.is_compose_tree(name)) {
            match tarcheck::check_file(&path, &o.media_type, tarcheck::Rules::Compose) {
                Ok(s) => s.diff_id.unwrap_or_default(),
                Err(Ok(why)) => return Some(format!("its `{name}` breaks the rules of a tree: {why}")),
                Err(Err(e)) => return Some(format!("layer `{name}` cannot be read: {e}")),
            }
        } else {
            match layer::DiffIdWriter::of_file(&path, &o.media_type) {
                Ok(got) => got,
                Err(e) => return Some(format!("layer `{name}` does not decompress: {e}")),
            }
        };
        if Sha256(got) != want {
            return Some(format!("layer `{name}` has diff_id {}, not {want}", Sha256(got)));
        }
    }
    let read = |o: &Output| store.read_blob(&o.digest).ok();
    match rec.kind.as_str() {
        "image" => {
            let (config, manifest) = (&rec.outputs["config"], &rec.outputs["manifest"]);
            let Some(doc) = read(manifest).and_then(|b| oci::read::<oci::ManifestDoc>("the manifest", &b).ok()) else {
                return Some("its manifest does not parse".into());
            };
            if (doc.config.digest, doc.config.size) != (config.digest, config.size) {
                return Some("its manifest names another config".into());
            }
            if read(config).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).is_none() {
                return Some("its config does not parse".into());
            }
            doc.layers
                .iter()
                .find(|l| store.checked_size(&l.digest) != Some(l.size))
                .map(|l| format!("layer {} of its manifest is not in the store", l.digest))
        }
        "index" => {
            let Some(doc) = read(&rec.outputs["index"]).and_then(|b| oci::read::<oci::IndexDoc>("the index", &b).ok()) else {
                return Some("its index does not parse".into());
            };
            doc.manifests
                .iter()
                .find(|m| store.checked_size(&m.digest) != Some(m.size))
                .map(|m| format!("manifest {} of its index is not in the store", m.digest))
        }
        BASE_FILES_KIND => {
            read(&rec.outputs["files"]).and_then(|b| crate::record::parse_base_files(&b)).is_none().then(|| "its files do not parse".into())
        }
        _ => None,
    }
}
