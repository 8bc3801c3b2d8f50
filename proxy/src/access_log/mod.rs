//! The access log: one line per HTTP request and per L4 flow, written to stdout (where ECS's
//! awslogs or FireLens driver picks it up; berth's own logs go to stderr).
//!
//! Writing never blocks a request: lines go into a bounded batch ([`sink`]) that one dedicated
//! thread writes to stdout, then leaves to gather lines for 2 ms (so that a busy proxy does not
//! wake the writer for every line). When the batch is full (stdout stalls or cannot keep up)
//! the line is dropped and counted in
//! `berth_access_log_dropped_lines_total`; lines written are counted in
//! `berth_access_log_lines_total`. The thread starts with the first line, its batch bounded by
//! `access_log.buffer_lines` at that moment.
//!
//! [`entry`] holds the fields and the two formats, [`escape`] the escaping of what clients
//! control.

pub mod entry;
pub mod escape;
pub mod sink;

use berth_config::model::{AccessLog, AccessLogFormat};

pub use entry::{FlowEntry, HttpEntry};

/// What a TLS handshake settled, taken once per client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// The cipher suite, by its IANA-style name as rustls spells it
    /// (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// `TLSv1.2` or `TLSv1.3` (ALB's spelling).
    pub protocol: &'static str,
    /// The SNI server name the client asked for.
    pub sni: Option<String>,
}

impl TlsFacts {
    /// The facts of an accepted rustls server connection.
    pub fn of(c: &rustls::ServerConnection) -> TlsFacts {
        let cipher = c
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("-");
        let protocol = match c.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            Some(_) => "TLS",
            None => "-",
        };
        TlsFacts {
            cipher,
            protocol,
            sni: c.server_name().map(str::to_string),
        }
    }
}

/// Whether this request or flow gets a line under `settings` (sampled at random).
#[inline]
pub fn sampled(settings: &AccessLog) -> bool {
    settings.enabled && (settings.sampling >= 1.0 || fastrand::f64() < settings.sampling)
}

/// Formats an HTTP request's line in `format` and submits it.
pub fn log_http(e: &HttpEntry<'_>, format: AccessLogFormat, capacity: usize) {
    sink::submit(capacity, |s| match format {
        AccessLogFormat::Json => e.json(s),
        AccessLogFormat::Alb => e.alb(s),
    });
}

/// Formats an L4 flow's line in `format` and submits it.
pub fn log_flow(e: &FlowEntry<'_>, format: AccessLogFormat, capacity: usize) {
    sink::submit(capacity, |s| match format {
        AccessLogFormat::Json => e.json(s),
        AccessLogFormat::Alb => e.alb(s),
    });
}
