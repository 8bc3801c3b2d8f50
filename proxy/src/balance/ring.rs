//! The consistent-hash ring (ketama style): each target owns `VNODES × weight` points hashed
//! from its address, so every replica of berth builds the same ring from the same targets.

use std::sync::Arc;

use crate::target::{fnv1a, Target};

/// Points per unit of weight.
const VNODES: u32 = 160;

/// A ring of (point, target index) sorted by point.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring for a target list (indices refer to that list).
    pub fn build(targets: &[Arc<Target>]) -> Ring {
        let mut points = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let n = VNODES * t.weight().min(100);
            for v in 0..n {
                let key = format!("{}#{v}", t.label);
                points.push((mix(fnv1a(key.as_bytes())), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first index at or after `key` (wrapping) for which `ok` holds.
    pub fn lookup(&self, key: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let key = mix(key);
        let start = self.points.partition_point(|p| p.0 < key);
        let n = self.points.len();
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|i| ok(*i))
    }
}

/// A finaliser (from SplitMix64) that spreads FNV's weak low bits across the ring.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
