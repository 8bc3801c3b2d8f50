//! berth scaler: reads the proxy's request metrics and adjusts ECS services' desired counts.
//!
//! This first version loads and validates its configuration (the `[scaler]` table of the berth
//! configuration) and runs an idle loop in dry-run mode; the policies come next.

#![warn(missing_docs)]
