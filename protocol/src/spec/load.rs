//! Dialects from TOML: the built-in spec files, files on disk, a file based
//! on a built-in, and every check a file must pass before it becomes a
//! [`Spec`]. Errors name the file, the setting or field, and the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::table::{
    BitmapEncoding, FieldKind, FieldSpec, HEADER_LENGTH_MAX, Mask, MtiEncoding, Spec,
};
use crate::content_class::ContentClass;
use crate::encoding::{DataEncoding, LengthCounts, LengthEncoding};
use crate::error::SpecError;
use crate::framing::{FRAME_LENGTH_LIMIT, Framing, LengthHeader};

/// The built-in dialects: name and TOML text.
const BUILTIN: [(&str, &str); 2] = [
    ("iso87", include_str!("../../../config/specs/iso87.toml")),
    (
        "iso87-hex",
        include_str!("../../../config/specs/iso87-hex.toml"),
    ),
];

impl Spec {
    /// A built-in dialect by name: `iso87` or `iso87-hex`.
    pub fn builtin(name: &str) -> Result<Spec, SpecError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| SpecError::UnknownDialect {
                name: name.to_owned(),
            })?;
        Spec::from_toml(text, &builtin_path(name))
    }

    /// The default dialect, `iso87`.
    pub fn iso87() -> Result<Spec, SpecError> {
        Spec::builtin("iso87")
    }

    /// A built-in dialect if `name_or_file` names one, else a spec file.
    pub fn resolve(name_or_file: &str) -> Result<Spec, SpecError> {
        if BUILTIN.iter().any(|(name, _)| *name == name_or_file) {
            Spec::builtin(name_or_file)
        } else {
            Spec::load(Path::new(name_or_file))
        }
    }

    /// Loads a dialect from a TOML spec file.
    pub fn load(file: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(file).map_err(|error| SpecError::Unreadable {
            file: file.to_owned(),
            reason: error.to_string(),
        })?;
        Spec::from_toml(&text, file)
    }

    /// Parses a dialect from TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Spec, SpecError> {
        let raw = RawSpec::parse(text, file)?;
        let merged = match &raw.base {
            None => raw,
            Some(base_name) => {
                let (_, base_text) = BUILTIN
                    .iter()
                    .find(|(name, _)| name == base_name)
                    .ok_or_else(|| SpecError::Setting {
                        file: file.to_owned(),
                        key: "base",
                        reason: format!(
                            "no built-in dialect named `{base_name}` (built in: iso87, iso87-hex)"
                        ),
                    })?;
                let base = RawSpec::parse(base_text, &builtin_path(base_name))?;
                raw.over(base)
            }
        };
        merged.resolve(file)
    }
}

fn builtin_path(name: &str) -> PathBuf {
    PathBuf::from(format!("config/specs/{name}.toml (built in)"))
}

/// A spec file as written, before defaults and the base are applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    base: Option<String>,
    #[serde(default)]
    frame: RawFrame,
    #[serde(default)]
    message: RawMessage,
    #[serde(default)]
    fields: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    length_header: Option<LengthHeader>,
    frame_length_max: Option<usize>,
    header_length: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    mti_encoding: Option<MtiEncoding>,
    bitmap_encoding: Option<BitmapEncoding>,
    text_encoding: Option<DataEncoding>,
    numeric_encoding: Option<DataEncoding>,
    binary_encoding: Option<DataEncoding>,
    length_encoding: Option<LengthEncoding>,
    length_counts: Option<LengthCounts>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    kind: FieldKind,
    length: Option<usize>,
    length_max: Option<usize>,
    class: ContentClass,
    encoding: Option<DataEncoding>,
    length_encoding: Option<LengthEncoding>,
    length_counts: Option<LengthCounts>,
    #[serde(default)]
    mask: Mask,
}

impl RawSpec {
    fn parse(text: &str, file: &Path) -> Result<RawSpec, SpecError> {
        toml::from_str(text).map_err(|error| SpecError::Syntax {
            file: file.to_owned(),
            reason: error.to_string().trim_end().to_owned(),
        })
    }

    /// This file's settings over `base`'s: every setting and field entry given
    /// here wins, the rest comes from the base.
    fn over(self, base: RawSpec) -> RawSpec {
        let mut fields = base.fields;
        fields.extend(self.fields);
        RawSpec {
            name: self.name,
            base: None,
            frame: RawFrame {
                length_header: self.frame.length_header.or(base.frame.length_header),
                frame_length_max: self.frame.frame_length_max.or(base.frame.frame_length_max),
                header_length: self.frame.header_length.or(base.frame.header_length),
            },
            message: RawMessage {
                mti_encoding: self.message.mti_encoding.or(base.message.mti_encoding),
                bitmap_encoding: self
                    .message
                    .bitmap_encoding
                    .or(base.message.bitmap_encoding),
                text_encoding: self.message.text_encoding.or(base.message.text_encoding),
                numeric_encoding: self
                    .message
                    .numeric_encoding
                    .or(base.message.numeric_encoding),
                binary_encoding: self
                    .message
                    .binary_encoding
                    .or(base.message.binary_encoding),
                length_encoding: self
                    .message
                    .length_encoding
                    .or(base.message.length_encoding),
                length_counts: self.message.length_counts.or(base.message.length_counts),
            },
            fields,
        }
    }

    fn resolve(self, file: &Path) -> Result<Spec, SpecError> {
        let setting = |key: &'static str, reason: String| SpecError::Setting {
            file: file.to_owned(),
            key,
            reason,
        };
        let missing = |key: &'static str| setting(key, "missing".to_owned());

        let length_header = self
            .frame
            .length_header
            .ok_or_else(|| missing("frame.length_header"))?;
        let frame_length_max = self
            .frame
            .frame_length_max
            .ok_or_else(|| missing("frame.frame_length_max"))?;
        let capacity = length_header.capacity().min(FRAME_LENGTH_LIMIT);
        if frame_length_max == 0 || frame_length_max > capacity {
            return Err(setting(
                "frame.frame_length_max",
                format!("{frame_length_max} is not within 1..={capacity} for this length header"),
            ));
        }
        let header_length = self.frame.header_length.unwrap_or(0);
        if header_length > HEADER_LENGTH_MAX {
            return Err(setting(
                "frame.header_length",
                format!("{header_length} is over the maximum {HEADER_LENGTH_MAX}"),
            ));
        }
        let mti_encoding = self
            .message
            .mti_encoding
            .ok_or_else(|| missing("message.mti_encoding"))?;
        let bitmap_encoding = self
            .message
            .bitmap_encoding
            .ok_or_else(|| missing("message.bitmap_encoding"))?;
        let text_encoding = self
            .message
            .text_encoding
            .ok_or_else(|| missing("message.text_encoding"))?;
        if !matches!(text_encoding, DataEncoding::Ascii | DataEncoding::Ebcdic) {
            return Err(setting(
                "message.text_encoding",
                "must be ascii or ebcdic".to_owned(),
            ));
        }
        let numeric_encoding = self.message.numeric_encoding.unwrap_or(text_encoding);
        if !matches!(
            numeric_encoding,
            DataEncoding::Ascii | DataEncoding::Ebcdic | DataEncoding::Bcd
        ) {
            return Err(setting(
                "message.numeric_encoding",
                "must be ascii, ebcdic or bcd".to_owned(),
            ));
        }
        let binary_encoding = self
            .message
            .binary_encoding
            .ok_or_else(|| missing("message.binary_encoding"))?;
        if !matches!(binary_encoding, DataEncoding::Binary | DataEncoding::Hex) {
            return Err(setting(
                "message.binary_encoding",
                "must be binary or hex".to_owned(),
            ));
        }
        let defaults = FieldDefaults {
            text: text_encoding,
            numeric: numeric_encoding,
            binary: binary_encoding,
            length_encoding: self
                .message
                .length_encoding
                .ok_or_else(|| missing("message.length_encoding"))?,
            length_counts: self.message.length_counts.unwrap_or(LengthCounts::Value),
        };

        let mut fields: Vec<Option<FieldSpec>> = vec![None; 129];
        for (key, value) in self.fields {
            let field_error = |reason: String| SpecError::Field {
                file: file.to_owned(),
                field: key.clone(),
                reason,
            };
            let number: u8 = key
                .parse()
                .ok()
                .filter(|n| (2..=128).contains(n))
                .ok_or_else(|| field_error("not a data element number from 2 to 128".to_owned()))?;
            if number == 65 {
                return Err(field_error(
                    "bit 65 announces a third bitmap, which the switch rejects; it cannot be a field".to_owned(),
                ));
            }
            let raw: RawField = value.try_into().map_err(|error: toml::de::Error| {
                field_error(error.message().trim_end().to_owned())
            })?;
            let spec = raw.resolve(number, &defaults).map_err(field_error)?;
            if let Some(slot) = fields.get_mut(usize::from(number)) {
                *slot = Some(spec);
            }
        }
        Ok(Spec {
            name: self.name,
            framing: Framing {
                length_header,
                frame_length_max,
            },
            header_length,
            mti_encoding,
            bitmap_encoding,
            fields,
        })
    }
}

struct FieldDefaults {
    text: DataEncoding,
    numeric: DataEncoding,
    binary: DataEncoding,
    length_encoding: LengthEncoding,
    length_counts: LengthCounts,
}

impl RawField {
    fn resolve(self, number: u8, defaults: &FieldDefaults) -> Result<FieldSpec, String> {
        let class = self.class;
        let encoding = self.encoding.unwrap_or(match class {
            ContentClass::B => defaults.binary,
            ContentClass::N => defaults.numeric,
            _ => defaults.text,
        });
        match (class, encoding) {
            (ContentClass::B, DataEncoding::Binary | DataEncoding::Hex) => {}
            (ContentClass::B, _) => {
                return Err(format!(
                    "class b needs encoding binary or hex, not {encoding:?}"
                ));
            }
            (_, DataEncoding::Binary | DataEncoding::Hex) => {
                return Err(format!(
                    "encoding {encoding:?} is for class b only, this field is class {class}"
                ));
            }
            (ContentClass::N, DataEncoding::Bcd) => {}
            (_, DataEncoding::Bcd) => {
                return Err(format!(
                    "encoding bcd is for class n only, this field is class {class}"
                ));
            }
            _ => {}
        }
        if self.mask == Mask::Icc && class != ContentClass::B {
            return Err("mask icc needs class b".to_owned());
        }
        let length = match (self.kind, self.length, self.length_max) {
            (FieldKind::Fixed, Some(length), None) => length,
            (FieldKind::Fixed, _, Some(_)) => {
                return Err("a fixed field takes `length`, not `length_max`".to_owned());
            }
            (FieldKind::Fixed, None, None) => return Err("`length` is missing".to_owned()),
            (_, None, Some(length_max)) => length_max,
            (_, Some(_), _) => {
                return Err("a variable field takes `length_max`, not `length`".to_owned());
            }
            (_, None, None) => return Err("`length_max` is missing".to_owned()),
        };
        if length == 0 {
            return Err("length must be at least 1".to_owned());
        }
        if class == ContentClass::XN && length < 2 {
            return Err("an x+n field holds a sign and at least one digit".to_owned());
        }
        let spec = FieldSpec {
            number,
            name: self.name.into_boxed_str(),
            kind: self.kind,
            length,
            class,
            encoding,
            length_encoding: self.length_encoding.unwrap_or(defaults.length_encoding),
            length_counts: self.length_counts.unwrap_or(defaults.length_counts),
            mask: self.mask,
        };
        if let Some(digits) = spec.kind.prefix_digits() {
            let prefix_max = spec.length_encoding.prefix_max(digits);
            let counted = spec.prefix_count(length);
            if counted > prefix_max {
                return Err(format!(
                    "length_max {length} needs a prefix of {counted}, over the {prefix_max} a {:?} {:?} prefix can hold",
                    spec.kind, spec.length_encoding
                ));
            }
        } else if length > FRAME_LENGTH_LIMIT {
            return Err(format!(
                "length {length} is over the frame limit {FRAME_LENGTH_LIMIT}"
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    fn from(text: &str) -> Result<Spec, SpecError> {
        Spec::from_toml(text, Path::new("test.toml"))
    }

    const HEAD: &str = r#"
name = "t"
[frame]
length_header = "binary2"
frame_length_max = 4096
[message]
mti_encoding = "ascii"
bitmap_encoding = "binary"
text_encoding = "ascii"
binary_encoding = "binary"
length_encoding = "ascii"
[fields]
"#;

    #[test]
    fn builtin_dialects_load() {
        let iso87 = Spec::iso87().unwrap();
        assert_eq!(iso87.name(), "iso87");
        assert_eq!(iso87.framing().length_header, LengthHeader::Binary2);
        let pan = iso87.field(2).unwrap();
        assert_eq!(
            (pan.kind, pan.length, pan.class, pan.mask),
            (FieldKind::Llvar, 19, ContentClass::N, Mask::Pan)
        );
        assert_eq!(iso87.field(52).unwrap().encoding, DataEncoding::Binary);
        assert!(iso87.field(65).is_none());
        assert_eq!(iso87.fields().count(), 126);

        let hex = Spec::builtin("iso87-hex").unwrap();
        assert_eq!(hex.framing().length_header, LengthHeader::Ascii4);
        assert_eq!(hex.bitmap_encoding(), BitmapEncoding::Hex);
        let icc = hex.field(55).unwrap();
        assert_eq!(
            (icc.encoding, icc.length_counts, icc.length),
            (DataEncoding::Hex, LengthCounts::Wire, 255)
        );
        assert_eq!(hex.fields().count(), 126);
    }

    #[test]
    fn shipped_files_match_the_builtins() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/specs");
        assert_eq!(
            Spec::load(&root.join("iso87.toml")).unwrap().fields,
            Spec::iso87().unwrap().fields
        );
        assert_eq!(
            Spec::resolve("iso87-hex").unwrap(),
            Spec::builtin("iso87-hex").unwrap()
        );
    }

    #[test]
    fn a_minimal_bcd_dialect_loads() {
        let spec = from(&format!(
            "{HEAD}2 = {{ name = \"PAN\", kind = \"llvar\", length_max = 19, class = \"n\", encoding = \"bcd\", length_encoding = \"bcd\" }}\n"
        ))
        .unwrap();
        let pan = spec.field(2).unwrap();
        assert_eq!(
            (pan.encoding, pan.length_encoding),
            (DataEncoding::Bcd, LengthEncoding::Bcd)
        );
    }

    fn field_error(entry: &str) -> String {
        match from(&format!("{HEAD}{entry}\n")) {
            Err(SpecError::Field {
                file,
                field,
                reason,
            }) => {
                assert_eq!(file, Path::new("test.toml"));
                format!("{field}: {reason}")
            }
            other => panic!("expected a field error for {entry}, got {other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named_with_the_problem() {
        assert!(
            field_error(r#"1 = { name = "x", kind = "fixed", length = 8, class = "b" }"#)
                .starts_with("1: not a data element")
        );
        assert!(
            field_error(r#"129 = { name = "x", kind = "fixed", length = 8, class = "b" }"#)
                .starts_with("129: not a data element")
        );
        assert!(
            field_error(r#"65 = { name = "x", kind = "fixed", length = 8, class = "b" }"#)
                .contains("third bitmap")
        );
        assert!(
            field_error(r#"3 = { name = "x", kind = "fixed", length = 6, class = "q" }"#)
                .starts_with("3: unknown variant `q`")
        );
        assert!(
            field_error(
                r#"3 = { name = "x", kind = "fixed", length = 6, class = "n", colour = 1 }"#
            )
            .contains("unknown field `colour`")
        );
        assert!(
            field_error(r#"3 = { name = "x", kind = "fixed", length_max = 6, class = "n" }"#)
                .contains("takes `length`")
        );
        assert!(
            field_error(r#"2 = { name = "x", kind = "llvar", length = 6, class = "n" }"#)
                .contains("takes `length_max`")
        );
        assert!(
            field_error(r#"2 = { name = "x", kind = "llvar", length_max = 100, class = "n" }"#)
                .contains("over the 99")
        );
        assert!(
            field_error(r#"2 = { name = "x", kind = "fixed", length = 0, class = "n" }"#)
                .contains("at least 1")
        );
        assert!(field_error(r#"52 = { name = "x", kind = "fixed", length = 8, class = "b", encoding = "ascii" }"#).contains("class b needs"));
        assert!(field_error(r#"43 = { name = "x", kind = "fixed", length = 8, class = "ans", encoding = "bcd" }"#).contains("class n only"));
        assert!(
            field_error(
                r#"43 = { name = "x", kind = "fixed", length = 8, class = "ans", mask = "icc" }"#
            )
            .contains("icc needs class b")
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let missing = from("name = \"t\"\n[frame]\nframe_length_max = 10\n").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "test.toml: frame.length_header: missing"
        );
        let too_long = from(&HEAD.replace("4096", "70000")).unwrap_err();
        assert!(
            too_long
                .to_string()
                .starts_with("test.toml: frame.frame_length_max: 70000"),
            "{too_long}"
        );
        let typo =
            from(&HEAD.replace("[message]", "[message]\nbitmap_encodng = \"hex\"")).unwrap_err();
        assert!(
            typo.to_string().contains("unknown field `bitmap_encodng`"),
            "{typo}"
        );
        let base = from("name = \"t\"\nbase = \"iso93\"\n").unwrap_err();
        assert!(
            base.to_string()
                .contains("base: no built-in dialect named `iso93`"),
            "{base}"
        );
        let unreadable = Spec::load(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(
            unreadable
                .to_string()
                .starts_with("/nonexistent/x.toml: cannot be read"),
            "{unreadable}"
        );
        assert_eq!(
            Spec::builtin("iso93").unwrap_err().to_string(),
            "no built-in dialect named `iso93` (built in: iso87, iso87-hex)"
        );
    }

    #[test]
    fn a_based_dialect_changes_only_what_it_names() {
        let spec = from(
            "name = \"tpdu\"\nbase = \"iso87\"\n[frame]\nheader_length = 5\n[fields]\n48 = { name = \"CVV2\", kind = \"llvar\", length_max = 4, class = \"n\", mask = \"secret\" }\n",
        )
        .unwrap();
        assert_eq!(spec.header_length(), 5);
        assert_eq!(spec.field(48).unwrap().mask, Mask::Secret);
        assert_eq!(spec.field(2), Spec::iso87().unwrap().field(2));
    }
}
