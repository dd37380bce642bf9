//! BER-TLV, the format of DE55 (EMV chip data).
//!
//! [`parse`] turns the bytes into a tree of [`Tlv`] items; [`Tlv::write`] puts
//! them back byte for byte, unknown and proprietary tags included, and keeps
//! each item's length form (a terminal that wrote `81 05` for five bytes gets
//! `81 05` back). A constructed item whose children change gets its length
//! recomputed.

use std::fmt;

use crate::encoding::{push_low_bytes, to_hex};
use crate::error::DecodeError;

/// Constructed items may nest this deep; EMV uses two or three levels.
pub const DEPTH_MAX: usize = 8;

/// A tag: one to four bytes as they appear on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    bytes: [u8; 4],
    length: u8,
}

impl Tag {
    /// A tag from its wire bytes, for example `Tag::new(&[0x9F, 0x26])`.
    pub fn new(bytes: &[u8]) -> Option<Tag> {
        let (tag, used) = read_tag(bytes, 0).ok()?;
        (used == bytes.len()).then_some(tag)
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.length))
            .unwrap_or_default()
    }

    /// Whether the tag marks a constructed item (one holding other items).
    pub fn is_constructed(&self) -> bool {
        self.bytes[0] & 0x20 != 0
    }

    /// Whether the value identifies the card or cardholder and must be hidden
    /// from people: 5A (PAN), 57 (track 2 equivalent), 56 (track 1), 5F20
    /// (cardholder name), 9F1F and 9F20 (track discretionary data), 9F6B
    /// (track 2 data).
    pub fn is_sensitive(&self) -> bool {
        matches!(
            self.as_bytes(),
            [0x5A] | [0x57] | [0x56] | [0x5F, 0x20] | [0x9F, 0x1F] | [0x9F, 0x20] | [0x9F, 0x6B]
        )
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(self.as_bytes()))
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// What a TLV item holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Bytes.
    Primitive(Vec<u8>),
    /// Other items.
    Constructed(Vec<Tlv>),
}

/// A value alone does not know its tag, so it shows only its length.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Primitive(bytes) => write!(f, "Primitive([{} bytes])", bytes.len()),
            Value::Constructed(children) => write!(f, "Constructed({children:?})"),
        }
    }
}

/// One tag-length-value item.
#[derive(Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The tag.
    pub tag: Tag,
    /// The value.
    pub value: Value,
    /// Bytes the length took when parsed (1 for short form, 2-5 for long
    /// form), kept so an unchanged item is written back identically.
    length_octets: u8,
}

impl Tlv {
    /// A primitive item; its length is written in the shortest form.
    pub fn primitive(tag: Tag, value: Vec<u8>) -> Tlv {
        Tlv {
            tag,
            value: Value::Primitive(value),
            length_octets: 1,
        }
    }

    /// A constructed item; its length is written in the shortest form.
    pub fn constructed(tag: Tag, children: Vec<Tlv>) -> Tlv {
        Tlv {
            tag,
            value: Value::Constructed(children),
            length_octets: 1,
        }
    }

    /// Bytes of value, children's encodings included.
    pub fn value_length(&self) -> usize {
        match &self.value {
            Value::Primitive(bytes) => bytes.len(),
            Value::Constructed(children) => children.iter().map(Tlv::encoded_length).sum(),
        }
    }

    fn length_octets_for(&self, length: usize) -> u8 {
        let minimal = match length {
            0..=0x7F => 1,
            0x80..=0xFF => 2,
            0x100..=0xFFFF => 3,
            0x1_0000..=0xFF_FFFF => 4,
            _ => 5,
        };
        minimal.max(self.length_octets)
    }

    /// Bytes the whole item takes when written.
    pub fn encoded_length(&self) -> usize {
        let length = self.value_length();
        self.tag.as_bytes().len() + usize::from(self.length_octets_for(length)) + length
    }

    /// Appends the item's encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.tag.as_bytes());
        let length = self.value_length();
        match self.length_octets_for(length) {
            // The short form: the shortest encoding of a length up to 0x7F.
            1 => push_low_bytes(length, 1, out),
            octets => {
                let count = octets - 1;
                out.push(0x80 | count);
                push_low_bytes(length, usize::from(count), out);
            }
        }
        match &self.value {
            Value::Primitive(bytes) => out.extend_from_slice(bytes),
            Value::Constructed(children) => children.iter().for_each(|child| child.write(out)),
        }
    }

    /// The first item with `tag`, searching children too.
    pub fn find(items: &[Tlv], tag: Tag) -> Option<&Tlv> {
        items.iter().find_map(|item| {
            if item.tag == tag {
                Some(item)
            } else if let Value::Constructed(children) = &item.value {
                Tlv::find(children, tag)
            } else {
                None
            }
        })
    }
}

/// Shows tags and lengths, and values only of tags that are not sensitive.
impl fmt::Debug for Tlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Primitive(bytes) if self.tag.is_sensitive() => {
                write!(f, "{}=[redacted {} bytes]", self.tag, bytes.len())
            }
            Value::Primitive(bytes) => write!(f, "{}={}", self.tag, to_hex(bytes)),
            Value::Constructed(children) => write!(f, "{}{:?}", self.tag, children),
        }
    }
}

/// Parses BER-TLV items until the bytes run out.
pub fn parse(bytes: &[u8]) -> Result<Vec<Tlv>, DecodeError> {
    parse_at(bytes, 0, 0)
}

/// Appends the encoding of `items`.
pub fn write_all(items: &[Tlv], out: &mut Vec<u8>) {
    items.iter().for_each(|item| item.write(out));
}

fn error(reason: &'static str, offset: usize) -> DecodeError {
    DecodeError::Tlv { reason, offset }
}

fn read_tag(bytes: &[u8], offset: usize) -> Result<(Tag, usize), DecodeError> {
    let first = *bytes.first().ok_or(error("tag missing", offset))?;
    if first == 0x00 || first == 0xFF {
        return Err(error("padding byte where a tag should start", offset));
    }
    let mut tag = Tag {
        bytes: [first, 0, 0, 0],
        length: 1,
    };
    if first & 0x1F == 0x1F {
        // Subsequent bytes follow while bit 8 is set.
        loop {
            let next = *bytes
                .get(usize::from(tag.length))
                .ok_or(error("tag truncated", offset))?;
            if tag.length == 4 {
                return Err(error("tag longer than 4 bytes", offset));
            }
            tag.bytes[usize::from(tag.length)] = next;
            tag.length += 1;
            if next & 0x80 == 0 {
                break;
            }
        }
    }
    Ok((tag, usize::from(tag.length)))
}

fn parse_at(bytes: &[u8], base: usize, depth: usize) -> Result<Vec<Tlv>, DecodeError> {
    if depth > DEPTH_MAX {
        return Err(error("nested deeper than 8 levels", base));
    }
    let mut items = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = bytes.get(at..).unwrap_or_default();
        let (tag, tag_length) = read_tag(rest, base + at)?;
        let after_tag = rest.get(tag_length..).unwrap_or_default();
        let first = *after_tag
            .first()
            .ok_or(error("length missing", base + at + tag_length))?;
        let (length, length_octets) = if first & 0x80 == 0 {
            (usize::from(first), 1)
        } else {
            let count = first & 0x7F;
            if count == 0 || count > 4 {
                return Err(error("length form not supported", base + at + tag_length));
            }
            let octets = after_tag
                .get(1..=usize::from(count))
                .ok_or(error("length truncated", base + at + tag_length))?;
            (
                octets
                    .iter()
                    .fold(0usize, |n, &b| (n << 8) | usize::from(b)),
                count + 1,
            )
        };
        let value_at = tag_length + usize::from(length_octets);
        let value = rest
            .get(value_at..value_at.saturating_add(length))
            .ok_or(error("value runs past the end", base + at))?;
        let value = if tag.is_constructed() {
            Value::Constructed(parse_at(value, base + at + value_at, depth + 1)?)
        } else {
            Value::Primitive(value.to_vec())
        };
        items.push(Tlv {
            tag,
            value,
            length_octets,
        });
        at += value_at + length;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(bytes: &[u8]) -> Tag {
        Tag::new(bytes).unwrap()
    }

    #[test]
    fn parses_emv_data_and_writes_it_back_identically() {
        let bytes = [
            0x9F, 0x26, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, // application cryptogram
            0x82, 0x02, 0x19, 0x80, // AIP
            0xDF, 0x01, 0x02, 0xAA, 0xBB, // proprietary
            0x71, 0x81, 0x05, 0x86, 0x03, 1, 2, 3, // script template, long-form length
            0x9F, 0x36, 0x00, // empty ATC
        ];
        let items = parse(&bytes).unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0].tag, tag(&[0x9F, 0x26]));
        assert_eq!(
            items[0].value,
            Value::Primitive(vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert!(items[3].tag.is_constructed());
        assert_eq!(
            Tlv::find(&items, tag(&[0x86])).unwrap().value,
            Value::Primitive(vec![1, 2, 3])
        );
        let mut out = Vec::new();
        write_all(&items, &mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn new_items_use_the_shortest_length() {
        let mut out = Vec::new();
        Tlv::primitive(tag(&[0x9F, 0x10]), vec![0; 200]).write(&mut out);
        assert_eq!(&out[..4], &[0x9F, 0x10, 0x81, 200]);
        assert_eq!(out.len(), 204);
        let item = Tlv::constructed(
            tag(&[0x72]),
            vec![Tlv::primitive(tag(&[0x9F, 0x18]), vec![0; 4])],
        );
        assert_eq!(item.encoded_length(), 2 + 7);
    }

    #[test]
    fn broken_data_is_an_error_with_an_offset() {
        assert_eq!(parse(&[0x9F]), Err(error("tag truncated", 0)));
        assert_eq!(parse(&[0x9F, 0x26]), Err(error("length missing", 2)));
        assert_eq!(
            parse(&[0x9F, 0x26, 0x05, 1]),
            Err(error("value runs past the end", 0))
        );
        assert_eq!(
            parse(&[0x82, 0x85, 0, 0, 0, 0, 1]),
            Err(error("length form not supported", 1))
        );
        assert_eq!(parse(&[0x82, 0x81]), Err(error("length truncated", 1)));
        assert_eq!(
            parse(&[0x82, 0x00, 0x00]),
            Err(error("padding byte where a tag should start", 2))
        );
        assert_eq!(
            parse(&[0x9F, 0x81, 0x81, 0x81, 0x01, 0x00]),
            Err(error("tag longer than 4 bytes", 0))
        );
        let mut deep = vec![];
        for _ in 0..12 {
            let mut outer = vec![0x70, u8::try_from(deep.len()).unwrap()];
            outer.extend(deep);
            deep = outer;
        }
        assert_eq!(
            parse(&deep).unwrap_err(),
            error("nested deeper than 8 levels", 18)
        );
    }

    #[test]
    fn debug_hides_card_identifying_tags() {
        let items = parse(&[
            0x5A, 0x08, 0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x9F, 0x27, 0x01, 0x80,
        ])
        .unwrap();
        let shown = format!("{items:?}");
        assert_eq!(shown, "[5A=[redacted 8 bytes], 9F27=80]");
    }
}
