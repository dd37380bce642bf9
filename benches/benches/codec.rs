//! ISO 8583 decode and encode: the `protocol` codec beside `iso8583_rs` (the
//! one other Rust ISO 8583 crate) and a `memcpy` of the same bytes, in one
//! run on one machine, so the ratios hold wherever it runs.
//!
//! The messages are golden vectors produced by pyiso8583 (see
//! `protocol/tests/vectors/README.md`): a chip-and-PIN 0100 with 21 fields,
//! DE55 among them, and its 0110. iso8583_rs reads its dialect from the file
//! `SPEC_FILE` names, which `.cargo/config.toml` sets for cargo's processes.
//!
//! Run: `cargo bench -p benches --bench codec`.

// A benchmark that cannot set itself up should stop loudly, and `iso8583_rs`
// offers no way to report errors but panics and unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iso8583_rs::iso8583::iso_spec;
use protocol::{Message, Spec};

const VECTORS: &str = include_str!("../../protocol/tests/vectors/iso87.json");

fn wire(name: &str) -> Vec<u8> {
    let vectors: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let vector = vectors
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector named {name}"));
    protocol::encoding::from_hex(vector["wire"].as_str().unwrap()).unwrap()
}

fn codec(c: &mut Criterion) {
    let spec = Spec::iso87().unwrap();
    let peer = iso_spec::spec("");
    for (label, name) in [
        ("0100", "0100-visa-chip-pin-emv-arqc"),
        ("0110", "0110-approved-visa-chip-emv-arpc"),
    ] {
        let wire = wire(name);
        let mut message = Message::with_capacity(wire.len() * 2);
        let mut out = Vec::with_capacity(wire.len() * 2);

        // Both codecs must reproduce the message before their speed means anything.
        message.decode_into(&spec, &wire).unwrap();
        message.encode(&spec, &mut out).unwrap();
        assert_eq!(out, wire, "protocol round trip of {name}");
        let mut peer_buffer = wire.clone();
        assert_eq!(
            peer.parse(&mut peer_buffer).unwrap().assemble().unwrap(),
            wire,
            "iso8583_rs round trip of {name}"
        );

        let mut group = c.benchmark_group(format!("{label} decode+encode"));
        group.throughput(Throughput::Bytes(u64::try_from(wire.len()).unwrap()));
        group.bench_function("protocol", |b| {
            b.iter(|| {
                message.decode_into(&spec, black_box(&wire)).unwrap();
                out.clear();
                message.encode(&spec, &mut out).unwrap();
                black_box(&out);
            })
        });
        group.bench_function("iso8583_rs", |b| {
            b.iter(|| {
                black_box(
                    peer.parse(black_box(&mut peer_buffer))
                        .unwrap()
                        .assemble()
                        .unwrap(),
                )
            })
        });
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(&wire));
                black_box(&out);
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("{label} decode"));
        group.throughput(Throughput::Bytes(u64::try_from(wire.len()).unwrap()));
        group.bench_function("protocol", |b| {
            b.iter(|| message.decode_into(&spec, black_box(&wire)).unwrap())
        });
        group.bench_function("protocol fresh message", |b| {
            b.iter(|| black_box(Message::decode(&spec, black_box(&wire)).unwrap()))
        });
        group.bench_function("iso8583_rs", |b| {
            b.iter(|| black_box(peer.parse(black_box(&mut peer_buffer)).unwrap()))
        });
        group.finish();

        message.decode_into(&spec, &wire).unwrap();
        let peer_message = peer.parse(&mut peer_buffer).unwrap();
        let mut group = c.benchmark_group(format!("{label} encode"));
        group.throughput(Throughput::Bytes(u64::try_from(wire.len()).unwrap()));
        group.bench_function("protocol", |b| {
            b.iter(|| {
                out.clear();
                message.encode(&spec, black_box(&mut out)).unwrap();
            })
        });
        group.bench_function("iso8583_rs", |b| {
            b.iter(|| black_box(peer_message.assemble().unwrap()))
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
