//! `[[listeners]]`: protocol, TLS, timeouts, PROXY protocol acceptance, and the rules that
//! route requests (conditions and actions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Listener protocol.
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

/// PROXY protocol acceptance on a listener.
#[derive(Debug, Clone)]
pub struct ProxyProtocolIn {
    /// Peers allowed to send a header.
    pub trusted_cidrs: Vec<IpNet>,
    /// Time allowed for the header (default 3 s).
    pub header_timeout: Duration,
    /// Accepted VPC endpoint IDs; empty accepts any.
    pub allowed_vpc_endpoints: Vec<String>,
}

/// A TLS certificate of a listener.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// PEM chain path.
    pub cert: PathBuf,
    /// PEM key path.
    pub key: PathBuf,
    /// SNI names, lower case; empty for the default certificate.
    pub server_names: Vec<String>,
}

/// `[[listeners]]`.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Bind address.
    pub bind: SocketAddr,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Certificates (https only; the first is the default).
    pub certificates: Vec<Certificate>,
    /// HTTP/2 from clients.
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
}

/// A listener rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Priority, unique within the listener; lower is tried first.
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<Condition>,
    /// Action on match.
    pub action: Action,
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

/// A rule condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Host header (port stripped, lower-cased) matches any pattern.
    Host(Vec<Wildcard>),
    /// Path equals any.
    PathExact(Vec<String>),
    /// Path starts with any.
    PathPrefix(Vec<String>),
    /// Path matches any glob.
    PathGlob(Vec<Wildcard>),
    /// Header `name` (lower case) has a value matching any pattern.
    Header {
        /// Header name, lower case.
        name: String,
        /// Value patterns.
        values: Vec<Wildcard>,
    },
    /// Query parameter `name` has a value matching any pattern.
    Query {
        /// Parameter name.
        name: String,
        /// Value patterns.
        values: Vec<Wildcard>,
    },
    /// Method is any of these (upper case).
    Method(Vec<String>),
    /// Client address is in any CIDR.
    SourceCidr(Vec<IpNet>),
    /// The PROXY header's VPC endpoint ID is any of these.
    VpcEndpoint(Vec<String>),
}

/// A rule or default action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to weighted target groups (weights sum > 0).
    Forward(Vec<WeightedGroup>),
    /// Fixed response.
    FixedResponse(FixedResponse),
    /// Redirect.
    Redirect(Redirect),
}

/// A target group in a forward action.
#[derive(Debug, Clone)]
pub struct WeightedGroup {
    /// Target group name (exists in the config).
    pub target_group: String,
    /// Weight 0..=999.
    pub weight: u32,
}

/// A fixed response.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    /// Status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body (≤ 1024 bytes).
    pub body: String,
}

/// A redirect; `None` parts keep the request's.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// `http` or `https`.
    pub protocol: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Path.
    pub path: Option<String>,
    /// Query.
    pub query: Option<String>,
}
