//! The L7 proxy: pingora's `ProxyHttp` for one listener. Rules pick an action; forward actions
//! pick a weighted target group, the group's balancer picks a target; retries, passive
//! ejection, forwarding headers, stickiness and metrics wrap around pingora's phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_config::model::{Action, HashOn, Redirect};
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::rules::{self, RequestView};
use crate::group::{Group, SelectInput};
use crate::metrics as m;
use crate::runtime::{Shared, Snapshot};
use crate::target::{fnv1a, now_ms, InFlight};

/// The header carrying the PrivateLink VPC endpoint ID to targets.
pub const VPCE_HEADER: &str = "x-berth-vpce-id";

/// The `ProxyHttp` of one listener.
#[derive(Debug)]
pub struct BerthProxy {
    /// Listener name (its config is looked up in each request's snapshot).
    pub listener: String,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The listener's metric handles.
    pub metrics: Arc<m::ListenerMetrics>,
}

impl BerthProxy {
    /// The proxy of listener `listener`.
    pub fn new(listener: &str, scheme: &'static str, shared: Arc<Shared>) -> BerthProxy {
        BerthProxy {
            listener: listener.to_string(),
            scheme,
            shared,
            metrics: Arc::new(m::ListenerMetrics::new(listener)),
        }
    }
}

/// What berth knows of one client connection, worked out at its first request and carried
/// across keep-alive requests (HTTP/1.x); counts the connection while alive.
#[derive(Debug)]
pub struct ConnGuard {
    metrics: Option<Arc<m::ListenerMetrics>>,
    /// The client: the peer, or the source of a verified PROXY header.
    client_ip: Option<IpAddr>,
    /// `client_ip` as text, for `X-Forwarded-For`.
    client_text: String,
    /// The local port the client connected to, for `X-Forwarded-Port`.
    server_port: String,
    /// VPC endpoint ID from the PROXY header.
    vpce_id: Option<String>,
}

impl ConnGuard {
    /// Reads the connection's facts from the session (and the PROXY header table).
    fn new(
        session: &Session,
        proxy_protocol: bool,
        metrics: Option<Arc<m::ListenerMetrics>>,
    ) -> ConnGuard {
        if let Some(m) = &metrics {
            m.new_connections.increment(1);
            m.active_connections.increment(1.0);
        }
        let mut client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let mut vpce_id = None;
        if proxy_protocol {
            let info = session
                .digest()
                .and_then(|d| d.socket_digest.as_ref())
                .and_then(|sd| sd.socket_cookie().ok())
                .and_then(super::gate::conn_info)
                .unwrap_or_default();
            if let Some(src) = info.source {
                // The PROXY header's client replaces the load balancer's address everywhere.
                client_ip = Some(src.ip());
            }
            vpce_id = info.vpce_id;
        }
        let server_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port().to_string())
            .unwrap_or_default();
        ConnGuard {
            metrics,
            client_ip,
            client_text: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            server_port,
            vpce_id,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.active_connections.decrement(1.0);
        }
    }
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    start: Option<Instant>,
    snapshot: Option<Arc<Snapshot>>,
    conn: Option<Arc<ConnGuard>>,
    client_ip: Option<IpAddr>,
    trusted_peer: bool,
    group: Option<Arc<Group>>,
    inflight: Option<InFlight>,
    tried: Vec<SocketAddr>,
    retries: u32,
    set_cookie: Option<String>,
    upstream_sent: Option<Instant>,
    target_status: Option<u16>,
    proxy_reason: Option<&'static str>,
}

impl BerthProxy {
    fn is_trusted(&self, snap: &Snapshot, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        snap.config
            .proxy
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
    }
}

/// Writes a small proxy-generated response.
async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3 + extra.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    let empty = body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The `Location` of a redirect: configured parts replace the request's.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host_header: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> String {
    let proto = r.protocol.as_deref().unwrap_or(scheme);
    let (req_host, req_port) = match host_header {
        Some(h) => {
            let bare = rules::host_without_port(h);
            let port = h
                .strip_prefix(bare)
                .and_then(|p| p.strip_prefix(':'))
                .filter(|p| !p.is_empty());
            (bare.to_string(), port.map(str::to_string))
        }
        None => ("localhost".to_string(), None),
    };
    let host = r.host.clone().unwrap_or(req_host);
    let port = match (r.port, r.protocol.is_some()) {
        (Some(p), _) => Some(p.to_string()),
        // A protocol change drops the request's port: it belonged to the other protocol.
        (None, true) => None,
        (None, false) => req_port,
    };
    let port = port
        .filter(|p| !((proto == "http" && p == "80") || (proto == "https" && p == "443")))
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let path = r.path.as_deref().unwrap_or(path);
    let query = match (&r.query, query) {
        (Some(q), _) if !q.is_empty() => format!("?{q}"),
        (Some(_), _) => String::new(),
        (None, Some(q)) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    };
    format!("{proto}://{host}{port}{path}{query}")
}

/// A random 128-bit request id as 32 lowercase hex digits.
fn request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.uri.to_string().len() + 12;
    line + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_idempotent(session: &Session) -> bool {
    session.req_header().method.is_idempotent()
}

fn retryable_after_connect(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

impl BerthProxy {
    fn allow_retry(&self, session: &Session, ctx: &mut Ctx) -> bool {
        let Some(group) = ctx.group.as_ref() else {
            return false;
        };
        let cfg = group.config.load();
        if !is_idempotent(session)
            || session.as_ref().retry_buffer_truncated()
            || ctx.retries >= cfg.retry.attempts
        {
            return false;
        }
        if !group
            .retry_budget
            .withdraw(cfg.retry.min_per_second, now_ms())
        {
            metrics::counter!(m::RETRY_BUDGET_EXHAUSTED, "target_group" => group.name.clone())
                .increment(1);
            return false;
        }
        ctx.retries += 1;
        metrics::counter!(m::RETRIES, "target_group" => group.name.clone()).increment(1);
        true
    }

    fn connect_failed(&self, ctx: &Ctx) {
        let (Some(group), Some(inflight)) = (ctx.group.as_ref(), ctx.inflight.as_ref()) else {
            return;
        };
        let threshold = group.config.load().outlier.consecutive_connect_failures;
        if inflight.0.observe_connect_failure(threshold) {
            group.try_eject(&inflight.0, "connect");
        }
    }
}

#[async_trait]
impl ProxyHttp for BerthProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Ctx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ctx.conn
            .as_ref()
            .map(|c| Box::new(Arc::clone(c)) as Box<dyn std::any::Any + Send + Sync>)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(c) = prev.downcast::<Arc<ConnGuard>>() {
            ctx.conn = Some(*c);
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.start = Some(Instant::now());
        let snap = self.shared.snapshot.load_full();
        let listener = snap.listener(&self.listener);
        if let Some(l) = listener {
            session.set_keepalive(Some(l.idle_timeout.as_secs().max(1)));
        }
        if ctx.conn.is_none() {
            let pp = listener.is_some_and(|l| l.proxy_protocol.is_some());
            // HTTP/2 streams get no per-connection context: they are not counted as connections.
            let counted = (!session.is_http2()).then(|| Arc::clone(&self.metrics));
            ctx.conn = Some(Arc::new(ConnGuard::new(session, pp, counted)));
        }
        ctx.client_ip = ctx.conn.as_ref().and_then(|c| c.client_ip);
        ctx.trusted_peer = self.is_trusted(&snap, ctx.client_ip);
        ctx.snapshot = Some(snap);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(snap) = ctx.snapshot.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no configuration snapshot");
        };
        let Some(listener) = snap.listener(&self.listener) else {
            ctx.proxy_reason = Some("internal");
            respond(
                session,
                503,
                "text/plain",
                Bytes::from_static(b"listener not configured\n"),
                &[],
            )
            .await?;
            return Ok(true);
        };
        let req = session.req_header();
        // RFC 9112: no control characters or spaces in the request target; pingora would
        // re-encode them and forward a request the client never sent.
        if req.raw_path().iter().any(|b| *b < 0x21 || *b == 0x7f) {
            ctx.proxy_reason = Some("bad_request");
            session.set_keepalive(None);
            respond(
                session,
                400,
                "text/plain",
                Bytes::from_static(b"bad request\n"),
                &[],
            )
            .await?;
            return Ok(true);
        }
        if header_bytes(req) > listener.max_header_bytes {
            ctx.proxy_reason = Some("header_too_large");
            session.set_keepalive(None);
            respond(
                session,
                431,
                "text/plain",
                Bytes::from_static(b"request header fields too large\n"),
                &[],
            )
            .await?;
            return Ok(true);
        }
        let host_header = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .map(str::to_ascii_lowercase);
        let host = host_header.as_deref().map(rules::host_without_port);
        let view = RequestView {
            host,
            path: req.uri.path(),
            query: req.uri.query(),
            method: req.method.as_str(),
            headers: &req.headers,
            client_ip: ctx.client_ip,
            vpce_id: ctx.conn.as_ref().and_then(|c| c.vpce_id.as_deref()),
        };
        match rules::route(listener, &view) {
            Action::FixedResponse(f) => {
                ctx.proxy_reason = Some("fixed_response");
                let body = Bytes::from(f.body.clone());
                respond(session, f.status, &f.content_type, body, &[]).await?;
                Ok(true)
            }
            Action::Redirect(r) => {
                let location = redirect_location(
                    r,
                    self.scheme,
                    host_header.as_deref(),
                    view.path,
                    view.query,
                );
                ctx.proxy_reason = Some("redirect");
                respond(
                    session,
                    r.status,
                    "text/plain",
                    Bytes::new(),
                    &[("location", location)],
                )
                .await?;
                Ok(true)
            }
            Action::Forward(groups) => {
                let total: u32 = groups.iter().map(|g| g.weight).sum();
                let mut pos = if total > 1 {
                    fastrand::u32(0..total)
                } else {
                    0
                };
                let mut chosen = &groups[0];
                for g in groups {
                    if pos < g.weight {
                        chosen = g;
                        break;
                    }
                    pos -= g.weight;
                }
                match snap.groups.get(&chosen.target_group) {
                    Some(g) => {
                        g.retry_budget.deposit(g.config.load().retry.budget_percent);
                        ctx.group = Some(Arc::clone(g));
                        Ok(false)
                    }
                    None => {
                        ctx.proxy_reason = Some("internal");
                        respond(
                            session,
                            503,
                            "text/plain",
                            Bytes::from_static(b"target group not found\n"),
                            &[],
                        )
                        .await?;
                        Ok(true)
                    }
                }
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(group) = ctx.group.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no target group chosen");
        };
        let cfg = group.config.load_full();
        let req = session.req_header();
        let hash_key = match &cfg.algorithm {
            berth_config::model::Algorithm::ConsistentHash(on) => match on {
                HashOn::Header(h) => req.headers.get(h.as_str()).map(|v| fnv1a(v.as_bytes())),
                HashOn::Cookie(c) => cookie(req, c).map(|v| fnv1a(v.as_bytes())),
                HashOn::SourceIp => ctx.client_ip.map(|ip| fnv1a(ip.to_string().as_bytes())),
            },
            _ => None,
        };
        let sticky = cfg.stickiness.as_ref();
        let sticky_id = sticky.and_then(|s| cookie(req, &s.cookie_name));
        let Some(sel) = group.select(&SelectInput {
            hash_key,
            sticky_id,
            exclude: &ctx.tried,
        }) else {
            ctx.proxy_reason = Some("no_healthy_target");
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy target");
        };
        if let Some(s) = sticky {
            if sticky_id != Some(sel.target.sticky_id.as_str()) {
                ctx.set_cookie = Some(format!(
                    "{}={}; Max-Age={}; Path=/; HttpOnly",
                    s.cookie_name,
                    sel.target.sticky_id,
                    s.duration.as_secs()
                ));
            }
        }
        let target = sel.target;
        target.count_request(&group.name);
        ctx.tried.push(target.address);
        let mut peer = HttpPeer::new(target.address, false, String::new());
        let t = &cfg.timeouts;
        let mut read = t.read;
        if let (Some(total), Some(start)) = (t.total, ctx.start) {
            read = read.min(
                total
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1)),
            );
        }
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(read);
        peer.options.idle_timeout = Some(t.idle);
        ctx.inflight = Some(InFlight::new(target));
        ctx.upstream_sent = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(snap), Some(conn)) = (ctx.snapshot.as_ref(), ctx.conn.as_ref()) else {
            return Ok(());
        };
        let xff = match (ctx.trusted_peer, upstream.headers.get("x-forwarded-for")) {
            (true, Some(prev)) if !prev.is_empty() => {
                let mut v = Vec::with_capacity(prev.len() + 2 + conn.client_text.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(conn.client_text.as_bytes());
                HeaderValue::from_maybe_shared(Bytes::from(v))
                    .unwrap_or_else(|_| HeaderValue::from_static(""))
            }
            _ => HeaderValue::from_str(&conn.client_text)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
        if !(ctx.trusted_peer && upstream.headers.contains_key("x-forwarded-proto")) {
            upstream.insert_header("x-forwarded-proto", self.scheme)?;
        }
        if !(ctx.trusted_peer && upstream.headers.contains_key("x-forwarded-port")) {
            upstream.insert_header("x-forwarded-port", conn.server_port.as_str())?;
        }
        let id_header = snap.config.proxy.request_id_header.as_str();
        if !(ctx.trusted_peer && upstream.headers.contains_key(id_header)) {
            upstream.insert_header(id_header.to_string(), request_id().as_slice())?;
        }
        // Only berth sets the VPC endpoint header, from the PROXY header it verified.
        if upstream.headers.contains_key(VPCE_HEADER) {
            upstream.remove_header(VPCE_HEADER);
        }
        if let Some(v) = &conn.vpce_id {
            upstream.insert_header(VPCE_HEADER, v.as_str())?;
        }
        if ctx.inflight.as_ref().is_some_and(|f| f.0.is_draining()) {
            // Do not return this connection to the pool: the target is leaving.
            upstream.insert_header("connection", "close")?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        ctx.target_status = Some(status);
        if let (Some(group), Some(sent)) = (ctx.group.as_ref(), ctx.upstream_sent) {
            group.record_response_time(sent.elapsed().as_secs_f64());
            if let Some(f) = ctx.inflight.as_ref() {
                let th = group.config.load().outlier.consecutive_5xx;
                if f.0.observe_status(status, th) {
                    group.try_eject(&f.0, "5xx");
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(g) = ctx.group.as_ref() {
            metrics::counter!(m::CONNECT_ERRORS, "target_group" => g.name.clone()).increment(1);
        }
        self.connect_failed(ctx);
        let retry = self.allow_retry(session, ctx);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let before_response = ctx.target_status.is_none();
        if before_response && e.esource() == &ErrorSource::Upstream && retryable_after_connect(&e) {
            self.connect_failed(ctx);
            let retry = self.allow_retry(session, ctx);
            e.set_retry(retry);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, reason, body): (u16, &'static str, &'static [u8]) = match e.etype() {
            ErrorType::HTTPStatus(503) if ctx.proxy_reason == Some("no_healthy_target") => {
                (503, "no_healthy_target", b"no healthy target\n")
            }
            ErrorType::HTTPStatus(c) => (*c, "internal", b"error\n"),
            ErrorType::ConnectTimedout => {
                (504, "upstream_connect", b"upstream connect timed out\n")
            }
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "upstream_timeout", b"upstream timed out\n")
            }
            _ => match e.esource() {
                ErrorSource::Upstream => match e.etype() {
                    ErrorType::ConnectRefused
                    | ErrorType::ConnectNoRoute
                    | ErrorType::ConnectError
                    | ErrorType::TLSHandshakeFailure => {
                        (502, "upstream_connect", b"upstream connect failed\n")
                    }
                    _ => (502, "upstream_error", b"bad gateway\n"),
                },
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, "client_closed", b"")
                    }
                    _ => (400, "bad_request", b"bad request\n"),
                },
                _ => (500, "internal", b"internal error\n"),
            },
        };
        ctx.proxy_reason = Some(reason);
        if code > 0 && session.response_written().is_none() {
            let _ = respond(session, code, "text/plain", Bytes::from_static(body), &[]).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        ctx.inflight = None;
        if status == 0 {
            return;
        }
        let group = ctx.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let from_target = ctx.proxy_reason.is_none() && ctx.target_status == Some(status);
        let lm = &self.metrics;
        lm.requests(group).count(status, from_target);
        if let Some(reason) = ctx.proxy_reason {
            lm.proxy_response(reason);
        }
        if let Some(start) = ctx.start {
            lm.request_seconds.record(start.elapsed().as_secs_f64());
        }
        lm.bytes_in.increment(session.body_bytes_read() as u64);
        lm.bytes_out.increment(session.body_bytes_sent() as u64);
        if let Some(e) = e {
            tracing::debug!(listener = %self.listener, status, error = %e, "request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redirect {
        Redirect {
            status: 301,
            protocol: None,
            host: None,
            port: None,
            path: None,
            query: None,
        }
    }

    #[test]
    fn redirect_keeps_unset_parts() {
        assert_eq!(
            redirect_location(&r(), "http", Some("a.test:8080"), "/x", Some("q=1")),
            "http://a.test:8080/x?q=1"
        );
    }

    #[test]
    fn redirect_to_https_drops_the_http_port() {
        let mut red = r();
        red.protocol = Some("https".into());
        assert_eq!(
            redirect_location(&red, "http", Some("a.test:8080"), "/x", None),
            "https://a.test/x"
        );
        red.port = Some(8443);
        red.host = Some("b.test".into());
        red.path = Some("/new".into());
        red.query = Some("z=2".into());
        assert_eq!(
            redirect_location(&red, "http", Some("a.test"), "/x", Some("q=1")),
            "https://b.test:8443/new?z=2"
        );
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = request_id();
        let b = request_id();
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn cookie_lookup() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cookie", "a=1; BERTHSTICKY=abc; b=2")
            .unwrap();
        assert_eq!(cookie(&req, "BERTHSTICKY"), Some("abc"));
        assert_eq!(cookie(&req, "zz"), None);
    }
}
