//! Maps key paths such as `listeners[0].rules[1].conditions[0].host[2]` to 1-based line numbers.
//!
//! The text is parsed a second time with `toml_edit`, which keeps byte spans of keys, tables and
//! values. A path is walked segment by segment through tables, inline tables, arrays of tables
//! and inline arrays; the span of the last key found (or, for an array index, of the element)
//! is turned into a line. When a segment is missing (say a required key that was not written)
//! the walk stops and the nearest existing ancestor's line is used, usually its table header.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Splits `a.b[2].c` into `[Key(a), Key(b), Index(2), Key(c)]`. Keys holding `.` or `[` are
/// not supported (the schema has none); a malformed index is kept as a key.
pub(crate) fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        // The key before the first `[`.
        let key_end = rest.find('[').unwrap_or(rest.len());
        if key_end > 0 {
            out.push(Segment::Key(rest[..key_end].to_owned()));
        }
        rest = &rest[key_end..];
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(close) = stripped.find(']') else {
                out.push(Segment::Key(rest.to_owned()));
                break;
            };
            match stripped[..close].parse::<usize>() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(stripped[..close].to_owned())),
            }
            rest = &stripped[close + 1..];
        }
    }
    out
}

/// Line lookup for one configuration text.
pub(crate) struct Lines {
    /// The text, parsed by `toml_edit` only when a line is first asked for: a valid
    /// configuration (every reload of a good file) is parsed once, not twice.
    text: String,
    doc: std::sync::OnceLock<Option<Document<String>>>,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl Lines {
    /// Indexes `text`. A text that does not parse still converts offsets, but finds no keys.
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self {
            text: text.to_owned(),
            doc: std::sync::OnceLock::new(),
            starts,
        }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The line of the key (or value) at `path`, or of its nearest existing ancestor.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let doc = self
            .doc
            .get_or_init(|| Document::parse(self.text.clone()).ok())
            .as_ref()?;
        let segments = parse_path(path);
        let span = find_span(doc.as_item(), &segments)?;
        Some(self.line_of_offset(span.start))
    }
}

/// Something the walk can stand on.
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

/// Walks `segments` from `root`, remembering the best span seen so far.
fn find_span(root: &Item, segments: &[Segment]) -> Option<Range<usize>> {
    let mut node = Node::Item(root);
    let mut best: Option<Range<usize>> = None;
    for seg in segments {
        let next = match (node, seg) {
            (Node::Item(Item::Table(t)), Segment::Key(k)) | (Node::Table(t), Segment::Key(k)) => t
                .get_key_value(k)
                .map(|(key, item)| (key.span().or_else(|| item.span()), Node::Item(item))),
            (Node::Item(Item::Value(v)), _) | (Node::Value(v), _) => step_value(v, seg),
            (Node::Item(Item::ArrayOfTables(a)), Segment::Index(i)) => {
                a.get(*i).map(|t| (t.span(), Node::Table(t)))
            }
            _ => None,
        };
        let Some((span, n)) = next else { break };
        if span.is_some() {
            best = span;
        }
        node = n;
    }
    best
}

/// One step from an inline value.
fn step_value<'a>(v: &'a Value, seg: &Segment) -> Option<(Option<Range<usize>>, Node<'a>)> {
    match (v, seg) {
        (Value::InlineTable(t), Segment::Key(k)) => t
            .get_key_value(k)
            .map(|(key, item)| (key.span().or_else(|| item.span()), Node::Item(item))),
        (Value::Array(a), Segment::Index(i)) => a.get(*i).map(|e| (e.span(), Node::Value(e))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# comment
[admin]
bind = "127.0.0.1:9901"

[[listeners]]
name = "web"
default_action = { forward = [{ target_group = "a" }] }

[[listeners.rules]]
priority = 1
conditions = [
  { host = ["a.example", "b.example",
            "c.example"] },
]

[[listeners]]
name = "two"

[listeners.default_action.fixed_response]
status = 200

[[target_groups]]
name = "a"
health_check.interval = "1s"
"#;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("a.b[2][3].c"),
            vec![
                Segment::Key("a".into()),
                Segment::Key("b".into()),
                Segment::Index(2),
                Segment::Index(3),
                Segment::Key("c".into())
            ]
        );
        assert!(parse_path("").is_empty());
    }

    #[test]
    fn finds_lines() {
        let l = Lines::new(TEXT);
        assert_eq!(l.line_of("admin"), Some(2));
        assert_eq!(l.line_of("admin.bind"), Some(3));
        assert_eq!(l.line_of("admin.missing"), Some(2));
        assert_eq!(l.line_of("listeners[0]"), Some(5));
        assert_eq!(l.line_of("listeners[0].name"), Some(6));
        assert_eq!(
            l.line_of("listeners[0].default_action.forward[0].target_group"),
            Some(7)
        );
        assert_eq!(l.line_of("listeners[0].rules[0]"), Some(9));
        assert_eq!(l.line_of("listeners[0].rules[0].priority"), Some(10));
        assert_eq!(l.line_of("listeners[0].rules[0].conditions[0]"), Some(12));
        assert_eq!(
            l.line_of("listeners[0].rules[0].conditions[0].host[2]"),
            Some(13)
        );
        assert_eq!(l.line_of("listeners[1].bind"), Some(16));
        assert_eq!(
            l.line_of("listeners[1].default_action.fixed_response.status"),
            Some(20)
        );
        assert_eq!(
            l.line_of("listeners[1].default_action.fixed_response.body"),
            Some(19)
        );
        assert_eq!(
            l.line_of("target_groups[0].health_check.interval"),
            Some(24)
        );
        assert_eq!(l.line_of("target_groups[5].name"), Some(22));
        assert_eq!(l.line_of("nothing"), None);
        assert_eq!(l.line_of_offset(0), 1);
    }
}
