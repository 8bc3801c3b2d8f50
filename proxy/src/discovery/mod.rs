//! Target sources. A [`Discovery`] yields the complete current target list of one target group
//! each time it is asked; the group reconciles it with its running targets (new ones start
//! `initial`, missing ones drain). On error the group keeps its last good list (fail-static).

pub mod ecs;
pub mod ecs_api;
pub mod file;
pub mod source;

pub use source::{Discovery, DiscoveryError, StaticSource};

use std::sync::Arc;
use std::time::Duration;

use berth_config::model::Source;

/// Builds the discovery for a configured source; ECS sources poll through `ecs`.
pub fn from_config(
    source: &Source,
    watch_interval: Duration,
    ecs: &Arc<ecs::EcsHub>,
) -> Box<dyn Discovery> {
    match source {
        Source::Static(list) => Box::new(StaticSource(list.clone())),
        Source::File(path) => Box::new(file::FileSource::new(path.clone(), watch_interval)),
        Source::Ecs(source) => Box::new(ecs::EcsDiscovery::new(source.clone(), Arc::clone(ecs))),
    }
}
