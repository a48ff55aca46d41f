//! `compose lock`: resolve the spec's packages, write the lockfile, print its path.

use std::io::Write;

use compose::ops;

use crate::cli::args::{spec_options, SpecArgs};
use crate::cli::progress::Progress;

pub fn run(stdout: &mut impl Write, spec: &SpecArgs, update: Option<Vec<String>>) -> Result<(), ops::Error> {
    let opts = spec_options(spec)?;
    let mode = match update {
        None => ops::LockMode::Build,
        Some(names) => ops::LockMode::Update(names),
    };
    let progress = Progress::new();
    let path = ops::lock(&opts, mode, &progress);
    progress.done();
    let path = path?;
    let _ = writeln!(stdout, "{}", path.display());
    Ok(())
}
