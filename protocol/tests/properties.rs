//! Properties of the codec, checked on random messages built from each
//! dialect's own field table, on random bytes, and on valid messages with
//! random damage.
//!
//! Three dialects: the shipped `iso87` and `iso87-hex`, and a test-only one
//! that changes every representation the others leave alone (EBCDIC text, BCD
//! numerics and MTI, binary length prefixes, a 5-byte fixed header, a 4-byte
//! binary length header), so a property that holds for "any dialect" is
//! checked on more than ASCII.
//!
//! A failure prints the shrunk case with every value in clear (the values are
//! random, not card data) and saves its seed beside this file, in
//! `properties.proptest-regressions`, so the next run replays it first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

use protocol::content_class::ContentClass;
use protocol::encoding::{DataEncoding, LengthEncoding, ascii_to_ebcdic, ebcdic_to_ascii, to_hex};
use protocol::framing::FRAME_LENGTH_LIMIT;
use protocol::iso::Request;
use protocol::spec::{BitmapEncoding, FieldKind, MtiEncoding};
use protocol::{DecodeError, EncodeError, FieldSpec, LengthHeader, Message, Mti, Spec, tlv};

/// Every request and response MTI of the wire contract.
const CONTRACT_MTIS: [Mti; 14] = [
    Mti::AUTHORIZATION_REQUEST,
    Mti::AUTHORIZATION_REQUEST_REPEAT,
    Mti::AUTHORIZATION_RESPONSE,
    Mti::FINANCIAL_REQUEST,
    Mti::FINANCIAL_REQUEST_REPEAT,
    Mti::FINANCIAL_RESPONSE,
    Mti::REVERSAL_REQUEST,
    Mti::REVERSAL_REQUEST_REPEAT,
    Mti::REVERSAL_RESPONSE,
    Mti::REVERSAL_ADVICE,
    Mti::REVERSAL_ADVICE_REPEAT,
    Mti::REVERSAL_ADVICE_RESPONSE,
    Mti::NETWORK_MANAGEMENT_REQUEST,
    Mti::NETWORK_MANAGEMENT_RESPONSE,
];

/// The test-only dialect: `iso87`'s field table with every representation
/// the shipped dialects do not use.
const EBCDIC_BCD_TOML: &str = r#"
name = "test-ebcdic-bcd"
base = "iso87"

[frame]
length_header = "binary4"
header_length = 5

[message]
mti_encoding = "bcd"
text_encoding = "ebcdic"
numeric_encoding = "bcd"
length_encoding = "binary"
"#;

// A dialect that does not load fails every property at once, with its error.
static ISO87: LazyLock<Spec> =
    LazyLock::new(|| Spec::iso87().unwrap_or_else(|error| panic!("iso87: {error}")));
static ISO87_HEX: LazyLock<Spec> = LazyLock::new(|| {
    Spec::builtin("iso87-hex").unwrap_or_else(|error| panic!("iso87-hex: {error}"))
});
static EBCDIC_BCD: LazyLock<Spec> = LazyLock::new(|| {
    Spec::from_toml(
        EBCDIC_BCD_TOML,
        Path::new("tests/properties.rs (test-ebcdic-bcd)"),
    )
    .unwrap_or_else(|error| panic!("test-ebcdic-bcd: {error}"))
});

fn dialects() -> [&'static Spec; 3] {
    [&ISO87, &ISO87_HEX, &EBCDIC_BCD]
}

/// 512 cases per property keep the whole file to a few seconds in a debug
/// build; `PROPTEST_CASES=20000` makes a longer soak.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generating valid messages from a field table.

/// A valid message for one dialect.
#[derive(Clone, PartialEq)]
struct Generated(Message);

/// `Message`'s own `Debug` masks card data, which would hide the very value
/// that broke a property; these values are random, so show them all.
impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: BTreeMap<u8, Shown<'_>> = self
            .0
            .fields()
            .map(|(number, value)| (number, Shown(value)))
            .collect();
        f.debug_struct("Generated")
            .field("mti", &self.0.mti().as_str())
            .field("header", &self.0.header().map(Shown))
            .field("fields", &fields)
            .finish()
    }
}

/// Bytes as text when all printable, else as hex.
struct Shown<'a>(&'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) if self.0.iter().all(|b| (0x20..=0x7E).contains(b)) => {
                write!(f, "{text:?}")
            }
            _ => write!(f, "hex {}", to_hex(self.0)),
        }
    }
}

/// Owned bytes that print as hex, for the byte-level properties.
#[derive(Clone, PartialEq)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hex {} ({} bytes)", to_hex(&self.0), self.0.len())
    }
}

/// The characters a value of `class` may hold, written out from ISO 8583's
/// attribute notation rather than taken from the codec's own table, so the
/// two check each other. Class `b` and the sign of `x+n` are handled apart.
fn alphabet(class: ContentClass) -> Vec<u8> {
    let printable = 0x20u8..=0x7E;
    let allowed: fn(&u8) -> bool = match class {
        ContentClass::N | ContentClass::XN => u8::is_ascii_digit,
        ContentClass::A => |c| c.is_ascii_alphabetic() || *c == b' ',
        ContentClass::An => |c| c.is_ascii_alphanumeric() || *c == b' ',
        ContentClass::Ans => |_| true,
        ContentClass::Ns => |c| c.is_ascii_digit() || c.is_ascii_punctuation(),
        ContentClass::Z => |c| c.is_ascii_digit() || *c == b'=' || *c == b'D',
        ContentClass::B => |_| false,
    };
    printable.filter(allowed).collect()
}

/// A present field's value before it is spelled out: its length in units
/// and where its contents come from.
///
/// Drawing these rather than the bytes themselves makes shrinking cheap and
/// useful: proptest halves the length, then turns `random` off, which gives
/// the value of all-first characters (`000`, spaces), then drops the field.
/// Shrinking drawn bytes one at a time would spend the whole shrink budget
/// on one 999-character field.
#[derive(Debug, Clone, Copy)]
struct Draw {
    units: usize,
    random: bool,
    seed: u64,
}

/// SplitMix64, so a seed spells the same value on every run and platform.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `units` units of `class` spelled from `seed`.
fn class_value(class: ContentClass, draw: Draw) -> Vec<u8> {
    let Draw {
        units,
        random,
        seed,
    } = draw;
    let mut state = seed;
    let mut pick = |choices: &[u8]| {
        let at = if !random {
            0
        } else {
            let choice_count = u64::try_from(choices.len()).unwrap_or(u64::MAX);
            // Below `choices.len()`, so it fits a `usize`.
            usize::try_from(split_mix(&mut state) % choice_count).unwrap_or(0)
        };
        choices[at]
    };
    match class {
        ContentClass::B => {
            let bytes: Vec<u8> = (0..=u8::MAX).collect();
            (0..units).map(|_| pick(&bytes)).collect()
        }
        // The sign is one of the units.
        ContentClass::XN if units > 0 => {
            let digits = alphabet(class);
            let sign = pick(b"CD");
            std::iter::once(sign)
                .chain((1..units).map(|_| pick(&digits)))
                .collect()
        }
        _ => {
            let alphabet = alphabet(class);
            (0..units).map(|_| pick(&alphabet)).collect()
        }
    }
}

/// A draw for `field`, present with probability `density`: exactly
/// `length` units when fixed, else any length from 0 to the maximum, with
/// both ends drawn more often than their share because that is where prefix
/// and padding bugs live.
fn field_draw(
    field: &FieldSpec,
    density: f64,
) -> impl Strategy<Value = Option<(FieldSpec, Draw)>> + use<> {
    let length = field.length;
    let units = match field.kind {
        FieldKind::Fixed => Just(length).boxed(),
        FieldKind::Llvar | FieldKind::Lllvar => {
            prop_oneof![3 => 0..=length, 1 => Just(0), 1 => Just(length)].boxed()
        }
    };
    let field = field.clone();
    let draw = (
        units,
        proptest::bool::weighted(0.95),
        any::<u64>().no_shrink(),
    )
        .prop_map(move |(units, random, seed)| {
            (
                field.clone(),
                Draw {
                    units,
                    random,
                    seed,
                },
            )
        });
    proptest::option::weighted(density, draw)
}

/// Random valid messages for `spec`: a contract MTI, a random header when the
/// dialect has one, and a random subset of the fields `spec` defines, taken
/// from its table so any dialect works. Half the messages may use the
/// secondary bitmap; the density varies so that empty messages, sparse ones
/// and crowded ones (sometimes over the frame limit) all occur.
fn message(spec: &'static Spec) -> impl Strategy<Value = Generated> {
    let header = vec(any::<u8>(), spec.header_length());
    // Shrinking the density would draw a new message rather than a simpler
    // one, so only the draws shrink.
    let draws = (select(vec![0.01, 0.03, 0.1, 0.25]), any::<bool>()).prop_ind_flat_map(
        move |(density, secondary)| {
            spec.fields()
                .filter(|field| secondary || field.number < 65)
                .map(|field| field_draw(field, density))
                .collect::<Vec<_>>()
        },
    );
    (select(CONTRACT_MTIS.to_vec()), header, draws).prop_map(move |(mti, header, draws)| {
        let mut message = Message::new(mti);
        if spec.header_length() > 0 {
            message.set_header(&header);
        }
        for (field, draw) in draws.into_iter().flatten() {
            message.set(field.number, class_value(field.class, draw));
        }
        Generated(message)
    })
}

/// The requests of the wire contract.
const REQUEST_MTIS: [Mti; 9] = [
    Mti::AUTHORIZATION_REQUEST,
    Mti::AUTHORIZATION_REQUEST_REPEAT,
    Mti::FINANCIAL_REQUEST,
    Mti::FINANCIAL_REQUEST_REPEAT,
    Mti::REVERSAL_REQUEST,
    Mti::REVERSAL_REQUEST_REPEAT,
    Mti::REVERSAL_ADVICE,
    Mti::REVERSAL_ADVICE_REPEAT,
    Mti::NETWORK_MANAGEMENT_REQUEST,
];

fn digits(count: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<u8>> {
    vec(select(alphabet(ContentClass::N)), count)
}

fn printable(count: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(select(alphabet(ContentClass::Ans)), count)
}

/// BER-TLV as a terminal writes DE55: primitive items with one- and
/// two-byte tags, sensitive ones (5A, 57) among them, some lengths in long
/// form, sometimes wrapped in a constructed template.
fn icc_data() -> impl Strategy<Value = Vec<u8>> {
    let tags: &'static [&'static [u8]] = &[
        &[0x9F, 0x26],
        &[0x82],
        &[0x9F, 0x36],
        &[0x5A],
        &[0x57],
        &[0x95],
        &[0xDF, 0x01],
        &[0x9F, 0x10],
    ];
    let item = (select(tags), vec(any::<u8>(), 0..=20), any::<bool>());
    (vec(item, 0..=8), any::<bool>()).prop_map(|(items, wrapped)| {
        let mut body = Vec::new();
        for (tag, value, long_form) in items {
            body.extend_from_slice(tag);
            if long_form {
                body.push(0x81);
            }
            // Values are at most 20 bytes, so the length fits one octet.
            body.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            body.extend_from_slice(&value);
        }
        if wrapped && body.len() < 0x80 {
            let mut template = vec![0x71, u8::try_from(body.len()).unwrap_or(u8::MAX)];
            template.append(&mut body);
            template
        } else {
            body
        }
    })
}

/// The fields a request of the contract carries, valid for the typed views
/// in `protocol::iso`. Fields those views check are replaced or removed;
/// whatever else the random message holds stays, as a real acquirer's
/// extra fields would.
#[derive(Debug, Clone)]
struct RequestFields {
    mti: Mti,
    pan: Vec<u8>,
    pan_in_track2: bool,
    expiry: Option<Vec<u8>>,
    track2_tail: Vec<u8>,
    processing_code: Vec<u8>,
    amount: Vec<u8>,
    stan: Vec<u8>,
    terminal: Vec<u8>,
    merchant: Vec<u8>,
    currency: &'static [u8],
    icc: Option<Vec<u8>>,
    reason: Option<Vec<u8>>,
    original: Option<Vec<u8>>,
    /// DE95 of a reversal, all but its first 12 digits: what stands of the
    /// original is DE4 (nothing reversed) or zero (all of it).
    replacement: Option<(bool, Vec<u8>)>,
    network_code: Vec<u8>,
}

fn request_fields() -> impl Strategy<Value = RequestFields> {
    let month = (1u8..=12).prop_map(|month| vec![b'0' + month / 10, b'0' + month % 10]);
    let expiry = (digits(2), month).prop_map(|(year, month)| [year, month].concat());
    let currencies: &'static [&'static [u8]] = &[b"840", b"978", b"826", b"392", b"USD"];
    let originals: &'static [&'static [u8]] = &[b"0100", b"0200"];
    let original = (select(originals), digits(38)).prop_map(|(mti, rest)| [mti, &rest].concat());
    let network_codes: &'static [&'static [u8]] = &[b"001", b"002", b"301"];
    let network_code = prop_oneof![select(network_codes).prop_map(<[u8]>::to_vec), digits(3),];
    let fee =
        || (select(b"CD0".to_vec()), digits(8)).prop_map(|(sign, n8)| [&[sign][..], &n8].concat());
    let replacement = (any::<bool>(), digits(12), fee(), fee())
        .prop_map(|(all, settlement, a, b)| (all, [settlement, a, b].concat()));
    let card = (
        select(REQUEST_MTIS.to_vec()),
        digits(12..=19),
        any::<bool>(),
        proptest::option::of(expiry),
        digits(0..=13),
        digits(6),
        digits(12),
        digits(6),
    );
    let rest = (
        printable(8),
        printable(15),
        select(currencies),
        proptest::option::of(icc_data()),
        proptest::option::of(vec(select(b"0123456789AZaz".to_vec()), 2)),
        proptest::option::of(original),
        network_code,
        proptest::option::of(replacement),
    );
    (card, rest).prop_map(
        |(
            (mti, pan, pan_in_track2, expiry, track2_tail, processing_code, amount, stan),
            (terminal, merchant, currency, icc, reason, original, network_code, replacement),
        )| RequestFields {
            mti,
            pan,
            pan_in_track2,
            expiry,
            track2_tail,
            processing_code,
            amount,
            stan,
            terminal,
            merchant,
            currency,
            icc,
            reason,
            original,
            replacement,
            network_code,
        },
    )
}

impl RequestFields {
    fn apply(&self, message: &mut Message) {
        message.set_mti(self.mti);
        for checked in [2, 14, 35, 39, 55, 70, 90, 95] {
            message.remove(checked);
        }
        message.set(11, &self.stan);
        if self.mti == Mti::NETWORK_MANAGEMENT_REQUEST {
            message.set(70, &self.network_code);
            return;
        }
        message
            .set(3, &self.processing_code)
            .set(4, &self.amount)
            .set(41, &self.terminal)
            .set(42, &self.merchant)
            .set(49, self.currency);
        if matches!(self.mti.class(), 1 | 2) {
            if self.pan_in_track2 {
                let yymm = self.expiry.clone().unwrap_or_else(|| b"2812".to_vec());
                message.set(35, [&self.pan[..], b"=", &yymm, &self.track2_tail].concat());
            } else {
                message.set(2, &self.pan);
                if let Some(expiry) = &self.expiry {
                    message.set(14, expiry);
                }
            }
            if let Some(icc) = &self.icc {
                message.set(55, icc);
            }
        } else {
            if !self.pan_in_track2 {
                message.set(2, &self.pan);
            }
            if let Some(reason) = &self.reason {
                message.set(39, reason);
            }
            if let Some(original) = &self.original {
                message.set(90, original);
            }
            if let Some((all_stands, rest)) = &self.replacement {
                let stands: &[u8] = if *all_stands {
                    &self.amount
                } else {
                    b"000000000000"
                };
                message.set(95, [stands, rest].concat());
            }
        }
    }
}

/// Valid messages that are also requests the switch accepts.
fn contract_request(spec: &'static Spec) -> impl Strategy<Value = Generated> {
    (message(spec), request_fields()).prop_map(|(mut generated, fields)| {
        fields.apply(&mut generated.0);
        generated
    })
}

/// Random messages, or requests of the contract: damaging the latter
/// reaches the typed views' checks, which random fields almost never pass.
fn message_or_request(spec: &'static Spec) -> impl Strategy<Value = Generated> {
    prop_oneof![message(spec), contract_request(spec)]
}

// ---------------------------------------------------------------------------
// Round trips of valid messages.

fn encode(spec: &Spec, message: &Message) -> Result<Vec<u8>, TestCaseError> {
    let mut payload = Vec::new();
    message.encode(spec, &mut payload).map_err(|error| {
        TestCaseError::fail(format!(
            "{}: a valid or decoded message does not encode: {error}",
            spec.name()
        ))
    })?;
    Ok(payload)
}

fn decode(spec: &Spec, payload: &[u8]) -> Result<Message, TestCaseError> {
    Message::decode(spec, payload).map_err(|error| {
        TestCaseError::fail(format!(
            "{}: an encoded message does not decode: {error}\npayload: {:?}",
            spec.name(),
            Bytes(payload.to_vec())
        ))
    })
}

/// decode(encode(m)) == m and encode(decode(bytes)) == bytes; every strict
/// prefix of the payload fails to decode and a byte more is trailing.
fn check_payload_round_trip(
    spec: &Spec,
    message: &Message,
    cut: Index,
) -> Result<(), TestCaseError> {
    let payload = encode(spec, message)?;
    let decoded = decode(spec, &payload)?;
    prop_assert_eq!(&Generated(decoded.clone()), &Generated(message.clone()));
    prop_assert_eq!(Bytes(encode(spec, &decoded)?), Bytes(payload.clone()));

    // The codec reads the payload front to back and every length is on the
    // wire, so a prefix can never look complete.
    let short = cut.index(payload.len());
    prop_assert!(
        Message::decode(spec, &payload[..short]).is_err(),
        "a {short}-byte prefix of a {}-byte payload decoded",
        payload.len()
    );
    let mut long = payload;
    long.push(0x20);
    prop_assert_eq!(
        Message::decode(spec, &long).err(),
        Some(DecodeError::TrailingBytes { count: 1 })
    );

    // Typed views read what they need and must not panic on any valid mix.
    let _ = Request::parse(&decoded);
    Ok(())
}

/// Framed, the message splits off a stream at exactly its own length, a
/// partial frame is "need more" rather than an error, and a frame over the
/// dialect's maximum is refused at encoding without leaving bytes behind.
fn check_frame_round_trip(spec: &Spec, message: &Message, cut: Index) -> Result<(), TestCaseError> {
    let payload = encode(spec, message)?;
    let framing = spec.framing();
    let mut stream = b"earlier".to_vec();
    let result = message.encode_frame(spec, &mut stream);
    if payload.len() > framing.frame_length_max {
        prop_assert_eq!(
            result,
            Err(EncodeError::FrameTooLong {
                length: payload.len(),
                length_max: framing.frame_length_max
            })
        );
        prop_assert_eq!(stream, b"earlier".to_vec());
        return Ok(());
    }
    prop_assert_eq!(result, Ok(()));
    let frame = stream.split_off(b"earlier".len());
    let width = framing.length_header.width();
    prop_assert_eq!(frame.len(), width + payload.len());

    // Two frames back to back, as on a TCP stream.
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    let (first, used) = framing
        .split(&two)
        .map_err(|error| TestCaseError::fail(format!("frame header refused: {error}")))?
        .ok_or_else(|| TestCaseError::fail("a whole frame is reported incomplete"))?;
    prop_assert_eq!(used, frame.len());
    prop_assert_eq!(first, &payload[..]);
    prop_assert_eq!(
        &Generated(decode(spec, first)?),
        &Generated(message.clone())
    );
    let rest = &two[used..];
    prop_assert_eq!(framing.split(rest), Ok(Some((&payload[..], frame.len()))));

    let short = cut.index(frame.len());
    prop_assert_eq!(framing.check(&frame[..short]), Ok(None));
    prop_assert_eq!(framing.split(&frame[..short]), Ok(None));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn iso87_payload_round_trips(message in message(&ISO87), cut in any::<Index>()) {
        check_payload_round_trip(&ISO87, &message.0, cut)?;
    }

    #[test]
    fn iso87_hex_payload_round_trips(message in message(&ISO87_HEX), cut in any::<Index>()) {
        check_payload_round_trip(&ISO87_HEX, &message.0, cut)?;
    }

    #[test]
    fn ebcdic_bcd_payload_round_trips(message in message(&EBCDIC_BCD), cut in any::<Index>()) {
        check_payload_round_trip(&EBCDIC_BCD, &message.0, cut)?;
    }

    #[test]
    fn contract_requests_parse_after_a_round_trip_in_every_dialect(
        message in contract_request(&ISO87),
    ) {
        for spec in dialects() {
            let mut message = message.0.clone();
            if spec.header_length() > 0 {
                message.set_header(&vec![0x60; spec.header_length()]);
            }
            let decoded = decode(spec, &encode(spec, &message)?)?;
            let request = Request::parse(&decoded).map_err(|error| {
                TestCaseError::fail(format!("{}: a contract request does not parse: {error}", spec.name()))
            })?;
            let class = decoded.mti().class();
            let parsed_as = match request {
                Request::Card(_) => 1..=2,
                Request::Reversal(_) => 4..=4,
                Request::Network(_) => 8..=8,
            };
            prop_assert!(parsed_as.contains(&class), "MTI {} parsed as {:?}", decoded.mti(), parsed_as);
        }
    }

    #[test]
    fn iso87_frame_round_trips(message in message(&ISO87), cut in any::<Index>()) {
        check_frame_round_trip(&ISO87, &message.0, cut)?;
    }

    #[test]
    fn iso87_hex_frame_round_trips(message in message(&ISO87_HEX), cut in any::<Index>()) {
        check_frame_round_trip(&ISO87_HEX, &message.0, cut)?;
    }

    #[test]
    fn ebcdic_bcd_frame_round_trips(message in message(&EBCDIC_BCD), cut in any::<Index>()) {
        check_frame_round_trip(&EBCDIC_BCD, &message.0, cut)?;
    }
}

// ---------------------------------------------------------------------------
// Arbitrary and damaged bytes.

/// Feeds one payload to everything that reads bytes from a peer. Nothing may
/// panic; what decodes must encode back to the same bytes, except that hex digits may come back in the
/// other case, since the hex dialect reads both cases and writes upper case.
fn exercise_payload(spec: &Spec, payload: &[u8]) -> Result<(), TestCaseError> {
    check_tlv(payload)?;
    let Ok(message) = Message::decode(spec, payload) else {
        return Ok(());
    };
    let _ = Request::parse(&message);
    let _ = format!("{message:?}");
    let _ = message.masked_fields(spec).count();
    if let Some(icc) = message.get(55) {
        check_tlv(icc)?;
    }

    let reencoded = encode(spec, &message)?;
    let expected = payload.to_vec();
    if spec.bitmap_encoding() == BitmapEncoding::Hex {
        prop_assert!(
            reencoded.eq_ignore_ascii_case(&expected),
            "{}: re-encoded {:?}\nexpected {:?}",
            spec.name(),
            Bytes(reencoded.clone()),
            Bytes(expected)
        );
        // Case aside the bytes match; decoding them again must give the
        // same message, so no text field changed case.
        prop_assert_eq!(
            &Generated(decode(spec, &reencoded)?),
            &Generated(message.clone())
        );
    } else {
        prop_assert_eq!(Bytes(reencoded), Bytes(expected));
    }
    Ok(())
}

/// BER-TLV that parses is written back byte for byte.
fn check_tlv(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(items) = tlv::parse(bytes) {
        let mut rebuilt = Vec::new();
        tlv::write_all(&items, &mut rebuilt);
        prop_assert_eq!(Bytes(rebuilt), Bytes(bytes.to_vec()));
    }
    Ok(())
}

/// Splits frames off `stream` as a connection would, and exercises each.
fn exercise_stream(spec: &Spec, stream: &[u8]) -> Result<(), TestCaseError> {
    let framing = spec.framing();
    let _ = framing.check(stream);
    let mut rest = stream;
    while let Ok(Some((payload, used))) = framing.split(rest) {
        prop_assert!(used > payload.len());
        prop_assert!(used <= rest.len());
        prop_assert!(payload.len() <= framing.frame_length_max);
        exercise_payload(spec, payload)?;
        rest = &rest[used..];
    }
    Ok(())
}

impl Bytes {
    fn exercise_everywhere(&self) -> Result<(), TestCaseError> {
        for spec in dialects() {
            exercise_payload(spec, &self.0)?;
            exercise_stream(spec, &self.0)?;
        }
        Ok(())
    }
}

/// One edit to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: Index, bit: u8 },
    Replace { at: Index, byte: u8 },
    Insert { at: Index, byte: u8 },
    Delete { at: Index },
    Truncate { at: Index },
}

/// Bytes that mean something to some part of the codec: digits in ASCII,
/// EBCDIC and BCD, hex letters in both cases, the bitmap's high bit, the
/// track-2 separators, the EBCDIC space, and the extremes.
const TELLING_BYTES: &[u8] = b"\x00\x01\x7F\x80\xFF\x40\xF0\xF9\x99\x9A\
09aAfFgG=D \xC4\x7E";

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), select(TELLING_BYTES)];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        3 => (any::<Index>(), byte.clone()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        2 => (any::<Index>(), byte).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        2 => any::<Index>().prop_map(|at| Mutation::Delete { at }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for mutation in mutations {
        let length = bytes.len();
        match *mutation {
            Mutation::Insert { at, byte } => bytes.insert(at.index(length + 1), byte),
            _ if length == 0 => {}
            Mutation::FlipBit { at, bit } => bytes[at.index(length)] ^= 1 << bit,
            Mutation::Replace { at, byte } => bytes[at.index(length)] = byte,
            Mutation::Delete { at } => {
                bytes.remove(at.index(length));
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(length)),
        }
    }
}

fn check_damaged(
    spec: &Spec,
    message: &Message,
    mutations: &[Mutation],
) -> Result<(), TestCaseError> {
    let mut payload = encode(spec, message)?;
    mutate(&mut payload, mutations);
    exercise_payload(spec, &payload)?;

    let mut frame = Vec::new();
    if message.encode_frame(spec, &mut frame).is_ok() {
        mutate(&mut frame, mutations);
        exercise_stream(spec, &frame)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600).prop_map(Bytes)) {
        bytes.exercise_everywhere()?;
    }

    #[test]
    fn damaged_iso87_messages_never_panic_and_reencode(
        message in message_or_request(&ISO87),
        mutations in vec(mutation(), 1..4),
    ) {
        check_damaged(&ISO87, &message.0, &mutations)?;
    }

    #[test]
    fn damaged_iso87_hex_messages_never_panic_and_reencode(
        message in message_or_request(&ISO87_HEX),
        mutations in vec(mutation(), 1..4),
    ) {
        check_damaged(&ISO87_HEX, &message.0, &mutations)?;
    }

    #[test]
    fn damaged_ebcdic_bcd_messages_never_panic_and_reencode(
        message in message_or_request(&EBCDIC_BCD),
        mutations in vec(mutation(), 1..4),
    ) {
        check_damaged(&EBCDIC_BCD, &message.0, &mutations)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed checks the properties lean on.

/// The test-only dialect really uses the representations the round trips
/// claim to cover; a typo in its TOML would otherwise quietly test iso87.
#[test]
fn the_ebcdic_bcd_dialect_is_what_it_claims() {
    let spec = &*EBCDIC_BCD;
    assert_eq!(spec.framing().length_header, LengthHeader::Binary4);
    assert_eq!(spec.header_length(), 5);
    assert_eq!(spec.mti_encoding(), MtiEncoding::Bcd);
    assert_eq!(spec.bitmap_encoding(), BitmapEncoding::Binary);
    let pan = spec.field(2).unwrap();
    assert_eq!(pan.encoding, DataEncoding::Bcd);
    assert_eq!(pan.length_encoding, LengthEncoding::Binary);
    let name = spec.field(43).unwrap();
    assert_eq!(name.encoding, DataEncoding::Ebcdic);
    let track2 = spec.field(35).unwrap();
    assert_eq!(track2.encoding, DataEncoding::Ebcdic);
    assert_eq!(spec.field(52).unwrap().encoding, DataEncoding::Binary);
    assert_eq!(spec.fields().count(), ISO87.fields().count());
    assert!(spec.framing().frame_length_max <= FRAME_LENGTH_LIMIT);
}

/// Every class the generator knows yields values the codec accepts, and the
/// generator's alphabets are not empty (an empty one would make `select`
/// panic on first use, far from the cause).
#[test]
fn every_class_alphabet_is_accepted_by_the_codec() {
    for class in [
        ContentClass::N,
        ContentClass::A,
        ContentClass::An,
        ContentClass::Ans,
        ContentClass::Ns,
        ContentClass::Z,
        ContentClass::XN,
    ] {
        let alphabet = alphabet(class);
        assert!(!alphabet.is_empty(), "{class}");
        let value = if class == ContentClass::XN {
            [&b"C"[..], &alphabet].concat()
        } else {
            alphabet.clone()
        };
        assert_eq!(
            class.first_invalid(&value),
            None,
            "{class}: {:?}",
            Shown(&value)
        );
    }
}

/// Decoding EBCDIC and encoding it back is the identity on every byte that
/// decodes, so the damaged-message property may demand exact re-encoding of
/// EBCDIC text. Checked on all 256 bytes rather than by chance.
#[test]
fn every_ebcdic_byte_that_decodes_encodes_back() {
    let mut decodable = 0;
    for byte in 0..=u8::MAX {
        let ascii = ebcdic_to_ascii(byte);
        if ascii != 0 {
            decodable += 1;
            assert_eq!(
                ascii_to_ebcdic(ascii),
                byte,
                "EBCDIC {byte:#04X} reads as {ascii:#04X}"
            );
        }
    }
    // The printable ASCII range, 0x20 to 0x7E.
    assert_eq!(decodable, 95);
}
