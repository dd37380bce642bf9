//! Card numbers for leak scans and what to look for: each PAN's digits as
//! ASCII and as packed BCD, and the digits hidden between its BIN and last
//! four. The same PANs and needles as `leak_scan.rs`.

use protocol::Pan;
use storage::bin_and_last4;

/// Well-known test PANs, and PANs whose hidden digits (between the BIN and
/// the last four) are distinctive enough to search for on their own.
pub fn test_pans() -> Vec<Pan> {
    let mut pans: Vec<String> = ["4111111111111111", "5500005555555559", "378282246310005"]
        .map(str::to_owned)
        .into();
    for (bin, hidden) in [
        ("45320151", "9735"),
        ("22210073", "8264"),
        ("601100", "97531"),
        ("4000056", "386271"),
    ] {
        pans.push(with_check_digit(&format!("{bin}{hidden}042")));
    }
    pans.iter()
        .map(|digits| Pan::parse(digits.as_bytes()).unwrap())
        .collect()
}

fn with_check_digit(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// One thing that must not be found, and how to name it in a failure.
pub struct Needle {
    pub what: String,
    pub bytes: Vec<u8>,
    /// The whole PAN (as opposed to a fragment of it): long enough to look
    /// for in hex dumps of random bytes without false alarms.
    pub whole: bool,
}

/// What must not be found for one PAN.
pub fn needles(pan: &Pan) -> Vec<Needle> {
    let digits = pan.expose();
    let mut needles = vec![Needle {
        what: format!("{} as ASCII", pan.masked()),
        bytes: digits.as_bytes().to_vec(),
        whole: true,
    }];
    let packed: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let high = pair[0] - b'0';
            let low = pair.get(1).map_or(0xF, |d| d - b'0');
            (high << 4) | low
        })
        .collect();
    needles.push(Needle {
        what: format!("{} as BCD", pan.masked()),
        bytes: packed,
        whole: true,
    });
    let (bin, last4) = bin_and_last4(pan);
    let around = &digits[bin.len() - 1..digits.len() - 3];
    // Skipped where the allowed parts side by side already spell it, as
    // "41111111" + "1111" does for 4111111111111111.
    let allowed = [format!("{bin}{last4}"), format!("{last4}{bin}")];
    if !allowed.iter().any(|text| text.contains(around)) {
        needles.push(Needle {
            what: format!("the hidden digits of {}", pan.masked()),
            bytes: around.as_bytes().to_vec(),
            whole: false,
        });
    }
    needles
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == first)
        .any(|(at, _)| haystack[at..].starts_with(needle))
}

/// Lower-case hex, as PostgreSQL prints a bytea.
pub fn hex(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}
