//! The hashes that place an entity: which shard owns it, and where it sits in
//! that shard's maps.

use std::hash::{BuildHasherDefault, Hasher};

/// The shard's map hasher. Tokens are keyed hashes and merchants are
/// configured, so nobody can choose keys that collide, and SipHash's
/// protection against that is not worth its cost on every request. Words are
/// folded FxHash-style and finished with SplitMix64's mixer so the low bits
/// the table indexes by depend on every byte.
#[derive(Default)]
pub(super) struct EntityHasher {
    hash: u64,
}

pub(super) type EntityHash = BuildHasherDefault<EntityHasher>;

impl Hasher for EntityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.hash =
                (self.hash.rotate_left(5) ^ word(chunk)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.hash)
    }
}

/// Up to eight bytes as a little-endian word.
fn word(chunk: &[u8]) -> u64 {
    chunk
        .iter()
        .rev()
        .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
}

/// SplitMix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash that picks a shard. It differs from the map's (another fold,
/// another seed), so the keys one shard holds are not all alike in the bits
/// its map indexes by.
fn shard_hash(bytes: &[u8]) -> u64 {
    let folded = bytes.chunks(8).fold(0x2545_f491_4f6c_dd1d, |hash, chunk| {
        (hash ^ word(chunk)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    mix(folded)
}

/// A hash to a shard index by its high bits (Lemire's multiply-shift), which
/// avoids a division and a bias towards low indices.
fn pick(hash: u64, shard_count: usize) -> usize {
    // A shard count fits 128 bits, and the product shifted down is below the
    // shard count, so it fits a `usize`; shard 0 is the fallback that always
    // exists.
    let shard_count = u128::try_from(shard_count).unwrap_or(0);
    usize::try_from((u128::from(hash) * shard_count) >> 64).unwrap_or(0)
}

/// The shard, of `shard_count`, that owns the entity keyed by `key`: a
/// card's token or a merchant's id.
pub(super) fn shard_of(key: &[u8], shard_count: usize) -> usize {
    pick(shard_hash(key), shard_count)
}

#[cfg(test)]
pub(super) mod tests {
    use protocol::domain::Token;

    use super::*;

    /// A token from a counter, spread like the keyed hashes real tokens are.
    pub(in crate::shard) fn token(n: u64) -> Token {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mix(n).to_le_bytes());
        bytes[8..].copy_from_slice(&mix(!n).to_le_bytes());
        Token::from_bytes(bytes)
    }

    #[test]
    fn cards_spread_evenly_over_shards() {
        let mut per_shard = [0u32; 3];
        for n in 0..30_000 {
            per_shard[shard_of(token(n).as_bytes(), 3)] += 1;
        }
        for count in per_shard {
            assert!((9_500..10_500).contains(&count), "{per_shard:?}");
        }
    }
}
