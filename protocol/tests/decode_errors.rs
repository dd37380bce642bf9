//! Every way inbound bytes can be wrong gets a typed error naming the element
//! and the reason, and the fields read before the bad one stay readable so
//! the switch can still answer DE39 30 with the acquirer's keys.

// A test that unwraps is a test that fails loudly; helpers outside #[test] too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::content_class::ContentClass;
use protocol::{DecodeError, Location, Message, Mti, Spec};

/// A valid iso87 0100 built by hand: MTI, bitmap, then fields in order.
fn build(fields: &[(u8, &[u8])]) -> Vec<u8> {
    let mut bitmap = [0u8; 16];
    for &(n, _) in fields {
        let i = usize::from(n - 1);
        bitmap[i / 8] |= 0x80 >> (i % 8);
    }
    let secondary = fields.iter().any(|&(n, _)| n > 64);
    if secondary {
        bitmap[0] |= 0x80;
    }
    let mut out = b"0100".to_vec();
    out.extend_from_slice(&bitmap[..if secondary { 16 } else { 8 }]);
    for &(_, wire) in fields {
        out.extend_from_slice(wire);
    }
    out
}

fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    Message::decode(&Spec::iso87().unwrap(), bytes)
}

#[test]
fn a_well_formed_message_decodes() {
    let message = decode(&build(&[
        (2, b"164111111111111111"),
        (3, b"000000"),
        (11, b"000001"),
    ]))
    .unwrap();
    assert_eq!(message.mti(), Mti::AUTHORIZATION_REQUEST);
    assert_eq!(message.get_str(2), Some("4111111111111111"));
    assert_eq!(message.get_str(11), Some("000001"));
}

#[test]
fn a_field_over_its_maximum() {
    assert_eq!(
        decode(&build(&[(2, b"2041111111111111111111")])).unwrap_err(),
        DecodeError::FieldTooLong {
            field: 2,
            length: 20,
            length_max: 19
        }
    );
}

#[test]
fn a_non_digit_in_a_numeric_field() {
    assert_eq!(
        decode(&build(&[(3, b"00A000")])).unwrap_err(),
        DecodeError::NotInClass {
            location: Location::Field(3),
            class: ContentClass::N,
            position: 2
        }
    );
}

#[test]
fn a_length_prefix_that_is_not_digits_or_has_a_sign() {
    assert_eq!(
        decode(&build(&[(2, b"1x4111111111111111")])).unwrap_err(),
        DecodeError::LengthPrefixNotDigits {
            location: Location::Field(2)
        }
    );
    assert_eq!(
        decode(&build(&[(2, b"+9411111111")])).unwrap_err(),
        DecodeError::LengthPrefixSigned {
            location: Location::Field(2)
        }
    );
    assert_eq!(
        decode(&build(&[(48, b"-01X")])).unwrap_err(),
        DecodeError::LengthPrefixSigned {
            location: Location::Field(48)
        }
    );
}

#[test]
fn truncated_anywhere() {
    let whole = build(&[(2, b"164111111111111111"), (4, b"000000001000")]);
    assert_eq!(
        decode(&whole[..whole.len() - 3]).unwrap_err(),
        DecodeError::Truncated {
            location: Location::Field(4),
            needed: 12,
            available: 9
        }
    );
    assert_eq!(
        decode(&whole[..14]).unwrap_err(),
        DecodeError::Truncated {
            location: Location::Field(2),
            needed: 16,
            available: 0
        }
    );
    assert_eq!(
        decode(&whole[..13]).unwrap_err(),
        DecodeError::Truncated {
            location: Location::Field(2),
            needed: 2,
            available: 1
        }
    );
    assert_eq!(
        decode(&whole[..7]).unwrap_err(),
        DecodeError::Truncated {
            location: Location::PrimaryBitmap,
            needed: 8,
            available: 3
        }
    );
    assert_eq!(
        decode(b"01").unwrap_err(),
        DecodeError::Truncated {
            location: Location::Mti,
            needed: 4,
            available: 2
        }
    );
    let secondary = build(&[(3, b"000000"), (70, b"301")]);
    assert_eq!(
        decode(&secondary[..15]).unwrap_err(),
        DecodeError::Truncated {
            location: Location::SecondaryBitmap,
            needed: 8,
            available: 3
        }
    );
}

#[test]
fn trailing_bytes_after_the_last_field() {
    let mut bytes = build(&[(3, b"000000")]);
    bytes.extend_from_slice(b"XYZ");
    assert_eq!(
        decode(&bytes).unwrap_err(),
        DecodeError::TrailingBytes { count: 3 }
    );
}

#[test]
fn a_third_bitmap_is_rejected() {
    let mut bytes = build(&[(3, b"000000"), (70, b"301")]);
    bytes[12] |= 0x80; // bit 65, the first bit of the secondary bitmap
    assert_eq!(decode(&bytes).unwrap_err(), DecodeError::TertiaryBitmap);
}

#[test]
fn a_bitmap_naming_a_field_the_dialect_lacks() {
    let spec = Spec::from_toml(
        r#"
name = "small"
[frame]
length_header = "binary2"
frame_length_max = 512
[message]
mti_encoding = "ascii"
bitmap_encoding = "binary"
text_encoding = "ascii"
binary_encoding = "binary"
length_encoding = "ascii"
[fields]
3 = { name = "Processing code", kind = "fixed", length = 6, class = "n" }
"#,
        std::path::Path::new("small.toml"),
    )
    .unwrap();
    let bytes = build(&[(3, b"000000"), (4, b"000000000100")]);
    assert_eq!(
        Message::decode(&spec, &bytes).unwrap_err(),
        DecodeError::UnknownField { field: 4 }
    );
}

#[test]
fn a_bad_mti() {
    let mut bytes = build(&[(3, b"000000")]);
    bytes[1] = b'x';
    assert_eq!(
        decode(&bytes).unwrap_err(),
        DecodeError::NotInClass {
            location: Location::Mti,
            class: ContentClass::N,
            position: 1
        }
    );
}

#[test]
fn hex_dialect_errors() {
    let spec = Spec::builtin("iso87-hex").unwrap();
    let mut bytes = b"0100".to_vec();
    bytes.extend_from_slice(b"00000000000002G0");
    assert_eq!(
        Message::decode(&spec, &bytes).unwrap_err(),
        DecodeError::NotHex {
            location: Location::PrimaryBitmap,
            position: 14
        }
    );
    // DE55 alone: bit 55 set; its LLL prefix counts hex characters and must be even.
    let mut bytes = b"0100".to_vec();
    bytes.extend_from_slice(b"0000000000000200");
    bytes.extend_from_slice(b"0039F2");
    assert_eq!(
        Message::decode(&spec, &bytes).unwrap_err(),
        DecodeError::OddHexLength {
            field: 55,
            length: 3
        }
    );
    let mut bytes = b"0100".to_vec();
    bytes.extend_from_slice(b"0000000000000200");
    bytes.extend_from_slice(b"0069F2X");
    assert_eq!(
        Message::decode(&spec, &bytes).unwrap_err(),
        DecodeError::Truncated {
            location: Location::Field(55),
            needed: 6,
            available: 4
        }
    );
    bytes.extend_from_slice(b"00");
    assert_eq!(
        Message::decode(&spec, &bytes).unwrap_err(),
        DecodeError::NotHex {
            location: Location::Field(55),
            position: 3
        }
    );
}

#[test]
fn fields_before_the_bad_one_stay_readable() {
    let bytes = build(&[
        (3, b"000000"),
        (11, b"000042"),
        (41, b"TERM0001"),
        (49, b"8\x0040"),
    ]);
    let spec = Spec::iso87().unwrap();
    let mut message = Message::with_capacity(256);
    let error = message.decode_into(&spec, &bytes).unwrap_err();
    assert_eq!(error.field(), Some(49));
    assert_eq!(message.mti(), Mti::AUTHORIZATION_REQUEST);
    assert_eq!(message.get_str(11), Some("000042"));
    assert_eq!(message.get_str(41), Some("TERM0001"));
    assert!(!message.has(49));
}

#[test]
fn errors_never_carry_field_contents() {
    let pan = b"4111111111111111";
    let mut field = b"20".to_vec();
    field.extend_from_slice(pan);
    field.extend_from_slice(b"1234");
    let error = decode(&build(&[(2, &field)])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "field 2: length 20 is over the maximum 19"
    );
    let mut field = b"16".to_vec();
    field.extend_from_slice(b"41111111x1111111");
    let error = decode(&build(&[(2, &field)])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "field 2: byte 8 is not allowed in a `n` value"
    );
}

#[test]
fn an_all_zero_secondary_bitmap_is_kept_on_re_encoding() {
    // Some hosts always send a secondary bitmap; bit 1 set, no field 65-128.
    let mut bytes = b"0800".to_vec();
    bytes.extend_from_slice(&[0x80 | 0x20, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(b"000000");
    let spec = Spec::iso87().unwrap();
    let message = Message::decode(&spec, &bytes).unwrap();
    assert_eq!(message.fields().count(), 1);
    let mut encoded = Vec::new();
    message.encode(&spec, &mut encoded).unwrap();
    assert_eq!(encoded, bytes);
}
