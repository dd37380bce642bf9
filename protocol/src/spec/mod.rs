//! Dialects as data.
//!
//! A [`Spec`] is a table of [`FieldSpec`]s, one per data element, plus how the
//! MTI, the bitmaps and the frame are represented. The switch ships two
//! dialects, `iso87` (ASCII fields, binary bitmaps, 2-byte binary length
//! header; the default) and `iso87-hex` (hex-ASCII bitmaps and binary fields,
//! 4-digit ASCII length header), and loads others from TOML files. Both
//! shipped dialects are themselves TOML files under `config/specs/`, compiled
//! in, so the format every operator writes is the format the switch uses.
//!
//! A file may name a built-in `base` and change only the representation or a
//! few fields; its field entries replace the base's entries of the same number.
//!
//! The dialect's tables ([`Spec`], [`FieldSpec`] and the representations
//! around them) are in `table`; reading them from TOML, with every check a
//! spec file must pass and the built-in dialects, is in `load`.

mod load;
mod table;

pub use table::{BitmapEncoding, FieldKind, FieldSpec, HEADER_LENGTH_MAX, Mask, MtiEncoding, Spec};
