//! The access log line of one L4 flow ([`crate::access_log`]): noted along the flow for a
//! sampled flow only, written when the note is dropped, so every way a flow ends (refused PROXY
//! header, no target, failed TLS handshake, closed, reset, idle, deregistered) gets its line.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use berth_config::model::AccessLogFormat;

use crate::access_log::{self, FlowEntry, TlsFacts};
use crate::runtime::Generation;

/// What a logged flow's line says; written on drop.
#[derive(Debug)]
pub struct FlowLog {
    format: AccessLogFormat,
    capacity: usize,
    kind: &'static str,
    listener: String,
    start: Instant,
    start_wall: SystemTime,
    /// The client (after a PROXY header).
    pub client: Option<SocketAddr>,
    /// The target, once connected.
    pub target: Option<SocketAddr>,
    /// When the target connection was made.
    pub connected_at: Option<Instant>,
    /// Bytes from the client.
    pub received: u64,
    /// Bytes to the client.
    pub sent: u64,
    /// TLS facts of a tls listener's flow.
    pub tls: Option<TlsFacts>,
    /// The target group.
    pub group: Option<String>,
    /// How the flow ended.
    pub end_reason: &'static str,
}

impl FlowLog {
    /// A note for a new flow on `listener`, when its access log is on and samples this flow.
    pub fn begin(snap: &Generation, listener: &str, tls: bool) -> Option<FlowLog> {
        let settings = snap.config.access_log.for_listener(listener);
        access_log::sampled(settings).then(|| FlowLog {
            format: settings.format,
            capacity: snap.config.access_log.buffer_lines,
            kind: if tls { "tls" } else { "tcp" },
            listener: listener.to_string(),
            start: Instant::now(),
            start_wall: SystemTime::now(),
            client: None,
            target: None,
            connected_at: None,
            received: 0,
            sent: 0,
            tls: None,
            group: None,
            end_reason: "closed",
        })
    }
}

/// Updates a flow's note when it has one.
pub fn note(flow: &mut Option<FlowLog>, f: impl FnOnce(&mut FlowLog)) {
    if let Some(l) = flow.as_mut() {
        f(l);
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        let entry = FlowEntry {
            kind: self.kind,
            start: self.start_wall,
            end: self.start_wall + self.start.elapsed(),
            listener: &self.listener,
            client: self.client,
            target: self.target,
            connect_time: self
                .connected_at
                .map(|t| t.saturating_duration_since(self.start).as_secs_f64()),
            received_bytes: self.received,
            sent_bytes: self.sent,
            tls: self.tls.as_ref(),
            target_group: self.group.as_deref(),
            end_reason: self.end_reason,
        };
        access_log::log_flow(&entry, self.format, self.capacity);
    }
}
