//! `compose plan`: the derivation DAG and what is cached, as a table, Graphviz or JSON.

use std::io::Write;

use compose::ops::{self, PlanReport};

use crate::cli::args::{spec_options, SpecArgs};

pub fn run(stdout: &mut impl Write, spec: &SpecArgs, dot: bool, json: bool) -> Result<(), ops::Error> {
    let report = ops::plan_report(&spec_options(spec)?)?;
    if json {
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else if dot {
        print_dot(stdout, &report);
    } else {
        print_table(stdout, &report);
    }
    Ok(())
}

/// The DAG as a Graphviz digraph, cached derivations filled.
fn print_dot(stdout: &mut impl Write, report: &PlanReport) {
    let _ = writeln!(stdout, "digraph plan {{\n  rankdir=LR;");
    for n in &report.nodes {
        let style = if n.cached { "filled" } else { "solid" };
        let _ = writeln!(stdout, "  n{} [label=\"{}\\n{}\", style={style}];", n.id, n.name.replace('"', "\\\""), &n.hash[..16]);
        for d in &n.deps {
            let _ = writeln!(stdout, "  n{d} -> n{};", n.id);
        }
    }
    let _ = writeln!(stdout, "}}");
}

/// One line per derivation: its number, whether it is cached, kind, hash, name and inputs.
fn print_table(stdout: &mut impl Write, report: &PlanReport) {
    for n in &report.nodes {
        let state = if n.cached {
            "cached"
        } else if n.remote {
            "remote"
        } else {
            "build "
        };
        let deps: Vec<String> = n.deps.iter().map(|d| format!("#{d}")).collect();
        let after = if deps.is_empty() { String::new() } else { format!(" ← {}", deps.join(" ")) };
        let _ = writeln!(stdout, "#{:<3} {state} {:<7} {} {}{after}", n.id, n.kind, &n.hash[4..20], n.name);
    }
}
