//! What compose knows of a package's maintainer scripts without running them: the facts read
//! from `postinst` (`update-alternatives` registrations) and `triggers` (the triggers it is
//! interested in). base-files' `postinst`, reproduced in its layer, is
//! `crate::debian::effects::base_files`.

use super::{DebInfo, ScriptFacts};

/// What the package's scripts and control files say without running them: the name dpkg files
/// it under (`db_name`), what its `postinst` registers with `update-alternatives`, and the
/// `interest` lines of its `triggers` file.
pub(super) fn script_facts(info: &DebInfo, db_name: String) -> ScriptFacts {
    let interests = info
        .others
        .iter()
        .filter(|(n, _, _)| n == "triggers")
        .flat_map(|(_, b, _)| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    match (w.next(), w.next()) {
                        (Some("interest" | "interest-await"), Some(t)) => Some((t.to_owned(), false)),
                        (Some("interest-noawait"), Some(t)) => Some((t.to_owned(), true)),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ScriptFacts {
        db_name,
        alternatives: info.postinst.as_deref().map(crate::debian::effects::alternatives::registrations).unwrap_or_default(),
        interests,
    }
}
