//! Criterion benchmarks across the switch's crates. Every benchmark measures a
//! baseline in the same run on the same machine (a peer crate, a `memcpy` of
//! the same bytes, an echo server, a raw bulk insert), so results are read as
//! ratios, which hold on a shared, noisy machine where absolute figures drift.
//!
//! `benches/codec.rs` decodes and encodes a realistic 0100 and 0110 with the
//! `protocol` codec and with `iso8583_rs`, the one other Rust ISO 8583 crate.
//! Run with `cargo bench -p benches`; figures are recorded in
//! `docs/BENCHMARKS.md`.
