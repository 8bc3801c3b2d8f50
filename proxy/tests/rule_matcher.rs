//! Property tests of the HTTP rule matcher ([`berth_proxy::l7::rules::route`]): listeners are
//! built from TOML through `berth_config::parse`, so every generated rule is one a user could
//! write, and requests are fed to the matcher directly.

use std::net::{IpAddr, Ipv4Addr};

use berth_config::model::{Action, Listener};
use berth_proxy::l7::rules::{host_without_port, route, RequestView};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// A TOML basic string holding `s`.
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A listener whose rules (priority, TOML conditions) answer `r<priority>`; `default`
/// otherwise. `None` when the configuration does not validate.
fn listener(rules: &[(u32, Vec<String>)]) -> Option<Listener> {
    let mut text = String::from("[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\n");
    for (p, conds) in rules {
        text.push_str(&format!(
            "[[listeners.rules]]\npriority = {p}\nconditions = [{}]\n\
             action = {{ fixed_response = {{ status = 200, body = \"r{p}\" }} }}\n",
            conds.join(", ")
        ));
    }
    text.push_str(
        "[listeners.default_action]\nfixed_response = { status = 404, body = \"default\" }\n",
    );
    let mut cfg = berth_config::parse(&text, std::path::Path::new(".")).ok()?;
    Some(cfg.listeners.remove(0))
}

/// What `action` answers: a fixed response's body (`r<priority>` or `default` here), else the
/// action's debug form.
fn answer(action: &Action) -> String {
    match action {
        Action::FixedResponse(f) => f.body.clone(),
        other => format!("{other:?}"),
    }
}

/// A request as rules see it.
#[derive(Debug, Clone)]
struct Req {
    host: String,
    path: String,
    query: Vec<(String, String)>,
    method: String,
    headers: Vec<(String, String)>,
    ip: Ipv4Addr,
}

impl Req {
    fn route(&self, l: &Listener) -> String {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let host = self.host.to_ascii_lowercase();
        let view = RequestView {
            host: Some(&host),
            path: &self.path,
            query: (!query.is_empty()).then_some(query.as_str()),
            method: &self.method,
            headers: &headers,
            client_ip: Some(IpAddr::V4(self.ip)),
            vpce_id: None,
        };
        answer(route(l, &view))
    }

    /// Conditions that this very request satisfies, chosen by the bits of `pick` (at least
    /// one) and `path_kind`.
    fn own_conditions(&self, pick: u8, path_kind: u8) -> Vec<String> {
        let mut out = Vec::new();
        if pick & 1 != 0 {
            out.push(format!("{{ host = [{}] }}", q(&self.host)));
        }
        if pick & 2 != 0 {
            let kind = ["path_exact", "path_prefix", "path_glob"][path_kind as usize % 3];
            out.push(format!("{{ {kind} = [{}] }}", q(&self.path)));
        }
        if pick & 4 != 0 {
            out.push(format!("{{ method = [{}] }}", q(&self.method)));
        }
        if let (true, Some((k, v))) = (pick & 8 != 0, self.headers.first()) {
            out.push(format!("{{ header = {}, values = [{}] }}", q(k), q(v)));
        }
        if let (true, Some((k, v))) = (pick & 16 != 0, self.query.last()) {
            out.push(format!("{{ query = {}, values = [{}] }}", q(k), q(v)));
        }
        if pick & 32 != 0 {
            out.push(format!("{{ source_cidr = [\"{}/32\"] }}", self.ip));
        }
        if out.is_empty() {
            out.push(format!("{{ path_exact = [{}] }}", q(&self.path)));
        }
        out
    }
}

/// Any request a client could send, with up to three query parameters and three headers.
fn request() -> impl Strategy<Value = Req> {
    (
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,30}",
        "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,30}",
        prop::collection::vec(
            ("[a-z][a-z0-9_]{0,6}", "[A-Za-z0-9._~*?!,{}\\[\\]-]{0,10}"),
            0..4,
        ),
        "GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|[A-Z]{1,10}",
        prop::collection::vec(("x-[a-z0-9-]{1,12}", "[ -~]{0,24}"), 0..4),
        any::<[u8; 4]>(),
    )
        .prop_map(|(host, path, query, method, headers, ip)| Req {
            host,
            path,
            query,
            method,
            headers,
            ip: Ipv4Addr::from(ip),
        })
}

/// Any condition, valid or not (invalid ones make the configuration fail validation).
fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9.*?_-]{1,20}".prop_map(|h| format!("{{ host = [{}] }}", q(&h))),
        "/\\PC{0,20}".prop_map(|p| format!("{{ path_exact = [{}] }}", q(&p))),
        "/[a-zA-Z0-9/._-]{0,6}".prop_map(|p| format!("{{ path_prefix = [{}] }}", q(&p))),
        "/[a-z*?{}\\[\\],!/\\\\-]{0,16}".prop_map(|p| format!("{{ path_glob = [{}] }}", q(&p))),
        ("x-[a-z]{1,3}", "\\PC{0,12}").prop_map(|(n, v)| format!(
            "{{ header = {}, values = [{}] }}",
            q(&n),
            q(&v)
        )),
        ("[a-z]{1,3}", "\\PC{0,12}").prop_map(|(n, v)| format!(
            "{{ query = {}, values = [{}] }}",
            q(&n),
            q(&v)
        )),
        "GET|POST|[A-Za-z]{1,8}".prop_map(|m| format!("{{ method = [{}] }}", q(&m))),
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(ip, len)| {
            format!("{{ source_cidr = [\"{}/{len}\"] }}", Ipv4Addr::from(ip))
        }),
    ]
}

/// Up to 11 rules of up to 3 arbitrary conditions each.
fn rules() -> impl Strategy<Value = Vec<Vec<String>>> {
    prop::collection::vec(prop::collection::vec(condition(), 0..4), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary request fields against arbitrary (validated) rules never panic.
    #[test]
    fn routing_arbitrary_requests_never_panics(
        rules in rules(),
        host in "\\PC{0,40}",
        path in "\\PC{0,40}",
        query in proptest::option::of("\\PC{0,40}"),
        method in "\\PC{0,12}",
        headers in prop::collection::vec(("x-[a-z]{1,3}", prop::collection::vec(any::<u8>(), 0..24)), 0..6),
        ip in any::<[u8; 4]>(),
    ) {
        let _ = host_without_port(&host);
        let rules: Vec<(u32, Vec<String>)> =
            rules.into_iter().enumerate().map(|(i, c)| (i as u32 + 1, c)).collect();
        if let Some(l) = listener(&rules) {
            let mut map = HeaderMap::new();
            for (k, v) in &headers {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v);
                }
            }
            let view = RequestView {
                host: Some(&host),
                path: &path,
                query: query.as_deref(),
                method: &method,
                headers: &map,
                client_ip: Some(IpAddr::V4(Ipv4Addr::from(ip))),
                vpce_id: Some(&host),
            };
            let a = answer(route(&l, &view));
            prop_assert!(a == "default" || rules.iter().any(|(p, _)| a == format!("r{p}")), "{a}");
        }
    }

    /// A rule built from a request's own host, path, method, header, query or address
    /// routes that request: first when it has the lowest priority number, and otherwise
    /// nothing with a higher number (nor the default) ever wins over it.
    #[test]
    fn rule_built_from_the_request_routes_it(
        req in request(),
        pick in 1u8..64,
        path_kind in 0u8..3,
        others in rules(),
        own_priority in 1u32..16,
    ) {
        let own = req.own_conditions(pick, path_kind);
        let alone = listener(&[(1, own.clone())]);
        prop_assert!(alone.is_some(), "a rule made of the request's own values is valid: {own:?}");
        prop_assert_eq!(req.route(&alone.unwrap()), "r1", "{:?}", own);

        let mut all = vec![(own_priority, own.clone())];
        let free = (1u32..).filter(|p| *p != own_priority);
        all.extend(free.zip(others));
        if let Some(l) = listener(&all) {
            let a = req.route(&l);
            let winner: Option<u32> = a.strip_prefix('r').and_then(|p| p.parse().ok());
            prop_assert!(
                winner.is_some_and(|p| p <= own_priority),
                "own rule at priority {own_priority} matched but {a} answered; rules {all:?}"
            );
        }
    }

    /// An exact-path rule does not match a longer path.
    #[test]
    fn exact_path_rule_does_not_match_a_longer_path(req in request(), extra in "[a-z0-9/]{1,5}") {
        let l = listener(&[(1, vec![format!("{{ path_exact = [{}] }}", q(&req.path))])]).unwrap();
        let mut longer = req.clone();
        longer.path.push_str(&extra);
        prop_assert_eq!(req.route(&l), "r1");
        prop_assert_eq!(longer.route(&l), "default");
    }
}
