//! The decode hot path allocates nothing per field: a fresh message makes one
//! allocation for its whole value buffer, and a message reused across frames,
//! as a connection reuses it, makes none. dhat counts every heap block the
//! process allocates, so this is measured, not assumed.
//!
//! One test per file: dhat's profiler is global to the process.

// A test that unwraps is a test that fails loudly; helpers outside #[test] too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::encoding::from_hex;
use protocol::{Message, Spec};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn vector_wire(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/iso87.json"
    ))
    .unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vector = vectors
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap();
    from_hex(vector["wire"].as_str().unwrap()).unwrap()
}

#[test]
fn decoding_allocates_once_per_message_and_never_per_field() {
    let spec = Spec::iso87().unwrap();
    let wire = vector_wire("0100-visa-chip-pin-emv-arqc");
    let mut reused = Message::with_capacity(wire.len() * 2);
    let mut out = Vec::with_capacity(wire.len() * 2);

    let _profiler = dhat::Profiler::builder().testing().build();

    let mut fresh_blocks = Vec::new();
    for _ in 0..5 {
        let before = dhat::HeapStats::get().total_blocks;
        let fresh = Message::decode(&spec, &wire).unwrap();
        fresh_blocks.push(dhat::HeapStats::get().total_blocks - before);
        assert!(
            fresh.fields().count() >= 20,
            "the sample has {} fields",
            fresh.fields().count()
        );
    }
    // One block for the whole message, whatever its 21 fields (see below for
    // why the minimum of several rounds).
    assert_eq!(
        fresh_blocks.iter().min(),
        Some(&1),
        "fresh decodes: {fresh_blocks:?}"
    );

    // dhat counts every thread's allocations, and the test harness's own
    // threads may allocate now and then while this one runs. So the window is
    // measured several times: a decode or encode that allocated would show in
    // every round (100 blocks or more), the harness only in some.
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let before = dhat::HeapStats::get().total_blocks;
        for _ in 0..100 {
            reused.decode_into(&spec, &wire).unwrap();
            out.clear();
            reused.encode(&spec, &mut out).unwrap();
        }
        rounds.push(dhat::HeapStats::get().total_blocks - before);
    }
    assert_eq!(
        rounds.iter().min(),
        Some(&0),
        "100 decodes and encodes into reused buffers: {rounds:?}"
    );
    assert!(rounds.iter().all(|&blocks| blocks < 100), "{rounds:?}");
    assert_eq!(out, wire);
}
