//! Reading the Dockerfile: parser directives, line continuations, comments and here-documents
//! into logical instructions ([`Instr`]), and the words of their arguments (exec and shell forms,
//! `KEY=VALUE` pairs, `--flags`, a shell line split at `&&` and `;`).

use super::Note;

/// One logical instruction.
pub(super) struct Instr {
    pub(super) line: usize,
    pub(super) keyword: String,
    pub(super) args: String,
    /// The instruction as written, on one line (for notes).
    pub(super) text: String,
    /// Its here-documents: (delimiter, body with a newline after each line).
    pub(super) heredocs: Vec<(String, String)>,
    /// Why its here-documents are not what Docker reads, if they are not.
    pub(super) heredoc_problem: Option<String>,
}

/// The here-document delimiters a `RUN`, `COPY` or `ADD` line opens, as BuildKit reads them: a
/// word outside quotes starting with `<<` (or `<<-`, which strips leading tabs), then the
/// delimiter, possibly quoted. (delimiter, strip tabs).
pub(super) fn heredoc_words(line: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '\\' if !single => {
                chars.next();
            }
            '<' if !single && !double && prev_space && chars.peek() == Some(&'<') => {
                chars.next();
                if chars.peek() == Some(&'<') {
                    prev_space = false;
                    continue;
                }
                let strip = chars.next_if_eq(&'-').is_some();
                let quote = chars.next_if(|c| *c == '"' || *c == '\'');
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    word.push(c);
                }
                let closed = quote.is_none_or(|q| chars.next_if_eq(&q).is_some());
                if !word.is_empty() && closed {
                    out.push((word, strip));
                }
                prev_space = false;
                continue;
            }
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    out
}

/// Lines joined at continuations, comments and blank lines dropped, here-documents attached to
/// their instruction, directives read; and notes on directives that are not followed.
pub(super) fn instructions(text: &str) -> (Vec<Instr>, Vec<Note>) {
    // Docker ignores a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut directives = true;
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if directives {
            if let Some(d) = trimmed.strip_prefix('#') {
                if escape_directive(d, i + 1, line, &mut escape, &mut notes) {
                    continue;
                }
            } else if !trimmed.is_empty() {
                directives = false;
            }
        }
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match line.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (line, false),
        };
        match &mut current {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body.trim());
            }
            None => current = Some((i + 1, body.trim().to_string())),
        }
        if continues {
            continue;
        }
        let Some((n, acc)) = current.take() else { continue };
        let mut ins = split_instr(n, acc);
        if matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (word, strip) in heredoc_words(&ins.args) {
                let (body, closed) = heredoc_body(&word, strip, lines.by_ref().map(|(_, l)| l));
                if !closed {
                    ins.heredoc_problem = Some(format!("the here-document `{word}` has no end: it takes the rest of the file"));
                }
                ins.heredocs.push((word, body));
            }
        }
        out.push(ins);
    }
    if let Some((n, acc)) = current.take() {
        out.push(split_instr(n, acc));
    }
    (out, notes)
}

/// Reads the parser directive `# d` on `line` (its number `n`): an `escape=` sets `escape`
/// (noted when it is neither `\\` nor `` ` ``). Whether it was one.
fn escape_directive(d: &str, n: usize, line: &str, escape: &mut char, notes: &mut Vec<Note>) -> bool {
    let Some((k, v)) = d.split_once('=') else { return false };
    if !k.trim().eq_ignore_ascii_case("escape") {
        return false;
    }
    match v.trim() {
        "\\" => *escape = '\\',
        "`" => *escape = '`',
        other => notes.push(Note {
            line: n,
            instruction: line.chars().take(80).collect(),
            exact: false,
            message: format!("not followed: the escape character is `\\` or `` ` ``, not `{other}`; `\\` is used"),
        }),
    }
    true
}

/// A here-document's body: the `lines` up to the one that is `word` (leading tabs stripped
/// when `strip`), each with a newline after it; and whether that line came.
fn heredoc_body<'a>(word: &str, strip: bool, lines: impl Iterator<Item = &'a str>) -> (String, bool) {
    let mut body = String::new();
    for l in lines {
        let l = if strip { l.trim_start_matches('\t') } else { l };
        if l == word {
            return (body, true);
        }
        body.push_str(l);
        body.push('\n');
    }
    (body, false)
}

pub(super) fn split_instr(line: usize, text: String) -> Instr {
    let (k, rest) = text.split_once(char::is_whitespace).unwrap_or((text.as_str(), ""));
    Instr {
        line,
        keyword: k.to_uppercase(),
        args: rest.trim().to_string(),
        text: text.clone(),
        heredocs: Vec::new(),
        heredoc_problem: None,
    }
}

/// The exec form `["a", "b"]`, if `s` is one.
pub(super) fn exec_form(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

/// Words of a command line, quotes and backslashes undone. `strict`: `None` when the line uses
/// what only a shell can do (substitution, globs, pipes, redirections, braces, variables);
/// otherwise `$` is kept as written (for `ENV`/`LABEL`/`ARG`, which expand later). `None` too
/// for unbalanced quotes.
pub(super) fn words(s: &str, strict: bool) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        '$' | '`' if strict => return None,
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            '$' | '`' | '*' | '?' | '[' | '{' | '}' | '|' | '>' | '<' | '&' | ';' | '(' | ')' | '~' if strict => return None,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// A shell command split at top-level `&&` and `;` (quotes respected); `None` when it has
/// `||`, pipes or other control flow that the split would change.
pub(super) fn split_commands(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '\\' if !single => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '&' if !single && !double && chars.peek() == Some(&'&') => {
                chars.next();
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            ';' if !single && !double => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            '|' if !single && !double => return None,
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    Some(parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
}

/// `KEY=VALUE …` (or the legacy `KEY VALUE`), values unquoted.
pub(super) fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    let words = words(s, false)?;
    if words.len() == 2 && !words[0].contains('=') {
        return Some(vec![(words[0].clone(), words[1].clone())]);
    }
    if !s.contains('=') {
        let (k, v) = s.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    words.into_iter().map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// The value of `--NAME=VALUE` among an instruction's flags.
pub(super) fn flag(args: &str, name: &str) -> Option<String> {
    args.split_whitespace().take_while(|w| w.starts_with("--")).find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// The instruction's arguments after its leading `--flags`, as written.
pub(super) fn strip_flags(args: &str) -> &str {
    let mut rest = args.trim_start();
    while rest.starts_with("--") {
        rest = rest.split_once(char::is_whitespace).map_or("", |(_, r)| r.trim_start());
    }
    rest
}
