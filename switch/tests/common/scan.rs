//! How the leak tests look for a CVV: three or four digits occur by chance
//! in timestamps, hashes and latencies, so a CVV is looked for the ways a
//! log line, a JSON body or a debug print would carry it.

/// Whether `text` holds `digits` with no digit on either side.
pub fn holds_number(text: &[u8], digits: &[u8]) -> bool {
    text.windows(digits.len()).enumerate().any(|(at, window)| {
        window == digits
            && !at
                .checked_sub(1)
                .and_then(|before| text.get(before))
                .is_some_and(u8::is_ascii_digit)
            && !text.get(at + digits.len()).is_some_and(u8::is_ascii_digit)
    })
}

/// The shortest run of hex digits taken for a hash, a token or ciphertext
/// shown as hex rather than for a number.
const HEX_RUN_MIN: usize = 16;

/// Whether `text` holds `digits` as a number on its own: no digit on either
/// side, and not inside a run of hex digits (a hash, a token). A leak scan's
/// text holds thousands of hex digits (the audit log's hash chain alone),
/// which would hold any four digits once in about a hundred runs by chance.
pub fn holds_bare_number(text: &[u8], digits: &[u8]) -> bool {
    let mut blanked = text.to_vec();
    let mut start = 0;
    while start < blanked.len() {
        let run = blanked[start..]
            .iter()
            .take_while(|byte| byte.is_ascii_hexdigit())
            .count();
        if run >= HEX_RUN_MIN {
            blanked[start..start + run].fill(b'#');
        }
        start += run.max(1);
    }
    holds_number(&blanked, digits)
}

/// How far after a `cvv` key its value may be: room for `":"`, `=`,
/// `: Some("` and the like.
const AFTER_KEY_BYTES: usize = 24;

/// Whether `text` shows `cvv` as a string of its own (`"739"`, `'739'`,
/// `\"739\"` inside a JSON string), or as a number shortly after a key
/// named `cvv` in any case (`"cvv":739`, `cvv=739`, `Cvv: Some("739")`).
pub fn shows_cvv(text: &[u8], cvv: &str) -> bool {
    let quoted = [
        format!("\"{cvv}\""),
        format!("'{cvv}'"),
        format!("\\\"{cvv}\\\""),
    ];
    if quoted.iter().any(|form| {
        text.windows(form.len())
            .any(|window| window == form.as_bytes())
    }) {
        return true;
    }
    text.windows(3).enumerate().any(|(at, window)| {
        window.eq_ignore_ascii_case(b"cvv") && {
            let after = text.get(at + 3..).unwrap_or_default();
            let near = after.get(..AFTER_KEY_BYTES).unwrap_or(after);
            holds_number(near, cvv.as_bytes())
        }
    })
}
