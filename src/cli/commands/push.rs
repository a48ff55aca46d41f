//! `compose push`: build one image of the spec if needed and push it; print its digest (or the
//! summary as JSON).

use std::io::Write;
use std::path::PathBuf;

use compose::image::Format;
use compose::ops::{self, BuildOptions};

use super::pushed_line;
use crate::cli::args::{spec_options, SpecArgs};
use crate::cli::progress::Progress;

pub fn run(stdout: &mut impl Write, spec: &SpecArgs, reference: String, json: bool) -> Result<(), ops::Error> {
    let opts = BuildOptions {
        spec: spec_options(spec)?,
        out: PathBuf::from("out"),
        format: Format::Oci,
        push: Some(reference),
        insecure: spec.insecure.clone(),
        check: false,
    };
    if opts.spec.image.is_none() && ops::image_count(&opts.spec)? > 1 {
        return Err(ops::Error::Usage("the spec exports several images: choose one with --image NAME".into()));
    }
    let progress = Progress::new();
    let summary = ops::build(&opts, &progress);
    progress.done();
    let summary = summary?;
    for img in &summary.images {
        if let Some(p) = &img.pushed {
            progress.line(pushed_line(p));
            if !json {
                let _ = writeln!(stdout, "{}", p.digest);
            }
        }
    }
    if json {
        let _ = writeln!(stdout, "{}", serde_json::to_string(&summary).unwrap_or_default());
    }
    Ok(())
}
