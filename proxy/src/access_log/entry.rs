//! What one access log line says, and its two formats: JSON (ALB's field names as keys, absent
//! fields omitted, numbers as numbers) and ALB's space-separated order (`-` for an absent
//! value, `-1` for a time that does not apply). Formatting writes into one `String` without
//! building any intermediate tree.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::escape::{alb_bare, alb_quoted, json_string};
use super::TlsFacts;

/// Fields of ALB's HTTP access log line that berth writes, in ALB's order, then berth's own
/// (`grpc_status`). The ALB line has exactly this many fields.
pub const ALB_HTTP_FIELDS: usize = 34;

/// Fields of an L4 flow's line in the `alb` format.
pub const ALB_FLOW_FIELDS: usize = 14;

/// One HTTP request, as it ended.
#[derive(Debug, Clone, Copy)]
pub struct HttpEntry<'a> {
    /// ALB's `type`: `http`, `https`, `h2` (HTTP/2 over TLS), `grpcs`, `ws` or `wss`.
    pub kind: &'static str,
    /// When the request head was read (`request_creation_time`).
    pub start: SystemTime,
    /// When the response ended (`time`).
    pub end: SystemTime,
    /// The listener's name (ALB's `elb`).
    pub listener: &'a str,
    /// The client (after a PROXY header).
    pub client: Option<SocketAddr>,
    /// The target the request went to last.
    pub target: Option<SocketAddr>,
    /// From the request head read to the request sent to the target (seconds).
    pub request_processing: Option<f64>,
    /// From the request sent to the target's response head (seconds).
    pub target_processing: Option<f64>,
    /// From the target's response head to berth's response head handed to the client.
    pub response_processing: Option<f64>,
    /// The status the client got.
    pub elb_status: u16,
    /// The target's status, when a target answered.
    pub target_status: Option<u16>,
    /// Request bytes from the client: head and body.
    pub received_bytes: u64,
    /// Response body bytes to the client.
    pub sent_bytes: u64,
    /// The method; `-` for a request that could not be read (the request is then `- - -`).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host as the client sent it (Host header or HTTP/2 authority); raw client bytes.
    pub host: &'a [u8],
    /// Path and query as the client sent them.
    pub path_and_query: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: &'a str,
    /// The `User-Agent` header; raw client bytes.
    pub user_agent: Option<&'a [u8]>,
    /// TLS facts of the client connection.
    pub tls: Option<&'a TlsFacts>,
    /// The target group the request was forwarded to.
    pub target_group: Option<&'a str>,
    /// The `X-Amzn-Trace-Id` value sent to the target (may hold the client's `Root`).
    pub trace_id: Option<&'a [u8]>,
    /// The priority of the rule that matched; 0 for the default action (as ALB).
    pub rule_priority: Option<u32>,
    /// ALB's `actions_executed`: `forward`, `redirect`, `fixed-response`; empty when the
    /// request was refused before any rule was matched.
    pub actions: &'static str,
    /// A redirect's `Location`.
    pub redirect_url: Option<&'a [u8]>,
    /// Why berth answered itself (the reason of `berth_proxy_responses_total`).
    pub error_reason: Option<&'a str>,
    /// A gRPC call's status (a number, or `missing`/`cancelled`).
    pub grpc_status: Option<&'a str>,
}

/// One L4 flow, as it ended.
#[derive(Debug, Clone, Copy)]
pub struct FlowEntry<'a> {
    /// `tcp` or `tls`.
    pub kind: &'static str,
    /// When the connection was accepted.
    pub start: SystemTime,
    /// When the flow ended.
    pub end: SystemTime,
    /// The listener's name.
    pub listener: &'a str,
    /// The client (after a PROXY header).
    pub client: Option<SocketAddr>,
    /// The target, once connected.
    pub target: Option<SocketAddr>,
    /// Seconds from accept to the target connection.
    pub connect_time: Option<f64>,
    /// Bytes from the client.
    pub received_bytes: u64,
    /// Bytes to the client.
    pub sent_bytes: u64,
    /// TLS facts (tls listeners).
    pub tls: Option<&'a TlsFacts>,
    /// The target group.
    pub target_group: Option<&'a str>,
    /// How the flow ended: `closed`, `reset`, `idle`, `deregistered`, `no_target`,
    /// `tls_handshake`, `proxy_header`.
    pub end_reason: &'static str,
}

fn secs(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

/// Appends `n` in decimal (the formatting machinery costs more than this, per line).
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends `n` zero-padded to `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut n = n;
    while n > 0 && i > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = buf.len().saturating_sub(width).min(i);
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("0"));
}

/// Appends seconds with six decimals (microseconds), as `0.000123`.
fn push_secs(out: &mut String, secs: f64) {
    let us = (secs.max(0.0) * 1e6).round() as u64;
    push_u64(out, us / 1_000_000);
    out.push('.');
    push_padded(out, us % 1_000_000, 6);
}

thread_local! {
    /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: std::cell::Cell<(i64, [u8; 19])> = const { std::cell::Cell::new((-1, [b'0'; 19])) };
}

/// ISO 8601 with microseconds, as ALB: `2026-12-02T06:31:25.123456Z`. The date and time of day
/// are formatted once per second per thread.
fn push_time(out: &mut String, t: SystemTime) {
    use chrono::{Datelike, Timelike};
    let (s, us) = secs(t);
    let (cached, text) = SECOND.with(|c| c.get());
    let text = if cached == s {
        text
    } else {
        let Some(dt) = chrono::DateTime::from_timestamp(s, 0) else {
            out.push('-');
            return;
        };
        let mut f = String::with_capacity(19);
        let _ = write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        let mut text = [b'0'; 19];
        if f.len() == 19 {
            text.copy_from_slice(f.as_bytes());
            SECOND.with(|c| c.set((s, text)));
        } else {
            // A year beyond 9999: not cached.
            out.push_str(&f);
            out.push('.');
            push_padded(out, us.into(), 6);
            out.push('Z');
            return;
        }
        text
    };
    out.push_str(std::str::from_utf8(&text).unwrap_or("-"));
    out.push('.');
    push_padded(out, us.into(), 6);
    out.push('Z');
}

fn duration(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A JSON object written key by key.
struct Obj<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Obj<'o> {
    fn new(out: &'o mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }
    /// A string berth made (no escaping needed beyond JSON's, done anyway).
    fn s(&mut self, k: &str, v: &str) {
        self.key(k);
        json_string(self.out, v.as_bytes());
    }
    fn b(&mut self, k: &str, v: &[u8]) {
        self.key(k);
        json_string(self.out, v);
    }
    fn n(&mut self, k: &str, v: u64) {
        self.key(k);
        push_u64(self.out, v);
    }
    fn f(&mut self, k: &str, v: f64) {
        self.key(k);
        push_secs(self.out, v);
    }
    fn time(&mut self, k: &str, t: SystemTime) {
        self.key(k);
        self.out.push('"');
        push_time(self.out, t);
        self.out.push('"');
    }
    fn addr(&mut self, k: &str, a: Option<SocketAddr>) {
        if let Some(a) = a {
            self.key(k);
            let _ = write!(self.out, "\"{a}\"");
        }
    }
    fn end(self) {
        self.out.push('}');
    }
}

/// The request as ALB writes it: `GET https://host:port/path?q HTTP/1.1` (raw client bytes,
/// escaped by the caller's format).
fn request_line(e: &HttpEntry<'_>, out: &mut Vec<u8>) {
    if e.method == "-" {
        // A request that could not be read.
        out.extend_from_slice(b"- - -");
        return;
    }
    out.extend_from_slice(e.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.scheme.as_bytes());
    out.extend_from_slice(b"://");
    out.extend_from_slice(e.host);
    out.extend_from_slice(e.path_and_query.as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.version.as_bytes());
}

impl HttpEntry<'_> {
    /// Appends the JSON line (with its newline).
    pub fn json(&self, out: &mut String) {
        let mut line = Vec::with_capacity(64 + self.host.len() + self.path_and_query.len());
        request_line(self, &mut line);
        let mut o = Obj::new(out);
        o.s("type", self.kind);
        o.time("time", self.end);
        o.s("elb", self.listener);
        o.addr("client:port", self.client);
        o.addr("target:port", self.target);
        if let Some(t) = self.request_processing {
            o.f("request_processing_time", t);
        }
        if let Some(t) = self.target_processing {
            o.f("target_processing_time", t);
        }
        if let Some(t) = self.response_processing {
            o.f("response_processing_time", t);
        }
        o.n("elb_status_code", self.elb_status.into());
        if let Some(s) = self.target_status {
            o.n("target_status_code", s.into());
        }
        o.n("received_bytes", self.received_bytes);
        o.n("sent_bytes", self.sent_bytes);
        o.b("request", &line);
        if let Some(ua) = self.user_agent {
            o.b("user_agent", ua);
        }
        if let Some(t) = self.tls {
            o.s("ssl_cipher", t.cipher);
            o.s("ssl_protocol", t.protocol);
            if let Some(sni) = &t.sni {
                o.b("domain_name", sni.as_bytes());
            }
        }
        if let Some(g) = self.target_group {
            o.s("target_group", g);
        }
        if let Some(t) = self.trace_id {
            o.b("trace_id", t);
        }
        if let Some(p) = self.rule_priority {
            o.n("matched_rule_priority", p.into());
        }
        o.time("request_creation_time", self.start);
        if !self.actions.is_empty() {
            o.s("actions_executed", self.actions);
        }
        if let Some(r) = self.redirect_url {
            o.b("redirect_url", r);
        }
        if let Some(r) = self.error_reason {
            o.s("error_reason", r);
        }
        if let Some(g) = self.grpc_status {
            o.s("grpc_status", g);
        }
        o.end();
        out.push('\n');
    }

    /// Appends the ALB-format line (with its newline): ALB's 33 fields in ALB's order, then
    /// `grpc_status`.
    pub fn alb(&self, out: &mut String) {
        let mut line = Vec::with_capacity(64 + self.host.len() + self.path_and_query.len());
        request_line(self, &mut line);
        let dash = |out: &mut String| out.push_str(" -");
        let q = |out: &mut String, v: Option<&[u8]>| match v {
            Some(v) => {
                out.push_str(" \"");
                alb_quoted(out, v);
                out.push('"');
            }
            None => out.push_str(" \"-\""),
        };
        let t = |out: &mut String, v: Option<f64>| match v {
            Some(v) => {
                out.push(' ');
                push_secs(out, v);
            }
            None => out.push_str(" -1"),
        };
        let addr = |out: &mut String, a: Option<SocketAddr>| match a {
            Some(a) => {
                let _ = write!(out, " {a}");
            }
            None => dash(out),
        };
        out.push_str(self.kind);
        out.push(' ');
        push_time(out, self.end);
        out.push(' ');
        alb_bare(out, self.listener.as_bytes());
        addr(out, self.client);
        addr(out, self.target);
        t(out, self.request_processing);
        t(out, self.target_processing);
        t(out, self.response_processing);
        out.push(' ');
        push_u64(out, self.elb_status.into());
        match self.target_status {
            Some(s) => {
                out.push(' ');
                push_u64(out, s.into());
            }
            None => dash(out),
        }
        out.push(' ');
        push_u64(out, self.received_bytes);
        out.push(' ');
        push_u64(out, self.sent_bytes);
        q(out, Some(&line));
        q(out, self.user_agent);
        match self.tls {
            Some(tls) => {
                let _ = write!(out, " {} {}", tls.cipher, tls.protocol);
            }
            None => out.push_str(" - -"),
        }
        match self.target_group {
            Some(g) => {
                out.push(' ');
                alb_bare(out, g.as_bytes());
            }
            None => dash(out),
        }
        q(out, self.trace_id);
        q(
            out,
            self.tls.and_then(|t| t.sni.as_deref()).map(str::as_bytes),
        );
        // chosen_cert_arn: berth has no ARNs.
        q(out, None);
        match self.rule_priority {
            Some(p) => {
                out.push(' ');
                push_u64(out, p.into());
            }
            None => out.push_str(" -1"),
        }
        out.push(' ');
        push_time(out, self.start);
        q(out, Some(self.actions.as_bytes()).filter(|a| !a.is_empty()));
        q(out, self.redirect_url);
        q(out, self.error_reason.map(str::as_bytes));
        // target:port_list and target_status_code_list: the one target tried last.
        let mut buf = String::new();
        match self.target {
            Some(a) => {
                let _ = write!(buf, "{a}");
                q(out, Some(buf.as_bytes()));
            }
            None => q(out, None),
        }
        buf.clear();
        match self.target_status {
            Some(s) => {
                let _ = write!(buf, "{s}");
                q(out, Some(buf.as_bytes()));
            }
            None => q(out, None),
        }
        // classification, classification_reason (desync mitigation): not applicable.
        q(out, None);
        q(out, None);
        // conn_trace_id
        dash(out);
        // transformed_host, transformed_uri, request_transform_status
        q(out, None);
        q(out, None);
        q(out, None);
        // berth's own: grpc_status.
        match self.grpc_status {
            Some(g) => {
                out.push(' ');
                alb_bare(out, g.as_bytes());
            }
            None => dash(out),
        }
        out.push('\n');
    }
}

impl FlowEntry<'_> {
    /// Appends the JSON line (with its newline).
    pub fn json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        o.s("type", self.kind);
        o.time("time", self.end);
        o.s("listener", self.listener);
        o.addr("client:port", self.client);
        o.addr("target:port", self.target);
        if let Some(t) = self.connect_time {
            o.f("connection_time", t);
        }
        o.f("duration", duration(self.start, self.end));
        o.n("received_bytes", self.received_bytes);
        o.n("sent_bytes", self.sent_bytes);
        if let Some(t) = self.tls {
            o.s("ssl_cipher", t.cipher);
            o.s("ssl_protocol", t.protocol);
            if let Some(sni) = &t.sni {
                o.b("domain_name", sni.as_bytes());
            }
        }
        if let Some(g) = self.target_group {
            o.s("target_group", g);
        }
        o.s("end_reason", self.end_reason);
        o.end();
        out.push('\n');
    }

    /// Appends the ALB-style line (with its newline): `type time listener client:port
    /// target:port connection_time duration received_bytes sent_bytes ssl_cipher ssl_protocol
    /// "domain_name" target_group "end_reason"`.
    pub fn alb(&self, out: &mut String) {
        out.push_str(self.kind);
        out.push(' ');
        push_time(out, self.end);
        out.push(' ');
        alb_bare(out, self.listener.as_bytes());
        for a in [self.client, self.target] {
            match a {
                Some(a) => {
                    let _ = write!(out, " {a}");
                }
                None => out.push_str(" -"),
            }
        }
        match self.connect_time {
            Some(t) => {
                out.push(' ');
                push_secs(out, t);
            }
            None => out.push_str(" -1"),
        }
        let _ = write!(
            out,
            " {:.6} {} {}",
            duration(self.start, self.end),
            self.received_bytes,
            self.sent_bytes
        );
        match self.tls {
            Some(tls) => {
                let _ = write!(out, " {} {} \"", tls.cipher, tls.protocol);
                alb_quoted(out, tls.sni.as_deref().unwrap_or("-").as_bytes());
                out.push('"');
            }
            None => out.push_str(" - - \"-\""),
        }
        match self.target_group {
            Some(g) => {
                out.push(' ');
                alb_bare(out, g.as_bytes());
            }
            None => out.push_str(" -"),
        }
        let _ = writeln!(out, " \"{}\"", self.end_reason);
    }
}

/// Splits an ALB-format line into fields: space-separated, a quoted field up to its closing
/// quote (escapes skipped).
#[cfg(test)]
fn alb_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches('\n').chars();
    let mut quoted = false;
    let mut in_field = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_field => {
                quoted = true;
                in_field = true;
            }
            '"' if quoted => {
                quoted = false;
            }
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if !quoted => {
                if in_field {
                    fields.push(std::mem::take(&mut cur));
                }
                in_field = false;
            }
            _ => {
                in_field = true;
                cur.push(c);
            }
        }
    }
    if in_field {
        fields.push(cur);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry<'a>(tls: Option<&'a TlsFacts>, ua: &'a [u8], path: &'a str) -> HttpEntry<'a> {
        let start = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        HttpEntry {
            kind: "https",
            start,
            end: start + Duration::from_millis(5),
            listener: "web",
            client: Some("10.0.0.1:5555".parse().unwrap()),
            target: Some("10.0.1.2:8080".parse().unwrap()),
            request_processing: Some(0.0001),
            target_processing: Some(0.004),
            response_processing: Some(0.0),
            elb_status: 200,
            target_status: Some(200),
            received_bytes: 120,
            sent_bytes: 5,
            method: "GET",
            scheme: "https",
            host: b"a.test",
            path_and_query: path,
            version: "HTTP/1.1",
            user_agent: Some(ua),
            tls,
            target_group: Some("web"),
            trace_id: Some(b"Root=1-00000001-000000000000000000000001"),
            rule_priority: Some(10),
            actions: "forward",
            redirect_url: None,
            error_reason: None,
            grpc_status: None,
        }
    }

    #[test]
    fn json_line_has_alb_names_and_numbers() {
        let tls = TlsFacts {
            cipher: "TLS13_AES_128_GCM_SHA256",
            protocol: "TLSv1.3",
            sni: Some("a.test".into()),
        };
        let mut s = String::new();
        entry(Some(&tls), b"curl/8", "/x?y=1").json(&mut s);
        assert!(s.ends_with("}\n") && s.matches('\n').count() == 1, "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["elb_status_code"], 200);
        assert_eq!(v["target:port"], "10.0.1.2:8080");
        assert_eq!(v["request"], "GET https://a.test/x?y=1 HTTP/1.1");
        assert_eq!(v["time"], "2023-11-14T22:13:20.128456Z");
        assert_eq!(v["request_creation_time"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["domain_name"], "a.test");
        assert_eq!(v["matched_rule_priority"], 10);
        assert!(v.get("redirect_url").is_none());
    }

    #[test]
    fn alb_line_has_a_fixed_field_count_whatever_the_client_sent() {
        let mut s = String::new();
        entry(None, b"evil\" 200 \"x\nnext \x1b[2J", "/a\"b c").alb(&mut s);
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        let f = alb_fields(&s);
        assert_eq!(f.len(), ALB_HTTP_FIELDS, "{s}\n{f:#?}");
        assert_eq!(f[0], "https");
        assert_eq!(f[8], "200");
        assert_eq!(f[12], "GET https://a.test/a\\\"b c HTTP/1.1");
        assert_eq!(f[13], "evil\\\" 200 \\\"x\\x0anext \\x1b[2J");
        assert_eq!(f[14], "-");
        assert_eq!(f[20], "10");
        assert_eq!(f[33], "-");
    }

    #[test]
    fn numbers_and_times() {
        let mut s = String::new();
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, u64::MAX);
        s.push(' ');
        push_secs(&mut s, 0.0001);
        s.push(' ');
        push_secs(&mut s, 12.5);
        s.push(' ');
        push_padded(&mut s, 1_234_567, 6);
        assert_eq!(s, "0 18446744073709551615 0.000100 12.500000 1234567");
        s.clear();
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        push_time(&mut s, t);
        s.push(' ');
        // Same second, from the cache.
        push_time(&mut s, t + Duration::from_micros(999_000));
        s.push(' ');
        push_time(&mut s, t + Duration::from_secs(86_400));
        assert_eq!(
            s,
            "2023-11-14T22:13:20.000042Z 2023-11-14T22:13:20.999042Z 2023-11-15T22:13:20.000042Z"
        );
    }

    #[test]
    fn flow_lines() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = FlowEntry {
            kind: "tcp",
            start,
            end: start + Duration::from_secs(2),
            listener: "db",
            client: Some("10.0.0.1:5555".parse().unwrap()),
            target: None,
            connect_time: None,
            received_bytes: 3,
            sent_bytes: 4,
            tls: None,
            target_group: Some("db"),
            end_reason: "no_target",
        };
        let mut s = String::new();
        e.alb(&mut s);
        assert_eq!(alb_fields(&s).len(), ALB_FLOW_FIELDS, "{s}");
        s.clear();
        e.json(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["duration"], 2.0);
        assert_eq!(v["end_reason"], "no_target");
    }
}
