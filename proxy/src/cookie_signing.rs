//! Signed cookie values and the process's signing keys, for stickiness cookies (see
//! [`crate::l7::sticky`] for what the cookies name and when they are set).
//!
//! A value is base64url (no padding) of 29 bytes: a kind byte (1 target, 2 group), the expiry
//! as Unix seconds (u32, big-endian), the id of what it names (u64), and the first 16 bytes of
//! HMAC-SHA256(key, those 13 bytes ‖ context). The context binds a value to where it was
//! issued. The server decides expiry: it is signed, and a value past it is refused whatever
//! the cookie's `Max-Age` said. Tags are compared in constant time
//! ([`Mac::verify_truncated_left`]).
//!
//! The key is `proxy.stickiness_key`; without one each process makes a random key, so cookies
//! survive neither a restart nor a move to another replica. When a reload changes the key,
//! the previous one is still accepted for the longest stickiness duration of the new
//! configuration: cookies issued just before the change stay valid until they expire.
//! [`install_keys`] runs for every configuration generation (in [`crate::runtime`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_config::model::{Action, Config, StickinessKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the signed payload: kind, expiry, id.
const PAYLOAD_LEN: usize = 13;
/// Bytes of the HMAC-SHA256 tag kept (128 bits).
const TAG_LEN: usize = 16;
/// Bytes of a whole cookie value before base64.
const VALUE_LEN: usize = PAYLOAD_LEN + TAG_LEN;
/// Kind byte of a cookie naming a target.
pub const KIND_TARGET: u8 = 1;
/// Kind byte of a cookie naming a target group.
pub const KIND_GROUP: u8 = 2;

/// Why a cookie was ignored: the `reason` label of the rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed, or its MAC does not verify under any accepted key (forged, tampered, or
    /// issued for another group or action).
    Invalid,
    /// Signed by berth, but past its signed expiry.
    Expired,
    /// Signed and current, but what it names is gone: a target not (or no longer) a healthy
    /// member of the group, or a group no longer in the action with a weight above 0.
    UnknownTarget,
}

impl Rejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::Expired => "expired",
            Rejection::UnknownTarget => "unknown_target",
        }
    }
}

/// One HMAC-SHA256 key, keyed once: each cookie clones the keyed state instead of hashing
/// the key again.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl Signer {
    /// A signer for `key`.
    pub fn new(key: &[u8; 32]) -> Signer {
        // HMAC pads a key shorter than its block (64 bytes) with zeros: this is the keying of
        // `new_from_slice(key)`, without its error branch.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        Signer {
            mac: <HmacSha256 as KeyInit>::new(&block.into()),
        }
    }

    fn keyed(&self, payload: &[u8], context: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.update(context);
        mac
    }

    /// The cookie value naming `id` of `kind` until `expiry` (Unix seconds), for `context`.
    pub fn seal(&self, kind: u8, expiry: u32, id: u64, context: &[u8]) -> String {
        let mut bytes = [0u8; VALUE_LEN];
        bytes[0] = kind;
        bytes[1..5].copy_from_slice(&expiry.to_be_bytes());
        bytes[5..13].copy_from_slice(&id.to_be_bytes());
        let tag = self
            .keyed(&bytes[..PAYLOAD_LEN], context)
            .finalize()
            .into_bytes();
        bytes[PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Decodes a cookie value of `kind` and verifies its tag under one of `signers` (constant
/// time), then its expiry against `now` (Unix seconds); the id it names on success.
pub fn open(
    signers: &[&Signer],
    value: &str,
    kind: u8,
    context: &[u8],
    now: u64,
) -> Result<u64, Rejection> {
    let mut bytes = [0u8; VALUE_LEN + 3];
    // A value of the wrong length or alphabet is refused before any MAC work.
    let n = URL_SAFE_NO_PAD
        .decode_slice(value.as_bytes(), &mut bytes)
        .map_err(|_| Rejection::Invalid)?;
    if n != VALUE_LEN || bytes[0] != kind {
        return Err(Rejection::Invalid);
    }
    let (payload, tag) = bytes[..VALUE_LEN].split_at(PAYLOAD_LEN);
    let verified = signers
        .iter()
        .any(|s| s.keyed(payload, context).verify_truncated_left(tag).is_ok());
    if !verified {
        return Err(Rejection::Invalid);
    }
    let mut expiry = [0u8; 4];
    expiry.copy_from_slice(&payload[1..5]);
    if u64::from(u32::from_be_bytes(expiry)) < now {
        return Err(Rejection::Expired);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[5..13]);
    Ok(u64::from_be_bytes(id))
}

/// The keys cookies are checked with: the current one (which also signs), and after a key
/// change the previous one, until a deadline.
pub struct KeyRing {
    key: [u8; 32],
    /// The signer of new cookies.
    pub current: Signer,
    previous: Option<(Signer, u64)>,
}

impl KeyRing {
    /// The signers a cookie may verify under at `now` (Unix seconds).
    fn accepted(&self, now: u64) -> ([&Signer; 2], usize) {
        match &self.previous {
            Some((p, until)) if now <= *until => ([&self.current, p], 2),
            _ => ([&self.current, &self.current], 1),
        }
    }
}

/// The running key ring; set by [`install_keys`] for every configuration generation.
static RING: OnceLock<ArcSwap<KeyRing>> = OnceLock::new();
/// Serialises [`install_keys`] (reloads are serialised already; this keeps it so).
static INSTALL: Mutex<()> = Mutex::new(());
/// This process's random key, made once, for configurations without `stickiness_key`.
static RANDOM_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// 32 bytes from the operating system's secure random source (through rustls' `ring`).
fn random_key() -> [u8; 32] {
    *RANDOM_KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        let rng = rustls::crypto::ring::default_provider().secure_random;
        if rng.fill(&mut k).is_err() {
            // No secure source: fall back to /dev/urandom directly.
            if let Err(e) = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
            {
                tracing::error!(error = %e, "no secure random source for the stickiness key; cookies are weakly protected until stickiness_key is set");
                k.iter_mut().for_each(|b| *b = fastrand::u8(..));
            }
        }
        k
    })
}

/// Whether anything in `config` uses stickiness cookies.
fn uses_stickiness(config: &Config) -> bool {
    config.target_groups.iter().any(|g| g.stickiness.is_some())
        || config.listeners.iter().any(|l| {
            std::iter::once(&l.default_action)
                .chain(l.rules.iter().map(|r| &r.action))
                .any(|a| matches!(a, Action::Forward(f) if f.stickiness.is_some()))
        })
}

/// The longest stickiness duration in `config` (1 day when none is set).
fn longest_duration(config: &Config) -> Duration {
    let groups = config
        .target_groups
        .iter()
        .filter_map(|g| g.stickiness.as_ref().map(|s| s.duration));
    let actions = config.listeners.iter().flat_map(|l| {
        std::iter::once(&l.default_action)
            .chain(l.rules.iter().map(|r| &r.action))
            .filter_map(|a| match a {
                Action::Forward(f) => f.stickiness.as_ref().map(|s| s.duration),
                _ => None,
            })
    });
    groups
        .chain(actions)
        .max()
        .unwrap_or(Duration::from_secs(86_400))
}

/// Makes `config`'s key the signing key (called for every configuration generation, before
/// it serves). The first time without `stickiness_key`, while stickiness is in use, warns that
/// cookies will not survive a restart or work across replicas. A changed key keeps the previous
/// one for verification for the longest stickiness duration.
pub fn install_keys(config: &Config) {
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let key = match &config.proxy.stickiness_key {
        Some(StickinessKey(k)) => *k,
        None => {
            if uses_stickiness(config) && RANDOM_KEY.get().is_none() {
                tracing::warn!("proxy.stickiness_key is not set: stickiness cookies are signed with a random key of this process, so they are not honoured after a restart nor by other replicas; set the same stickiness_key on every replica");
            }
            random_key()
        }
    };
    let current = Signer::new(&key);
    match RING.get() {
        None => {
            let _ = RING.set(ArcSwap::from_pointee(KeyRing {
                key,
                current,
                previous: None,
            }));
        }
        Some(ring) => {
            let old = ring.load_full();
            if old.key == key {
                return;
            }
            let until = unix_now() + longest_duration(config).as_secs();
            tracing::info!(
                accepted_for_seconds = longest_duration(config).as_secs(),
                "stickiness key changed; cookies signed with the previous key are still accepted until they expire"
            );
            ring.store(Arc::new(KeyRing {
                key,
                current,
                previous: Some((old.current.clone(), until)),
            }));
        }
    }
}

/// The running key ring, made from a random key if [`install_keys`] never ran (unit tests).
pub fn ring() -> arc_swap::Guard<Arc<KeyRing>> {
    RING.get_or_init(|| {
        let key = random_key();
        let current = Signer::new(&key);
        ArcSwap::from_pointee(KeyRing {
            key,
            current,
            previous: None,
        })
    })
    .load()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens `value` with the running keys.
pub fn open_now(value: &str, kind: u8, context: &[u8]) -> Result<u64, Rejection> {
    let ring = ring();
    let now = unix_now();
    let (signers, n) = ring.accepted(now);
    open(&signers[..n], value, kind, context, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(b: u8) -> Signer {
        Signer::new(&[b; 32])
    }

    #[test]
    fn keying_matches_hmac_of_the_32_byte_key() {
        let key = [9u8; 32];
        let mut a = HmacSha256::new_from_slice(&key).unwrap();
        a.update(b"x");
        let mut b = Signer::new(&key).mac;
        b.update(b"x");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }

    #[test]
    fn a_sealed_cookie_opens_with_its_key_and_context_only() {
        let (k1, k2) = (signer(1), signer(2));
        let v = k1.seal(KIND_TARGET, 2_000, 0xabcd, b"blue");
        assert_eq!(v.len(), 39);
        assert_eq!(open(&[&k1], &v, KIND_TARGET, b"blue", 1_000), Ok(0xabcd));
        // Another key, another group, another kind: invalid.
        assert_eq!(
            open(&[&k2], &v, KIND_TARGET, b"blue", 1_000),
            Err(Rejection::Invalid)
        );
        assert_eq!(
            open(&[&k1], &v, KIND_TARGET, b"green", 1_000),
            Err(Rejection::Invalid)
        );
        assert_eq!(
            open(&[&k1], &v, KIND_GROUP, b"blue", 1_000),
            Err(Rejection::Invalid)
        );
        // The previous key of a ring still opens it.
        assert_eq!(
            open(&[&k2, &k1], &v, KIND_TARGET, b"blue", 1_000),
            Ok(0xabcd)
        );
        // Past its signed expiry: expired.
        assert_eq!(
            open(&[&k1], &v, KIND_TARGET, b"blue", 2_001),
            Err(Rejection::Expired)
        );
    }

    #[test]
    fn tampered_truncated_and_forged_values_are_invalid() {
        let k = signer(7);
        let v = k.seal(KIND_TARGET, 2_000, 42, b"g");
        let mut bytes = URL_SAFE_NO_PAD.decode(&v).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x01;
            let t = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                open(&[&k], &t, KIND_TARGET, b"g", 1_000),
                Err(Rejection::Invalid),
                "byte {i} flipped"
            );
            bytes[i] ^= 0x01;
        }
        // A later expiry written over a valid cookie breaks the MAC.
        bytes[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        let t = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            open(&[&k], &t, KIND_TARGET, b"g", 1_000),
            Err(Rejection::Invalid)
        );
        for bad in ["", "abc", &v[..38], &format!("{v}A"), "0123456789abcdef"] {
            assert_eq!(
                open(&[&k], bad, KIND_TARGET, b"g", 1_000),
                Err(Rejection::Invalid),
                "{bad:?}"
            );
        }
    }
}
