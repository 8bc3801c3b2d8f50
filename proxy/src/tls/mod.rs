//! TLS termination for https and tls listeners.
//!
//! - [`certs`]: a listener's certificates read from their files, each key checked against its
//!   leaf, chosen by SNI (exact name first, then `*.` wildcard, else the first certificate);
//! - [`mtls`]: mutual TLS (ALB's `verify` and `passthrough` modes), the reasons a client
//!   certificate is refused, and the `X-Amzn-Mtls-Clientcert-*` headers taken from it;
//! - [`live`]: each listener's acceptor behind an arc-swap, rebuilt when its files change (polled
//!   every `proxy.certificate_poll_interval`), on SIGHUP and on a config reload that changes
//!   them; a bad or mismatched pair keeps the running acceptor.

pub mod certs;
pub mod live;
pub mod mtls;

pub use certs::{Alpn, SniResolver, TlsError};
pub use live::{Certificates, LiveAcceptor};
