//! Rule transforms: `host_header_rewrite` and `url_rewrite`, each a regular expression and a
//! replacement, compiled once here with a size limit.

use regex::{Regex, RegexBuilder};

use super::Checker;
use crate::model::{Action, Rewrite, Transforms};
use crate::raw::RawTransform;

/// Longest regular expression or replacement accepted, in bytes (ALB's limit: 1024 characters).
pub(super) const MAX_TRANSFORM_LEN: usize = 1024;

/// Largest compiled program of one expression; a bigger one is a configuration error instead
/// of a memory cost paid by every reload and every worker.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Checker<'_> {
    /// `transforms` of the rule at `rp` whose action is `action` (when it was valid).
    pub(super) fn transforms(
        &mut self,
        rp: &str,
        list: &[RawTransform],
        action: Option<&Action>,
    ) -> Transforms {
        let mut out = Transforms::default();
        if list.is_empty() {
            return out;
        }
        if action.is_some_and(|a| !matches!(a, Action::Forward(_))) {
            self.error(
                &format!("{rp}.transforms"),
                "transforms only apply to forward actions (they rewrite the request sent to targets)",
            );
            return out;
        }
        let (mut seen_host, mut seen_url) = (false, false);
        for (i, t) in list.iter().enumerate() {
            let tp = format!("{rp}.transforms[{i}]");
            let host = match t.kind.as_deref() {
                Some("host_header_rewrite") => true,
                Some("url_rewrite") => false,
                Some(other) => {
                    self.error(
                        &format!("{tp}.type"),
                        format!("unknown transform type {other:?} (expected \"host_header_rewrite\" or \"url_rewrite\")"),
                    );
                    continue;
                }
                None => {
                    self.error(
                        &format!("{tp}.type"),
                        "required (\"host_header_rewrite\" or \"url_rewrite\")",
                    );
                    continue;
                }
            };
            let seen = if host { &mut seen_host } else { &mut seen_url };
            if std::mem::replace(seen, true) {
                self.error(
                    &format!("{tp}.type"),
                    "at most one transform of each type per rule (as ALB)",
                );
                continue;
            }
            let Some(rewrite) = self.rewrite(&tp, t, host) else {
                continue;
            };
            if host {
                out.host = Some(rewrite);
            } else {
                out.url = Some(rewrite);
            }
        }
        out
    }

    /// One transform's `regex` and `replace` at `tp`.
    fn rewrite(&mut self, tp: &str, t: &RawTransform, host: bool) -> Option<Rewrite> {
        let rp = format!("{tp}.regex");
        let regex = match t.regex.as_deref() {
            None => {
                self.error(&rp, "required");
                None
            }
            Some("") => {
                self.error(&rp, "must not be empty");
                None
            }
            Some(s) if s.len() > MAX_TRANSFORM_LEN => {
                self.error(&rp, format!("longer than {MAX_TRANSFORM_LEN} bytes"));
                None
            }
            Some(s) => match compile_regex(s) {
                Ok(r) => Some(r),
                Err(m) => {
                    self.error(&rp, m);
                    None
                }
            },
        };
        let pp = format!("{tp}.replace");
        let replace = match t.replace.as_deref() {
            None => {
                self.error(&pp, "required");
                None
            }
            Some(s) if s.len() > MAX_TRANSFORM_LEN => {
                self.error(&pp, format!("longer than {MAX_TRANSFORM_LEN} bytes"));
                None
            }
            Some(s) => match literal_problem(s, host) {
                Some(m) => {
                    self.error(&pp, m);
                    None
                }
                None => Some(s),
            },
        };
        let (regex, replace) = (regex?, replace?);
        if let Some(m) = missing_group(&regex, replace) {
            self.error(&pp, m);
            return None;
        }
        Some(Rewrite {
            regex,
            replace: replace.to_owned(),
        })
    }
}

/// Compiles `pattern` with a size limit; the error is one line (the `regex` crate's own
/// message spans several, with a caret under the fault).
pub(super) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("regular expression too large (compiled size above {limit} bytes)")
            }
            other => {
                let text = other.to_string();
                let why = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or(text.trim());
                format!("invalid regular expression {pattern:?}: {why}")
            }
        })
}

/// A capture reference in a replacement, as the `regex` crate reads them.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Text copied as it is (`$$` already turned into `$`).
    Literal(String),
    /// `$name`, `${name}`, `$1`, `${1}`.
    Group(&'a str),
}

/// Splits a replacement into literals and capture references, with the `regex` crate's rules:
/// `$$` is `$`; `${...}` names what the braces hold; otherwise `$` takes the longest run of
/// letters, digits and `_` (so `$1a` is the group named `1a`); a `$` followed by nothing of
/// that is a literal `$`.
fn pieces(replace: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = replace;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            lit.push('$');
            rest = r;
            continue;
        }
        let (name, r) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 => (&braced[..end], &braced[end + 1..]),
                _ => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            lit.push('$');
            rest = after;
            continue;
        }
        if !lit.is_empty() {
            out.push(Piece::Literal(std::mem::take(&mut lit)));
        }
        out.push(Piece::Group(name));
        rest = r;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    out
}

/// The message for the first capture reference of `replace` that `regex` does not define.
fn missing_group(regex: &Regex, replace: &str) -> Option<String> {
    for p in pieces(replace) {
        let Piece::Group(name) = p else { continue };
        let known = match name.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            let groups = regex.captures_len() - 1;
            let mut msg = format!(
                "refers to capture group {name:?}, which the regex lacks (it has {groups} numbered group(s))"
            );
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && digits < name.len() {
                msg.push_str(&format!(
                    "; write ${{{}}}{} for group {} followed by {:?}",
                    &name[..digits],
                    &name[digits..],
                    &name[..digits],
                    &name[digits..]
                ));
            }
            return Some(msg);
        }
    }
    None
}

/// What is wrong with the literal text of a replacement, if anything: a host rewrite writes
/// only host-name characters and is not empty; a URL rewrite starts with `/` (or a capture)
/// and writes no spaces, control characters or fragment.
fn literal_problem(replace: &str, host: bool) -> Option<String> {
    let pieces = pieces(replace);
    if host {
        if replace.is_empty() {
            return Some("must not be empty (a host header rewrite needs a host)".into());
        }
        let bad = pieces.iter().find_map(|p| match p {
            Piece::Literal(s) => s
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))),
            Piece::Group(_) => None,
        });
        return bad.map(|c| {
            format!("{c:?} cannot appear in a host name (letters, digits, - . _ and capture references only; the port is kept as it was)")
        });
    }
    match pieces.first() {
        Some(Piece::Literal(s)) if !s.starts_with('/') => {
            return Some(format!(
            "{replace:?} must start with \"/\" (the result is the path and query sent to targets)"
        ))
        }
        None => return Some("must not be empty (the result is the path and query)".into()),
        _ => {}
    }
    let bad = pieces.iter().find_map(|p| match p {
        Piece::Literal(s) => s
            .chars()
            .find(|c| c.is_ascii_control() || *c == ' ' || *c == '#' || !c.is_ascii()),
        Piece::Group(_) => None,
    });
    bad.map(|c| format!("{c:?} cannot appear in a request target (no spaces, control characters, non-ASCII or fragment)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_regex_crate() {
        use Piece::*;
        assert_eq!(
            pieces("/v2/$1?x=${name}$$"),
            vec![
                Literal("/v2/".into()),
                Group("1"),
                Literal("?x=".into()),
                Group("name"),
                Literal("$".into())
            ]
        );
        assert_eq!(pieces("$1a"), vec![Group("1a")]);
        assert_eq!(pieces("a$"), vec![Literal("a$".into())]);
        assert_eq!(pieces("${}x"), vec![Literal("${}x".into())]);
        // What the crate itself does with the same replacements.
        let re = Regex::new(r"^/(?P<name>\w+)/(\d+)$").unwrap();
        assert_eq!(re.replace("/ab/12", "/$name-${2}$$"), "/ab-12$");
        assert_eq!(re.replace("/ab/12", "$2a"), "");
    }

    #[test]
    fn missing_groups_are_named() {
        let re = compile_regex(r"^/api/(?P<v>v\d)/(.*)$").unwrap();
        assert!(missing_group(&re, "/$v/$2").is_none());
        assert!(missing_group(&re, "/${1}x/$$3").is_none());
        let m = missing_group(&re, "/$3").unwrap();
        assert!(m.contains("\"3\"") && m.contains("2 numbered"), "{m}");
        let m = missing_group(&re, "/$2a").unwrap();
        assert!(m.contains("write ${2}a"), "{m}");
        assert!(missing_group(&re, "/${nope}").is_some());
    }

    #[test]
    fn regex_errors_are_one_line_and_size_limited() {
        let e = compile_regex("(abc").unwrap_err();
        assert!(!e.contains('\n') && e.contains("unclosed group"), "{e}");
        let e = compile_regex("(?=x)").unwrap_err();
        assert!(e.contains("look-around"), "{e}");
        let e = compile_regex(r"\w{1000}\w{1000}").unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn replacement_literals() {
        assert!(literal_problem("$1.internal", true).is_none());
        assert!(literal_problem("", true).is_some());
        assert!(literal_problem("a/b", true).unwrap().contains("'/'"));
        assert!(literal_problem("/v2/$1", false).is_none());
        assert!(literal_problem("$1", false).is_none());
        assert!(literal_problem("v2/$1", false).is_some());
        assert!(literal_problem("/a b", false).is_some());
        assert!(literal_problem("/a#b", false).is_some());
        assert!(literal_problem("", false).is_some());
    }

    #[test]
    fn rewrite_replaces_the_first_match_only() {
        let r = Rewrite {
            regex: compile_regex("^/api/v1/(.*)$").unwrap(),
            replace: "/v2/$1".into(),
        };
        assert_eq!(r.apply("/api/v1/x?q=1").as_deref(), Some("/v2/x?q=1"));
        assert_eq!(r.apply("/other"), None);
        let r = Rewrite {
            regex: compile_regex("a").unwrap(),
            replace: "b".into(),
        };
        assert_eq!(r.apply("/aa").as_deref(), Some("/ba"));
    }
}
