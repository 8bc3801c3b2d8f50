//! The access log: one line per HTTP request and per L4 flow, written to stdout (where ECS's
//! awslogs or FireLens driver picks it up; berth's own logs go to stderr).
//!
//! Writing never blocks a request: lines go into a bounded queue ([`submit`]) drained by one
//! dedicated thread through a buffered stdout, flushed whenever the queue is empty, then left to
//! gather lines for 2 ms (so that a busy proxy does not wake the writer for every line). When the
//! queue is full (stdout stalls or cannot keep up) the line is dropped and counted in
//! `berth_access_log_dropped_lines_total`; lines written are counted in
//! `berth_access_log_lines_total`. The thread starts with the first line, its queue sized by
//! `access_log.buffer_lines` at that moment.
//!
//! [`entry`] holds the fields and the two formats, [`escape`] the escaping of what clients
//! control.

pub mod entry;
pub mod escape;

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use berth_config::model::{AccessLog, AccessLogFormat};

use crate::metrics as m;
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

/// The queue into the writer thread.
struct Sink {
    tx: SyncSender<String>,
    dropped: metrics::Counter,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Hands a formatted line (newline included) to the writer, or drops and counts it when the
/// queue (`capacity` lines, used when the writer starts) is full. Never blocks.
pub fn submit(line: String, capacity: usize) {
    let sink = SINK.get_or_init(|| start(capacity));
    match sink.tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            sink.dropped.increment(1)
        }
    }
}

/// Formats an HTTP request's line in `format` and submits it.
pub fn log_http(e: &HttpEntry<'_>, format: AccessLogFormat, capacity: usize) {
    let mut s = String::with_capacity(512);
    match format {
        AccessLogFormat::Json => e.json(&mut s),
        AccessLogFormat::Alb => e.alb(&mut s),
    }
    submit(s, capacity);
}

/// Formats an L4 flow's line in `format` and submits it.
pub fn log_flow(e: &FlowEntry<'_>, format: AccessLogFormat, capacity: usize) {
    let mut s = String::with_capacity(256);
    match format {
        AccessLogFormat::Json => e.json(&mut s),
        AccessLogFormat::Alb => e.alb(&mut s),
    }
    submit(s, capacity);
}

fn start(capacity: usize) -> Sink {
    let (tx, rx) = sync_channel::<String>(capacity.max(1));
    let dropped = metrics::counter!(m::ACCESS_LOG_DROPPED);
    let written = metrics::counter!(m::ACCESS_LOG_LINES);
    let lost = dropped.clone();
    let spawned = std::thread::Builder::new()
        .name("berth-access-log".into())
        .spawn(move || write_lines(rx, written, lost));
    if let Err(e) = spawned {
        // No writer: the receiver is gone with the closure, every line is dropped and counted.
        tracing::error!(error = %e, "cannot start the access log writer thread; access log lines will be dropped");
    }
    Sink { tx, dropped }
}

/// How long the writer waits after a flush before it drains the queue again. Lines gather in
/// the queue meanwhile, so a busy proxy wakes the writer a few hundred times a second instead of
/// once per line (a wake-up is a context switch on the worker's core); an idle queue still
/// blocks the writer until the next line.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// The writer thread: whole lines into a buffered stdout, flushed when the queue is empty.
fn write_lines(rx: Receiver<String>, written: metrics::Counter, dropped: metrics::Counter) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut batch = 0u64;
        let mut line = Some(first);
        while let Some(l) = line.take() {
            if out.write_all(l.as_bytes()).is_ok() {
                batch += 1;
            } else {
                dropped.increment(1);
                if !failed {
                    failed = true;
                    tracing::warn!(
                        "cannot write the access log to stdout; its lines are dropped and counted"
                    );
                }
            }
            line = rx.try_recv().ok();
        }
        if out.flush().is_err() && !failed {
            failed = true;
            tracing::warn!(
                "cannot write the access log to stdout; its lines are dropped and counted"
            );
        }
        written.increment(batch);
        std::thread::sleep(GATHER);
    }
}
