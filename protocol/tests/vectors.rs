//! Golden vectors: messages encoded by pyiso8583, an independent ISO 8583
//! implementation (see `vectors/README.md`), in both shipped dialects. Each
//! must decode to the fields pyiso8583 was given and encode back to the very
//! same bytes, framed and unframed.

// A test that unwraps is a test that fails loudly; helpers outside #[test] too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::encoding::{from_hex, to_hex};
use protocol::tlv;
use protocol::{Message, Spec};
use serde_json::Value;

fn vectors(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(
        vectors.len() >= 30,
        "{path} holds only {} vectors",
        vectors.len()
    );
    vectors
}

fn check_dialect(dialect: &str, file: &str) {
    let spec = Spec::builtin(dialect).unwrap();
    for vector in vectors(file) {
        let name = vector["name"].as_str().unwrap();
        let wire = from_hex(vector["wire"].as_str().unwrap()).unwrap();
        let framed = from_hex(vector["framed"].as_str().unwrap()).unwrap();

        let message =
            Message::decode(&spec, &wire).unwrap_or_else(|e| panic!("{dialect} {name}: {e}"));
        assert_eq!(
            message.mti().as_str(),
            vector["mti"].as_str().unwrap(),
            "{name}"
        );

        let expected = vector["fields"].as_object().unwrap();
        let decoded: Vec<u8> = message.fields().map(|(n, _)| n).collect();
        let mut wanted: Vec<u8> = expected.keys().map(|k| k.parse().unwrap()).collect();
        wanted.sort_unstable();
        assert_eq!(decoded, wanted, "{dialect} {name}: fields present");
        for (key, value) in expected {
            let number: u8 = key.parse().unwrap();
            let field = spec.field(number).unwrap();
            let actual = message.get(number).unwrap();
            let actual = if field.class.is_text() {
                String::from_utf8(actual.to_vec()).unwrap()
            } else {
                to_hex(actual)
            };
            assert_eq!(
                actual,
                value.as_str().unwrap(),
                "{dialect} {name}: field {number}"
            );
        }

        let mut encoded = Vec::new();
        message.encode(&spec, &mut encoded).unwrap();
        assert_eq!(
            to_hex(&encoded),
            to_hex(&wire),
            "{dialect} {name}: re-encoded"
        );

        let (payload, used) = spec.framing().split(&framed).unwrap().unwrap();
        assert_eq!(
            (payload, used),
            (&wire[..], framed.len()),
            "{dialect} {name}: framing"
        );
        let mut frame = Vec::new();
        message.encode_frame(&spec, &mut frame).unwrap();
        assert_eq!(
            to_hex(&frame),
            to_hex(&framed),
            "{dialect} {name}: re-framed"
        );

        if let Some(icc) = message.get(55) {
            let items = tlv::parse(icc).unwrap_or_else(|e| panic!("{name}: DE55: {e}"));
            let mut rebuilt = Vec::new();
            tlv::write_all(&items, &mut rebuilt);
            assert_eq!(to_hex(&rebuilt), to_hex(icc), "{name}: DE55 rebuilt");
        }
    }
}

#[test]
fn iso87_vectors_round_trip_byte_identical() {
    check_dialect("iso87", "iso87.json");
}

#[test]
fn iso87_hex_vectors_round_trip_byte_identical() {
    check_dialect("iso87-hex", "iso87-hex.json");
}

#[test]
fn the_two_dialects_carry_the_same_fields() {
    let iso87 = vectors("iso87.json");
    let hex = vectors("iso87-hex.json");
    assert_eq!(iso87.len(), hex.len());
    let (binary, ascii) = (
        Spec::builtin("iso87").unwrap(),
        Spec::builtin("iso87-hex").unwrap(),
    );
    for (a, b) in iso87.iter().zip(&hex) {
        let a = Message::decode(&binary, &from_hex(a["wire"].as_str().unwrap()).unwrap()).unwrap();
        let b = Message::decode(&ascii, &from_hex(b["wire"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn no_vector_shows_card_data_in_debug() {
    let spec = Spec::iso87().unwrap();
    for vector in vectors("iso87.json") {
        let message =
            Message::decode(&spec, &from_hex(vector["wire"].as_str().unwrap()).unwrap()).unwrap();
        let debug = format!("{message:?}");
        let masked: Vec<String> = message.masked_fields(&spec).map(|(_, v)| v).collect();
        let masked = masked.join(" ");
        for field in ["2", "35", "45", "52"] {
            if let Some(value) = vector["fields"][field].as_str() {
                assert!(
                    !debug.contains(value),
                    "{}: field {field} in Debug: {debug}",
                    vector["name"]
                );
                assert!(
                    !masked.contains(value),
                    "{}: field {field} in masked view",
                    vector["name"]
                );
            }
        }
    }
}
