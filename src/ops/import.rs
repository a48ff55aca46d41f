//! `compose import DOCKERFILE [-o SPEC]`: write the spec a Dockerfile means (see
//! [`crate::import`]); the spec written is checked to parse before it replaces anything.

use std::path::{Path, PathBuf};

use super::Error;
use crate::import::{ImportOptions, Imported};

/// Import `dockerfile` into `out` (default: `compose.kdl` beside it; an existing file is kept
/// unless `force`). Returns where the spec went and how each instruction was translated.
pub fn import(dockerfile: &Path, out: Option<&Path>, registry_base: bool, force: bool) -> Result<(PathBuf, Imported), Error> {
    let text = std::fs::read_to_string(dockerfile).map_err(|e| Error::Usage(format!("cannot read `{}`: {e}", dockerfile.display())))?;
    let context = dockerfile.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = std::fs::canonicalize(&context)
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .unwrap_or_else(|| "app".to_string());
    let opts = ImportOptions { name, registry_base, context: context.clone() };
    let imported = crate::import::import(&text, &opts).map_err(|e| Error::Usage(format!("`{}`: {e}", dockerfile.display())))?;
    let dest = out.map(Path::to_path_buf).unwrap_or_else(|| context.join("compose.kdl"));
    if dest.exists() && !force {
        return Err(Error::Usage(format!("`{}` exists: pass --force to replace it, or -o to write elsewhere", dest.display())));
    }
    // What is written must be a spec compose reads.
    crate::spec::parse_str(&dest, &imported.spec)
        .map_err(|e| Error::Internal(format!("the imported spec does not parse: {}\n{}", crate::util::chain_message(&e), imported.spec)))?;
    crate::util::write_atomic(&dest, imported.spec.as_bytes(), 0o644, None).map_err(|e| Error::Usage(crate::util::chain_message(&e)))?;
    Ok((dest, imported))
}
