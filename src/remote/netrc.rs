//! Credentials from a netrc file.
//!
//! This module owns parsing netrc text and choosing the login for a host
//! ([`lookup`]), and deciding which netrc file to read ([`default_path`]).
//! It does no file I/O itself.
//!
//! Format: whitespace-separated tokens `machine NAME`, `default`,
//! `login VALUE`, `password VALUE`, `account VALUE` (ignored) and
//! `macdef NAME` (its body, up to the next blank line, is skipped). Values
//! may be double-quoted, with `\"` and `\\` escapes. A line whose first
//! non-blank character is `#` is a comment.

use std::fmt;
use std::iter::Peekable;
use std::path::PathBuf;
use std::str::Chars;

/// A login and password for one host.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub login: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login").field("login", &self.login).field("password", &"<redacted>").finish()
    }
}

/// Parse netrc text and return the login for `host`: the first `machine`
/// entry whose name equals `host` (ASCII case-insensitive), else the first
/// `default` entry, else `None`. A missing login or password is `""`.
/// Never fails: malformed trailing tokens are ignored.
pub fn lookup(text: &str, host: &str) -> Option<Login> {
    let mut lexer = Lexer::new(text);
    let mut default: Option<Login> = None;
    // The entry being read: (is it the host we want, its login so far).
    let mut current: Option<(Target, Login)> = None;

    let finish = |entry: Option<(Target, Login)>, default: &mut Option<Login>| match entry {
        Some((Target::Match, login)) => Some(login),
        Some((Target::Default, login)) => {
            default.get_or_insert(login);
            None
        }
        Some((Target::Other, _)) | None => None,
    };

    while let Some(token) = lexer.next_token() {
        match token.as_str() {
            "machine" => {
                if let Some(found) = finish(current.take(), &mut default) {
                    return Some(found);
                }
                let Some(name) = lexer.next_token() else {
                    break;
                };
                let target = if name.eq_ignore_ascii_case(host) { Target::Match } else { Target::Other };
                current = Some((target, Login::empty()));
            }
            "default" => {
                if let Some(found) = finish(current.take(), &mut default) {
                    return Some(found);
                }
                current = Some((Target::Default, Login::empty()));
            }
            "login" | "password" => {
                let Some(value) = lexer.next_token() else {
                    break;
                };
                if let Some((_, login)) = current.as_mut() {
                    if token == "login" {
                        login.login = value;
                    } else {
                        login.password = value;
                    }
                }
            }
            // The value is ignored; at the end of input the loop stops anyway.
            "account" => {
                let _ = lexer.next_token();
            }
            "macdef" => lexer.skip_macro(),
            // Unknown tokens are ignored.
            _ => {}
        }
    }
    finish(current, &mut default).or(default)
}

/// The netrc file to read: `$NETRC` if set and non-empty, else
/// `$HOME/.netrc` (if `HOME` is set and non-empty), else `None`.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = non_empty("NETRC") {
        return Some(PathBuf::from(path));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".netrc"))
}

enum Target {
    Match,
    Other,
    Default,
}

impl Login {
    fn empty() -> Login {
        Login { login: String::new(), password: String::new() }
    }
}

struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    /// Nothing but whitespace has been seen since the last newline.
    line_start: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { chars: text.chars().peekable(), line_start: true }
    }

    /// The next token, or `None` at the end of input (including inside an
    /// unterminated quoted value).
    fn next_token(&mut self) -> Option<String> {
        loop {
            let c = *self.chars.peek()?;
            if c == '\n' {
                self.line_start = true;
                self.chars.next();
            } else if c.is_whitespace() {
                self.chars.next();
            } else if c == '#' && self.line_start {
                self.skip_line();
            } else {
                break;
            }
        }
        self.line_start = false;
        let mut token = String::new();
        if self.chars.next_if_eq(&'"').is_some() {
            loop {
                match self.chars.next()? {
                    '"' => return Some(token),
                    '\\' => match self.chars.next()? {
                        c @ ('"' | '\\') => token.push(c),
                        c => {
                            token.push('\\');
                            token.push(c);
                        }
                    },
                    c => token.push(c),
                }
            }
        }
        while let Some(c) = self.chars.next_if(|c| !c.is_whitespace()) {
            token.push(c);
        }
        Some(token)
    }

    /// Skip to just past the next newline.
    fn skip_line(&mut self) {
        for c in self.chars.by_ref() {
            if c == '\n' {
                break;
            }
        }
        self.line_start = true;
    }

    /// After `macdef`: skip the macro name, the rest of its line and the
    /// macro body, which ends at the first blank (empty or whitespace-only)
    /// line or the end of input.
    fn skip_macro(&mut self) {
        if self.next_token().is_none() {
            return;
        }
        self.skip_line();
        while self.chars.peek().is_some() {
            let mut blank = true;
            for c in self.chars.by_ref() {
                if c == '\n' {
                    break;
                }
                blank &= c.is_whitespace();
            }
            if blank {
                break;
            }
        }
        self.line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(l: &str, p: &str) -> Option<Login> {
        Some(Login { login: l.into(), password: p.into() })
    }

    #[test]
    fn multiple_machines() {
        let text = "machine a.example login ua password pa\n\
                    machine b.example\n  login ub\n  password pb\n";
        assert_eq!(lookup(text, "a.example"), login("ua", "pa"));
        assert_eq!(lookup(text, "b.example"), login("ub", "pb"));
        assert_eq!(lookup(text, "B.Example"), login("ub", "pb"));
        assert_eq!(lookup(text, "c.example"), None);
        assert_eq!(lookup("", "a"), None);
    }

    #[test]
    fn default_fallback() {
        let text = "default login anon password guest\nmachine a login ua password pa";
        assert_eq!(lookup(text, "a"), login("ua", "pa"));
        assert_eq!(lookup(text, "other"), login("anon", "guest"));
        let text = "machine a login ua password pa\ndefault login anon password guest";
        assert_eq!(lookup(text, "other"), login("anon", "guest"));
    }

    #[test]
    fn first_match_wins() {
        let text = "machine a login first password 1\nmachine a login second password 2";
        assert_eq!(lookup(text, "a"), login("first", "1"));
    }

    #[test]
    fn quoted_values() {
        let text = r#"machine a login "my user" password "pa ss \"word\" \\ \n""#;
        assert_eq!(lookup(text, "a"), login("my user", r#"pa ss "word" \ \n"#));
        // An unterminated quote ends the input; the entry keeps what it had.
        assert_eq!(lookup(r#"machine a login u password "oops"#, "a"), login("u", ""));
    }

    #[test]
    fn macdef_is_skipped() {
        let text = "machine a login ua\n\
                    macdef init\n\
                    machine evil login x password y\n\
                    cd /\n\
                    \n\
                    password pa\n\
                    machine b login ub password pb\n";
        assert_eq!(lookup(text, "a"), login("ua", "pa"));
        assert_eq!(lookup(text, "b"), login("ub", "pb"));
        assert_eq!(lookup(text, "evil"), None);
        // A macro running to the end of input.
        assert_eq!(lookup("macdef m\nmachine a login u\n", "a"), None);
    }

    #[test]
    fn missing_password_and_login() {
        assert_eq!(lookup("machine a login ua", "a"), login("ua", ""));
        assert_eq!(lookup("machine a password pa", "a"), login("", "pa"));
        assert_eq!(lookup("machine a login ua machine b", "a"), login("ua", ""));
    }

    #[test]
    fn account_is_ignored() {
        let text = "machine a account acct login ua password pa";
        assert_eq!(lookup(text, "a"), login("ua", "pa"));
    }

    #[test]
    fn comments() {
        let text = "# machine a login wrong password wrong\n\
                    machine a\n   # indented comment password wrong\n login ua password #notacomment\n";
        assert_eq!(lookup(text, "a"), login("ua", "#notacomment"));
    }

    #[test]
    fn malformed_trailing_tokens() {
        assert_eq!(lookup("machine a login ua password", "a"), login("ua", ""));
        assert_eq!(lookup("machine a login ua machine", "a"), login("ua", ""));
        assert_eq!(lookup("machine", "a"), None);
        assert_eq!(lookup("login u password p", "a"), None);
        assert_eq!(lookup("machine a login ua account", "a"), login("ua", ""));
        assert_eq!(lookup("machine a login ua macdef", "a"), login("ua", ""));
    }

    #[test]
    fn crlf_and_tabs() {
        let text = "machine\ta\r\n\tlogin ua\r\n\tpassword pa\r\n";
        assert_eq!(lookup(text, "a"), login("ua", "pa"));
    }

    #[test]
    fn debug_redacts_password() {
        let debug = format!("{:?}", Login { login: "user".into(), password: "hunter2".into() });
        assert!(debug.contains("user"));
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn default_path_choice() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let both = env(&[("NETRC", "/etc/netrc"), ("HOME", "/home/u")]);
        assert_eq!(default_path(&both), Some(PathBuf::from("/etc/netrc")));
        let empty_netrc = env(&[("NETRC", ""), ("HOME", "/home/u")]);
        assert_eq!(default_path(&empty_netrc), Some(PathBuf::from("/home/u/.netrc")));
        assert_eq!(default_path(&env(&[("HOME", "")])), None);
        assert_eq!(default_path(&env(&[])), None);
    }
}
