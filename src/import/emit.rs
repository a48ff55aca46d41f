//! Emitting the spec: the stages as images (their base, packages, accounts, files and config),
//! their build steps and the layer each step's output becomes, with unique names and every
//! `copy from=` resolved to the image or step it names.

use std::collections::BTreeSet;
use std::path::Path;

use super::stage::{Stage, StageBase, StepDraft};
use super::values::name_of;
use super::writer::{int, FromRef, Node};
use super::{review, ImportOptions, Note};

/// The directory a stage's step yields: the common parent of what later stages copy out of it,
/// else its working directory (never `/`, which a step cannot yield).
pub(super) fn step_output(stage: &Stage) -> String {
    let outs = &stage.copied_out;
    let parent = |p: &str| Path::new(p).parent().and_then(|p| p.to_str()).unwrap_or("/").to_string();
    let parents: Vec<String> = outs.iter().map(|p| parent(p)).collect();
    let mut common = parents.first().cloned().unwrap_or_else(|| stage.workdir.clone());
    for p in &parents {
        while !(p == &common || p.starts_with(&format!("{}/", common.trim_end_matches('/')))) {
            common = parent(&common);
        }
    }
    if common == "/" {
        common = outs.first().cloned().unwrap_or_else(|| "/out".into());
    }
    if common == "/" {
        "/out".to_string()
    } else {
        common
    }
}

/// The `repository` nodes of a Debian suite and its security suite.
pub(super) fn repositories(suite: &str, line: usize) -> Vec<Node> {
    [("debian", suite.to_string()), ("debian-security", format!("{suite}-security"))]
        .into_iter()
        .map(|(name, suite)| {
            Node::new("repository", line)
                .arg(name)
                .prop("suite", suite)
                .prop("components", "main")
                .prop("keyring", "/usr/share/keyrings/debian-archive-keyring.gpg")
        })
        .collect()
}

/// The spec's nodes, and the exported image's name.
pub(super) fn emit(stages: &[Stage], external: &[String], opts: &ImportOptions, notes: &mut Vec<Note>) -> (Vec<Node>, String) {
    let names = Names::new(stages, external, opts);
    let last = stages.len().saturating_sub(1);
    let mut out = Vec::new();
    for (name, image) in names.external.iter().zip(external) {
        out.push(
            Node::new("image", 0)
                .arg(name.as_str())
                .block(vec![Node::new("export", 0).arg(false), Node::new("base", 0).arg(image.as_str())]),
        );
    }
    for (i, s) in stages.iter().enumerate() {
        let image_name = names.built[i].as_ref().map_or(names.stages[i].as_str(), |(b, _)| b.as_str());
        let mut body = image_body(s, i == last, &names, notes);
        let config = (!s.config.is_empty()).then(|| Node::new("config", s.line).block(s.config.clone()));
        let Some(step) = &s.step else {
            body.extend(config);
            out.push(Node::new("image", s.line).arg(image_name).block(body));
            continue;
        };
        out.push(Node::new("image", s.line).arg(image_name).block(body));
        let step_name = names.built[i].as_ref().map_or("", |(_, r)| r.as_str());
        let output = names.outputs[i].clone().unwrap_or_else(|| "/out".into());
        out.push(step_node(step, step_name, image_name, &output, &names, notes));
        // The stage as later instructions see it: its image with the step's output, then what
        // was copied after the last RUN.
        let mut layer = vec![Node::new("copy", step.line).prop("from", step_name).arg(output.as_str()).prop("to", output.as_str())];
        layer.extend(s.pending.iter().filter_map(|n| names.resolve(n.clone(), notes)));
        let mut body = Vec::new();
        if i != last {
            body.push(Node::new("export", s.line).arg(false));
        }
        body.push(Node::new("base", s.line).prop("image", image_name));
        body.push(Node::new("layer", step.line).arg("run").block(layer));
        body.extend(config);
        out.push(Node::new("image", s.line).arg(names.stages[i].as_str()).block(body));
        if i == last {
            let message = format!("the last stage's RUN lines become step `{step_name}`; only `{output}` is kept from what they change: check that it holds what the image needs");
            // Said of the step's first RUN, whose note this completes.
            review(notes, step.line, "RUN", message);
        }
    }
    let exported = names.stages.get(last).cloned().unwrap_or_default();
    (out, exported)
}

/// The names of what the spec writes, unique among images and steps; and where each step's
/// output is.
struct Names {
    /// Each stage's image (the last stage's: the exported image's name).
    stages: Vec<String>,
    /// A stage with RUN lines: its image before them, and its step.
    built: Vec<Option<(String, String)>>,
    /// Each registry image `COPY --from` names that is no stage.
    external: Vec<String>,
    /// A stage with RUN lines: the directory its step yields.
    outputs: Vec<Option<String>>,
}

impl Names {
    fn new(stages: &[Stage], external: &[String], opts: &ImportOptions) -> Names {
        // Names are unique among images and steps; the exported image's comes first.
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut unique = |base: String| -> String {
            let mut n = base.clone();
            let mut k = 2;
            while !taken.insert(n.clone()) {
                n = format!("{base}-{k}");
                k += 1;
            }
            n
        };
        let last = stages.len().saturating_sub(1);
        let exported = unique(name_of(&opts.name));
        let names: Vec<String> =
            stages.iter().enumerate().map(|(i, s)| if i == last { exported.clone() } else { unique(s.name.clone()) }).collect();
        let built: Vec<Option<(String, String)>> = stages
            .iter()
            .zip(&names)
            .map(|(s, n)| s.step.as_ref().map(|_| (unique(format!("{n}-build")), unique(format!("{n}-run")))))
            .collect();
        let external = external.iter().map(|r| unique(format!("from-{}", name_of(r)))).collect();
        let outputs = stages.iter().map(|s| s.step.as_ref().map(|_| step_output(s))).collect();
        Names { stages: names, built, external, outputs }
    }

    /// A `copy from=` with its source named; `None` (noted) when it is not in the step's output.
    fn resolve(&self, mut n: Node, notes: &mut Vec<Note>) -> Option<Node> {
        let names = &self.stages;
        match n.from {
            None => {}
            Some(FromRef::External(j)) => n.set("from", self.external.get(j).map_or("", String::as_str)),
            Some(FromRef::Stage(j)) => match (self.built.get(j).and_then(Option::as_ref), self.outputs.get(j).and_then(Option::as_ref)) {
                (Some((_, step)), Some(out)) => {
                    let src = n.first_arg().unwrap_or("").trim_end_matches('/').to_string();
                    if !(src == *out || src.strip_prefix(out.as_str()).is_some_and(|r| r.starts_with('/'))) {
                        let message = format!(
                            "not translated: `{src}` is outside `{out}`, the one directory the RUN lines of stage `{}` yield",
                            names.get(j).map_or("", String::as_str)
                        );
                        review(notes, n.line, "COPY", message);
                        return None;
                    }
                    n.set("from", step.as_str());
                }
                _ => n.set("from", names.get(j).map_or("", String::as_str)),
            },
        }
        Some(n)
    }
}

/// The body of a stage's image (before its RUN lines, if it has any), without its config: not
/// exported unless it is the last stage's image, its base, packages, accounts and files.
fn image_body(s: &Stage, last: bool, names: &Names, notes: &mut Vec<Note>) -> Vec<Node> {
    let mut body = Vec::new();
    if !last || s.step.is_some() {
        body.push(Node::new("export", s.line).arg(false));
    }
    match &s.base {
        StageBase::Scratch => {}
        StageBase::Registry(r) => body.push(Node::new("base", s.line).arg(r.as_str())),
        StageBase::Stage(j) => body.push(Node::new("base", s.line).prop("image", names.stages.get(*j).map_or("", String::as_str))),
        StageBase::Debian { suite } => {
            body.push(Node::new("variant", s.line).arg("minbase"));
            body.extend(repositories(suite, s.line));
        }
    }
    if s.packages.is_empty() && matches!(s.base, StageBase::Debian { .. }) {
        // The variant is the image; it needs one package named (minbase has base-files).
        body.push(Node::new("packages", s.line).arg("base-files"));
    }
    if !s.packages.is_empty() {
        if !matches!(s.base, StageBase::Debian { .. }) {
            if let Some(suite) = &s.suite {
                body.extend(repositories(suite, s.line));
            }
        }
        body.push(s.packages.iter().fold(Node::new("packages", s.line), |n, p| n.arg(p.as_str())));
    }
    if !s.groups.is_empty() || !s.users.is_empty() {
        let groups = s.groups.iter().map(|(g, gid)| Node::new("group", s.line).arg(g.as_str()).prop("gid", int(*gid)));
        let users = s.users.iter().map(|(_, _, u)| u.clone());
        body.push(Node::new("accounts", s.line).block(groups.chain(users).collect()));
    }
    let files: Vec<Node> = s.files.iter().filter_map(|f| names.resolve(f.clone(), notes)).collect();
    if !files.is_empty() {
        body.push(Node::new("files", s.line).block(files));
    }
    body
}

/// The `step` node of a stage's RUN lines, over `image_name`, yielding `output`.
fn step_node(step: &StepDraft, step_name: &str, image_name: &str, output: &str, names: &Names, notes: &mut Vec<Note>) -> Node {
    let mut sb = vec![Node::new("image", step.line).arg(image_name)];
    sb.extend(step.inputs.iter().filter_map(|n| names.resolve(n.clone(), notes)));
    if step.workdir != "/" {
        sb.push(Node::new("workdir", step.line).arg(step.workdir.as_str()));
    }
    if !step.env.is_empty() {
        sb.push(step.env.iter().fold(Node::new("env", step.line), |n, (k, v)| n.prop(k, v.as_str())));
    }
    for r in &step.runs {
        sb.push(r.iter().fold(Node::new("run", step.line), |n, a| n.arg(a.as_str())));
    }
    sb.push(Node::new("output", step.line).arg(output));
    if step.network {
        sb.push(Node::new("network", step.line).arg(true));
    }
    Node::new("step", step.line).arg(step_name).block(sb)
}
