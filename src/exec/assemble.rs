//! Assembling an image: its base's config and layers, the layers of the plan, the config and the
//! manifest, as store blobs.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use crate::hash::Sha256;
use crate::layer::{self};
use crate::oci::{self as image, ConfigFields, Descriptor};
use crate::plan::{DrvKind, ImageBase, ImageDrv, Plan};
use crate::store::{Output, Record, Store};

use super::*;

pub(super) fn oci_platform(p: &crate::spec::Platform) -> image::Platform {
    image::Platform::of(p)
}

/// A base's config, layer descriptors and diff_ids.
type BaseParts = (serde_json::Value, Vec<Descriptor>, Vec<Sha256>);

/// The base an image starts from: its config, layer descriptors and diff_ids.
fn base_of(plan: &Plan, img: &ImageDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<Option<BaseParts>, BuildError> {
    let damaged = |what: &str| BuildError::MissingOutput(format!("base image ({what})"), "config");
    match &img.base {
        None => Ok(None),
        Some(ImageBase::External { config, layers, .. }) => {
            let descs = layers.iter().map(|(l, _)| Descriptor::new(&l.media_type, l.digest, l.size)).collect();
            let diff_ids = layers.iter().map(|(l, _)| l.diff_id).collect();
            Ok(Some(((**config).clone(), descs, diff_ids)))
        }
        Some(ImageBase::Image(parent)) => {
            let rec = deps.get(parent).ok_or_else(|| BuildError::MissingOutput(plan.graph[*parent].name.clone(), "manifest"))?;
            let config_bytes = store.read_blob(&output(rec, "config")?.digest)?;
            let config: serde_json::Value = serde_json::from_slice(&config_bytes).map_err(|_| damaged("config"))?;
            let typed: image::ConfigDoc = image::read("the config", &config_bytes).map_err(|_| damaged("config"))?;
            let manifest: image::ManifestDoc =
                image::read("the manifest", &store.read_blob(&output(rec, "manifest")?.digest)?).map_err(|_| damaged("manifest"))?;
            let descs = manifest
                .layers
                .iter()
                .map(|l| Descriptor::new(l.media_type.as_deref().unwrap_or(layer::GZIP_MEDIA_TYPE), l.digest, l.size))
                .collect();
            Ok(Some((config, descs, typed.rootfs.diff_ids)))
        }
    }
}

pub(super) fn build_image(
    plan: &Plan,
    img: &ImageDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
) -> Result<(Output, Output), BuildError> {
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut history = Vec::new();
    packages::check_conflicts(plan, img, deps, store)?;
    let base = base_of(plan, img, deps, store)?;
    if let Some((_, descs, ids)) = &base {
        layers.extend(descs.iter().cloned());
        diff_ids.extend(ids.iter().copied());
    }
    for &l in &img.layers {
        let rec = deps.get(&l).ok_or_else(|| BuildError::MissingOutput(plan.graph[l].name.clone(), "layer"))?;
        let o = output(rec, "layer")?;
        let diff_id = o.diff_id.ok_or_else(|| BuildError::MissingOutput(plan.graph[l].name.clone(), "diff_id"))?;
        diff_ids.push(diff_id);
        layers.push(Descriptor::new(&o.media_type, o.digest, o.size));
        history.push(match &plan.graph[l].kind {
            DrvKind::Layer(ld) => ld.created_by.clone(),
            DrvKind::DebLayer(d) => format!("compose: package {}", d.package),
            DrvKind::MergedLayer(m) => format!("compose: {} packages", m.parts.len()),
            DrvKind::Meta(_) => "compose: metadata".to_string(),
            DrvKind::Scripts(_) => "compose: maintainer scripts (dpkg --configure -a)".to_string(),
            _ => "compose".to_string(),
        });
    }
    let c = &img.config;
    let fields = ConfigFields {
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        workdir: c.workdir.clone(),
        user: c.user.clone(),
        exposed: c.exposed.iter().cloned().collect(),
        volumes: c.volumes.iter().cloned().collect(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        healthcheck: c.healthcheck.as_ref().map(|h| {
            let mut o = serde_json::Map::new();
            o.insert("Test".into(), serde_json::json!(h.test));
            for (key, n) in [
                ("Interval", h.interval),
                ("Timeout", h.timeout),
                ("StartPeriod", h.start_period),
                ("StartInterval", h.start_interval),
                ("Retries", h.retries),
            ] {
                if n > 0 {
                    o.insert(key.into(), serde_json::json!(n));
                }
            }
            serde_json::Value::Object(o)
        }),
    };
    let config = image::config_json(&oci_platform(&img.platform), &fields, base.as_ref().map(|b| &b.0), &diff_ids, &history, img.epoch);
    let config_digest = store.put_bytes(&config)?;
    let config_desc = Descriptor::new(image::CONFIG_MEDIA_TYPE, config_digest, config.len() as u64);
    let manifest = image::manifest_json(&config_desc, &layers);
    let manifest_digest = store.put_bytes(&manifest)?;
    Ok((
        Output { digest: config_digest, size: config.len() as u64, media_type: image::CONFIG_MEDIA_TYPE.into(), diff_id: None },
        Output { digest: manifest_digest, size: manifest.len() as u64, media_type: image::MANIFEST_MEDIA_TYPE.into(), diff_id: None },
    ))
}
