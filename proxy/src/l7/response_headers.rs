//! A listener's response header policy (`[listeners.response_headers]`, ALB's header
//! modification): applied in one place, to every response the listener sends — a target's,
//! and berth's own fixed responses, redirects and errors. Each configured header replaces any
//! value the target sent; `server = false` removes `Server`. The values were built when the
//! configuration was loaded, so a response only gets copies of them.

use std::sync::Arc;

use http::header::{self, HeaderMap};

use berth_config::model::ResponseHeaders;

use super::conn::ClientConn;

/// Applies the policy of `conn`'s listener (in the current configuration) to `headers`.
pub fn apply_for(conn: &Arc<ClientConn>, headers: &mut HeaderMap) {
    let snap = conn.shared.current.load();
    if let Some(l) = snap.listener(&conn.listener) {
        apply(&l.response_headers, headers);
    }
}

/// Applies `policy` to a response's headers.
pub fn apply(policy: &ResponseHeaders, headers: &mut HeaderMap) {
    if policy.remove_server {
        headers.remove(header::SERVER);
    }
    for (name, value) in &policy.set {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn set_replaces_and_server_goes() {
        let policy = ResponseHeaders {
            set: vec![(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            )],
            remove_server: true,
        };
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("nginx"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOWALL"));
        h.append("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        apply(&policy, &mut h);
        assert!(h.get(header::SERVER).is_none());
        let v: Vec<_> = h.get_all("x-frame-options").iter().collect();
        assert_eq!(v, ["DENY"]);
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("nginx"));
        apply(&ResponseHeaders::default(), &mut h);
        assert_eq!(h[header::SERVER], "nginx");
    }
}
