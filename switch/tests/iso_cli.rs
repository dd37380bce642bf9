//! `switch iso decode` and `switch iso encode`, run as a person runs them.

// A test that unwraps is a test that fails loudly; helpers outside #[test] too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/samples/authorization-0100.hex"
);

fn switch(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads its input (a bad flag or dialect)
    // may exit first and close the pipe: that is what such a test checks.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn decode_prints_fields_with_card_data_masked() {
    let output = switch(&["iso", "decode", "--framed", SAMPLE], "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["mti"], "0100");
    assert_eq!(json["dialect"], "iso87");
    assert_eq!(json["fields"]["2"], "411111******1111");
    assert_eq!(json["fields"]["4"], "000000012345");
    assert_eq!(json["fields"]["35"], "[redacted 37 bytes]");
    assert_eq!(json["fields"]["52"], "[redacted 8 bytes]");
    assert_eq!(json["fields"]["55"][0]["tag"], "9F26");
    assert!(!stdout.contains("4111111111111111"), "{stdout}");
}

#[test]
fn encode_reverses_decode_given_clear_values() {
    let decoded = switch(&["iso", "decode", "--framed", SAMPLE], "");
    let mut json: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    let sample_hex: String = std::fs::read_to_string(SAMPLE)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    // The masked fields are put back in clear, as an engineer writing a test message would.
    let original = protocol::Message::decode(
        &protocol::Spec::iso87().unwrap(),
        &protocol::encoding::from_hex(&sample_hex).unwrap()[2..],
    )
    .unwrap();
    json["fields"]["2"] = original.get_str(2).unwrap().into();
    json["fields"]["35"] = original.get_str(35).unwrap().into();
    json["fields"]["52"] = protocol::encoding::to_hex(original.get(52).unwrap()).into();
    let encoded = switch(&["iso", "encode", "--framed"], &json.to_string());
    assert!(encoded.status.success(), "{}", text(&encoded.stderr));
    assert_eq!(text(&encoded.stdout).trim(), sample_hex);
}

#[test]
fn the_hex_dialect_is_chosen_by_name() {
    let input = r#"{"mti":"0800","fields":{"7":"1122183000","11":"000001","70":"301"}}"#;
    let encoded = switch(&["iso", "encode", "--spec", "iso87-hex", "--framed"], input);
    assert!(encoded.status.success(), "{}", text(&encoded.stderr));
    let hex = text(&encoded.stdout);
    let bytes = protocol::encoding::from_hex(hex.trim()).unwrap();
    assert!(
        bytes.starts_with(b"00550800"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let decoded = switch(
        &["iso", "decode", "--spec", "iso87-hex", "--framed", "-"],
        &hex,
    );
    let json: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(json["fields"]["70"], "301");
}

#[test]
fn errors_name_the_field_and_exit_non_zero() {
    let too_long = r#"{"mti":"0100","fields":{"2":"41111111111111111111"}}"#;
    let output = switch(&["iso", "encode"], too_long);
    assert!(!output.status.success());
    assert_eq!(
        text(&output.stderr).trim(),
        "error: field 2: length 20 is over the maximum 19"
    );

    // 0100, bitmap with DE3, DE3 holding a letter.
    let output = switch(&["iso", "decode"], "30313030 2000000000000000 303041303030");
    assert!(!output.status.success());
    assert_eq!(
        text(&output.stderr).trim(),
        "error: field 3: byte 2 is not allowed in a `n` value"
    );

    let output = switch(&["iso", "decode"], "not hex");
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).starts_with("error: input is not hex"),
        "{}",
        text(&output.stderr)
    );

    let output = switch(&["iso", "decode", "--spec", "iso93"], "00");
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("iso93"),
        "{}",
        text(&output.stderr)
    );

    let output = switch(&["iso", "decode", "--no-such-flag"], "");
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--no-such-flag"),
        "{}",
        text(&output.stderr)
    );
}
