//! berth proxy: an L7 load balancer for Amazon ECS services, built on pingora.
//!
//! Data flow: configuration ([`runtime::ProxyState`], swapped on reload) → listeners ([`l7`]) →
//! rules → target group ([`group::Group`]) → balancer ([`balance`]) → target; targets come
//! from [`discovery`] sources and are checked by [`health`]. [`admin`] serves `/metrics`,
//! `/healthz` and `/targets`.

#![warn(missing_docs)]

pub mod admin;
pub mod balance;
pub mod conn;
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
