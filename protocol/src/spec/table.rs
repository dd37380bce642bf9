//! A dialect's tables: one [`FieldSpec`] per data element, and how the MTI,
//! the bitmaps and the frame are represented. What is here is already checked;
//! the spec file loader (`load`) is the only way one is made.

use serde::Deserialize;

use crate::content_class::ContentClass;
use crate::encoding::{DataEncoding, LengthCounts, LengthEncoding};
use crate::framing::{FRAME_LENGTH_LIMIT, Framing};

/// The longest fixed header (such as a TPDU) a dialect may declare.
pub const HEADER_LENGTH_MAX: usize = 64;

/// Fixed or variable length, and the variable prefix's digit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Always exactly `length` units.
    Fixed,
    /// A two-digit length prefix, then the value.
    Llvar,
    /// A three-digit length prefix, then the value.
    Lllvar,
}

impl FieldKind {
    /// Decimal digits in the length prefix, or `None` for fixed fields.
    pub fn prefix_digits(self) -> Option<usize> {
        match self {
            FieldKind::Fixed => None,
            FieldKind::Llvar => Some(2),
            FieldKind::Lllvar => Some(3),
        }
    }
}

/// How a field is shown in `Debug` output, logs and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// Shown as is.
    #[default]
    None,
    /// A card number: first six and last four digits only.
    Pan,
    /// Never shown (track data, PIN blocks, CVV): only its length.
    Secret,
    /// EMV chip data: tags shown, the values of card-identifying tags hidden.
    Icc,
}

/// One data element's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The data element number, 2 to 128.
    pub number: u8,
    /// What the element is, for people.
    pub name: Box<str>,
    /// Fixed or variable length.
    pub kind: FieldKind,
    /// The exact length (fixed) or the maximum (variable), in value units:
    /// digits or characters for text classes, bytes for class `b`.
    pub length: usize,
    /// What characters the value may hold.
    pub class: ContentClass,
    /// How the value travels.
    pub encoding: DataEncoding,
    /// How the length prefix travels (variable fields).
    pub length_encoding: LengthEncoding,
    /// What the length prefix counts (variable fields).
    pub length_counts: LengthCounts,
    /// How the value is shown to people.
    pub mask: Mask,
}

impl FieldSpec {
    /// The count a length prefix says for a value of `units` value units.
    pub fn prefix_count(&self, units: usize) -> usize {
        match self.length_counts {
            LengthCounts::Value => units,
            LengthCounts::Wire => self.encoding.wire_len(units),
        }
    }
}

/// How the MTI travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtiEncoding {
    /// Four ASCII digits.
    Ascii,
    /// Four EBCDIC digits.
    Ebcdic,
    /// Two BCD bytes.
    Bcd,
}

/// How each bitmap travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitmapEncoding {
    /// Eight raw bytes.
    Binary,
    /// Sixteen hex-ASCII characters.
    Hex,
}

impl BitmapEncoding {
    /// Wire bytes one bitmap takes.
    pub fn wire_len(self) -> usize {
        match self {
            BitmapEncoding::Binary => 8,
            BitmapEncoding::Hex => 16,
        }
    }
}

/// A dialect: the field table and the representation of everything around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub(super) name: String,
    pub(super) framing: Framing,
    pub(super) header_length: usize,
    pub(super) mti_encoding: MtiEncoding,
    pub(super) bitmap_encoding: BitmapEncoding,
    /// Indexed by data element number; 0, 1 and 65 are always `None`.
    pub(super) fields: Vec<Option<FieldSpec>>,
}

impl Spec {
    /// The dialect's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The length header and maximum frame length.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Lowers or raises the largest frame accepted, within what the length
    /// header can state and [`FRAME_LENGTH_LIMIT`]; the switch's
    /// `iso.frame_length_max` setting uses it.
    pub fn set_frame_length_max(&mut self, frame_length_max: usize) -> Result<(), String> {
        let capacity = self
            .framing
            .length_header
            .capacity()
            .min(FRAME_LENGTH_LIMIT);
        if frame_length_max == 0 || frame_length_max > capacity {
            return Err(format!(
                "{frame_length_max} is not within 1..={capacity} for this dialect's length header"
            ));
        }
        self.framing.frame_length_max = frame_length_max;
        Ok(())
    }

    /// Bytes of fixed header (for example a TPDU) before the MTI.
    pub fn header_length(&self) -> usize {
        self.header_length
    }

    /// How the MTI travels.
    pub fn mti_encoding(&self) -> MtiEncoding {
        self.mti_encoding
    }

    /// How each bitmap travels.
    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap_encoding
    }

    /// The definition of data element `number`, if the dialect has one.
    pub fn field(&self, number: u8) -> Option<&FieldSpec> {
        self.fields
            .get(usize::from(number))
            .and_then(Option::as_ref)
    }

    /// Every defined data element, in number order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldSpec> {
        self.fields.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_maximum_can_be_set_within_the_header_capacity() {
        let mut spec = Spec::builtin("iso87-hex").unwrap();
        spec.set_frame_length_max(2048).unwrap();
        assert_eq!(spec.framing().frame_length_max, 2048);
        assert!(
            spec.set_frame_length_max(10_000)
                .unwrap_err()
                .contains("1..=9999")
        );
        assert!(spec.set_frame_length_max(0).is_err());
    }
}
