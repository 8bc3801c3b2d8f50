//! The access log line of one HTTP request ([`crate::access_log`]): what the request handler
//! notes on the way (only for a request that is logged: nothing is kept or cloned otherwise),
//! and the line made from it when the response ends.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use berth_config::model::{AccessLogFormat, Action};
use http::{header, HeaderValue, Method, Uri, Version};

use super::conn::ClientConn;
use crate::access_log::{self, HttpEntry};
use crate::runtime::Generation;

/// What a logged request's line needs beyond what the exchange counts anyway.
#[derive(Debug)]
pub struct RequestLog {
    /// The listener's format.
    pub format: AccessLogFormat,
    /// The writer's queue size.
    pub capacity: usize,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    head_bytes: u64,
    /// Request body bytes read (whole bodies), or declared (streamed ones).
    pub body_bytes: u64,
    /// The rule that matched: its priority, 0 for the default action.
    pub rule_priority: Option<u32>,
    /// ALB's `actions_executed`; empty until a rule matched (a request refused before routing).
    pub actions: &'static str,
    /// A redirect's `Location`.
    pub redirect_url: Option<HeaderValue>,
    /// The trace id sent to the target (or that would have been).
    pub trace_id: Option<HeaderValue>,
    /// The target the request went to last.
    pub target: Option<SocketAddr>,
    /// When the request was sent to that target.
    pub sent_at: Option<Instant>,
    /// When its response head arrived.
    pub head_at: Option<Instant>,
    /// When berth handed the target's response head on.
    pub answered_at: Option<Instant>,
    /// The status went to the client as 200 (a gRPC trailers-only error answer).
    pub grpc_ok_status: bool,
}

impl RequestLog {
    /// The facts of a request head, taken when the request is to be logged.
    pub fn new(
        format: AccessLogFormat,
        capacity: usize,
        parts: &http::request::Parts,
        head_bytes: usize,
    ) -> RequestLog {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        RequestLog {
            format,
            capacity,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            host: parts.headers.get(header::HOST).cloned(),
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
            head_bytes: head_bytes as u64,
            body_bytes: declared,
            rule_priority: None,
            actions: "",
            redirect_url: None,
            trace_id: None,
            target: None,
            sent_at: None,
            head_at: None,
            answered_at: None,
            grpc_ok_status: false,
        }
    }

    /// Notes the matched rule's priority (`None`: the default action, logged as 0, as ALB)
    /// and its `action`.
    pub fn matched(&mut self, priority: Option<u32>, action: &Action) {
        self.rule_priority = Some(priority.unwrap_or(0));
        self.actions = match action {
            Action::Forward(_) => "forward",
            Action::Redirect(_) => "redirect",
            Action::FixedResponse(_) => "fixed-response",
        };
    }
}

/// What the exchange knows at its end.
pub struct Ended<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client.
    pub client: Option<SocketAddr>,
    /// TLS facts of the connection.
    pub tls: Option<&'a access_log::TlsFacts>,
    /// When the request head was read.
    pub start: Instant,
    /// The status counted.
    pub status: u16,
    /// A target answered.
    pub from_target: bool,
    /// berth's reason for answering itself.
    pub reason: Option<&'a str>,
    /// The target group.
    pub group: Option<&'a str>,
    /// A gRPC call's status label.
    pub grpc: Option<&'a str>,
    /// Response body bytes.
    pub body_bytes: u64,
    /// An upgraded (WebSocket) request.
    pub upgraded: bool,
}

fn secs(from: Instant, to: Option<Instant>) -> Option<f64> {
    to.map(|t| t.saturating_duration_since(from).as_secs_f64())
}

impl RequestLog {
    /// Writes the line.
    pub fn write(&self, e: &Ended<'_>) {
        let now = Instant::now();
        let end = SystemTime::now();
        let start = end
            .checked_sub(now.saturating_duration_since(e.start))
            .unwrap_or(end);
        let tls = e.tls.is_some();
        let kind = match (e.upgraded, e.grpc.is_some(), self.version, tls) {
            (true, _, _, false) => "ws",
            (true, _, _, true) => "wss",
            (_, true, _, true) => "grpcs",
            (_, _, Version::HTTP_2, true) => "h2",
            (_, _, _, true) => "https",
            _ => "http",
        };
        let version = match self.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        };
        let host = self
            .host
            .as_ref()
            .map(HeaderValue::as_bytes)
            .or_else(|| self.uri.authority().map(|a| a.as_str().as_bytes()))
            .unwrap_or(b"-");
        let pq = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let (request_processing, target_processing, response_processing) = match self.sent_at {
            Some(sent) => (
                secs(e.start, Some(sent)),
                secs(sent, self.head_at),
                self.head_at.and_then(|h| secs(h, self.answered_at)),
            ),
            None => (None, None, None),
        };
        let entry = HttpEntry {
            kind,
            start,
            end,
            listener: e.listener,
            client: e.client,
            target: self.target,
            request_processing,
            target_processing,
            response_processing,
            elb_status: if self.grpc_ok_status { 200 } else { e.status },
            target_status: e.from_target.then_some(e.status),
            received_bytes: self.head_bytes + self.body_bytes,
            sent_bytes: e.body_bytes,
            method: self.method.as_str(),
            scheme: e.scheme,
            host,
            path_and_query: pq,
            version,
            user_agent: self.user_agent.as_ref().map(HeaderValue::as_bytes),
            tls: e.tls,
            target_group: e.group,
            trace_id: self.trace_id.as_ref().map(HeaderValue::as_bytes),
            rule_priority: self.rule_priority,
            actions: self.actions,
            redirect_url: self.redirect_url.as_ref().map(HeaderValue::as_bytes),
            error_reason: e.reason,
            grpc_status: e.grpc,
        };
        access_log::log_http(&entry, self.format, self.capacity);
    }
}

/// The line of a request hyper refused before berth saw it (a head too large, or malformed):
/// its status and reason, and no request line (`- - -`, as ALB writes for one it cannot parse).
pub fn refused(snap: &Generation, conn: &ClientConn, status: u16, reason: &'static str) {
    let settings = snap.config.access_log.for_listener(&conn.listener);
    if !access_log::sampled(settings) {
        return;
    }
    let now = SystemTime::now();
    let entry = HttpEntry {
        kind: if conn.tls.is_some() { "https" } else { "http" },
        start: now,
        end: now,
        listener: &conn.listener,
        client: conn.client_addr,
        target: None,
        request_processing: None,
        target_processing: None,
        response_processing: None,
        elb_status: status,
        target_status: None,
        received_bytes: 0,
        sent_bytes: 0,
        method: "-",
        scheme: conn.scheme,
        host: b"-",
        path_and_query: "",
        version: "-",
        user_agent: None,
        tls: conn.tls.as_ref(),
        target_group: None,
        trace_id: None,
        rule_priority: None,
        actions: "",
        redirect_url: None,
        error_reason: Some(reason),
        grpc_status: None,
    };
    access_log::log_http(&entry, settings.format, snap.config.access_log.buffer_lines);
}
