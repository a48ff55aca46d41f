//! What a running command shows on stderr: the live progress bar on a terminal, a line per
//! derivation in logs, warnings and build steps' output (the library's `Reporter`).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use compose::exec::{Outcome, Reporter};
use compose::plan::Derivation;

/// Progress on stderr. On a terminal: one live line (a bar, and what is being built now), and a
/// line for each derivation that took a second or more; in logs: one line per derivation built
/// or fetched, when it ends. Times are each derivation's own, from its start.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    pub start: Instant,
    lines: Mutex<()>,
    /// Derivations being built, by name, with when each started.
    running: Mutex<Vec<(String, Instant)>>,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Progress { bar, start: Instant::now(), lines: Mutex::new(()), running: Mutex::new(Vec::new()) }
    }

    /// The live line: how many are building, and the oldest of them.
    fn show_running(&self, running: &[(String, Instant)]) {
        if let Some(b) = &self.bar {
            b.set_message(match running {
                [] => String::new(),
                [(one, _)] => format!("building {one}"),
                [(first, _), rest @ ..] => format!("building {first} and {} more", rest.len()),
            });
        }
    }

    pub fn line(&self, s: String) {
        match &self.bar {
            Some(b) if !b.is_finished() => b.println(s),
            _ => {
                let _g = self.lines.lock();
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn human(n: u64) -> String {
    compose::util::human_bytes(n)
}

impl Reporter for Progress {
    fn planned(&self, total: usize, to_build: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        }
        self.line(format!("plan: {total} derivations, {to_build} to build"));
    }
    fn started(&self, drv: &Derivation) {
        // A step's output streams as `[step] line`: say first which step it is.
        if matches!(drv.kind, compose::plan::DrvKind::Step(_) | compose::plan::DrvKind::Scripts(_)) {
            self.line(format!("building {}", drv.name));
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.push((drv.name.clone(), Instant::now()));
        self.show_running(&running);
    }
    fn warning(&self, message: &str) {
        self.line(format!("warning: {message}"));
    }
    fn waiting(&self, running: &[&Derivation], waiting: usize) {
        // Only what takes time is worth a line: a step or scripts.
        let slow: Vec<&str> = running
            .iter()
            .filter(|d| matches!(d.kind, compose::plan::DrvKind::Step(_) | compose::plan::DrvKind::Scripts(_)))
            .map(|d| d.name.as_str())
            .collect();
        if !slow.is_empty() && slow.len() == running.len() {
            let s = if waiting == 1 { "" } else { "s" };
            self.line(format!("  waiting: {waiting} derivation{s} wait for {}", slow.join(", ")));
        }
    }
    fn step_line(&self, drv: &Derivation, line: &str) {
        let name = drv.name.strip_prefix("step ").unwrap_or(&drv.name);
        self.line(format!("[{name}] {line}"));
    }
    fn finished(&self, drv: &Derivation, outcome: Outcome, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        let what = match outcome {
            Outcome::Built => "built",
            Outcome::Local => "cached",
            Outcome::Remote => "fetched",
        };
        let took = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let took = running.iter().position(|(n, _)| *n == drv.name).map(|i| running.remove(i).1.elapsed());
            self.show_running(&running);
            took
        };
        let slow = took.is_some_and(|t| t >= Duration::from_secs(1));
        if outcome != Outcome::Local && (self.bar.is_none() || slow) {
            let time = took.map(|t| format!(" in {:.2}s", t.as_secs_f64())).unwrap_or_default();
            self.line(format!("{what:>7} {} ({}){time}", drv.name, human(bytes)));
        }
    }
}
