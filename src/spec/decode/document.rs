//! The top level of a spec: the walk over its images and steps, and the checks
//! that need all of them (one namespace for images and steps, `base image=`
//! chains, what steps and `copy from=` name, cycles), then the repositories a
//! `base image=` child inherits.

use std::collections::HashMap;

use kdl::KdlDocument;
use miette::SourceSpan;

use super::super::{Base, FileOp, ImageSpec, Repository, StepSpec, Variant};
use kdl::KdlNode;

use super::{known_names_help, Decoder, Seen, BUILD_CHILDREN, TOP_CHILDREN, USAGE_BUILD, USAGE_IMAGE, USAGE_MAX_LAYERS, USAGE_REPOSITORY};

/// A `base image=` child installs from its ancestors' repositories too: each repository its
/// parent chain names that it does not name itself is appended (nearest ancestor first), with the
/// span where it is written, so every later check points at the right node.
fn inherit_repositories(images: &mut [ImageSpec]) {
    let snapshot: Vec<(String, Base, Vec<Repository>)> =
        images.iter().map(|i| (i.name.clone(), i.base.clone(), i.repositories.clone())).collect();
    for img in images.iter_mut() {
        let mut base = img.base.clone();
        for _ in 0..snapshot.len() {
            let Base::Image { name, .. } = &base else { break };
            let Some((_, parent_base, repos)) = snapshot.iter().find(|(n, _, _)| n == name) else { break };
            for r in repos {
                if !img.repositories.iter().any(|mine| mine.name == r.name) {
                    img.repositories.push(r.clone());
                }
            }
            base = parent_base.clone();
        }
    }
}

impl Decoder {
    pub(in crate::spec) fn document(&mut self, doc: &KdlDocument) -> (Vec<ImageSpec>, Vec<StepSpec>) {
        let mut images: Vec<ImageSpec> = Vec::new();
        let mut steps: Vec<StepSpec> = Vec::new();
        // Images and steps share one namespace: `copy from="NAME"` names either.
        let mut names: Seen<String> = Seen::new();
        let mut builds = Seen::new();
        for n in doc.nodes().iter().filter(|n| n.name().value() == "build") {
            if self.once(&mut builds, n) {
                self.build_block(n);
            }
        }
        // Top-level repositories: every image's that lists packages, unless it has its own of
        // that name.
        let mut shared: Vec<crate::spec::Repository> = Vec::new();
        let mut repository_names: Seen<String> = Seen::new();
        for n in doc.nodes().iter().filter(|n| n.name().value() == "repository") {
            let Some(r) = self.repository(n) else { continue };
            if let Some(first) = repository_names.first(r.name.clone(), r.span) {
                let message = format!("repository `{}` is defined more than once at the top level", r.name);
                self.duplicate("compose::spec::duplicate_repository", message, r.span, first, "defined");
                continue;
            }
            shared.push(r);
        }
        for n in doc.nodes() {
            let (name, name_span, what) = match n.name().value() {
                "build" | "repository" => continue,
                "image" => {
                    let (img, name_span) = self.image(n);
                    let name = img.name.clone();
                    images.push(img);
                    (name, name_span, "image")
                }
                // Read (and substituted) before decoding: see `spec::build_args`.
                "arg" => continue,
                "step" => {
                    let Some((step, name_span)) = self.step(n) else { continue };
                    let name = step.name.clone();
                    steps.push(step);
                    (name, Some(name_span), "step")
                }
                _ => {
                    self.unknown_node(n, "", TOP_CHILDREN);
                    continue;
                }
            };
            if let Some(at) = name_span {
                if let Some(first) = names.first(name.clone(), at) {
                    let first_is_image = images.iter().filter(|i| i.name == name).count() > usize::from(what == "image");
                    let (code, message) = match (what, first_is_image) {
                        ("image", true) => ("compose::spec::duplicate_image", format!("image `{name}` is defined more than once")),
                        ("step", false) => ("compose::spec::duplicate_step", format!("step `{name}` is defined more than once")),
                        _ => (
                            "compose::spec::duplicate_name",
                            format!("`{name}` names both an image and a step; `copy from=\"{name}\"` could not tell them apart"),
                        ),
                    };
                    self.duplicate(code, message, at, first, "defined");
                }
            }
        }
        if images.is_empty() && self.diags.is_empty() {
            self.push("compose::spec::no_images", "the spec file defines no image", Vec::new(), Some(format!("add one: {USAGE_IMAGE}")));
        }
        self.check_bases(&images);
        self.check_steps(&images, &steps);
        if self.diags.is_empty() {
            for img in images.iter_mut().filter(|i| !i.packages.is_empty()) {
                for r in &shared {
                    if !img.repositories.iter().any(|mine| mine.name == r.name) {
                        img.repositories.push(r.clone());
                    }
                }
            }
            inherit_repositories(&mut images);
            for img in &images {
                if img.run_scripts && img.packages.is_empty() {
                    self.push(
                        "compose::spec::scripts_without_packages",
                        format!("image `{}` has `maintainer-scripts \"run\"` but no `packages`", img.name),
                        vec![(img.span, "this image".to_owned())],
                        Some("maintainer scripts are the packages': list at least one package".to_owned()),
                    );
                }
                if img.variant != Variant::Custom && img.packages.is_empty() {
                    self.push(
                        "compose::spec::variant_without_packages",
                        format!("image `{}` has `variant \"{}\"` but no `packages`", img.name, img.variant.name()),
                        vec![(img.span, "this image".to_owned())],
                        Some("a variant adds Debian's base set to an image's packages: list at least one package".to_owned()),
                    );
                }
                if let (Some(first), true) = (img.packages.first(), img.repositories.is_empty()) {
                    self.push(
                        "compose::spec::no_repository",
                        format!("image `{}` lists packages but has no `repository` to install them from", img.name),
                        vec![(first.span, "no repository to install this from".to_owned())],
                        Some(format!("add one to the image, to its `base image=` or to the top level (every image's): {USAGE_REPOSITORY}")),
                    );
                }
            }
        }
        (images, steps)
    }

    /// The top-level `build { … }` block, into `self.build`.
    fn build_block(&mut self, kdl: &KdlNode) {
        let node = self.open(kdl, USAGE_BUILD);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut seen = Seen::new();
        for c in kdl.children().map_or(&[][..], |d| d.nodes()) {
            if BUILD_CHILDREN.contains(&c.name().value()) && !self.once(&mut seen, c) {
                continue;
            }
            match c.name().value() {
                "max-layers" => {
                    let node = self.open(c, USAGE_MAX_LAYERS);
                    self.leaf(&node);
                    self.props(&node, &[]);
                    let args = self.args(&node, 1, Some(1), "a number of layers");
                    let Some(e) = args.first() else { continue };
                    match self.unsigned(e, "the layer budget", u64::MAX) {
                        Some(n @ 2..=127) => self.build.max_layers = Some(n as usize),
                        Some(n) => self.push(
                            "compose::spec::bad_max_layers",
                            format!("`max-layers` is from 2 to 127, not {n}"),
                            vec![(super::value_span(e), if n < 2 { "too few" } else { "more than engines accept" }.to_owned())],
                            Some(format!("usage: {USAGE_MAX_LAYERS}")),
                        ),
                        None => {}
                    }
                }
                "compression" => self.build.compression = self.compression(c),
                "epoch" => self.build.epoch = self.epoch(c),
                _ => self.unknown_node(c, "build", BUILD_CHILDREN),
            }
        }
    }

    /// A step's `image` names an image of the file; `copy from=` names an image or a step; no
    /// image or step depends on itself through bases, step images and `copy from=`.
    fn check_steps(&mut self, images: &[ImageSpec], steps: &[StepSpec]) {
        let image_names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let all: Vec<&str> = image_names.iter().copied().chain(steps.iter().map(|s| s.name.as_str())).collect();
        let mut deps: HashMap<&str, Vec<(&str, SourceSpan)>> = HashMap::new();
        for step in steps {
            let (image, at) = &step.image;
            if image_names.contains(&image.as_str()) {
                deps.entry(step.name.as_str()).or_default().push((image.as_str(), *at));
            } else {
                let help = known_names_help(image, &image_names, "images in this file");
                self.push(
                    "compose::spec::unknown_image",
                    format!("step `{}` runs in image `{image}`, which this file does not define", step.name),
                    vec![(*at, "unknown image".to_owned())],
                    Some(help),
                );
            }
        }
        let ops = images
            .iter()
            .flat_map(|i| i.files.iter().chain(i.layers.iter().flat_map(|l| l.ops.iter())).map(move |op| (i.name.as_str(), op)))
            .chain(steps.iter().flat_map(|s| s.inputs.iter().map(move |op| (s.name.as_str(), op))));
        for (owner, op) in ops {
            let FileOp::Copy { from: Some((from, at)), src, src_span, .. } = op else { continue };
            if !all.contains(&from.as_str()) {
                let help = known_names_help(from, &all, "images and steps in this file");
                self.push(
                    "compose::spec::unknown_from",
                    format!("`copy from=\"{from}\"` names no image or step of this file"),
                    vec![(*at, "unknown name".to_owned())],
                    Some(help),
                );
                continue;
            }
            if let Some(step) = steps.iter().find(|s| s.name == *from) {
                let inside = src == &step.output || src.strip_prefix(step.output.as_str()).is_some_and(|r| r.starts_with('/'));
                if !inside {
                    self.push(
                        "compose::spec::outside_output",
                        format!("`{src}` is not in the output of step `{from}`, which is `{}`", step.output),
                        vec![(*src_span, "not under the step's output".to_owned())],
                        Some(format!("copy a path under `{}`", step.output)),
                    );
                }
            }
            deps.entry(owner).or_default().push((from.as_str(), *at));
        }
        for img in images {
            if let Base::Image { name, span } = &img.base {
                deps.entry(img.name.as_str()).or_default().push((name.as_str(), *span));
            }
        }
        // A cycle through steps (cycles of bases alone are reported by `check_bases`).
        let mut reported = false;
        for start in steps.iter().map(|s| s.name.as_str()) {
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
            let mut seen: Vec<&str> = Vec::new();
            while let Some((cur, path)) = stack.pop() {
                for (next, at) in deps.get(cur).map(Vec::as_slice).unwrap_or_default() {
                    if *next == start && !reported {
                        reported = true;
                        let mut p = path.clone();
                        p.push(start);
                        self.push(
                            "compose::spec::step_cycle",
                            format!("steps and images depend on each other in a cycle: {}", p.join(" -> ")),
                            vec![(*at, "closes the cycle".to_owned())],
                            Some("a step cannot use, directly or through its image, what is made from its own output".to_owned()),
                        );
                    } else if !seen.contains(next) {
                        seen.push(next);
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
    }

    /// `base image=` must name another image of the file, without cycles.
    fn check_bases(&mut self, images: &[ImageSpec]) {
        let index: HashMap<&str, usize> = images.iter().enumerate().rev().map(|(i, img)| (img.name.as_str(), i)).collect();
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        for (i, img) in images.iter().enumerate() {
            let Base::Image { name, span } = &img.base else {
                continue;
            };
            if *name == img.name {
                self.push(
                    "compose::spec::self_base",
                    format!("image `{name}` uses itself as its base"),
                    vec![(*span, "this is the image being defined".to_owned())],
                    Some("name another image of this file, or a registry reference".to_owned()),
                );
                continue;
            }
            if !index.contains_key(name.as_str()) {
                let others: Vec<&str> = names.iter().copied().filter(|n| *n != img.name).collect();
                let help = if others.is_empty() {
                    "this file defines no other image".to_owned()
                } else {
                    known_names_help(name, &others, "images in this file")
                };
                self.push(
                    "compose::spec::unknown_image",
                    format!("no image named `{name}` in this file"),
                    vec![(*span, "unknown image".to_owned())],
                    Some(help),
                );
                continue;
            }
            // Follow the chain; report a cycle once, at its first image.
            let mut chain = vec![i];
            let mut cur = i;
            while let Base::Image { name, .. } = &images[cur].base {
                let Some(&next) = index.get(name.as_str()) else {
                    break;
                };
                if next == i {
                    if chain.iter().all(|&c| c >= i) {
                        let path: Vec<&str> =
                            chain.iter().map(|&c| images[c].name.as_str()).chain(std::iter::once(img.name.as_str())).collect();
                        self.push(
                            "compose::spec::base_cycle",
                            format!("base images form a cycle: {}", path.join(" -> ")),
                            vec![(*span, "cycle starts here".to_owned())],
                            None,
                        );
                    }
                    break;
                }
                if chain.contains(&next) {
                    break;
                }
                chain.push(next);
                cur = next;
            }
        }
    }
}
