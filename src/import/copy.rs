//! `COPY` and `ADD`: their sources (paths in the build context whatever they say, globs
//! expanded against it, or paths in an earlier stage or another registry image), destinations
//! and `--chown`/`--chmod`, as `copy` file operations.

use std::path::Path;

use kdl::KdlValue;

use crate::spec::values as check;

use super::parse::{exec_form, flag, strip_flags, words, Instr};
use super::stage::{stage_by_name, Stage};
use super::values::{absolute, image_path_ok, in_context, registry_ref, subst};
use super::writer::{int, FromRef, Node};
use super::ImportOptions;

/// Where `COPY --from=NAME` copies from, or why import does not translate it.
pub(super) fn copy_from(
    f: &str,
    stage: &Stage,
    earlier: &[Stage],
    aliases: &[String],
    external: &mut Vec<String>,
) -> Result<FromRef, String> {
    if f.is_empty() {
        return Err("`--from=` names nothing".into());
    }
    if let Some(i) = stage_by_name(earlier, f) {
        return Ok(FromRef::Stage(i));
    }
    if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) {
        return match f.parse::<usize>() {
            Ok(i) if i < earlier.len() => Ok(FromRef::Stage(i)),
            _ => Err(format!("`--from={f}` names no earlier stage (Docker copies from earlier stages only)")),
        };
    }
    if stage.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(f)) || aliases.iter().any(|a| a.eq_ignore_ascii_case(f)) {
        return Err(format!("`--from={f}` names this stage or a later one; import translates copies from earlier stages only"));
    }
    let reference = registry_ref(f).map_err(|why| format!("`--from={f}`: {why}"))?;
    let i = match external.iter().position(|r| *r == reference) {
        Some(i) => i,
        None => {
            external.push(reference);
            external.len() - 1
        }
    };
    Ok(FromRef::External(i))
}

/// `COPY`/`ADD`: Ok(what it became) or Err(what to review).
pub(super) fn copy(
    ins: &Instr,
    stage: &mut Stage,
    earlier: &mut [Stage],
    aliases: &[String],
    external: &mut Vec<String>,
    opts: &ImportOptions,
) -> Result<String, String> {
    if !ins.heredocs.is_empty() {
        return Err("not translated: here-documents; write the file beside the spec and copy it".into());
    }
    let rest = strip_flags(&ins.args);
    let words = match exec_form(rest) {
        Some(w) => w,
        None => words(rest, false).ok_or("not translated: unbalanced quotes")?,
    };
    let Some((dst, srcs)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err("not translated: expected a source and a destination".into());
    };
    let dest = Dest::new(ins.line, &subst(dst, &stage.vars), srcs.len(), &stage.workdir)?;
    let mut said = Said::default();
    let props = copy_props(&ins.args, stage, &mut said.review);
    let from = match flag(&ins.args, "--from") {
        Some(f) => {
            Some(copy_from(&subst(&f, &stage.vars), stage, earlier, aliases, external).map_err(|why| format!("not translated: {why}"))?)
        }
        None => None,
    };
    let mut nodes = Vec::new();
    for src in srcs {
        let src = subst(src, &stage.vars);
        if ins.keyword == "ADD" {
            add_refused(&src)?;
        }
        let copied = match from {
            Some(f) => out_of_image(&src, f, earlier, &dest, &mut said.review).into_iter().collect(),
            None => from_context(&src, stage, &dest, opts, stage.files.len() + nodes.len(), &mut said),
        };
        nodes.extend(copied.into_iter().map(|n| with_props(n, &props)));
    }
    // Before any step: the stage's image has them (a step sees them there). After one: the
    // next step's inputs, or the image's files after the step's output.
    let count = nodes.len();
    match &stage.step {
        Some(_) => stage.pending.extend(nodes),
        None => stage.files.extend(nodes),
    }
    let Said { review, mut info } = said;
    if review.is_empty() {
        info.insert(0, format!("{count} file operation(s)"));
        Ok(info.join("; "))
    } else {
        Err(review.into_iter().chain(info).collect::<Vec<_>>().join("; "))
    }
}

/// What is said of one `COPY`: what to review, and what the reader should know.
#[derive(Default)]
struct Said {
    review: Vec<String>,
    info: Vec<String>,
}

/// Where one `COPY`'s sources go (Docker's rule: a file goes into a destination ending in `/`,
/// or into the destination of several sources; a directory's contents go to the destination),
/// and its line.
struct Dest {
    line: usize,
    /// The destination as a directory, with a trailing `/`: where a glob's matches go.
    into: String,
    /// Where a file goes.
    file_to: String,
    /// Where a directory's contents go.
    dir_to: String,
}

impl Dest {
    /// The destination `dst` (substituted) of `sources` sources, made absolute against
    /// `workdir`; Err: it is no path in the image.
    fn new(line: usize, dst: &str, sources: usize, workdir: &str) -> Result<Dest, String> {
        let into_dir = dst.ends_with('/') || sources > 1 || dst == "." || dst == "./";
        let dst_abs = absolute(dst, workdir);
        if !image_path_ok(&dst_abs) {
            return Err(format!("not translated: the destination `{dst}` is no path in the image"));
        }
        let into = format!("{}/", dst_abs.trim_end_matches('/'));
        let file_to = if into_dir { into.clone() } else { dst_abs.clone() };
        let dir_to = if dst_abs == "/" { "/".to_string() } else { dst_abs.trim_end_matches('/').to_string() };
        Ok(Dest { line, into, file_to, dir_to })
    }
}

/// The properties of `--chown` and `--chmod`; what they or the other flags cannot say goes to
/// `review`.
fn copy_props(args: &str, stage: &Stage, review: &mut Vec<String>) -> Vec<(&'static str, KdlValue)> {
    let mut props: Vec<(&str, KdlValue)> = Vec::new();
    if let Some(o) = flag(args, "--chown") {
        let o = subst(&o, &stage.vars);
        match check::owner(&o) {
            Ok(_) => props.push(("owner", o.into())),
            Err(b) => review.push(format!("`--chown={o}` is not translated: {}", b.message)),
        }
    }
    if let Some(m) = flag(args, "--chmod") {
        match u32::from_str_radix(&m, 8) {
            Ok(n) if n <= 0o7777 => props.push(("mode", int(n))),
            _ => review.push(format!("`--chmod={m}` is not an octal mode")),
        }
    }
    for f in args.split_whitespace().take_while(|w| w.starts_with("--")) {
        if !(f.starts_with("--chown=") || f.starts_with("--chmod=") || f.starts_with("--from=") || f == "--link") {
            review.push(format!("`{f}` is not translated"));
        }
    }
    props
}

/// `n` with the properties of the `COPY`'s flags.
fn with_props(mut n: Node, props: &[(&str, KdlValue)]) -> Node {
    for (k, v) in props {
        n = n.prop(k, v.clone());
    }
    n
}

/// Err: why `ADD src` is not a copy (it downloads, or unpacks an archive).
fn add_refused(src: &str) -> Result<(), String> {
    if src.contains("://") || src.starts_with("git@") {
        return Err(format!(
            "not translated: `ADD {src}` downloads; fetch it in a fixed-output step (`network #true`) and `copy from=` it"
        ));
    }
    if [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"].iter().any(|x| src.ends_with(x)) {
        return Err(format!("not translated: `ADD {src}` unpacks an archive; unpack it in a step (`run \"tar\" \"-xf\" …`)"));
    }
    Ok(())
}

/// The copy of `src`, a path in another image (absolute), out of `f`; an earlier stage notes
/// it among what is copied out of it. `None` (said in `review`): it is no path in an image.
fn out_of_image(src: &str, f: FromRef, earlier: &mut [Stage], dest: &Dest, review: &mut Vec<String>) -> Option<Node> {
    let abs = absolute(src, "/");
    if !image_path_ok(&abs) {
        review.push(format!("`{src}` is no path in an image"));
        return None;
    }
    if let FromRef::Stage(i) = f {
        if let Some(s) = earlier.get_mut(i) {
            s.copied_out.push(if abs == "/" { abs.clone() } else { abs.trim_end_matches('/').to_string() });
        }
    }
    let mut n = Node::new("copy", dest.line).prop("from", "").arg(abs).prop("to", dest.file_to.as_str());
    n.from = Some(f);
    Some(n)
}

/// The copies of `src`, a path (or glob) in the build context, whatever it says (Docker's
/// rule): never the host's. A copy made before the stage's step is recorded among what the
/// stage made, as its `index`-th file operation.
fn from_context(src: &str, stage: &mut Stage, dest: &Dest, opts: &ImportOptions, index: usize, said: &mut Said) -> Vec<Node> {
    let rel = in_context(src);
    let means = (src.starts_with('/') || src.split('/').any(|c| c == "..")).then(|| format!("the build context's `{rel}`, as in Docker"));
    if src.contains(['*', '?', '[']) {
        said.info.extend(means.map(|m| format!("`{src}` is {m}")));
        let matched = glob_context(&opts.context, &rel);
        if matched.is_empty() {
            said.review.push(format!("`{src}` matches nothing in the build context"));
        }
        said.review.push(format!("the glob `{src}` was expanded now, to {} file(s): files added later are not copied", matched.len()));
        return matched.into_iter().map(|m| Node::new("copy", dest.line).arg(m).prop("to", dest.into.as_str())).collect();
    }
    if let Err((_, b)) = check::copy_source(&rel) {
        said.review.push(format!("`{src}` is not translated: {}", b.message));
        return Vec::new();
    }
    let path = opts.context.join(&rel);
    match (std::fs::symlink_metadata(&path).is_ok(), means) {
        (true, None) => {}
        (true, Some(m)) => said.info.push(format!("`{src}` is {m}")),
        (false, None) => said.review.push(format!("`{src}` is not in the build context")),
        (false, Some(m)) => said.review.push(format!("`{src}` is not in the build context (it means {m})")),
    }
    let is_dir = path.is_dir() || rel == "." || rel.ends_with('/');
    let target = if is_dir { dest.dir_to.clone() } else { dest.file_to.clone() };
    let source = if is_dir && !rel.ends_with('/') && rel != "." { format!("{rel}/") } else { rel };
    if stage.step.is_none() {
        stage.made.insert(target.trim_end_matches('/').to_string(), index);
    }
    vec![Node::new("copy", dest.line).arg(source).prop("to", target)]
}

/// Files of the context matching a `COPY` glob (relative paths, sorted).
pub(super) fn glob_context(context: &Path, pattern: &str) -> Vec<String> {
    let Ok(glob) = globset::GlobBuilder::new(pattern).literal_separator(true).build() else { return Vec::new() };
    let m = glob.compile_matcher();
    let mut out: Vec<String> = walkdir::WalkDir::new(context)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(context).ok().and_then(|p| p.to_str()).map(str::to_string))
        .filter(|p| m.is_match(p))
        .collect();
    out.sort();
    out
}
