//! Criterion benchmarks across the switch's crates. Every benchmark measures a
//! baseline in the same run on the same machine (a peer crate, a `memcpy` of
//! the same bytes, an echo server, a raw bulk insert), so results are read as
//! ratios, which hold on a shared, noisy machine where absolute figures drift.
//!
//! `benches/codec.rs` decodes and encodes a realistic 0100 and 0110 with the
//! `protocol` codec and with `iso8583_rs`, the one other Rust ISO 8583 crate.
//! Run with `cargo bench -p benches`; figures are recorded in
//! `docs/BENCHMARKS.md`.
//!
//! This library holds what the benchmarks share: the seeded generator and the
//! family of card tokens they ask about.

use protocol::domain::Token;

/// SplitMix64: a seeded, well-spread sequence for keys and choices, the same
/// on every run so runs compare.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `n`th of a fixed family of tokens, spread like the keyed hashes real
/// tokens are.
pub fn token(n: u64) -> Token {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix(n).to_le_bytes());
    bytes[8..].copy_from_slice(&splitmix(!n).to_le_bytes());
    Token::from_bytes(bytes)
}
