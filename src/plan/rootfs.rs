//! The identity of an image's root file system: what a step (or the maintainer scripts) running
//! over it sees, whatever the layers are split into and however they are compressed.
//!
//! A step's key names its builder by this identity, not by the image derivation's hash: the
//! layer budget (`--max-layers`, `build { max-layers }`) regroups package layers and the
//! compression re-encodes every layer, yet neither changes a file the step can read. It is made
//! of the base (an external base's manifest, a `base image=` parent's identity, or scratch), the
//! content of each layer in order — files layers by their entries, package layers by their
//! `.deb`, merged package layers as the packages they hold, one by one, the metadata layer by
//! what it writes, the scripts' layer by the root they ran over — and the environment steps
//! inherit from the image's config.

use petgraph::graph::NodeIndex;

use super::layering::DEB_LAYER_FORMAT;
use super::planner::{encode_entries, sha_of, Planner};
use super::{DrvKind, ImageBase, LayerPart, Platform, SANDBOX_ID, SCRIPTS_FORMAT};
use crate::hash::{DrvHash, Encoder};

/// Version of how the identity is made; part of it.
const ROOTFS_FORMAT: &str = "rootfs/v1";

/// Stands for the layer format in content ids: the bytes' encoding is not content.
const ANY_FORMAT: &str = "content";

impl Planner<'_> {
    /// The root file system identity of an image made of `base` and `layers` on `platform`, whose
    /// config gives steps `env`.
    pub(super) fn rootfs_id(&self, platform: &Platform, base: Option<&ImageBase>, layers: &[NodeIndex], env: &[String]) -> DrvHash {
        let mut e = Encoder::new(ROOTFS_FORMAT);
        e.str(&platform.os).str(&platform.architecture).opt_str(platform.variant.as_deref());
        match base {
            None => {
                e.str("scratch");
            }
            Some(ImageBase::External { manifest, .. }) => {
                e.str("external").sha256(manifest);
            }
            Some(ImageBase::Image(n)) => {
                e.str("image").drv(&self.image_rootfs(*n));
            }
        }
        let mut contents = Vec::new();
        for &l in layers {
            match &self.plan.graph[l].kind {
                DrvKind::MergedLayer(m) => contents.extend(m.parts.iter().map(|&p| self.content_id(p))),
                _ => contents.push(self.content_id(l)),
            }
        }
        e.list(contents.len());
        for c in &contents {
            e.drv(c);
        }
        e.list(env.len());
        for v in env {
            e.str(v);
        }
        e.finish()
    }

    /// The root file system identity of image node `n`; for any other node (a step, as a `copy
    /// from=` source), its derivation hash.
    pub(super) fn image_rootfs(&self, n: NodeIndex) -> DrvHash {
        match &self.plan.graph[n].kind {
            DrvKind::Image(i) => i.rootfs,
            _ => self.plan.graph[n].hash,
        }
    }

    /// What layer node `n` holds, whatever its format: its derivation hash with the layer format
    /// left out and its inputs named by content.
    fn content_id(&self, n: NodeIndex) -> DrvHash {
        let drv = &self.plan.graph[n];
        match &drv.kind {
            DrvKind::Layer(l) => {
                let mut e = Encoder::new("files-content");
                e.u64(l.epoch).u64(l.merged_usr as u64);
                encode_entries(&mut e, &l.entries);
                e.list(l.parts.len());
                for part in &l.parts {
                    match part {
                        LayerPart::Entries(entries) => {
                            e.str("entries");
                            encode_entries(&mut e, entries);
                        }
                        LayerPart::From(c) => {
                            e.str("from").drv(&self.image_rootfs(c.source)).str(&c.src).str(&c.to).u64(c.to_dir as u64);
                            e.u64(c.mode.map_or(u64::MAX, u64::from))
                                .u64(c.dir_mode.map_or(u64::MAX, u64::from))
                                .u64(c.uid as u64)
                                .u64(c.gid as u64);
                        }
                    }
                }
                e.finish()
            }
            DrvKind::DebLayer(d) => {
                let mut e = Encoder::new("deb-content");
                e.sha256(&sha_of(&self.plan.graph[d.fetch])).str(DEB_LAYER_FORMAT).u64(d.epoch);
                e.u64(d.merged_usr as u64).u64(d.emulate as u64);
                e.finish()
            }
            DrvKind::MergedLayer(m) => {
                let mut e = Encoder::new("merged-content");
                e.list(m.parts.len());
                for &p in &m.parts {
                    e.drv(&self.content_id(p));
                }
                e.finish()
            }
            DrvKind::Meta(m) => self.meta_hash(m, ANY_FORMAT, &|p| self.content_id(p)),
            DrvKind::Scripts(s) => {
                let mut e = Encoder::new("scripts-content");
                e.str(SCRIPTS_FORMAT).str(SANDBOX_ID).drv(&self.image_rootfs(s.root)).u64(s.epoch);
                e.finish()
            }
            _ => drv.hash,
        }
    }
}
