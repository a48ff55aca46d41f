//! Relation fields as the resolver's callers write them: `Depends:`-style lists with
//! alternatives, `Conflicts:`-style lists without, `Provides:` and single relations. The grammar
//! is the `Packages` index parser's ([`crate::debian::repository::index::parse_relations`]).

use thiserror::Error;

use crate::debian::types::{Dep, DepList, Op, Provide};

/// A relation field that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid relation `{relation}`: {reason}")]
pub struct RelationError {
    pub relation: String,
    pub reason: String,
}

fn rel_err(relation: &str, reason: impl Into<String>) -> RelationError {
    RelationError { relation: relation.to_string(), reason: reason.into() }
}

/// Parses a `Depends:`-style field: `a (>= 1) | b, c:any` (the index parser's grammar).
pub fn parse_relations(s: &str) -> Result<DepList, RelationError> {
    crate::debian::repository::index::parse_relations(s).map_err(|e| rel_err(s, e.to_string()))
}

/// Parses a `Conflicts:`/`Breaks:`-style field: a comma-separated list without alternatives.
pub fn parse_relation_list(s: &str) -> Result<Vec<Dep>, RelationError> {
    parse_relations(s)?
        .into_iter()
        .map(|mut group| match group.len() {
            1 => Ok(group.remove(0)),
            _ => Err(rel_err(s, "alternatives (`|`) are not allowed here")),
        })
        .collect()
}

/// Parses a `Provides:` field: `foo, bar (= 1.2)`.
pub fn parse_provides(s: &str) -> Result<Vec<Provide>, RelationError> {
    parse_relation_list(s)?
        .into_iter()
        .map(|d| match d.constraint {
            None => Ok(Provide { name: d.name, version: None }),
            Some((Op::Eq, v)) => Ok(Provide { name: d.name, version: Some(v) }),
            Some((op, v)) => Err(rel_err(&format!("{} ({} {v})", d.name, op.as_str()), "a Provides may only carry `=`")),
        })
        .collect()
}

/// Parses one relation: `name[:arch] [(op version)]`.
pub fn parse_relation(s: &str) -> Result<Dep, RelationError> {
    let mut list = parse_relation_list(s)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => Err(rel_err(s, "empty relation")),
        _ => Err(rel_err(s, "expected one relation")),
    }
}
