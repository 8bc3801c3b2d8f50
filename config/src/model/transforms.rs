//! Rule transforms (ALB's `host-header-rewrite` and `url-rewrite`) and listener response
//! header policies (ALB's `routing.http.response.*` listener attributes).

use http::{HeaderName, HeaderValue};
use regex::Regex;

/// The rewrites a rule applies to a request it matched, before the request is forwarded. The
/// routing decision is not revisited: the rewritten request goes to the rule's target groups.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    /// Rewrites the host name of the `Host` header (the `:authority` of HTTP/2 targets); the
    /// regular expression sees the host lower-cased and without its port, which is kept.
    pub host: Option<Rewrite>,
    /// Rewrites the request target: the regular expression sees the path and query together
    /// (`/a/b?x=1`); the result must again be an origin-form target (starting with `/`).
    pub url: Option<Rewrite>,
}

impl Transforms {
    /// Whether the rule rewrites nothing.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.url.is_none()
    }
}

/// One regular-expression rewrite: the first match of `regex` is replaced by `replace`
/// (capture references `$1`, `${1}`, `${name}`; `$$` is a `$`); no match leaves the text as
/// it was.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The compiled expression (size-limited at load).
    pub regex: Regex,
    /// The replacement, every capture reference in it checked against `regex` at load.
    pub replace: String,
}

impl Rewrite {
    /// The rewritten text, or `None` when the expression does not match `text`.
    pub fn apply(&self, text: &str) -> Option<String> {
        let caps = self.regex.captures(text)?;
        let whole = caps.get(0)?;
        let mut out = String::with_capacity(text.len() + self.replace.len());
        out.push_str(&text[..whole.start()]);
        caps.expand(&self.replace, &mut out);
        out.push_str(&text[whole.end()..]);
        Some(out)
    }
}

/// `[listeners.response_headers]`: what berth does to the head of every response on the
/// listener, from targets and its own (fixed responses, redirects, errors) alike. Values are
/// checked and built at load, so a request only copies them.
#[derive(Debug, Clone, Default)]
pub struct ResponseHeaders {
    /// Headers set on every response, replacing any value the target sent.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Remove the `Server` header (ALB's `routing.http.response.server.enabled = false`).
    pub remove_server: bool,
}

impl ResponseHeaders {
    /// Whether the policy changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && !self.remove_server
    }
}
