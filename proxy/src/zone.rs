//! Zone-aware routing at run time: the proxy's own Availability Zone (from the configuration
//! or the ECS task metadata endpoint v4, learnt once at start), and each target set's
//! [`ZoneIndex`]: its targets grouped by zone, and the current [`ZoneRoute`] computed by the
//! pure decision in [`crate::balance::zone`] from the zones' healthy capacity.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use berth_config::model::ZoneAware;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::balance::zone::{self as decide, Off, ZoneRoute, PARTS};
use crate::health::Status;
use crate::metrics as m;
use crate::target::Target;

/// The environment variable ECS sets to the task metadata endpoint v4 of the container.
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// Attempts at the metadata endpoint before giving up (the zone stays unknown).
const METADATA_ATTEMPTS: u32 = 3;
/// Time one attempt may take.
const METADATA_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a failed attempt, doubled each time.
const METADATA_BACKOFF: Duration = Duration::from_millis(100);
/// Largest metadata answer read.
const METADATA_MAX_BYTES: usize = 1 << 20;

static OWN_ZONE: OnceLock<Option<Arc<str>>> = OnceLock::new();

/// The proxy's own zone as learnt at start ([`set_own`]); `None` when unknown (or not yet
/// set, as in unit tests).
pub fn own() -> Option<Arc<str>> {
    OWN_ZONE.get().cloned().flatten()
}

/// Records the proxy's own zone for the life of the process (the first call wins) and
/// publishes it as [`m::AVAILABILITY_ZONE_INFO`].
pub fn set_own(zone: Option<String>, source: &'static str) {
    let zone: Option<Arc<str>> = zone.map(Arc::from);
    let label = zone.as_deref().unwrap_or("unknown").to_string();
    if OWN_ZONE.set(zone).is_ok() {
        metrics::gauge!(m::AVAILABILITY_ZONE_INFO, "availability_zone" => label, "source" => source)
            .set(1.0);
    }
}

/// Why the metadata endpoint gave no zone.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The endpoint URI is not `http://host[:port]/path`.
    #[error("invalid {METADATA_ENV} {0:?}")]
    BadUri(String),
    /// Connecting or the HTTP exchange failed.
    #[error("request to {uri} failed: {reason}")]
    Http {
        /// The URI asked.
        uri: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer was not a JSON object with a valid `AvailabilityZone`.
    #[error("answer of {uri} has no valid AvailabilityZone: {reason}")]
    Answer {
        /// The URI asked.
        uri: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Learns the proxy's zone: `configured` (`proxy.availability_zone`) when set, else the
/// ECS task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4/task`, field
/// `AvailabilityZone`) with a few short attempts; records it with [`set_own`]. Failure is
/// logged and leaves the zone unknown: zone-aware routing is then off.
pub async fn learn_own(configured: Option<&str>) {
    if let Some(z) = configured {
        tracing::info!(availability_zone = z, "own zone from the configuration");
        set_own(Some(z.to_string()), "config");
        return;
    }
    let Ok(base) = std::env::var(METADATA_ENV) else {
        tracing::info!(
            "own zone unknown (no proxy.availability_zone, no {METADATA_ENV}): zone-aware routing is off"
        );
        set_own(None, "none");
        return;
    };
    let mut pause = METADATA_BACKOFF;
    for attempt in 1..=METADATA_ATTEMPTS {
        match tokio::time::timeout(METADATA_TIMEOUT, task_zone(&base)).await {
            Ok(Ok(zone)) => {
                tracing::info!(availability_zone = %zone, "own zone from the ECS task metadata endpoint");
                set_own(Some(zone), "ecs_metadata");
                return;
            }
            Ok(Err(MetadataError::BadUri(u))) => {
                tracing::warn!(uri = %u, "invalid {METADATA_ENV}: zone-aware routing is off");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(attempt, error = %e, "ECS task metadata: no zone");
            }
            Err(_) => {
                tracing::warn!(
                    attempt,
                    timeout_ms = METADATA_TIMEOUT.as_millis() as u64,
                    "ECS task metadata: timed out"
                );
            }
        }
        if attempt < METADATA_ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    tracing::warn!("own zone unknown: zone-aware routing is off");
    set_own(None, "none");
}

/// One GET of `<base>/task`; the `AvailabilityZone` of the answer.
pub async fn task_zone(base: &str) -> Result<String, MetadataError> {
    let uri_text = format!("{}/task", base.trim_end_matches('/'));
    let uri: http::Uri = uri_text
        .parse()
        .map_err(|_| MetadataError::BadUri(base.to_string()))?;
    let http_err = |reason: String| MetadataError::Http {
        uri: uri_text.clone(),
        reason,
    };
    if uri.scheme_str() != Some("http") {
        return Err(MetadataError::BadUri(base.to_string()));
    }
    let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(80)) else {
        return Err(MetadataError::BadUri(base.to_string()));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/task".into());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| http_err(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| http_err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(http_err(format!("status {}", resp.status())));
    }
    let body = http_body_util::Limited::new(resp.into_body(), METADATA_MAX_BYTES)
        .collect()
        .await
        .map_err(|e| http_err(e.to_string()))?
        .to_bytes();
    let answer = |reason: String| MetadataError::Answer {
        uri: uri_text.clone(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| answer(e.to_string()))?;
    match v.get("AvailabilityZone").and_then(|z| z.as_str()) {
        Some(z) if valid_zone(z) => Ok(z.to_string()),
        Some(z) => Err(answer(format!("{z:?} is not a zone name"))),
        None => Err(answer("no AvailabilityZone field".into())),
    }
}

/// Whether `z` can be a zone name (the configuration's rule: 1 to 64 letters, digits, '-').
pub fn valid_zone(z: &str) -> bool {
    !z.is_empty() && z.len() <= 64 && z.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Where a request went relative to the proxy's zone, for [`m::ZONE_ROUTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// The target is in the proxy's zone.
    SameZone = 0,
    /// The target is in another known zone.
    CrossZone = 1,
    /// The proxy's or the target's zone is unknown.
    Unknown = 2,
}

impl Locality {
    /// Every locality, in index order.
    pub const ALL: [Locality; 3] = [Locality::SameZone, Locality::CrossZone, Locality::Unknown];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Locality::SameZone => "same_zone",
            Locality::CrossZone => "cross_zone",
            Locality::Unknown => "unknown",
        }
    }
}

/// A target set's targets grouped by zone, built when the set changes; its route is
/// recomputed when health changes ([`ZoneIndex::refresh`]).
#[derive(Debug)]
pub struct ZoneIndex {
    /// The proxy's zone when the index was built.
    pub own: Option<Arc<str>>,
    /// Zone names by slot, sorted: the targets' zones and those of `proxy_zones`. The slot
    /// after the last name holds targets of unknown zone.
    pub names: Vec<Arc<str>>,
    /// The slot of each target of the set's list, in list order.
    pub slot_of: Vec<usize>,
    /// The locality of each target of the set's list, in list order.
    pub locality: Vec<Locality>,
    /// The targets of each slot (draining ones included; selection skips them).
    pub members: Vec<Vec<Arc<Target>>>,
    /// For each slot, the index in the set's list of each of its `members`.
    pub member_index: Vec<Vec<usize>>,
    /// Round-robin counters, one per slot.
    pub rr: Vec<AtomicU64>,
    /// The slot of the proxy's zone, if known and among `names`.
    pub local: Option<usize>,
    /// The current route; [`ZoneRoute::All`] until computed.
    pub route: ArcSwap<ZoneRoute>,
}

impl Default for ZoneIndex {
    fn default() -> Self {
        ZoneIndex {
            own: None,
            names: Vec::new(),
            slot_of: Vec::new(),
            locality: Vec::new(),
            members: vec![Vec::new()],
            member_index: vec![Vec::new()],
            rr: vec![AtomicU64::new(0)],
            local: None,
            route: ArcSwap::from_pointee(ZoneRoute::All(Off::Disabled)),
        }
    }
}

impl ZoneIndex {
    /// Groups `list` by zone for a proxy in `own`; `za`'s `proxy_zones` add slots for zones
    /// that have proxies but no targets.
    pub fn build(list: &[Arc<Target>], own: Option<Arc<str>>, za: &ZoneAware) -> ZoneIndex {
        let zones: Vec<Option<Arc<String>>> = list.iter().map(|t| t.zone()).collect();
        let mut set: BTreeSet<&str> = zones.iter().flatten().map(|z| z.as_str()).collect();
        set.extend(za.proxy_zones.iter().map(|(z, _)| z.as_str()));
        let names: Vec<Arc<str>> = set.into_iter().map(Arc::from).collect();
        let unknown = names.len();
        let slot = |z: &Option<Arc<String>>| {
            z.as_ref()
                .and_then(|z| names.iter().position(|n| &**n == z.as_str()))
                .unwrap_or(unknown)
        };
        let slot_of: Vec<usize> = zones.iter().map(slot).collect();
        let mut members = vec![Vec::new(); unknown + 1];
        let mut member_index = vec![Vec::new(); unknown + 1];
        for (i, (t, s)) in list.iter().zip(&slot_of).enumerate() {
            members[*s].push(Arc::clone(t));
            member_index[*s].push(i);
        }
        let local = own.as_ref().and_then(|o| names.iter().position(|n| n == o));
        let locality = zones
            .iter()
            .map(|z| match (&own, z) {
                (Some(o), Some(z)) if **o == ***z => Locality::SameZone,
                (Some(_), Some(_)) => Locality::CrossZone,
                _ => Locality::Unknown,
            })
            .collect();
        ZoneIndex {
            own,
            names,
            slot_of,
            locality,
            rr: (0..=unknown).map(|_| AtomicU64::new(0)).collect(),
            members,
            member_index,
            local,
            route: ArcSwap::from_pointee(ZoneRoute::All(Off::Disabled)),
        }
    }

    /// Recomputes the route from the slots' healthy capacity (`weight` gives a target's
    /// effective weight) and returns it.
    pub fn refresh(
        &self,
        za: &ZoneAware,
        now: u64,
        weight: impl Fn(&Target) -> u64,
    ) -> Arc<ZoneRoute> {
        let route = self.compute(za, now, weight);
        let route = Arc::new(route);
        self.route.store(Arc::clone(&route));
        route
    }

    fn compute(&self, za: &ZoneAware, now: u64, weight: impl Fn(&Target) -> u64) -> ZoneRoute {
        if !za.enabled {
            return ZoneRoute::All(Off::Disabled);
        }
        if self.own.is_none() {
            return ZoneRoute::All(Off::OwnZoneUnknown);
        }
        let Some(local) = self.local else {
            return ZoneRoute::All(Off::NoLocalShare);
        };
        let in_rotation =
            |t: &Target| !t.is_draining() && t.status() == Status::Healthy && !t.is_ejected(now);
        let mut healthy = 0usize;
        let capacity: Vec<u64> = self
            .members
            .iter()
            .map(|ts| {
                ts.iter()
                    .filter(|t| in_rotation(t))
                    .inspect(|_| healthy += 1)
                    .map(|t| weight(t))
                    .sum()
            })
            .collect();
        let unknown = self.names.len();
        let fleet: Vec<u64> = (0..=unknown)
            .map(|s| {
                if s == unknown {
                    0
                } else if za.proxy_zones.is_empty() {
                    // Even spread over the zones that have a target that is not leaving.
                    u64::from(self.members[s].iter().any(|t| !t.is_draining()))
                } else {
                    za.proxy_zones
                        .iter()
                        .find(|(z, _)| *z == *self.names[s])
                        .map_or(0, |(_, w)| u64::from(*w))
                }
            })
            .collect();
        decide::route(&capacity, &fleet, local, healthy, za.min_targets as usize)
    }

    /// The slot a new request should be balanced in, or `None` for any target.
    pub fn pick(&self) -> Option<usize> {
        let local = self.local?;
        let route = self.route.load();
        match &**route {
            ZoneRoute::All(_) => None,
            ZoneRoute::Local => Some(local),
            spill => spill.pick(local, fastrand::u32(0..PARTS), fastrand::u64(..)),
        }
    }
}

/// A short description of a route for metrics: its mode and the share kept local.
pub fn describe(route: &ZoneRoute) -> (&'static str, f64) {
    match route {
        ZoneRoute::All(off) => (off.as_str(), 0.0),
        ZoneRoute::Local => ("local", 1.0),
        ZoneRoute::Spill { local_parts, .. } => {
            ("spill", f64::from(*local_parts) / f64::from(PARTS))
        }
    }
}

/// Every mode [`describe`] names, for gauges that must reset the others.
pub const MODES: [&str; 7] = [
    "local",
    "spill",
    "disabled",
    "own_zone_unknown",
    "too_few_targets",
    "no_local_share",
    "no_capacity",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection hyper server answering `body` to any request; returns its address
    /// and the path it was asked for.
    async fn metadata_server(
        status: u16,
        body: &'static str,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = std::sync::Mutex::new(Some(tx));
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(req.uri().path().to_string());
                }
                async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                body.as_bytes(),
                            )))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn metadata_answer_gives_the_zone() {
        let (addr, path) =
            metadata_server(200, r#"{"Cluster":"c","AvailabilityZone":"us-east-1b"}"#).await;
        let z = task_zone(&format!("http://{addr}/v4/abc")).await.unwrap();
        assert_eq!(z, "us-east-1b");
        assert_eq!(path.await.unwrap(), "/v4/abc/task");
    }

    #[tokio::test]
    async fn metadata_without_a_valid_zone_is_an_error() {
        for (status, body) in [
            (200, r#"{"Cluster":"c"}"#),
            (200, r#"{"AvailabilityZone":"a b"}"#),
            (200, "not json"),
            (500, r#"{"AvailabilityZone":"us-east-1a"}"#),
        ] {
            let (addr, _) = metadata_server(status, body).await;
            let r = task_zone(&format!("http://{addr}/v4/x")).await;
            assert!(
                matches!(
                    r,
                    Err(MetadataError::Answer { .. } | MetadataError::Http { .. })
                ),
                "{status} {body}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn bad_metadata_uri_is_refused() {
        assert!(matches!(
            task_zone("ftp://x/y").await,
            Err(MetadataError::BadUri(_))
        ));
        assert!(matches!(
            task_zone("not a uri").await,
            Err(MetadataError::BadUri(_))
        ));
    }

    fn target(last: u8, zone: Option<&str>) -> Arc<Target> {
        let t = Target::new(format!("127.0.0.{last}:80").parse().unwrap(), 1, false);
        t.set_zone(zone);
        Arc::new(t)
    }

    #[test]
    fn proxy_zones_weigh_the_fleet_and_add_target_less_zones() {
        // Targets: 2 in a, 2 in b. Proxies: 3 in a, 1 in b, 1 in d (no targets there).
        let list = vec![
            target(2, Some("a")),
            target(3, Some("a")),
            target(4, Some("b")),
            target(5, Some("b")),
        ];
        let za = ZoneAware {
            enabled: true,
            min_targets: 1,
            proxy_zones: vec![("a".into(), 3), ("b".into(), 1), ("d".into(), 1)],
        };
        // In a: half the capacity against 3/5 of the fleet: 5/6 stay local.
        let idx = ZoneIndex::build(&list, Some(Arc::from("a")), &za);
        let ZoneRoute::Spill { local_parts, .. } = *idx.refresh(&za, 1, |_| 100) else {
            panic!("a spills")
        };
        assert_eq!(local_parts, 8333);
        // In b: half the capacity against 1/5: all local.
        let idx = ZoneIndex::build(&list, Some(Arc::from("b")), &za);
        assert_eq!(*idx.refresh(&za, 1, |_| 100), ZoneRoute::Local);
        // In d: a slot without targets; everything spills, all of it to b (a has no surplus).
        let idx = ZoneIndex::build(&list, Some(Arc::from("d")), &za);
        assert_eq!(idx.names.len(), 3);
        let r = idx.refresh(&za, 1, |_| 100);
        let d = idx.local.unwrap();
        assert_eq!(r.share(d, d, 0.0), 0.0);
        assert!((r.share(d, 1, 0.0) - 1.0).abs() < 1e-9, "{r:?}");
        // In e, a zone nobody listed: no share of the fleet, plain balancing.
        let idx = ZoneIndex::build(&list, Some(Arc::from("e")), &za);
        assert_eq!(
            *idx.refresh(&za, 1, |_| 100),
            ZoneRoute::All(Off::NoLocalShare)
        );
    }

    #[test]
    fn index_groups_by_zone_with_an_unknown_slot() {
        let list = vec![
            target(2, Some("b")),
            target(3, Some("a")),
            target(4, None),
            target(5, Some("a")),
        ];
        let za = ZoneAware {
            enabled: true,
            min_targets: 1,
            proxy_zones: Vec::new(),
        };
        let idx = ZoneIndex::build(&list, Some(Arc::from("a")), &za);
        assert_eq!(idx.names.len(), 2);
        assert_eq!(idx.slot_of, vec![1, 0, 2, 0]);
        assert_eq!(idx.local, Some(0));
        assert_eq!(
            idx.locality,
            vec![
                Locality::CrossZone,
                Locality::SameZone,
                Locality::Unknown,
                Locality::SameZone
            ]
        );
        // a: 2 of 4 healthy capacity, fleet a/b evenly: local.
        let r = idx.refresh(&za, 1, |_| 100);
        assert_eq!(*r, ZoneRoute::Local);
        list[1].set_status(Status::Unhealthy);
        list[3].set_status(Status::Unhealthy);
        let r = idx.refresh(&za, 1, |_| 100);
        assert_eq!(r.share(0, 0, 0.0), 0.0, "{r:?}");
        // Without an own zone, or disabled: off.
        let idx = ZoneIndex::build(&list, None, &za);
        assert_eq!(
            *idx.refresh(&za, 1, |_| 100),
            ZoneRoute::All(Off::OwnZoneUnknown)
        );
        let off = ZoneAware {
            enabled: false,
            ..za
        };
        assert_eq!(
            *idx.refresh(&off, 1, |_| 100),
            ZoneRoute::All(Off::Disabled)
        );
    }
}
