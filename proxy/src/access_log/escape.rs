//! Escaping of the strings a client controls (request line, user agent, host and SNI, trace id)
//! so that no value can end a line, open a field or fake one.
//!
//! * ALB format ([`alb_quoted`]): `"` and `\` become `\"` and `\\`; every byte below 0x20, 0x7f
//!   and every byte of 0x80 and above becomes `\xHH` (so UTF-8 text shows as its bytes).
//! * JSON ([`json_string`]): a valid JSON string; `"` `\` and control characters use JSON's
//!   escapes (`\n`, `\u001b`, ...); valid UTF-8 is kept as it is; a byte that is not part of
//!   valid UTF-8 becomes the text `\xHH` (written `\\xHH` in the JSON source).

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, b: u8) {
    out.push('\\');
    out.push('x');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 0xf) as usize] as char);
}

/// Appends `bytes` for a quoted field of an ALB-format line (the quotes are the caller's).
pub fn alb_quoted(out: &mut String, bytes: &[u8]) {
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
            continue;
        }
        // Everything before `i` is plain ASCII.
        out.push_str(ascii(&bytes[plain..i]));
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            _ => push_hex(out, b),
        }
        plain = i + 1;
    }
    out.push_str(ascii(&bytes[plain..]));
}

/// Appends `bytes` for an unquoted field of an ALB-format line (a listener or target group
/// name): as [`alb_quoted`], and a space becomes `\x20` so the field stays one field.
pub fn alb_bare(out: &mut String, bytes: &[u8]) {
    if !bytes.contains(&b' ') {
        return alb_quoted(out, bytes);
    }
    for part in bytes.split(|&b| b == b' ').enumerate() {
        if part.0 > 0 {
            out.push_str("\\x20");
        }
        alb_quoted(out, part.1);
    }
}

/// Appends `bytes` as a JSON string, quotes included.
pub fn json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                json_str_body(out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                json_str_body(out, ascii(good));
                let n = e.error_len().unwrap_or(bad.len());
                for &b in &bad[..n] {
                    out.push('\\');
                    push_hex(out, b);
                }
                rest = &bad[n..];
            }
        }
    }
    out.push('"');
}

/// The body of a JSON string for valid text.
fn json_str_body(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || c == '\u{7f}' => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[((c as u32) >> 4) as usize] as char);
            out.push(HEX[((c as u32) & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
}

/// `b`, known to be valid UTF-8 (printable ASCII, or the prefix `from_utf8` vouched for).
fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alb(b: &[u8]) -> String {
        let mut s = String::new();
        alb_quoted(&mut s, b);
        s
    }

    fn json(b: &[u8]) -> String {
        let mut s = String::new();
        json_string(&mut s, b);
        s
    }

    #[test]
    fn alb_escapes_quotes_backslashes_controls_and_high_bytes() {
        assert_eq!(alb(b"GET /a b"), "GET /a b");
        assert_eq!(alb(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(alb(b"x\ny\r\0\x1b[31m"), "x\\x0ay\\x0d\\x00\\x1b[31m");
        assert_eq!(alb(b"\x7f"), "\\x7f");
        assert_eq!(alb("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(alb(b""), "");
        let mut bare = String::new();
        alb_bare(&mut bare, b"my web\"x");
        assert_eq!(bare, "my\\x20web\\\"x");
        // No escaped output holds a line break, a quote that is not escaped, or a control byte.
        let s = alb(b"\" 200 \"-\"\nfake line");
        assert!(!s.contains('\n'));
        assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn json_is_valid_and_keeps_utf8() {
        for input in [
            &b"plain"[..],
            b"q\"uote\\ back",
            b"new\nline\r\ttab",
            b"nul\0esc\x1b del\x7f",
            "été ✓".as_bytes(),
            b"bad \xff\xfe utf8 \xc3",
        ] {
            let s = json(input);
            let v: serde_json::Value = serde_json::from_str(&s).expect(&s);
            assert!(v.is_string(), "{s}");
            assert!(!s.contains('\n'), "{s}");
        }
        assert_eq!(json(b"a\nb"), "\"a\\nb\"");
        assert_eq!(json(b"\x1b"), "\"\\u001b\"");
        assert_eq!(json("é".as_bytes()), "\"é\"");
        assert_eq!(json(b"\xffz"), "\"\\\\xffz\"");
        let v: serde_json::Value = serde_json::from_str(&json(b"x\xc3")).unwrap();
        assert_eq!(v, "x\\xc3");
    }
}
