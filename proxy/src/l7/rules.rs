//! Listener rules: the first rule (by ascending priority) whose conditions all match decides
//! the action; otherwise the listener's default action. Pure functions over a request view.

use std::net::IpAddr;

use berth_config::model::{Action, Condition, Listener, Rule};
use http::HeaderMap;

/// The parts of a request that rules look at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Host without port, lower case (from `Host` or the URI authority).
    pub host: Option<&'a str>,
    /// Path, without query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Method, upper case.
    pub method: &'a str,
    /// Request headers (`http_header` conditions).
    pub headers: &'a HeaderMap,
    /// The client address after any PROXY header (`source_ip` conditions).
    pub client_ip: Option<IpAddr>,
    /// VPC endpoint ID from the connection's PROXY header.
    pub vpce_id: Option<&'a str>,
}

/// Strips a port from a host header value (`example.com:8080`, `[::1]:80`) — the caller
/// lower-cases.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The action for a request on a listener.
pub fn route<'a>(listener: &'a Listener, req: &RequestView<'_>) -> &'a Action {
    matching_rule(listener, req)
        .map(|r| &r.action)
        .unwrap_or(&listener.default_action)
}

/// The first rule (by ascending priority) whose conditions all hold; `None` sends the request
/// to the listener's default action.
pub fn matching_rule<'a>(listener: &'a Listener, req: &RequestView<'_>) -> Option<&'a Rule> {
    listener
        .rules
        .iter()
        .find(|r| r.conditions.iter().all(|c| matches(c, req)))
}

/// Whether one condition holds.
pub fn matches(c: &Condition, req: &RequestView<'_>) -> bool {
    match c {
        Condition::Host(pats) => req.host.is_some_and(|h| pats.iter().any(|p| p.is_match(h))),
        Condition::PathExact(paths) => paths.iter().any(|p| p == req.path),
        Condition::PathPrefix(prefixes) => {
            prefixes.iter().any(|p| req.path.starts_with(p.as_str()))
        }
        Condition::PathGlob(pats) => pats.iter().any(|p| p.is_match(req.path)),
        Condition::Header { name, values } => req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| values.iter().any(|p| p.is_match(v))),
        Condition::Query { name, values } => req.query.is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == name.as_str() && values.iter().any(|p| p.is_match(&v)))
        }),
        Condition::Method(methods) => methods.iter().any(|m| m == req.method),
        Condition::VpcEndpoint(ids) => req.vpce_id.is_some_and(|v| ids.iter().any(|id| id == v)),
        Condition::SourceCidr(nets) => req
            .client_ip
            .is_some_and(|ip| nets.iter().any(|n| n.contains(&canonical(ip)))),
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::*;

    fn wc(p: &str) -> Wildcard {
        Wildcard {
            pattern: p.into(),
            matcher: Some(
                globset::GlobBuilder::new(p)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .unwrap()
                    .compile_matcher(),
            ),
            case_insensitive: true,
        }
    }

    fn fixed(status: u16) -> Action {
        Action::FixedResponse(FixedResponse {
            status,
            content_type: "text/plain".into(),
            body: String::new(),
        })
    }

    fn status(a: &Action) -> u16 {
        match a {
            Action::FixedResponse(f) => f.status,
            _ => 0,
        }
    }

    fn listener(rules: Vec<(u32, Vec<Condition>, u16)>) -> Listener {
        Listener {
            name: "l".into(),
            bind: "127.0.0.1:1".parse().unwrap(),
            protocol: ListenerProtocol::Http,
            certificates: vec![],
            mtls: Default::default(),
            http2: false,
            header_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            max_header_bytes: 1000,
            proxy_protocol: None,
            connect_timeout: std::time::Duration::from_secs(1),
            max_connections: 10,
            rules: rules
                .into_iter()
                .map(|(priority, conditions, s)| Rule {
                    priority,
                    conditions,
                    action: fixed(s),
                    transforms: Default::default(),
                })
                .collect(),
            default_action: fixed(404),
            response_headers: Default::default(),
        }
    }

    fn view<'a>(
        headers: &'a HeaderMap,
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
    ) -> RequestView<'a> {
        RequestView {
            host: Some(host),
            path,
            query,
            method: "GET",
            headers,
            client_ip: Some("127.0.0.9".parse().unwrap()),
            vpce_id: Some("vpce-1"),
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_applies() {
        let l = listener(vec![
            (1, vec![Condition::PathPrefix(vec!["/api".into()])], 201),
            (2, vec![Condition::Host(vec![wc("*.example.test")])], 202),
            (3, vec![], 203),
        ]);
        let h = HeaderMap::new();
        assert_eq!(
            status(route(&l, &view(&h, "a.example.test", "/api/x", None))),
            201
        );
        assert_eq!(
            status(route(&l, &view(&h, "a.example.test", "/web", None))),
            202
        );
        assert_eq!(
            status(route(&l, &view(&h, "other.test", "/web", None))),
            203
        );
        let l = listener(vec![(
            1,
            vec![Condition::PathExact(vec!["/x".into()])],
            201,
        )]);
        assert_eq!(status(route(&l, &view(&h, "h", "/y", None))), 404);
    }

    #[test]
    fn every_condition_must_hold() {
        let l = listener(vec![(
            1,
            vec![
                Condition::PathPrefix(vec!["/api".into()]),
                Condition::Method(vec!["POST".into()]),
            ],
            201,
        )]);
        let h = HeaderMap::new();
        assert_eq!(status(route(&l, &view(&h, "h", "/api", None))), 404);
    }

    #[test]
    fn header_query_and_cidr_conditions() {
        let mut h = HeaderMap::new();
        h.insert("x-env", "canary-7".parse().unwrap());
        let hdr = Condition::Header {
            name: "x-env".into(),
            values: vec![wc("canary-*")],
        };
        assert!(matches(&hdr, &view(&h, "h", "/", None)));
        let q = Condition::Query {
            name: "v".into(),
            values: vec![wc("2")],
        };
        assert!(matches(&q, &view(&h, "h", "/", Some("a=1&v=2"))));
        assert!(!matches(&q, &view(&h, "h", "/", Some("a=1&v=3"))));
        assert!(!matches(&q, &view(&h, "h", "/", None)));
        let c = Condition::SourceCidr(vec!["127.0.0.0/24".parse().unwrap()]);
        assert!(matches(&c, &view(&h, "h", "/", None)));
        let c = Condition::SourceCidr(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(!matches(&c, &view(&h, "h", "/", None)));
        let c = Condition::VpcEndpoint(vec!["vpce-1".into()]);
        assert!(matches(&c, &view(&h, "h", "/", None)));
        let c = Condition::VpcEndpoint(vec!["vpce-2".into()]);
        assert!(!matches(&c, &view(&h, "h", "/", None)));
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("::1"), "::1");
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_cidr() {
        let h = HeaderMap::new();
        let mut v = view(&h, "h", "/", None);
        v.client_ip = Some("::ffff:127.0.0.9".parse().unwrap());
        let c = Condition::SourceCidr(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(matches(&c, &v));
    }
}
