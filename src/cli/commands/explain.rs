//! `compose explain`: why each derivation the next build would run is not in the store.

use std::io::Write;

use compose::ops;

use crate::cli::args::{spec_options, SpecArgs};

pub fn run(stdout: &mut impl Write, spec: &SpecArgs, json: bool) -> Result<(), ops::Error> {
    let e = ops::explain(&spec_options(spec)?)?;
    if json {
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        for r in &e.rebuild {
            let _ = writeln!(stdout, "{} ({}):", r.name, r.kind);
            for why in &r.reasons {
                let _ = writeln!(stdout, "    {why}");
            }
        }
        let remote = if e.remote > 0 { format!(", {} in the remote cache", e.remote) } else { String::new() };
        let _ = writeln!(stdout, "{} of {} derivations would run; {} are in the store{remote}", e.rebuild.len(), e.derivations, e.cached);
    }
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
