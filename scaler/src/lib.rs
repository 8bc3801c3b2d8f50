//! berth scaler: reads the proxy's request metrics and adjusts ECS services' desired counts.
//!
//! Every tick (`[scaler] interval`, default 5 s) the [`runner`] scrapes the local proxy's
//! `/metrics` ([`source`]), derives per-target-group figures, publishes them to CloudWatch
//! ([`sink`], optional), reads the sum across replicas back (optional), lets the
//! [`policy`] functions decide, and sets the new desired count through a
//! [`capacity::CapacityController`] (never in dry run). [`aws`] is the only module naming AWS
//! SDK types; the plumbing shared with the proxy (AWS set-up, errors and call counting, the
//! metric names scraped, the admin loop) is in `berth_common`. See `scaler/README.md`.

#![warn(missing_docs)]

pub mod admin;
pub mod aws;
pub mod capacity;
pub mod metrics;
pub mod policy;
pub mod runner;
pub mod sink;
pub mod source;
