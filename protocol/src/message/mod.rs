//! [`Message`]: an MTI and data elements 2-128, and the codec that turns one
//! frame's payload into a message and back under a [`Spec`].
//!
//! Every present field's canonical value (see [`crate::encoding`]) is copied
//! into one buffer owned by the message, and a table of offsets finds it. So
//! decoding allocates nothing per field, and [`Message::decode_into`] on a
//! reused message allocates nothing at all once its buffer has grown to the
//! traffic's size. The buffer is wiped when the message is dropped, since it
//! holds PANs and track data.
//!
//! The MTI and the bitmaps around the fields, in each wire form a dialect
//! may choose, are read and written in `envelope`.

mod envelope;

use std::fmt;

use zeroize::Zeroize;

use self::envelope::{Reader, bitmap_halves, decode_bitmap, decode_mti, encode_bitmap, encode_mti};

use crate::content_class::ContentClass;
use crate::encoding::LengthCounts;
use crate::error::{DecodeError, EncodeError, Location};
use crate::mti::Mti;
use crate::spec::{FieldKind, Mask, Spec};
use crate::{Pan, encoding};

/// Where one field's value sits in [`Message::data`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    start: u32,
    length: u32,
}

/// Index of the fixed header's slot; data elements use their own numbers.
const HEADER_SLOT: usize = 0;

/// The bit for data element `n` (1-128) in a 128-bit bitmap whose most
/// significant bit is field 1, as on the wire.
fn bit(n: u8) -> u128 {
    1u128 << (128 - u32::from(n))
}

/// An ISO 8583 message.
#[derive(Clone)]
pub struct Message {
    mti: Mti,
    /// Data elements present (field 1 is never set here: the encoder decides
    /// whether a secondary bitmap is needed).
    present: u128,
    /// The decoded frame carried a secondary bitmap even though no field
    /// 65-128 was present (an all-zero one). Kept so the message encodes back
    /// to the same bytes; it changes nothing about the message's meaning.
    empty_secondary_bitmap: bool,
    has_header: bool,
    slots: [Slot; 129],
    data: Vec<u8>,
}

impl Message {
    /// An empty message of type `mti`.
    pub fn new(mti: Mti) -> Message {
        Message {
            mti,
            present: 0,
            empty_secondary_bitmap: false,
            has_header: false,
            slots: [Slot::default(); 129],
            data: Vec::new(),
        }
    }

    /// An empty message with room for `capacity` bytes of field values, for a
    /// connection that decodes into one message again and again.
    pub fn with_capacity(capacity: usize) -> Message {
        let mut message = Message::new(Mti::NETWORK_MANAGEMENT_REQUEST);
        message.data.reserve(capacity);
        message
    }

    /// The message type.
    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// Changes the message type.
    pub fn set_mti(&mut self, mti: Mti) -> &mut Self {
        self.mti = mti;
        self
    }

    /// The fixed header (for example a TPDU), if the dialect has one.
    pub fn header(&self) -> Option<&[u8]> {
        self.has_header.then(|| self.slot(HEADER_SLOT)).flatten()
    }

    /// Sets the fixed header.
    pub fn set_header(&mut self, header: &[u8]) -> &mut Self {
        self.store(HEADER_SLOT, header);
        self.has_header = true;
        self
    }

    /// The canonical value of data element `field`, if present.
    pub fn get(&self, field: u8) -> Option<&[u8]> {
        if !(2..=128).contains(&field) || self.present & bit(field) == 0 {
            return None;
        }
        self.slot(usize::from(field))
    }

    /// The value of a text field, if present and valid UTF-8 (every text
    /// class is ASCII, so a decoded text field always is).
    pub fn get_str(&self, field: u8) -> Option<&str> {
        std::str::from_utf8(self.get(field)?).ok()
    }

    /// Whether data element `field` is present.
    pub fn has(&self, field: u8) -> bool {
        (2..=128).contains(&field) && self.present & bit(field) != 0
    }

    /// Sets data element `field` (2 to 128) to its canonical value: ASCII for
    /// text classes, raw bytes for class `b`. Numbers outside 2..=128 name no
    /// data element and are ignored; the value is checked against the dialect
    /// when the message is encoded.
    pub fn set(&mut self, field: u8, value: impl AsRef<[u8]>) -> &mut Self {
        debug_assert!(
            (2..=128).contains(&field),
            "field {field} is not a data element"
        );
        if (2..=128).contains(&field) {
            self.store(usize::from(field), value.as_ref());
            self.present |= bit(field);
        }
        self
    }

    /// Removes data element `field`.
    pub fn remove(&mut self, field: u8) -> &mut Self {
        if (2..=128).contains(&field) {
            self.present &= !bit(field);
        }
        self
    }

    /// Present data elements and their values, in number order.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &[u8])> {
        FieldNumbers(self.present).filter_map(|n| Some((n, self.get(n)?)))
    }

    /// Removes every field and the header, keeping the buffer for reuse.
    ///
    /// The bytes are not wiped here: the next decode overwrites them, and
    /// wiping the whole buffer with volatile writes on every frame cost about
    /// 40 ns of a 380 ns decode of a 21-field 0100 (`cargo bench -p benches`).
    /// They are wiped when the message is dropped.
    pub fn clear(&mut self) {
        self.data.clear();
        self.present = 0;
        self.empty_secondary_bitmap = false;
        self.has_header = false;
    }

    fn slot(&self, index: usize) -> Option<&[u8]> {
        let slot = self.slots.get(index)?;
        let start = usize::try_from(slot.start).ok()?;
        self.data
            .get(start..start + usize::try_from(slot.length).ok()?)
    }

    fn store(&mut self, index: usize, value: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(value);
        self.set_slot(index, start);
    }

    /// Points slot `index` at `data[start..]`.
    fn set_slot(&mut self, index: usize, start: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            // Values live inside one frame of at most FRAME_LENGTH_LIMIT
            // bytes (or a message built in memory), far below u32::MAX.
            *slot = Slot {
                start: u32::try_from(start).unwrap_or(u32::MAX),
                length: u32::try_from(self.data.len() - start).unwrap_or(u32::MAX),
            };
        }
    }

    /// Decodes one frame's payload (no length header) under `spec`.
    pub fn decode(spec: &Spec, payload: &[u8]) -> Result<Message, DecodeError> {
        let mut message = Message::new(Mti::NETWORK_MANAGEMENT_REQUEST);
        message.decode_into(spec, payload)?;
        Ok(message)
    }

    /// Decodes one frame's payload into `self`, reusing its buffer.
    ///
    /// On error `self` keeps the MTI and the fields decoded before the bad
    /// one, so the caller can still answer with DE39 30 and echo the keys it
    /// has.
    pub fn decode_into(&mut self, spec: &Spec, payload: &[u8]) -> Result<(), DecodeError> {
        self.clear();
        // Canonical values are at most twice their wire bytes (BCD digits),
        // so one reservation covers the whole decode.
        self.data.reserve(payload.len().saturating_mul(2));
        let mut reader = Reader { rest: payload };

        let header_length = spec.header_length();
        if header_length > 0 {
            let header = reader.take(header_length, Location::Header)?;
            self.set_header(header);
        }
        self.mti = decode_mti(spec.mti_encoding(), &mut reader)?;

        let primary = decode_bitmap(spec.bitmap_encoding(), &mut reader, Location::PrimaryBitmap)?;
        let mut present = u128::from(primary) << 64;
        if present & bit(1) != 0 {
            let secondary = decode_bitmap(
                spec.bitmap_encoding(),
                &mut reader,
                Location::SecondaryBitmap,
            )?;
            present |= u128::from(secondary);
            self.empty_secondary_bitmap = secondary == 0;
        }
        if present & bit(65) != 0 {
            return Err(DecodeError::TertiaryBitmap);
        }

        for number in FieldNumbers(present & !bit(1)) {
            self.decode_field(spec, number, &mut reader)?;
            self.present |= bit(number);
        }
        if !reader.rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                count: reader.rest.len(),
            });
        }
        Ok(())
    }

    fn decode_field(
        &mut self,
        spec: &Spec,
        number: u8,
        reader: &mut Reader<'_>,
    ) -> Result<(), DecodeError> {
        let field = spec
            .field(number)
            .ok_or(DecodeError::UnknownField { field: number })?;
        let location = Location::Field(number);
        let units = match field.kind.prefix_digits() {
            None => field.length,
            Some(digits) => {
                let prefix = reader.take(field.length_encoding.prefix_width(digits), location)?;
                let count = field.length_encoding.read(prefix, location)?;
                let units = match (field.length_counts, field.encoding) {
                    (LengthCounts::Value, _) => count,
                    (LengthCounts::Wire, encoding::DataEncoding::Hex) => {
                        if count % 2 != 0 {
                            return Err(DecodeError::OddHexLength {
                                field: number,
                                length: count,
                            });
                        }
                        count / 2
                    }
                    (LengthCounts::Wire, encoding::DataEncoding::Bcd) => count * 2,
                    (LengthCounts::Wire, _) => count,
                };
                if units > field.length {
                    return Err(DecodeError::FieldTooLong {
                        field: number,
                        length: units,
                        length_max: field.length,
                    });
                }
                units
            }
        };
        let wire = reader.take(field.encoding.wire_len(units), location)?;
        let start = self.data.len();
        field
            .encoding
            .decode(wire, units, field.class, location, &mut self.data)?;
        self.set_slot(usize::from(number), start);
        Ok(())
    }

    /// Appends this message's payload (no length header) encoded under `spec`.
    pub fn encode(&self, spec: &Spec, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(self.data.len() + 64);
        let header_length = spec.header_length();
        if header_length > 0 {
            let header = self.header().unwrap_or_default();
            if header.len() != header_length {
                return Err(EncodeError::WrongHeaderLength {
                    length: header_length,
                    actual: header.len(),
                });
            }
            out.extend_from_slice(header);
        }
        encode_mti(spec.mti_encoding(), self.mti, out)?;

        let mut present = self.present & !bit(1);
        if present & u128::from(u64::MAX) != 0 || self.empty_secondary_bitmap {
            present |= bit(1);
        }
        let [primary, secondary] = bitmap_halves(present);
        encode_bitmap(spec.bitmap_encoding(), primary, out);
        if present & bit(1) != 0 {
            encode_bitmap(spec.bitmap_encoding(), secondary, out);
        }

        for (number, value) in self.fields() {
            let field = spec
                .field(number)
                .ok_or(EncodeError::UnknownField { field: number })?;
            let units = value.len();
            match field.kind {
                FieldKind::Fixed if units != field.length => {
                    return Err(EncodeError::WrongLength {
                        field: number,
                        length: field.length,
                        actual: units,
                    });
                }
                FieldKind::Fixed => {}
                FieldKind::Llvar | FieldKind::Lllvar => {
                    if units > field.length {
                        return Err(EncodeError::FieldTooLong {
                            field: number,
                            length: units,
                            length_max: field.length,
                        });
                    }
                    let digits = field.kind.prefix_digits().unwrap_or(3);
                    field.length_encoding.write(
                        field.prefix_count(units),
                        field.length_encoding.prefix_width(digits),
                        out,
                    );
                }
            }
            field
                .encoding
                .encode(value, field.class, Location::Field(number), out)?;
        }
        Ok(())
    }

    /// Appends this message as a whole frame: length header, then payload.
    pub fn encode_frame(&self, spec: &Spec, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let framing = spec.framing();
        let header_at = out.len();
        let width = framing.length_header.width();
        out.resize(header_at + width, 0);
        let payload_at = out.len();
        if let Err(error) = self.encode(spec, out) {
            out.truncate(header_at);
            return Err(error);
        }
        let mut header = Vec::with_capacity(width);
        if let Err(error) = framing.write_header(out.len() - payload_at, &mut header) {
            out.truncate(header_at);
            return Err(error);
        }
        if let Some(slot) = out.get_mut(header_at..payload_at) {
            slot.copy_from_slice(&header);
        }
        Ok(())
    }
}

/// Two messages are equal when they have the same MTI, header and fields;
/// how their buffers were filled does not matter.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.mti == other.mti
            && self.present == other.present
            && self.header() == other.header()
            && self.fields().zip(other.fields()).all(|(a, b)| a == b)
    }
}

impl Eq for Message {}

impl Drop for Message {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

/// The masking `Debug` of a message has no dialect at hand, so it shows values
/// only of fields that never carry card data anywhere, masks DE2, and shows
/// every other field as its length. [`Message::masked_fields`] does better
/// with the dialect's own masks.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entry(&"mti", &self.mti.as_str());
        for (number, value) in self.fields() {
            map.entry(&number, &Shown::new(value, default_mask(number)));
        }
        map.finish()
    }
}

impl Message {
    /// Every field as people may see it under the dialect's masks: PANs as
    /// first six and last four, secrets as their length, EMV data as tags
    /// with card-identifying values hidden.
    pub fn masked_fields<'a>(&'a self, spec: &'a Spec) -> impl Iterator<Item = (u8, String)> + 'a {
        self.fields().map(move |(number, value)| {
            let mask = spec.field(number).map_or(Mask::Secret, |f| f.mask);
            let class = spec.field(number).map_or(ContentClass::B, |f| f.class);
            let shown = Shown::new(value, mask);
            (number, shown.render(class))
        })
    }
}

/// Fields whose values never carry card data, whatever the dialect.
fn default_mask(number: u8) -> Mask {
    match number {
        2 => Mask::Pan,
        3..=33 | 37..=44 | 49..=51 | 53 | 54 | 66..=100 => Mask::None,
        55 => Mask::Icc,
        _ => Mask::Secret,
    }
}

struct Shown<'a> {
    value: &'a [u8],
    mask: Mask,
}

impl<'a> Shown<'a> {
    fn new(value: &'a [u8], mask: Mask) -> Shown<'a> {
        Shown { value, mask }
    }

    fn render(&self, class: ContentClass) -> String {
        match self.mask {
            Mask::Pan => Pan::parse(self.value).map_or_else(
                || format!("[redacted {} chars]", self.value.len()),
                |pan| pan.masked(),
            ),
            Mask::Secret => format!("[redacted {} bytes]", self.value.len()),
            Mask::Icc => match crate::tlv::parse(self.value) {
                Ok(items) => format!("{items:?}"),
                Err(_) => format!("[unparsed ICC data, {} bytes]", self.value.len()),
            },
            Mask::None if class.is_text() => String::from_utf8_lossy(self.value).into_owned(),
            Mask::None => encoding::to_hex(self.value),
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = if self.value.iter().all(|b| (0x20..0x7F).contains(b)) {
            ContentClass::Ans
        } else {
            ContentClass::B
        };
        f.write_str(&self.render(class))
    }
}

/// Iterates the numbers of the set bits of a bitmap, lowest number first.
struct FieldNumbers(u128);

impl Iterator for FieldNumbers {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.0 == 0 {
            return None;
        }
        // The most significant set bit is the lowest field number.
        let number = u8::try_from(self.0.leading_zeros()).ok()? + 1;
        self.0 &= !bit(number);
        Some(number)
    }
}
