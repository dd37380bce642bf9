//! Bytes from a peer, as the TCP ingress sees them: a stream of frames in
//! the `iso87` dialect. Each whole frame is decoded, read as a request and
//! encoded again, and must come back byte for byte. The same bytes also go
//! to the `iso87-hex` dialect, framed and unframed, and to the BER-TLV parser
//! (DE55), since each is reachable from a peer.
//!
//! A panic anywhere is a finding. `protocol/tests/properties.rs` checks the
//! same invariants with proptest on every `cargo test`; this target explores
//! further, guided by coverage.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use protocol::iso::Request;
use protocol::spec::{BitmapEncoding, MtiEncoding};
use protocol::{Message, Spec, tlv};

// Built once: loading a dialect parses TOML, which would otherwise dominate
// every run.
static ISO87: LazyLock<Spec> =
    LazyLock::new(|| Spec::iso87().unwrap_or_else(|error| panic!("iso87: {error}")));
static ISO87_HEX: LazyLock<Spec> = LazyLock::new(|| {
    Spec::builtin("iso87-hex").unwrap_or_else(|error| panic!("iso87-hex: {error}"))
});

fuzz_target!(|data: &[u8]| {
    decode_stream(&ISO87, data);
    decode_stream(&ISO87_HEX, data);
    decode_payload(&ISO87_HEX, data);
    check_tlv(data);
});

/// Splits whole frames off `stream` as a connection does, until the rest is
/// incomplete or its header is broken (where the switch closes the
/// connection).
fn decode_stream(spec: &Spec, stream: &[u8]) {
    let framing = spec.framing();
    let mut rest = stream;
    while let Ok(Some((payload, used))) = framing.split(rest) {
        assert!(used > payload.len(), "a frame with no header");
        assert!(payload.len() <= framing.frame_length_max);
        decode_payload(spec, payload);
        rest = rest.get(used..).unwrap_or_default();
    }
}

/// Decodes one payload and, if it decodes, does everything the switch does
/// with a message: the typed view, the masked log line, DE55, and encoding.
fn decode_payload(spec: &Spec, payload: &[u8]) {
    let Ok(message) = Message::decode(spec, payload) else {
        return;
    };
    let _ = Request::parse(&message);
    let _ = format!("{message:?}");
    let _ = message.masked_fields(spec).count();
    if let Some(icc) = message.get(55) {
        check_tlv(icc);
    }

    let mut reencoded = Vec::with_capacity(payload.len());
    if let Err(error) = message.encode(spec, &mut reencoded) {
        panic!("a decoded message does not encode: {error}");
    }
    let expected = payload.to_vec();
    match spec.bitmap_encoding() {
        // iso87: binary bitmaps and ASCII fields have one spelling each.
        BitmapEncoding::Binary => assert!(reencoded == expected, "re-encoding differs"),
        // iso87-hex reads hex digits in either case and writes upper case.
        BitmapEncoding::Hex => assert!(
            reencoded.eq_ignore_ascii_case(&expected),
            "re-encoding differs beyond the case of hex digits"
        ),
    }
}


/// BER-TLV that parses is written back byte for byte.
fn check_tlv(bytes: &[u8]) {
    if let Ok(items) = tlv::parse(bytes) {
        let mut rebuilt = Vec::with_capacity(bytes.len());
        tlv::write_all(&items, &mut rebuilt);
        assert!(rebuilt == bytes, "BER-TLV is not rebuilt byte for byte");
    }
}
