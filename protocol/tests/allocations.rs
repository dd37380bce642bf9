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

    let before = dhat::HeapStats::get().total_blocks;
    let fresh = Message::decode(&spec, &wire).unwrap();
    let fresh_blocks = dhat::HeapStats::get().total_blocks - before;
    assert!(
        fresh.fields().count() >= 20,
        "the sample has {} fields",
        fresh.fields().count()
    );
    assert_eq!(
        fresh_blocks,
        1,
        "a fresh decode of {} fields",
        fresh.fields().count()
    );

    let before = dhat::HeapStats::get().total_blocks;
    for _ in 0..100 {
        reused.decode_into(&spec, &wire).unwrap();
        out.clear();
        reused.encode(&spec, &mut out).unwrap();
    }
    let reused_blocks = dhat::HeapStats::get().total_blocks - before;
    assert_eq!(
        reused_blocks, 0,
        "100 decodes and encodes into reused buffers"
    );
    assert_eq!(out, wire);
}
