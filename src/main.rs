//! The `compose` command line: parse flags, run one command (`cli`: each command's call into
//! `compose::ops` and its output, one file each under `src/cli/commands/`), report errors.
//! The binary is the only place that prints; progress arrives through [`compose::exec::Reporter`].

// The only place that prints: the lints that keep the library silent do not apply here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // On a terminal, reports wrap to its width; in logs and pipes, lines stay whole (greppable).
    let wrap = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| Box::new(miette::MietteHandlerOpts::new().wrap_lines(wrap).build())));
    // Not root: the commands that may run steps or remove what they made, in a user namespace
    // of its own.
    if cli.command.may_run_steps() {
        if let Some(why) = cli::rootless::enter() {
            eprintln!("error: {why}");
            return ExitCode::from(1);
        }
    }
    stop_steps_on_signals();
    let result = cli::run(cli);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("{:?}", miette::Report::new(e));
            ExitCode::from(code as u8)
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: stop every running build step with its whole process tree
/// (waiting a few seconds at most for them to go), then exit as a shell reports a command ended
/// by SIGINT (130). What the killed build leaves in the store's `tmp/` goes with the next build.
fn stop_steps_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("interrupted: stopping running build steps");
            compose::exec::sandbox::interrupt(std::time::Duration::from_secs(4));
            std::process::exit(130);
        }
    });
}
