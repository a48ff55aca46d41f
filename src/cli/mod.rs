//! The `compose` binary's commands: what each does with its parsed flags, and everything it
//! prints. The binary is the only place that prints; the library reports through
//! [`compose::exec::Reporter`], which [`progress::Progress`] shows on stderr.

mod args;
mod commands;
mod progress;
pub mod rootless;

use compose::ops;

use args::CacheAction;
pub use args::{Cli, Command};

/// Runs the parsed command; `Ok` holds the exit code.
pub fn run(cli: Cli) -> Result<u8, ops::Error> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Lock { spec, update } => commands::lock::run(&mut stdout, &spec, update)?,
        Command::Push { spec, reference, json } => commands::push::run(&mut stdout, &spec, reference, json)?,
        Command::Build { spec, out, format, push, json, check } => {
            commands::build::run(&mut stdout, &spec, commands::build::Flags { out, format, push, json, check })?
        }
        Command::Plan { spec, dot, json } => commands::plan::run(&mut stdout, &spec, dot, json)?,
        Command::Import { dockerfile, out, registry_base, force, json } => {
            commands::import::run(&mut stdout, &dockerfile, out.as_deref(), registry_base, force, json)?
        }
        Command::Explain { spec, json } => commands::explain::run(&mut stdout, &spec, json)?,
        Command::Cache { action } => match action {
            CacheAction::Verify { cache_dir, repair } => return commands::cache::verify(&mut stdout, &cache_dir, repair),
            CacheAction::Gc { cache_dir, max_age_days } => commands::cache::gc(&mut stdout, &cache_dir, max_age_days)?,
            CacheAction::Keygen { name, cache_dir, out } => commands::cache::keygen(&mut stdout, name, &cache_dir, out.as_deref())?,
            CacheAction::Stats { cache_dir, json } => commands::cache::stats(&mut stdout, &cache_dir, json)?,
        },
    }
    Ok(0)
}
