//! The L7 proxy, one request at a time: rules pick an action; forward actions pick a weighted
//! target group, the group's balancer picks a target, and the request goes to it over a pooled
//! HTTP/1.1 connection or a shared HTTP/2 one (the group's `protocol_version`). Retries,
//! passive ejection, forwarding headers, stickiness and metrics wrap around that. WebSocket
//! upgrade requests take a dedicated HTTP/1.1 connection instead ([`super::upgrade`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_config::model::{Action, Algorithm, HashOn, TargetGroup};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::access::{Ended, RequestLog};
use super::body::{DownBody, OnEnd};
use super::conn::{ClientConn, RequestGuard};
use super::grpc::{self, Call};
use super::headers::{cookie, header_bytes, prepare_upstream, redirect_location, strip_hop_by_hop};
use super::rules::{self, RequestView};
use super::sticky;
use super::trace;
use super::transforms;
use super::upgrade;
use crate::group::{Group, SelectInput};
use crate::metrics as m;
use crate::runtime::Generation;
use crate::target::{fnv1a, now_ms, InFlight, Target};
use crate::upstream::{self, ConnectError, SendFailure, Sender, UpBody};

/// Request bodies up to this size are read whole before they are sent, so that a retry can
/// send them again; larger or unsized (chunked) bodies stream and are not retried.
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// At most this many resends of a request that a pooled connection never took (the target had
/// closed it); each such connection is dropped, so this only bounds a pathological pool.
const MAX_UNSENT_RESENDS: u32 = 8;

/// A request whose connect failed (refused, reset) goes to another target whatever its method,
/// as long as the group has a target it has not tried, at most this many times: a task that
/// ECS is stopping refuses connections before berth has learned of it, and in a deployment
/// that replaces every task at once, half the group can be such tasks.
const MAX_CONNECT_RESENDS: u32 = 8;

/// After a connect timeout, one other target at most: each try may cost the whole timeout.
const MAX_TIMEOUT_RESENDS: u32 = 1;

/// How long a request waits, once, for its group's source (ECS) to look again: when every
/// known target refused it (for a target it has not tried), or before its last retry (for
/// one fresh look).
const REDISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// Everything about one request that its end needs: what to count, what to release, and the
/// upstream connection to give back to the pool. Ends when its response body ends
/// ([`OnEnd`]), or unanswered when dropped (the client went away first).
struct Exchange {
    conn: Arc<ClientConn>,
    start: Instant,
    _request: RequestGuard,
    group: Option<Arc<Group>>,
    status: u16,
    from_target: bool,
    reason: Option<&'static str>,
    inflight: Option<InFlight>,
    /// The connection the response came on, with the pool limits of its group.
    reuse: Option<(Sender, usize)>,
    /// Set for a gRPC call: its deadline, and its status once seen.
    grpc: Option<Call>,
    /// Set for a request that gets an access log line.
    log: Option<Box<RequestLog>>,
}

impl OnEnd for Exchange {
    fn ended(mut self: Box<Self>, complete: bool, body_bytes: u64) {
        let lm = &self.conn.metrics;
        let group = self.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        lm.requests(group).count(self.status, self.from_target);
        if let Some(reason) = self.reason {
            lm.proxy_response(reason);
        }
        lm.request_seconds
            .record(self.start.elapsed().as_secs_f64());
        lm.bytes_out.increment(body_bytes);
        if let Some(call) = &self.grpc {
            lm.grpc_response(group, call.label(complete));
        }
        if let Some(log) = self.log.take() {
            log.write(&Ended {
                listener: &self.conn.listener,
                scheme: self.conn.scheme,
                client: self.conn.client_addr,
                tls: self.conn.tls.as_ref(),
                start: self.start,
                status: self.status,
                from_target: self.from_target,
                reason: self.reason,
                group: self.group.as_ref().map(|g| g.name.as_str()),
                grpc: self.grpc.as_ref().map(|c| c.label(complete)),
                body_bytes,
                upgraded: self.status == 101,
            });
        }
        if let (true, Some((sender, max)), Some(f)) =
            (complete, self.reuse.take(), self.inflight.as_ref())
        {
            // A draining target's connections are not kept: it is leaving.
            if !f.0.is_draining() {
                f.0.pool.put(sender, now_ms(), max);
            }
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(call) = self.grpc.as_mut() {
            call.observe(trailers);
        }
    }
}

impl Exchange {
    /// A response berth writes itself, counted with `reason`.
    fn respond(
        mut self,
        status: u16,
        reason: &'static str,
        content_type: &str,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
        close: bool,
    ) -> Response<DownBody> {
        self.status = status;
        self.reason = Some(reason);
        self.from_target = false;
        let len = body.len();
        let mut resp = Response::new(DownBody::full(body, Box::new(self)));
        *resp.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        for (k, v) in extra {
            h.append(k.clone(), v.clone());
        }
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// berth's error answer: plain text, or for a gRPC call a trailers-only answer (HTTP 200,
    /// `grpc-status` from [`grpc::code_for`], `grpc-message` with `text`). Either way it is
    /// counted with `reason`, and in `berth_requests_total` with `status`, the HTTP status
    /// berth would have answered a plain request with, so its errors stay 5xx there.
    fn error(
        mut self,
        status: u16,
        reason: &'static str,
        text: &'static str,
    ) -> Response<DownBody> {
        let Some(call) = self.grpc.as_mut() else {
            return self.text(status, reason, text, false);
        };
        let code = grpc::code_for(status, reason);
        call.answered(code);
        if let Some(log) = self.log.as_mut() {
            log.grpc_ok_status = true;
        }
        let message = format!("berth: {}", text.trim_end());
        let mut resp = self.respond(
            status,
            reason,
            "application/grpc",
            Bytes::new(),
            &grpc::answer_headers(code, &message)[1..],
            false,
        );
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        resp
    }

    /// The wait for a target's response head: the group's read timeout, cut to what is left
    /// of its total timeout and of a gRPC call's deadline.
    fn head_timeout(&self, cfg: &TargetGroup) -> Duration {
        let read = read_timeout(cfg, self.start);
        match self.grpc.and_then(|c| c.deadline) {
            Some(d) => read.min(
                d.saturating_sub(self.start.elapsed())
                    .max(Duration::from_millis(1)),
            ),
            None => read,
        }
    }

    /// A short plain-text answer of berth's own.
    fn text(
        self,
        status: u16,
        reason: &'static str,
        text: &'static str,
        close: bool,
    ) -> Response<DownBody> {
        self.respond(
            status,
            reason,
            "text/plain",
            Bytes::from_static(text.as_bytes()),
            &[],
            close,
        )
    }

    /// An error after which the client connection closes (its request could not be read).
    fn refuse(self, status: u16, reason: &'static str, text: &'static str) -> Response<DownBody> {
        self.text(status, reason, text, true)
    }
}

/// Answers one request from a client connection.
pub async fn handle(conn: Arc<ClientConn>, req: Request<Incoming>) -> Response<DownBody> {
    let guard = conn.activity.begin(req.version() == Version::HTTP_2);
    let grpc = Call::of(req.headers());
    let mut x = Exchange {
        conn: Arc::clone(&conn),
        start: Instant::now(),
        _request: guard,
        group: None,
        status: 0,
        from_target: false,
        reason: None,
        inflight: None,
        reuse: None,
        grpc,
        log: None,
    };
    let snap = conn.shared.current.load_full();
    let Some(listener) = snap.listener(&conn.listener) else {
        return x.error(503, "internal", "listener not configured\n");
    };
    let (mut parts, body) = req.into_parts();
    let head_bytes = header_bytes(&parts);
    let access = snap.config.access_log.for_listener(&conn.listener);
    if crate::access_log::sampled(access) {
        x.log = Some(Box::new(RequestLog::new(
            access.format,
            snap.config.access_log.buffer_lines,
            &parts,
            head_bytes,
        )));
    }
    // RFC 9112: no control characters or spaces in the request target (hyper's parser refuses
    // them on HTTP/1; this also covers HTTP/2's :path).
    if parts
        .uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str().bytes().any(|b| b < 0x21 || b == 0x7f))
    {
        return x.refuse(400, "bad_request", "bad request\n");
    }
    if head_bytes > listener.max_header_bytes {
        return x.refuse(431, "header_too_large", "request header fields too large\n");
    }
    let host_header = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .map(lower);
    let host = host_header.as_deref().map(rules::host_without_port);
    let view = RequestView {
        host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        method: parts.method.as_str(),
        headers: &parts.headers,
        client_ip: conn.client_ip,
        vpce_id: conn.vpce_id.as_deref(),
    };
    let rule = rules::matching_rule(listener, &view);
    // Only a forward rule's transforms rewrite the request; the owned host is for them.
    let host_for_transforms = rule
        .and_then(|r| r.transforms.host.as_ref())
        .and(host_header.as_deref())
        .map(str::to_owned);
    let action = rule.map_or(&listener.default_action, |r| &r.action);
    if let Some(log) = x.log.as_mut() {
        log.matched(rule.map(|r| r.priority), action);
        if snap.config.proxy.trace_id && !matches!(action, Action::Forward(_)) {
            // Not forwarded: the id the request would have carried, for the log only.
            log.trace_id = Some(trace::value_for(
                parts
                    .headers
                    .get(&trace::TRACE_ID)
                    .map(HeaderValue::as_bytes),
                unix_secs(),
                fastrand::u128(..),
            ));
        }
    }
    match action {
        Action::FixedResponse(f) => x.respond(
            f.status,
            "fixed_response",
            &f.content_type,
            Bytes::from(f.body.clone()),
            &[],
            false,
        ),
        Action::Redirect(r) => {
            let location = redirect_location(
                r,
                conn.scheme,
                host_header.as_deref(),
                view.path,
                view.query,
            );
            match HeaderValue::from_maybe_shared(Bytes::from(location)) {
                Ok(v) => {
                    if let Some(log) = x.log.as_mut() {
                        log.redirect_url = Some(v.clone());
                    }
                    x.respond(
                        r.status,
                        "redirect",
                        "text/plain",
                        Bytes::new(),
                        &[(header::LOCATION, v)],
                        false,
                    )
                }
                Err(_) => x.error(500, "internal", "bad redirect location\n"),
            }
        }
        Action::Forward(f) => {
            // A matched rule's transforms rewrite the request before it goes on.
            if transform_failed(rule, &mut parts, host_for_transforms, &conn) {
                return x.error(500, "transform_failed", "transform failed\n");
            }
            let https = conn.scheme == "https";
            let (name, group_cookie) = sticky::pick_group(f, &parts.headers, &conn.listener, https);
            let Some(g) = snap.groups.get(name) else {
                return x.error(503, "internal", "target group not found\n");
            };
            let g = Arc::clone(g);
            // HTTP/1.1 groups only: an HTTP/2 target cannot switch an HTTP/1.1 request.
            let h1 = !g.config.load().protocol_version.is_http2();
            let mut resp = if let Some(upgrade) = upgrade::requested(&parts).filter(|_| h1) {
                forward_upgrade(x, &snap, g, parts, body, upgrade).await
            } else {
                let idle = listener.idle_timeout;
                forward(x, &snap, g, parts, body, idle).await
            };
            sticky::append(resp.headers_mut(), group_cookie);
            resp
        }
    }
}

/// Applies the transforms of the matched `rule` to the request; true when one produced an
/// invalid host or request target (logged; the caller answers 500 as ALB does).
fn transform_failed(
    rule: Option<&berth_config::model::Rule>,
    parts: &mut http::request::Parts,
    host: Option<String>,
    conn: &ClientConn,
) -> bool {
    let Some(r) = rule.filter(|r| !r.transforms.is_empty()) else {
        return false;
    };
    match transforms::apply(&r.transforms, parts, host.as_deref()) {
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(listener = %conn.listener, rule = r.priority, error = %e, "rule transform failed");
            true
        }
    }
}

/// Seconds since the Unix epoch (for trace ids).
fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Sets `X-Amzn-Trace-Id` on a request to a target when the configuration says so, noting the
/// value for the access log.
fn set_trace_id(x: &mut Exchange, snap: &Generation, headers: &mut HeaderMap) {
    if snap.config.proxy.trace_id {
        let v = trace::apply(headers);
        if let Some(log) = x.log.as_mut() {
            log.trace_id = Some(v);
        }
    }
}

/// Lower-cases a host without allocating when it already is.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// What a retry needs to send the request again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: UpBody,
}

impl Replay {
    fn request(&self) -> Option<Request<UpBody>> {
        let mut r = Request::new(self.body.replay()?);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        Some(r)
    }
}

/// Sends a request to a target of `group` and streams its answer back, retrying on another
/// target where that is safe.
async fn forward(
    mut x: Exchange,
    snap: &Generation,
    group: Arc<Group>,
    mut parts: http::request::Parts,
    body: Incoming,
    body_timeout: Duration,
) -> Response<DownBody> {
    let cfg = group.config.load_full();
    group.retry_budget.deposit(cfg.retry.budget_percent);
    x.group = Some(Arc::clone(&group));
    let conn = Arc::clone(&x.conn);
    if let Some(why) = grpc::incompatible(
        parts.version,
        &parts.method,
        x.grpc.is_some(),
        cfg.protocol_version,
    ) {
        // ALB's status for this: 464. Not a gRPC answer: the request cannot be one here.
        x.grpc = None;
        return x.text(464, "incompatible_protocol", why, false);
    }

    let (hash_key, sticky_id) = balance_keys(&cfg, &group, &parts.headers, &conn);

    let up_body = match read_body(body, &conn, body_timeout).await {
        Ok(b) => b,
        Err(BodyRead::Timeout) => {
            return x.refuse(408, "request_timeout", "request body timed out\n")
        }
        Err(BodyRead::Failed) => return x.refuse(400, "bad_request", "bad request body\n"),
    };
    let h2 = cfg.protocol_version.is_http2();
    // HTTP/2 targets get `te: trailers` (gRPC requires it); it is hop-by-hop otherwise.
    let te_trailers = h2
        && parts
            .headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    prepare_upstream(&mut parts, &conn, snap);
    set_trace_id(&mut x, snap, &mut parts.headers);
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let idempotent = parts.method.is_idempotent();
    // HTTP/2 requests keep a copy even when not retried: a refused stream may go elsewhere.
    // Kept for every method: a request the target never read (a refused HTTP/2 stream, an
    // HTTP/1.1 connection reset before any answer) may go to another target.
    let replay = up_body.replay().map(|body| Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body,
    });
    let pool_max = snap.config.proxy.upstream_keepalive_pool;
    let mut next = Some(Request::from_parts(parts, up_body));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries = 0u32;
    let mut unsent_resends = 0u32;
    let mut connect_resends = 0u32;
    let mut rediscovered = false;
    loop {
        let Some(target) = next_target(&group, hash_key, sticky_id.as_deref(), &mut tried) else {
            return x.error(503, "no_healthy_target", "no healthy target\n");
        };
        x.inflight = Some(InFlight::new(Arc::clone(&target)));
        let (mut sender, reused) = match checkout(&target, &group, &cfg).await {
            Ok(s) => s,
            Err(e) => {
                if connect_failure(&group, &target, &cfg, &e, &tried, &mut connect_resends) {
                    continue;
                }
                // Every known target refused: when a deployment stopped them all, ECS has
                // started their replacements, which berth sees at its next poll. Ask for it
                // now and wait for it, once.
                if !rediscovered {
                    rediscovered = true;
                    if await_new_target(&group, &tried, rediscovery_wait(&cfg, x.start)).await {
                        metrics::counter!(m::UNSENT_RESENDS, "target_group" => group.name.clone(), "reason" => "rediscovered")
                            .increment(1);
                        continue;
                    }
                }
                return connect_error(x, &e);
            }
        };
        let Some(mut req) = next.take() else {
            return x.error(500, "internal", "internal error\n");
        };
        if let Some(deadline) = x.grpc.and_then(|c| c.deadline) {
            // The target gets what is left of the client's deadline (retries and waits for a
            // target have used some of it), as Envoy does.
            let left = deadline.saturating_sub(x.start.elapsed());
            req.headers_mut()
                .insert(grpc::GRPC_TIMEOUT, grpc::timeout_value(left));
        }
        if target.is_draining() {
            // The target is leaving: it should close this connection after answering.
            req.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else {
            req.headers_mut().remove(header::CONNECTION);
        }
        let sent_at = Instant::now();
        if let Some(log) = x.log.as_mut() {
            log.target = Some(target.address);
            log.sent_at = Some(sent_at);
        }
        let read = x.head_timeout(&cfg);
        match tokio::time::timeout(read, sender.send(req)).await {
            Err(_) => return x.error(504, "upstream_timeout", "upstream timed out\n"),
            Ok(Ok(resp)) => {
                if let Some(log) = x.log.as_mut() {
                    log.head_at = Some(Instant::now());
                }
                let https = conn.scheme == "https";
                let set_cookie = sticky::target_cookie(&cfg, &target, resp.headers(), https);
                return from_target(
                    x,
                    resp,
                    (sender, pool_max),
                    &target,
                    &group,
                    &cfg,
                    sent_at,
                    set_cookie,
                );
            }
            Ok(Err(mut e)) => {
                let failure = sender.failure(e.error());
                log_send_error(&group, &target, failure, e.error());
                if e.error().is_user() {
                    // The client's own body failed (malformed chunking, a reset): not the
                    // target's fault, and nothing to retry.
                    return x.refuse(400, "bad_request", "bad request body\n");
                }
                match e.take_message() {
                    // A pooled connection the target had closed: the request never left, so it
                    // goes again on a fresh connection whatever its method.
                    Some(r)
                        if reused
                            && resend_unsent(
                                &group,
                                &mut unsent_resends,
                                MAX_UNSENT_RESENDS,
                                "pooled_closed",
                            ) =>
                    {
                        tried.pop();
                        next = Some(r);
                        continue;
                    }
                    // A new connection that failed before the request was written (reset
                    // after the handshake): nothing was sent either.
                    Some(r) => {
                        connect_failed(&group, &target, &cfg);
                        if group.has_untried(&tried)
                            && resend_unsent(
                                &group,
                                &mut connect_resends,
                                MAX_CONNECT_RESENDS,
                                "connect",
                            )
                        {
                            next = Some(r);
                            continue;
                        }
                    }
                    None => {
                        connect_failed(&group, &target, &cfg);
                        // An HTTP/2 target refused the stream or went away before taking it,
                        // or an HTTP/1.1 target reset the connection with the request unread:
                        // it never ran, so it goes to another target, any method.
                        let unread = match failure {
                            SendFailure::Unprocessed => Some("unprocessed"),
                            SendFailure::Unread => Some("reset_unread"),
                            _ => None,
                        };
                        if let Some(reason) = unread.filter(|_| group.has_untried(&tried)) {
                            if let Some(r) = replay.as_ref().and_then(Replay::request) {
                                if resend_unsent(
                                    &group,
                                    &mut connect_resends,
                                    MAX_CONNECT_RESENDS,
                                    reason,
                                ) {
                                    next = Some(r);
                                    continue;
                                }
                            }
                        }
                        if let Some(r) = replay
                            .as_ref()
                            .filter(|_| idempotent)
                            .and_then(Replay::request)
                        {
                            if allow_retry(&group, &cfg, &mut retries) {
                                // Targets failing one after another mid-request: ECS may be
                                // stopping them. The last try waits for a fresh ECS poll
                                // (which drains them), once.
                                if retries >= cfg.retry.attempts && !rediscovered {
                                    rediscovered = true;
                                    group.rediscover(rediscovery_wait(&cfg, x.start)).await;
                                }
                                next = Some(r);
                                continue;
                            }
                        }
                    }
                }
                return x.error(502, failure.reason(), "bad gateway\n");
            }
        }
    }
}

/// The balancer's pick among the targets a request has not tried yet, counted and remembered
/// as tried; `None` when the group has no healthy target left.
fn next_target(
    group: &Group,
    hash_key: Option<u64>,
    sticky_id: Option<&str>,
    tried: &mut Vec<SocketAddr>,
) -> Option<Arc<Target>> {
    let target = group
        .select(&SelectInput {
            hash_key,
            sticky_id,
            exclude: tried,
        })?
        .target;
    target.count_request(&group.name);
    tried.push(target.address);
    Some(target)
}

/// What a request offers the balancer besides its exclusions: the consistent-hash key and the
/// stickiness cookie's target id, when the cookie is valid ([`sticky::requested_target`]).
fn balance_keys(
    cfg: &TargetGroup,
    group: &Group,
    headers: &HeaderMap,
    conn: &ClientConn,
) -> (Option<u64>, Option<String>) {
    let hash_key = match &cfg.algorithm {
        Algorithm::ConsistentHash(on) => match on {
            HashOn::Header(h) => headers.get(h.as_str()).map(|v| fnv1a(v.as_bytes())),
            HashOn::Cookie(c) => cookie(headers, c).map(|v| fnv1a(v.as_bytes())),
            HashOn::SourceIp => conn.client_ip.map(|ip| fnv1a(ip.to_string().as_bytes())),
        },
        _ => None,
    };
    let sticky_id = sticky::requested_target(cfg, group, headers);
    (hash_key, sticky_id)
}

/// Sends a WebSocket upgrade request to a target of `group` on a dedicated connection (see
/// [`upgrade`]): on a `101` the target's connection is left in the client connection's slot
/// for the serving loop to tunnel, and the client gets the target's `101`; a 4xx or 5xx passes
/// through; any other answer is a 502 (`upgrade_failed`). A failed connect goes to another
/// target, as in [`forward`].
async fn forward_upgrade(
    mut x: Exchange,
    snap: &Generation,
    group: Arc<Group>,
    mut parts: http::request::Parts,
    body: Incoming,
    upgrade_value: HeaderValue,
) -> Response<DownBody> {
    let cfg = group.config.load_full();
    x.group = Some(Arc::clone(&group));
    let conn = Arc::clone(&x.conn);
    let (hash_key, sticky_id) = balance_keys(&cfg, &group, &parts.headers, &conn);
    let client_side = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    prepare_upstream(&mut parts, &conn, snap);
    set_trace_id(&mut x, snap, &mut parts.headers);
    upgrade::prepare(&mut parts.headers, upgrade_value);
    let body = if body.is_end_stream() {
        UpBody::Empty
    } else {
        UpBody::Stream(body, conn.metrics.bytes_in.clone())
    };
    let mut next = Some(Request::from_parts(parts, body));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut connect_resends = 0u32;
    loop {
        let Some(target) = next_target(&group, hash_key, sticky_id.as_deref(), &mut tried) else {
            return x.error(503, "no_healthy_target", "no healthy target\n");
        };
        let opened = match upstream::tls::for_group(&cfg) {
            Ok(tls) => upgrade::open(target.address, tls.as_deref(), cfg.timeouts.connect).await,
            Err(e) => Err(ConnectError::Setup(target.address, e)),
        };
        let sender = match opened {
            Ok(s) => s,
            Err(e) => {
                if connect_failure(&group, &target, &cfg, &e, &tried, &mut connect_resends) {
                    continue;
                }
                return connect_error(x, &e);
            }
        };
        metrics::counter!(m::UPSTREAM_CONNECTIONS, "target_group" => group.name.clone())
            .increment(1);
        let Some(req) = next.take() else {
            return x.error(500, "internal", "internal error\n");
        };
        let inflight = InFlight::new(Arc::clone(&target));
        let sent_at = Instant::now();
        if let Some(log) = x.log.as_mut() {
            log.target = Some(target.address);
            log.sent_at = Some(sent_at);
        }
        let answer = upgrade::ask(sender, req, read_timeout(&cfg, x.start)).await;
        if let Some(log) = x.log.as_mut() {
            log.head_at = Some(Instant::now());
            log.answered_at = log.head_at;
        }
        if let Ok(a) = &answer {
            group.record_response_time(sent_at.elapsed().as_secs_f64());
            let status = match a {
                upgrade::Answer::Switched(..) => 101,
                upgrade::Answer::Refused(r) => r.status().as_u16(),
                upgrade::Answer::NotSwitched(s) => s.as_u16(),
            };
            if target.observe_status(status, cfg.outlier.consecutive_5xx) {
                group.try_eject(&target, "5xx");
            }
        }
        return match answer {
            Ok(upgrade::Answer::Switched(head, io)) => {
                let dereg = cfg.deregistration_delay;
                let pending = upgrade::Pending::new(io, client_side, &group.name, dereg, inflight);
                conn.upgrade.put(pending);
                x.status = 101;
                x.from_target = true;
                Response::from_parts(head, DownBody::full(Bytes::new(), Box::new(x)))
            }
            Ok(upgrade::Answer::Refused(resp)) => {
                x.status = resp.status().as_u16();
                x.from_target = true;
                x.inflight = Some(inflight);
                let (mut head, body) = resp.into_parts();
                strip_hop_by_hop(&mut head.headers);
                let body = DownBody::upstream(body, cfg.timeouts.read, Box::new(x));
                Response::from_parts(head, body)
            }
            Ok(upgrade::Answer::NotSwitched(status)) => {
                tracing::warn!(listener = %conn.listener, target_group = %group.name, target = %target.label, status = status.as_u16(), "target answered a WebSocket upgrade without switching protocols");
                x.error(502, "upgrade_failed", "target did not switch protocols\n")
            }
            Err(upgrade::AskError::Timeout(_)) => {
                x.error(504, "upstream_timeout", "upstream timed out\n")
            }
            Err(e @ upgrade::AskError::Failed(_)) => {
                tracing::warn!(listener = %conn.listener, target_group = %group.name, target = %target.label, error = %e, "WebSocket upgrade request to target failed");
                x.error(502, "upstream_error", "bad gateway\n")
            }
            Err(e @ upgrade::AskError::Lost(_)) => {
                tracing::warn!(listener = %conn.listener, target_group = %group.name, target = %target.label, error = %e, "WebSocket upgrade request to target failed");
                x.error(502, "upgrade_failed", "bad gateway\n")
            }
        };
    }
}

/// Why a request body could not be read.
enum BodyRead {
    Timeout,
    Failed,
}

/// The body to send: small sized bodies are read whole (replayable), others stream.
async fn read_body(
    body: Incoming,
    conn: &ClientConn,
    timeout: Duration,
) -> Result<UpBody, BodyRead> {
    if body.is_end_stream() {
        return Ok(UpBody::Empty);
    }
    if body.size_hint().upper().is_some_and(|n| n <= RETRY_BUFFER) {
        return match tokio::time::timeout(timeout, body.collect()).await {
            Err(_) => Err(BodyRead::Timeout),
            Ok(Err(_)) => Err(BodyRead::Failed),
            Ok(Ok(c)) => {
                let b = c.to_bytes();
                conn.metrics.bytes_in.increment(b.len() as u64);
                Ok(UpBody::Full(Some(b)))
            }
        };
    }
    Ok(UpBody::Stream(body, conn.metrics.bytes_in.clone()))
}

/// A live connection to `target`: a pooled one (an idle HTTP/1.1 connection, or a stream of an
/// open HTTP/2 connection), or a new one, over TLS for `https` groups.
async fn checkout(
    target: &Target,
    group: &Group,
    cfg: &TargetGroup,
) -> Result<(Sender, bool), ConnectError> {
    let t = &cfg.timeouts;
    let h2 = cfg.protocol_version.is_http2();
    // A pooled connection needs no TLS settings: they are looked up only to dial.
    if let Some(s) = target.pool.reuse(h2, t.idle, t.connect, now_ms()).await {
        return Ok((s, true));
    }
    let tls = upstream::tls::for_group(cfg).map_err(|e| ConnectError::Setup(target.address, e))?;
    let (s, reused) = target
        .pool
        .checkout(
            target.address,
            tls.as_deref(),
            h2,
            t.idle,
            t.connect,
            now_ms(),
        )
        .await?;
    if !reused {
        metrics::counter!(m::UPSTREAM_CONNECTIONS, "target_group" => group.name.clone())
            .increment(1);
    }
    Ok((s, reused))
}

/// The target's response, streamed to the client.
#[allow(clippy::too_many_arguments)]
fn from_target(
    mut x: Exchange,
    resp: Response<Incoming>,
    reuse: (Sender, usize),
    target: &Arc<Target>,
    group: &Group,
    cfg: &TargetGroup,
    sent_at: Instant,
    set_cookie: Option<HeaderValue>,
) -> Response<DownBody> {
    let status = resp.status().as_u16();
    group.record_response_time(sent_at.elapsed().as_secs_f64());
    if target.observe_status(status, cfg.outlier.consecutive_5xx) {
        group.try_eject(target, "5xx");
    }
    x.status = status;
    x.from_target = true;
    x.reuse = Some(reuse);
    let grpc = match x.grpc.as_mut() {
        Some(call) => {
            // A trailers-only answer has its status here.
            call.observe(resp.headers());
            true
        }
        None => false,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    sticky::append(&mut parts.headers, set_cookie);
    if let Some(log) = x.log.as_mut() {
        log.answered_at = Some(Instant::now());
    }
    let body = DownBody::upstream(body, cfg.timeouts.read, Box::new(x));
    let body = if grpc { body.ending_grpc_calls() } else { body };
    Response::from_parts(parts, body)
}

/// The wait for a fresh look at the group: [`REDISCOVERY_WAIT`], cut to what is left of the
/// request's `total` timeout.
fn rediscovery_wait(cfg: &TargetGroup, start: Instant) -> Duration {
    match cfg.timeouts.total {
        Some(total) => REDISCOVERY_WAIT.min(total.saturating_sub(start.elapsed())),
        None => REDISCOVERY_WAIT,
    }
}

/// The wait for a target's response head: the read timeout, cut to what is left of `total`.
fn read_timeout(cfg: &TargetGroup, start: Instant) -> Duration {
    let t = &cfg.timeouts;
    match t.total {
        Some(total) => t.read.min(
            total
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        ),
        None => t.read,
    }
}

/// Has the group's source look again until it shows a target not in `tried`, for at most
/// `wait`: an answer already on its way when the request asked may predate what the request
/// saw, so one look is not always enough.
async fn await_new_target(group: &Group, tried: &[SocketAddr], wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !group.rediscover(left).await {
            return false;
        }
        if group.has_untried(tried) {
            return true;
        }
    }
}

/// Whether a request that never reached a target goes again (to another target, or on a
/// fresh connection): any method may, `max` times per request, outside the retry policy and
/// its budget (the target never saw it, so no work is repeated).
fn resend_unsent(group: &Group, count: &mut u32, max: u32, reason: &'static str) -> bool {
    if *count >= max {
        return false;
    }
    *count += 1;
    metrics::counter!(m::UNSENT_RESENDS, "target_group" => group.name.clone(), "reason" => reason)
        .increment(1);
    true
}

fn allow_retry(group: &Group, cfg: &TargetGroup, retries: &mut u32) -> bool {
    if *retries >= cfg.retry.attempts {
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
    *retries += 1;
    metrics::counter!(m::RETRIES, "target_group" => group.name.clone()).increment(1);
    true
}

/// After a failed connect: logs and counts it, feeds passive ejection, and says whether the
/// request goes to another target (nothing was sent, so whatever its method, while the group has
/// one it has not tried: [`MAX_CONNECT_RESENDS`] times, once after a timeout).
fn connect_failure(
    group: &Group,
    target: &Target,
    cfg: &TargetGroup,
    e: &ConnectError,
    tried: &[SocketAddr],
    resends: &mut u32,
) -> bool {
    log_connect_error(group, target, e);
    metrics::counter!(m::CONNECT_ERRORS, "target_group" => group.name.clone()).increment(1);
    connect_failed(group, target, cfg);
    let max = match e {
        ConnectError::Timeout(_) => MAX_TIMEOUT_RESENDS,
        _ => MAX_CONNECT_RESENDS,
    };
    group.has_untried(tried) && resend_unsent(group, resends, max, "connect")
}

/// berth's answer to a request whose connect failed for good.
fn connect_error(x: Exchange, e: &ConnectError) -> Response<DownBody> {
    let (status, reason, text) = e.answer();
    x.error(status, reason, text)
}

/// Logs a failed connect: TLS and protocol failures at warn (they need an operator), plain
/// connect failures at debug (they are routine while ECS replaces tasks).
fn log_connect_error(group: &Group, target: &Target, e: &ConnectError) {
    match e {
        ConnectError::Timeout(_) | ConnectError::Io(..) => {
            tracing::debug!(target_group = %group.name, target = %target.label, error = %e, "connect failed")
        }
        _ => {
            tracing::warn!(target_group = %group.name, target = %target.label, reason = e.reason(), error = %e, "connect failed")
        }
    }
}

/// Logs a failed request: HTTP/2 resets and protocol failures at warn, others at debug.
fn log_send_error(group: &Group, target: &Target, failure: SendFailure, e: &hyper::Error) {
    match failure {
        SendFailure::Other => {
            tracing::debug!(target_group = %group.name, target = %target.label, error = %e, "request to target failed")
        }
        _ => {
            let detail = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            tracing::warn!(target_group = %group.name, target = %target.label, reason = failure.reason(), error = %e, detail = %detail, "request to target failed")
        }
    }
}

fn connect_failed(group: &Group, target: &Target, cfg: &TargetGroup) {
    if target.observe_connect_failure(cfg.outlier.consecutive_connect_failures) {
        group.try_eject(target, "connect");
    }
}
