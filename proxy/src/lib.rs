//! berth proxy: an L7/L4 load balancer for Amazon ECS services; pingora runs the process.
//!
//! Data flow: configuration ([`runtime::ProxyState`], swapped on reload) → listeners ([`l7`],
//! [`l4`]) → rules → target group ([`group::Group`]) → zone ([`zone`], when zone-aware) →
//! balancer ([`balance`]) → target; targets come from [`discovery`] sources, are probed by
//! [`health`], and each group's loop ([`group_loop`]) applies both. [`admin`] serves
//! `/metrics`, `/healthz` and `/targets`; [`access_log`] writes one line per request and per
//! L4 flow to stdout, off the request path.
//!
//! Modules import one way, from the process assembly ([`server`]) down to leaves such as
//! [`health`], [`upstream`] and [`metrics`]; `tests/layers.rs` fails on any cycle.

#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod conn;
pub mod cookie_signing;
pub mod discovery;
pub mod forward;
pub mod group;
pub mod group_loop;
pub mod health;
pub mod heap;
pub mod l4;
pub mod l7;
pub mod metrics;
pub mod readiness;
pub mod runtime;
pub mod server;
pub mod target;
pub mod tls;
pub mod upstream;
pub mod workers;
pub mod zone;
