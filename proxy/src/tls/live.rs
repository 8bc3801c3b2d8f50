//! Listener certificates reloaded live.
//!
//! Each TLS listener's handshakes use a [`LiveAcceptor`]: the current rustls configuration
//! behind an arc-swap, loaded once per handshake, so a new one serves the next handshake while
//! established connections keep the one they were made with. [`Certificates::watch`] re-reads
//! every listener's files (certificates, keys, mTLS CA bundle and CRLs) every
//! `proxy.certificate_poll_interval`, and at once when kicked (SIGHUP, config reload):
//!
//! - a file is compared by content, so rename-over (secrets sidecars), in-place rewrites and
//!   symlink swaps are all seen;
//! - a change is acted on once two reads [`SETTLE`] apart agree, so a half-written file or a
//!   certificate renamed in before its key is not mistaken for a bad pair;
//! - a pair that does not load (unreadable, not PEM, key not matching the certificate) keeps
//!   the running acceptor, logs an error naming the listener and the file, and counts one
//!   `berth_tls_certificate_reloads_total{result="failure"}` per distinct bad content;
//! - a config reload may change a listener's certificate paths or mTLS settings: the watcher
//!   builds from the listener's settings of the moment.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use berth_config::Config;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::certs::{build, Built, Contents, Sources, TlsError};
use super::mtls::{ClientCertHeaders, ClientCertMode};
use crate::metrics as m;

/// Time between the two reads that must agree before changed files are loaded.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Reads allowed for files still changing before the last read is loaded as it is.
const SETTLE_TRIES: usize = 5;

/// What one handshake uses: the acceptor and how it treats client certificates.
pub struct Current {
    acceptor: TlsAcceptor,
    client_certs: ClientCertMode,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("client_certs", &self.client_certs)
            .finish_non_exhaustive()
    }
}

impl Current {
    fn new(built: &Built) -> Current {
        Current {
            acceptor: TlsAcceptor::from(Arc::clone(&built.config)),
            client_certs: built.client_certs,
        }
    }

    /// Starts a server handshake on `io`.
    pub fn accept<IO>(&self, io: IO) -> tokio_rustls::Accept<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.acceptor.accept(io)
    }

    /// The headers the client certificate of a finished handshake gives its requests.
    pub fn client_cert_headers(
        &self,
        conn: &rustls::ServerConnection,
    ) -> Option<Arc<ClientCertHeaders>> {
        ClientCertHeaders::from_chain(self.client_certs, conn.peer_certificates()).map(Arc::new)
    }
}

/// One listener's TLS, swapped when its files change.
#[derive(Debug)]
pub struct LiveAcceptor {
    listener: String,
    current: ArcSwap<Current>,
}

impl LiveAcceptor {
    /// What the next handshake uses.
    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }
}

/// One listener as the watcher knows it: what its running acceptor was built from.
struct Watched {
    live: Arc<LiveAcceptor>,
    sources: Sources,
    digest: u64,
    /// The settings and content of the last failed load, so that it is reported once.
    failed: Option<(Sources, u64)>,
}

/// The TLS of every listener that terminates it, and the loop that keeps it current.
pub struct Certificates {
    listeners: Vec<Watched>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.listeners.iter().map(|w| &w.live.listener))
            .finish()
    }
}

impl Certificates {
    /// Loads the TLS of every https and tls listener of `config`; the first failure names its
    /// listener.
    pub fn load(config: &Config) -> Result<Certificates, (String, TlsError)> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let Some(sources) = Sources::of(l) else {
                continue;
            };
            let fail = |e| (l.name.clone(), e);
            let contents = Contents::read(&sources).map_err(fail)?;
            let built = build(&sources, &contents).map_err(fail)?;
            publish_expiries(&l.name, &built);
            listeners.push(Watched {
                live: Arc::new(LiveAcceptor {
                    listener: l.name.clone(),
                    current: ArcSwap::from_pointee(Current::new(&built)),
                }),
                sources,
                digest: contents.digest(),
                failed: None,
            });
        }
        Ok(Certificates { listeners })
    }

    /// The live acceptor of listener `name`, if it terminates TLS.
    pub fn acceptor(&self, name: &str) -> Option<Arc<LiveAcceptor>> {
        self.listeners
            .iter()
            .find(|w| w.live.listener == name)
            .map(|w| Arc::clone(&w.live))
    }

    /// Keeps every listener's TLS current: polls its files every
    /// `proxy.certificate_poll_interval` of the configuration `config` returns, and at once
    /// whenever `kick` is notified. Runs until the process ends.
    pub async fn watch<F>(mut self, config: F, kick: Arc<Notify>)
    where
        F: Fn() -> Arc<Config> + Send,
    {
        loop {
            let interval = config().proxy.certificate_poll_interval;
            let trigger = tokio::select! {
                _ = kick.notified() => "reload",
                _ = tokio::time::sleep(interval) => "poll",
            };
            let cfg = config();
            for w in &mut self.listeners {
                let sources = cfg
                    .listeners
                    .iter()
                    .find(|l| l.name == w.live.listener)
                    .and_then(Sources::of);
                if let Some(sources) = sources {
                    w.check(sources, trigger).await;
                }
            }
        }
    }
}

impl Watched {
    /// Re-reads the listener's files; rebuilds its acceptor when they or its settings changed.
    async fn check(&mut self, sources: Sources, trigger: &'static str) {
        let mut found = read(&sources).await;
        let mut digest = fingerprint(&found);
        if sources == self.sources && digest == self.digest {
            self.failed = None;
            return;
        }
        if self.failed.as_ref() == Some(&(sources.clone(), digest)) {
            return;
        }
        // Wait until the files hold still: a writer may be half-way through them.
        for _ in 0..SETTLE_TRIES {
            tokio::time::sleep(SETTLE).await;
            let again = read(&sources).await;
            let d = fingerprint(&again);
            found = again;
            if d == digest {
                break;
            }
            digest = d;
        }
        if sources == self.sources && digest == self.digest {
            return;
        }
        let listener = self.live.listener.clone();
        let built = match found {
            Ok(contents) => {
                let s = sources.clone();
                tokio::task::spawn_blocking(move || build(&s, &contents))
                    .await
                    .unwrap_or_else(|e| Err(TlsError::Config(e.to_string())))
            }
            Err(e) => Err(e),
        };
        match built {
            Ok(built) => {
                self.live.current.store(Arc::new(Current::new(&built)));
                publish_expiries(&listener, &built);
                let files: Vec<&str> = built.expiries.iter().map(|(f, _)| f.as_str()).collect();
                tracing::info!(
                    listener = %listener,
                    trigger,
                    certificates = ?files,
                    "listener certificates reloaded"
                );
                metrics::counter!(m::TLS_CERTIFICATE_RELOADS, "listener" => listener, "result" => "success")
                    .increment(1);
                self.sources = sources;
                self.digest = digest;
                self.failed = None;
            }
            Err(e) => {
                tracing::error!(
                    listener = %listener,
                    file = e.file(),
                    trigger,
                    error = %e,
                    "listener certificate reload failed; keeping the running certificates"
                );
                metrics::counter!(m::TLS_CERTIFICATE_RELOADS, "listener" => listener, "result" => "failure")
                    .increment(1);
                self.failed = Some((sources, digest));
            }
        }
    }
}

/// Reads a listener's files off the async threads.
async fn read(sources: &Sources) -> Result<Contents, TlsError> {
    let s = sources.clone();
    tokio::task::spawn_blocking(move || Contents::read(&s))
        .await
        .unwrap_or_else(|e| Err(TlsError::Config(e.to_string())))
}

/// The fingerprint of what a read found: its contents, or the error (so that an unchanged
/// failure is reported once).
fn fingerprint(read: &Result<Contents, TlsError>) -> u64 {
    use std::hash::{Hash, Hasher};
    match read {
        Ok(c) => c.digest(),
        Err(e) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.to_string().hash(&mut h);
            h.finish()
        }
    }
}

/// Sets `berth_tls_certificate_expiry_timestamp_seconds` for each certificate of a listener.
fn publish_expiries(listener: &str, built: &Built) {
    for (file, not_after) in &built.expiries {
        metrics::gauge!(m::TLS_CERTIFICATE_EXPIRY, "listener" => listener.to_string(), "certificate" => file.clone())
            .set(*not_after as f64);
    }
}
