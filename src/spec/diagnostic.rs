//! Spec errors: [`SpecDiagnostic`], one located problem in a spec file, and
//! [`SpecError`], everything that keeps a file from becoming a
//! [`SpecFile`](super::SpecFile), with their miette rendering.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One located problem in a spec file. Carries its own copy of the (shared)
/// source so it renders on its own or as a related diagnostic.
#[derive(Debug, Clone)]
pub struct SpecDiagnostic {
    /// Like `compose::spec::unknown_node`.
    pub code: &'static str,
    pub message: String,
    /// The first label is the primary one.
    pub labels: Vec<LabeledSpan>,
    pub help: Option<String>,
    pub source: NamedSource<Arc<String>>,
}

impl SpecDiagnostic {
    pub(super) fn new(
        source: &NamedSource<Arc<String>>,
        code: &'static str,
        message: String,
        labels: Vec<(SourceSpan, String)>,
        help: Option<String>,
    ) -> Self {
        let mut labels: Vec<(SourceSpan, String)> = labels.into_iter().map(|(s, l)| (s, clip_message(&l))).collect();
        let source = clip_source(source, &mut labels);
        let message = clip_message(&message);
        let labels =
            labels
                .into_iter()
                .enumerate()
                .map(|(i, (span, label))| {
                    if i == 0 {
                        LabeledSpan::new_primary_with_span(Some(label), span)
                    } else {
                        LabeledSpan::new_with_span(Some(label), span)
                    }
                })
                .collect();
        SpecDiagnostic { code, message, labels, help, source }
    }

    /// The primary span, if the diagnostic has labels.
    pub fn primary_span(&self) -> Option<SourceSpan> {
        self.labels.first().map(|l| *l.inner())
    }
}

/// The longest quoted value (between backticks) a message echoes whole.
const MAX_QUOTED: usize = 64;
/// The longest source line a diagnostic shows whole.
const MAX_SHOWN_LINE: usize = 200;

/// `message` with every value quoted in backticks cut to [`MAX_QUOTED`] characters (`…`
/// marks the cut), so that a 10 MiB value gives a one-line error, not 10 MiB of one.
fn clip_message(message: &str) -> String {
    if message.len() <= MAX_QUOTED {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len().min(1024));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 && part.chars().count() > MAX_QUOTED {
            out.extend(part.chars().take(MAX_QUOTED - 4));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The source a diagnostic shows: `source` with every line longer than [`MAX_SHOWN_LINE`]
/// bytes cut (`…` marks the cut), and `labels` moved to match. Lines keep their numbers and
/// labels starting in what is kept keep their columns.
fn clip_source(source: &NamedSource<Arc<String>>, labels: &mut [(SourceSpan, String)]) -> NamedSource<Arc<String>> {
    let text: &str = source.inner();
    if !text.split('\n').any(|l| l.len() > MAX_SHOWN_LINE) {
        return source.clone();
    }
    // Per cut line: where it started in the original, how much of it is kept, how long it was,
    // and where it starts in the result.
    let mut cuts: Vec<(usize, usize, usize, usize, usize)> = Vec::new();
    let mut out = String::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        if body.len() > MAX_SHOWN_LINE {
            let keep = body.floor_char_boundary(MAX_SHOWN_LINE - 40);
            let new_start = out.len();
            out.push_str(&body[..keep]);
            out.push('…');
            if line.ends_with('\n') {
                out.push('\n');
            }
            cuts.push((at, keep, line.len(), new_start, out.len() - new_start));
        } else {
            out.push_str(line);
        }
        at += line.len();
    }
    let map = |o: usize| -> usize {
        let mut removed = 0usize;
        for &(start, keep, len, new_start, new_len) in &cuts {
            if o < start {
                break;
            }
            if o < start + len {
                return new_start + (o - start).min(keep);
            }
            removed += len - new_len;
        }
        o.saturating_sub(removed)
    };
    for (span, _) in labels.iter_mut() {
        let start = map(span.offset());
        let end = map(span.offset() + span.len()).max(start);
        *span = SourceSpan::new(start.into(), end - start);
    }
    NamedSource::new(source.name(), Arc::new(out))
}

impl fmt::Display for SpecDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecDiagnostic {}

impl Diagnostic for SpecDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

/// Why a spec file could not be turned into a [`SpecFile`](super::SpecFile) (or, from
/// [`SpecFile::error_at`](super::SpecFile::error_at), why a later stage rejects it).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read (missing, a directory, no permission…).
    #[error("cannot read spec file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8. `line` and `column` locate the first bad byte;
    /// both are 1-based and the column counts bytes, as miette's
    /// `[path:line:col]` header does.
    #[error(
        "spec file `{}` is not valid UTF-8: invalid byte 0x{byte:02x} at line {line}, column {column}",
        path.display()
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
        byte: u8,
        /// The same, located in a lossy decoding of the file.
        detail: Box<SpecDiagnostic>,
    },
    /// One or more problems in the text, in source order. With one problem
    /// the error *is* that diagnostic; with several it is a summary whose
    /// related diagnostics are the problems.
    #[error("{}", invalid_message(path, diagnostics))]
    Invalid { path: PathBuf, diagnostics: Vec<SpecDiagnostic> },
}

fn invalid_message(path: &Path, diagnostics: &[SpecDiagnostic]) -> String {
    match diagnostics {
        [one] => one.message.clone(),
        many => format!("{} errors in spec file `{}`", many.len(), path.display()),
    }
}

impl SpecError {
    /// An error made of one diagnostic (from a later stage).
    pub fn from_diagnostic(d: SpecDiagnostic) -> SpecError {
        let path = PathBuf::from(d.source.name());
        finish(&path, vec![d])
    }

    /// The located problems (empty for [`SpecError::Read`]).
    pub fn diagnostics(&self) -> &[SpecDiagnostic] {
        match self {
            SpecError::Read { .. } => &[],
            SpecError::NotUtf8 { detail, .. } => std::slice::from_ref(&**detail),
            SpecError::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    /// The single diagnostic this error stands for, if it is one.
    fn single(&self) -> Option<&SpecDiagnostic> {
        match self {
            SpecError::Read { .. } => None,
            SpecError::NotUtf8 { detail, .. } => Some(detail),
            SpecError::Invalid { diagnostics, .. } => match diagnostics.as_slice() {
                [one] => Some(one),
                _ => None,
            },
        }
    }
}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let code = match self {
            SpecError::Read { .. } => "compose::spec::read",
            SpecError::NotUtf8 { .. } => "compose::spec::not_utf8",
            SpecError::Invalid { diagnostics, .. } => match diagnostics.as_slice() {
                [one] => one.code,
                _ => "compose::spec::invalid",
            },
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.single().and_then(|d| d.help())
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.single().map(|d| &d.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.single().and_then(|d| d.labels())
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        match self {
            SpecError::Invalid { diagnostics, .. } if diagnostics.len() > 1 => {
                Some(Box::new(diagnostics.iter().map(|d| d as &dyn Diagnostic)))
            }
            _ => None,
        }
    }
}

pub(super) fn not_utf8(path: &Path, bytes: &[u8], bad: usize) -> SpecError {
    let before = &bytes[..bad];
    let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = bad - line_start + 1;
    let byte = bytes[bad];
    let lossy = Arc::new(String::from_utf8_lossy(bytes).into_owned());
    let source = NamedSource::new(path.display().to_string(), lossy);
    let message = format!("spec file `{}` is not valid UTF-8: invalid byte 0x{byte:02x} at line {line}, column {column}", path.display());
    let detail = SpecDiagnostic::new(
        &source,
        "compose::spec::not_utf8",
        message,
        vec![(SourceSpan::new(bad.into(), '\u{fffd}'.len_utf8()), "not UTF-8".to_owned())],
        Some("spec files must be encoded as UTF-8".to_owned()),
    );
    SpecError::NotUtf8 { path: path.to_path_buf(), line, column, byte, detail: Box::new(detail) }
}

pub(super) fn finish(path: &Path, mut diagnostics: Vec<SpecDiagnostic>) -> SpecError {
    diagnostics.sort_by_key(|d| d.primary_span().map_or(usize::MAX, |s| s.offset()));
    SpecError::Invalid { path: path.to_path_buf(), diagnostics }
}
