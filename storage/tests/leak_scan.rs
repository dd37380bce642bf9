//! Writes records, sealed PANs and idempotency entries for several cards,
//! then reads the raw bytes of the database and its WAL and shared-memory
//! files, open and after close, and looks for the card numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{NOW_MS, TestStore, approved, keys, reversal_of};
use protocol::Pan;
use storage::{IdempotencyEntry, JournalConfig, JournalRecord, Vault, bin_and_last4};

/// Well-known test PANs, and PANs whose hidden digits (between the BIN and
/// the last four) are distinctive enough to search for on their own.
fn test_pans() -> Vec<String> {
    let mut pans: Vec<String> = ["4111111111111111", "5500005555555559", "378282246310005"]
        .map(str::to_owned)
        .into();
    for (bin, hidden) in [
        ("45320151", "9735"),
        ("22210073", "8264"),
        ("601100", "97531"),
        ("4000056", "386271"),
    ] {
        let body = format!("{bin}{hidden}{}", "042");
        pans.push(with_check_digit(&body));
    }
    pans
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

/// What must not be found for one PAN: its digits as ASCII and as packed
/// BCD, and the digits hidden between the BIN and the last four with one
/// neighbour on each side, which no allowed part (BIN, last four) holds.
fn needles(pan: &Pan) -> Vec<(String, Vec<u8>)> {
    let digits = pan.expose();
    let mut needles = vec![(
        format!("{} as ASCII", pan.masked()),
        digits.as_bytes().to_vec(),
    )];
    let packed: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let high = pair[0] - b'0';
            let low = pair.get(1).map_or(0xF, |d| d - b'0');
            (high << 4) | low
        })
        .collect();
    needles.push((format!("{} as BCD", pan.masked()), packed));
    let (bin, last4) = bin_and_last4(pan);
    let around = &digits[bin.len() - 1..digits.len() - 3];
    // Skipped where the allowed parts side by side already spell it, as
    // "41111111" + "1111" does for 4111111111111111.
    let allowed = [format!("{bin}{last4}"), format!("{last4}{bin}")];
    if !allowed.iter().any(|text| text.contains(around)) {
        needles.push((
            format!("the hidden digits of {}", pan.masked()),
            around.as_bytes().to_vec(),
        ));
    }
    needles
}

fn scan(dir: &Path, needles: &[(String, Vec<u8>)], forbidden_keys: &[[u8; 32]]) -> usize {
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        for (what, needle) in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                path.display()
            );
        }
        for key in forbidden_keys {
            assert!(
                !bytes.windows(32).any(|w| w == key),
                "a vault key found in {}",
                path.display()
            );
        }
    }
    scanned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pan_reaches_the_database_files() {
    let t = TestStore::open(JournalConfig::default()).await;
    let vault = Vault::new(keys(1), 1024).unwrap();
    let pans: Vec<Pan> = test_pans()
        .iter()
        .map(|digits| Pan::parse(digits.as_bytes()).unwrap())
        .collect();
    for pan in &pans {
        assert!(pan.luhn_valid(), "{pan}");
    }
    let mut written = Vec::new();
    for (n, pan) in pans.iter().enumerate() {
        let (token, sealed) = vault.seal_if_new(pan);
        let (bin, last4) = bin_and_last4(pan);
        let record = JournalRecord {
            bin: Some(bin),
            last4: Some(last4.clone()),
            sealed_pan: sealed,
            idempotency: Some(IdempotencyEntry {
                merchant_id: "M0001".to_owned(),
                key: format!("order-{n}"),
                request_hash: [n as u8; 32],
                response_json: format!(
                    r#"{{"status":"approved","token":"{token}","last4":"{last4}"}}"#
                ),
                status: 201,
            }),
            ..approved(NOW_MS + n as u64, token, "000001")
        };
        t.journal.append(record.clone()).await.unwrap();
        vault.remember_sealed(&token);
        written.push(record);
    }
    // A second sighting of each card and a reversal, as traffic would have.
    for record in &written {
        let again = JournalRecord {
            idempotency: None,
            sealed_pan: None,
            ..approved(NOW_MS + 100, record.token.unwrap(), "000002")
        };
        t.journal.append(again).await.unwrap();
        t.journal
            .append(reversal_of(record, NOW_MS + 200))
            .await
            .unwrap();
    }
    // Every card is in the vault and opens to its PAN.
    for pan in &pans {
        let revealed = vault
            .reveal(&t.store, vault.tokenize(pan))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revealed.expose(), pan.expose());
    }

    let needles: Vec<_> = pans.iter().flat_map(needles).collect();
    let key_material = keys(1);
    let mut forbidden = vec![key_material.tokenization_key];
    forbidden.extend(key_material.encryption_keys.iter().map(|(_, key)| *key));

    // While open: the WAL holds the recent commits.
    let dir = t.dir.path().to_path_buf();
    assert!(dir.join("journal.db-wal").exists());
    assert_eq!(scan(&dir, &needles, &forbidden), 3);

    // After close: checkpointed into the main file.
    let dir = t.close().await;
    assert!(scan(dir.path(), &needles, &forbidden) >= 1);
    let main = std::fs::read(dir.path().join("journal.db")).unwrap();
    // The scan is looking at real data: the allowed parts are there.
    assert!(main.windows(8).any(|w| w == b"45320151"));
    assert!(main.windows(4).any(|w| w == b"0005"));
}
