//! `[[listeners]]`: protocol, TLS, timeouts, PROXY protocol acceptance, and the rules that
//! route requests (conditions and actions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// What a listener speaks to clients: HTTP (L7, with rules) or TCP (L4, forward only),
/// each with or without TLS termination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 (and h2c when `http2`).
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2.
    Https,
    /// TCP, bytes forwarded as they are (TLS passes through).
    Tcp,
    /// TLS terminated, then TCP to targets.
    Tls,
}

impl ListenerProtocol {
    /// Whether this is an L4 (tcp/tls) listener.
    pub fn is_l4(self) -> bool {
        matches!(self, ListenerProtocol::Tcp | ListenerProtocol::Tls)
    }

    /// Whether the listener terminates TLS.
    pub fn terminates_tls(self) -> bool {
        matches!(self, ListenerProtocol::Https | ListenerProtocol::Tls)
    }
}

/// PROXY protocol (v1/v2) acceptance (`proxy_protocol` of a listener or of `[admin]`): the
/// client address a header carries stands for the peer's, and its VPC endpoint ID is what
/// `vpc_endpoint` conditions test.
#[derive(Debug, Clone)]
pub struct ProxyProtocolIn {
    /// Peers (typically the load balancer's subnets) allowed to send a header.
    pub trusted_cidrs: Vec<IpNet>,
    /// Time allowed for the header (default 3 s).
    pub header_timeout: Duration,
    /// VPC endpoint IDs a header must carry for the connection to be served; empty accepts any
    /// (always empty on the admin listener).
    pub allowed_vpc_endpoints: Vec<String>,
}

/// A TLS certificate of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM file with the certificate chain, leaf first (resolved against the config's folder).
    pub cert: PathBuf,
    /// PEM file with the private key of the leaf certificate.
    pub key: PathBuf,
    /// SNI names, lower case; empty for the default certificate.
    pub server_names: Vec<String>,
}

/// `[listeners.mtls]`: whether an https listener asks clients for a certificate (ALB's mutual
/// TLS modes). Files are re-read live, like the listener's certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mtls {
    /// No client certificate is asked for (the default).
    #[default]
    Off,
    /// A client certificate is asked for but neither required nor checked against any CA (the
    /// handshake signature still is); the chain the client sent reaches targets in
    /// `X-Amzn-Mtls-Clientcert`.
    Passthrough,
    /// A client certificate is required and must chain to `ca_bundle`, be within its validity
    /// and not be revoked by `crls`; its facts reach targets in `X-Amzn-Mtls-Clientcert-*`.
    Verify {
        /// PEM file of the trusted CA certificates (resolved against the config's folder).
        ca_bundle: PathBuf,
        /// CRL files (PEM, several CRLs allowed, or DER); a leaf a CRL lists is refused.
        crls: Vec<PathBuf>,
    },
}

/// `[[listeners]]`: one address the proxy accepts clients on, and what it does with them.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name used in logs and metric labels; unique among listeners.
    pub name: String,
    /// Address and port to listen on; unique among listeners.
    pub bind: SocketAddr,
    /// HTTP, HTTPS, TCP or TLS (default HTTP).
    pub protocol: ListenerProtocol,
    /// Certificates (https and tls; the first is the default). Re-read live when their files
    /// change and on SIGHUP; may change on a config reload.
    pub certificates: Vec<Certificate>,
    /// Mutual TLS (https only; default off).
    pub mtls: Mtls,
    /// Whether clients may speak HTTP/2 (ALPN on https, prior-knowledge h2c on http); default
    /// true on https, false on http.
    pub http2: bool,
    /// Request header read timeout (default 60 s).
    pub header_timeout: Duration,
    /// Client keep-alive idle timeout (default 60 s, as ALB).
    pub idle_timeout: Duration,
    /// Largest request header in bytes (default 65536); larger gets 431.
    pub max_header_bytes: usize,
    /// PROXY protocol acceptance, if on.
    pub proxy_protocol: Option<ProxyProtocolIn>,
    /// tcp/tls: connect timeout to targets (default 10 s).
    pub connect_timeout: Duration,
    /// Connections open at once (default 10000).
    pub max_connections: usize,
    /// Rules sorted by ascending priority.
    pub rules: Vec<Rule>,
    /// Action when no rule matches.
    pub default_action: Action,
    /// Headers set on (or removed from) every response (default: none).
    pub response_headers: super::ResponseHeaders,
}

/// A listener rule: when every condition matches, its action handles the request.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Priority, unique within the listener; lower is tried first.
    pub priority: u32,
    /// Conditions that must all match; an empty list matches every request.
    pub conditions: Vec<Condition>,
    /// What to do with a request the conditions match.
    pub action: Action,
    /// Rewrites of the request's host and URL, forward actions only (default: none).
    pub transforms: super::Transforms,
}

/// A compiled wildcard pattern (`*` any run of characters, `?` one character).
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// The pattern as written (host patterns lower-cased).
    pub pattern: String,
    /// Compiled matcher; `None` for a pattern without wildcards, which matches by equality
    /// (compiling a matcher for each of thousands of plain host names made reloads slow).
    pub matcher: Option<globset::GlobMatcher>,
    /// Whether equality ignores ASCII case (only used without a matcher).
    pub case_insensitive: bool,
}

impl Wildcard {
    /// Whether `text` matches the pattern.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.matcher {
            Some(m) => m.is_match(text),
            None if self.case_insensitive => text.eq_ignore_ascii_case(&self.pattern),
            None => text == self.pattern,
        }
    }
}

/// One test of a request; a condition with several values matches when any of them does.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Host header (port stripped, lower-cased) matches any pattern.
    Host(Vec<Wildcard>),
    /// The request path equals one of these exactly.
    PathExact(Vec<String>),
    /// The request path starts with one of these.
    PathPrefix(Vec<String>),
    /// The request path matches one of these globs (`*` within a segment, `**` across).
    PathGlob(Vec<Wildcard>),
    /// Header `name` (lower case) has a value matching any pattern.
    Header {
        /// Header name, lower case.
        name: String,
        /// Patterns for the header's value, `*` and `?` wildcards, ASCII case ignored.
        values: Vec<Wildcard>,
    },
    /// Query parameter `name` has a value matching any pattern.
    Query {
        /// Query parameter name, compared exactly.
        name: String,
        /// Patterns for the parameter's value, `*` and `?` wildcards, ASCII case ignored.
        values: Vec<Wildcard>,
    },
    /// Method is any of these (upper case).
    Method(Vec<String>),
    /// Client address is in any CIDR.
    SourceCidr(Vec<IpNet>),
    /// The PROXY header's VPC endpoint ID is any of these.
    VpcEndpoint(Vec<String>),
}

/// What a listener does with a request: a rule's action or the listener's default.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to weighted target groups (weights sum > 0).
    Forward(Forward),
    /// Answer with a fixed status and body, without contacting a target.
    FixedResponse(FixedResponse),
    /// Answer with a redirect to a URL built from the request.
    Redirect(Redirect),
}

/// A forward action: weighted target groups, and optionally group-level stickiness. It
/// dereferences to its groups, so `for g in forward` and `forward[0]` read them.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The groups, 1..=5.
    pub groups: Vec<WeightedGroup>,
    /// Group-level stickiness (`stickiness` of the action), if on.
    pub stickiness: Option<GroupStickiness>,
}

impl std::ops::Deref for Forward {
    type Target = [WeightedGroup];

    fn deref(&self) -> &[WeightedGroup] {
        &self.groups
    }
}

impl<'a> IntoIterator for &'a Forward {
    type Item = &'a WeightedGroup;
    type IntoIter = std::slice::Iter<'a, WeightedGroup>;

    fn into_iter(self) -> Self::IntoIter {
        self.groups.iter()
    }
}

/// Group-level stickiness of a forward action (ALB's `TargetGroupStickinessConfig`): the
/// group picked by weight for a client's first request is kept for `duration`, through a
/// signed cookie that names the group and is only valid for this action.
#[derive(Debug, Clone)]
pub struct GroupStickiness {
    /// How long a client stays on its group (default 1 h; 1 s..=7 d).
    pub duration: Duration,
    /// What the action is, `<listener>/<rule priority>` or `<listener>/default`: signed into
    /// the cookie, so a cookie of one rule is refused by another.
    pub scope: String,
    /// The cookie's name, `BERTHTG` and 8 hex digits of a hash of `scope`: each sticky
    /// action has its own cookie, so a client of two rules keeps its group in both.
    pub cookie_name: String,
}

/// A target group in a forward action.
#[derive(Debug, Clone)]
pub struct WeightedGroup {
    /// Target group name (exists in the config).
    pub target_group: String,
    /// Relative share of requests, 0..=999 (0 sends none, e.g. while a new version waits).
    pub weight: u32,
}

/// A response the proxy writes itself (`fixed_response`).
#[derive(Debug, Clone)]
pub struct FixedResponse {
    /// HTTP status code, 200..=599.
    pub status: u16,
    /// `Content-Type` header value (default `text/plain`).
    pub content_type: String,
    /// Body (≤ 1024 bytes).
    pub body: String,
}

/// A redirect (`redirect`); each `None` part keeps the request's own, except that a changed
/// protocol drops the request's port.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// Status code: 301 (default), 302, 303, 307 or 308.
    pub status: u16,
    /// New scheme, `http` or `https`.
    pub protocol: Option<String>,
    /// New host name.
    pub host: Option<String>,
    /// New port; the default port of the scheme is left out of the URL.
    pub port: Option<u16>,
    /// New path, starting with `/`.
    pub path: Option<String>,
    /// New query string without `?`; empty removes the request's query.
    pub query: Option<String>,
}
