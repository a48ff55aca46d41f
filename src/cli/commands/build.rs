//! `compose build`: build the spec's images into the output directory (and push, if asked);
//! print each image's digest (or the summary as JSON), with a closing count on stderr.

use std::io::Write;
use std::path::PathBuf;

use compose::image::Format;
use compose::ops::{self, BuildOptions, BuildSummary};

use super::pushed_line;
use crate::cli::args::{spec_options, FormatArg, SpecArgs};
use crate::cli::progress::Progress;

/// The flags of `compose build` beyond the spec's.
pub struct Flags {
    pub out: PathBuf,
    pub format: FormatArg,
    pub push: Option<String>,
    pub json: bool,
    pub check: bool,
}

pub fn run(stdout: &mut impl Write, spec: &SpecArgs, flags: Flags) -> Result<(), ops::Error> {
    let Flags { out, format, push, json, check } = flags;
    let format = match format {
        FormatArg::Oci => Format::Oci,
        FormatArg::OciArchive => Format::OciArchive,
        FormatArg::DockerArchive => Format::DockerArchive,
    };
    let mut spec_opts = spec_options(spec)?;
    spec_opts.out_dir = out.clone();
    let opts = BuildOptions { spec: spec_opts, out, format, push, insecure: spec.insecure.clone(), check };
    let progress = Progress::new();
    let summary = ops::build(&opts, &progress);
    progress.done();
    let summary = summary?;
    let c = summary.derivations;
    progress.line(format!(
        "done in {:.2}s: {} derivations, {} built, {} cached, {} from the remote cache{}",
        progress.start.elapsed().as_secs_f64(),
        c.total,
        c.built,
        c.local,
        c.remote,
        if c.skipped > 0 { format!(", {} not needed", c.skipped) } else { String::new() }
    ));
    if let Some(r) = &summary.check {
        let compared = if r.compared.is_empty() {
            "nothing to run again (no steps, no maintainer scripts)".to_string()
        } else {
            format!("{} ran again with empty caches and reproduced ({})", r.compared.len(), r.compared.join(", "))
        };
        progress.line(format!(
            "checked: {compared}; not run again: {} downloads (checked against their pinned digests) and {} layers, images \
             and indexes (made by compose from checked inputs)",
            r.downloads, r.made_by_compose
        ));
    }
    if json {
        let _ = writeln!(stdout, "{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        print_images(stdout, &progress, &summary);
    }
    Ok(())
}

/// Each image: where it went and what was pushed (stderr), its digest (stdout).
fn print_images(stdout: &mut impl Write, progress: &Progress, summary: &BuildSummary) {
    for img in &summary.images {
        progress.line(format!("{}:{} → {}", img.name, img.tag, img.output));
        if let Some(p) = &img.pushed {
            progress.line(pushed_line(p));
        }
        let _ = writeln!(stdout, "{}", img.digest);
    }
}
