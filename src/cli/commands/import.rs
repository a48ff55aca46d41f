//! `compose import`: write the spec a Dockerfile means; print its path, and a note per
//! instruction on stderr (or everything as JSON).

use std::io::Write;
use std::path::Path;

use compose::ops;

pub fn run(
    stdout: &mut impl Write,
    dockerfile: &Path,
    out: Option<&Path>,
    registry_base: bool,
    force: bool,
    json: bool,
) -> Result<(), ops::Error> {
    let (dest, imported) = ops::import(dockerfile, out, registry_base, force)?;
    let (exact, total) = imported.share();
    if json {
        let _ = writeln!(stdout, "{}", serde_json::json!({"spec": dest, "exact": exact, "instructions": total, "notes": imported.notes}));
    } else {
        let mut err = std::io::stderr().lock();
        for n in &imported.notes {
            let mark = if n.exact { "ok    " } else { "review" };
            let _ = writeln!(err, "{mark} {}:{}: {} → {}", dockerfile.display(), n.line, n.instruction, n.message);
        }
        let _ = writeln!(err, "{exact} of {total} instructions translated exactly; review the others");
        let _ = writeln!(stdout, "{}", dest.display());
    }
    Ok(())
}
