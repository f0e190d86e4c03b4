//! Rollout waves: each instance has a fixed bucket from 0 to 99, derived from its ID alone, and
//! a release rolled out to `percent` reaches the buckets below it. Raising the percentage only
//! ever adds instances; the same instance is always in the same wave, on every server.

use sha2::{Digest, Sha256};

/// The instance's bucket: the first 8 bytes of SHA-256 of its ID, big-endian, modulo 100.
pub fn wave_bucket(instance_id: &str) -> u8 {
    let digest = Sha256::digest(instance_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 100, so it fits.
    (u64::from_be_bytes(first) % 100) as u8
}

/// Whether a release rolled out to `percent` reaches an instance in `bucket`.
pub fn in_wave(bucket: u8, percent: u8) -> bool {
    bucket < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_the_bucket_is_stable() {
        // Fixed values: a change here would move every instance of the fleet to another wave.
        assert_eq!(wave_bucket("00000000-0000-4000-8000-000000000000"), 18);
        assert_eq!(wave_bucket("3f6c1a52-7d4e-4b1a-9c55-2e8f0d3b7a61"), 59);
        for id in ["a", "b", "instance-42"] {
            assert_eq!(wave_bucket(id), wave_bucket(id));
        }
    }

    #[test]
    fn control_plane_buckets_spread_evenly() {
        let mut counts = [0u32; 100];
        for index in 0..100_000 {
            counts[usize::from(wave_bucket(&format!("instance-{index}")))] += 1;
        }
        // 1,000 expected per bucket; a stable hash stays well within ±20 %.
        assert!(
            counts.iter().all(|count| (800..1200).contains(count)),
            "{counts:?}"
        );
    }

    #[test]
    fn control_plane_percent_bounds() {
        assert!(!in_wave(0, 0));
        assert!(in_wave(0, 1));
        assert!(!in_wave(99, 99));
        assert!(in_wave(99, 100));
    }
}
