//! Reading the JSON log of a berth started with `[log] format = "json"`
//! ([`crate::config::json_logged`]).

use crate::Berth;

/// The `fields` of the JSON log events of `berth` whose message is `message`, oldest first;
/// lines that are not JSON are passed over.
pub fn events(berth: &Berth, message: &str) -> Vec<serde_json::Value> {
    berth
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"] == message)
        .collect()
}
