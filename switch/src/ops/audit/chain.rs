//! The hash chain of the audit log: how an event becomes an entry after the
//! chain's head, and how a whole log is checked.
//!
//! `hash` is the SHA-256, in hex, of the previous entry's `hash` (64 ASCII
//! hex digits; 64 zeros before the first entry) followed by the entry's
//! canonical bytes: the compact JSON of `seq, time, actor, event, outcome,
//! origin, resource` in that order. `seq` counts from 1 without gaps.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ops::audit::event::AuditEvent;

/// Longest value kept for any field; longer values are cut (a path from a
/// client could be long).
const FIELD_CHARS_MAX: usize = 256;

/// Hash before the first entry.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub event: String,
    pub outcome: String,
    pub origin: String,
    pub resource: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of an entry, in its canonical order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a str,
    event: &'a str,
    outcome: &'a str,
    origin: &'a str,
    resource: &'a str,
}

impl AuditEntry {
    /// The hash this entry must carry after `prev_hash`.
    pub(super) fn expected_hash(&self, prev_hash: &str) -> String {
        let canonical = Canonical {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            event: &self.event,
            outcome: &self.outcome,
            origin: &self.origin,
            resource: &self.resource,
        };
        let mut hasher = Sha256::new();
        hasher.update(prev_hash.as_bytes());
        hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
        protocol::encoding::to_hex(&hasher.finalize())
    }
}

/// The end of the chain: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub(super) fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Places `event` after this head and moves the head to it. Every field
    /// has its card numbers masked (a client can type one into a path), the
    /// whole field before it is cut so no part of a number escapes, and
    /// before it is hashed, so the chain holds only what is shown.
    pub(super) fn append(&mut self, event: AuditEvent, time: String) -> AuditEntry {
        let cut = |value: String| {
            let mut value = match protocol::mask_pan_runs(&value) {
                Cow::Borrowed(_) => value,
                Cow::Owned(masked) => masked,
            };
            if value.chars().count() > FIELD_CHARS_MAX {
                value = value.chars().take(FIELD_CHARS_MAX).collect();
            }
            value
        };
        let mut entry = AuditEntry {
            seq: self.seq + 1,
            time,
            actor: cut(event.actor),
            event: cut(event.event),
            outcome: cut(event.outcome),
            origin: cut(event.origin),
            resource: cut(event.resource),
            prev_hash: self.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.expected_hash(&self.hash);
        self.seq = entry.seq;
        self.hash = entry.hash.clone();
        entry
    }
}

/// What `switch audit verify` found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("line {line}: not an audit entry ({reason}): the line was edited")]
    Unreadable { line: u64, reason: String },
    #[error("line {line}: entry {seq} does not match its hash: the entry was edited")]
    Edited { line: u64, seq: u64 },
    #[error(
        "line {line}: expected entry {expected}, found {found}: entries {expected} to {} were deleted",
        .found - 1
    )]
    Deleted {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error("line {line}: expected entry {expected}, found {found}: entries were reordered")]
    Reordered {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "line {line}: entry {seq} does not follow the previous entry's hash: an entry was replaced"
    )]
    Unchained { line: u64, seq: u64 },
    #[error("cannot be read: {reason}")]
    Io { reason: String },
}

impl ChainError {
    /// The line at fault, counting from 1.
    pub fn line(&self) -> Option<u64> {
        match self {
            ChainError::Unreadable { line, .. }
            | ChainError::Edited { line, .. }
            | ChainError::Deleted { line, .. }
            | ChainError::Reordered { line, .. }
            | ChainError::Unchained { line, .. } => Some(*line),
            ChainError::Io { .. } => None,
        }
    }
}

/// Checks a whole log, line by line, in constant memory. Returns the head.
pub fn verify(path: &Path) -> Result<ChainHead, ChainError> {
    let file = File::open(path).map_err(|error| ChainError::Io {
        reason: error.to_string(),
    })?;
    verify_lines(BufReader::new(file).lines())
}

fn verify_lines(
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> Result<ChainHead, ChainError> {
    let mut head = ChainHead::genesis();
    let mut lines = lines.peekable();
    let mut line_number = 0u64;
    while let Some(line) = lines.next() {
        line_number += 1;
        let text = line.map_err(|error| ChainError::Io {
            reason: error.to_string(),
        })?;
        let entry: AuditEntry =
            serde_json::from_str(&text).map_err(|error| ChainError::Unreadable {
                line: line_number,
                reason: error.to_string(),
            })?;
        if entry.expected_hash(&entry.prev_hash) != entry.hash {
            return Err(ChainError::Edited {
                line: line_number,
                seq: entry.seq,
            });
        }
        let expected = head.seq + 1;
        if entry.seq != expected {
            // The entry that should be here on the next line: two swapped.
            let next_is_expected = lines.peek().is_some_and(|next| {
                next.as_ref().is_ok_and(|text| {
                    serde_json::from_str::<AuditEntry>(text).is_ok_and(|next| next.seq == expected)
                })
            });
            return Err(if entry.seq > expected && !next_is_expected {
                ChainError::Deleted {
                    line: line_number,
                    expected,
                    found: entry.seq,
                }
            } else {
                ChainError::Reordered {
                    line: line_number,
                    expected,
                    found: entry.seq,
                }
            });
        }
        if entry.prev_hash != head.hash {
            return Err(ChainError::Unchained {
                line: line_number,
                seq: entry.seq,
            });
        }
        head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(count: u32) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (1..=count)
            .map(|n| {
                let entry = head.append(
                    AuditEvent::numbered_for_tests(n),
                    "2026-11-22T21:30:00.000Z".to_owned(),
                );
                serde_json::to_string(&entry).unwrap()
            })
            .collect()
    }

    fn check(lines: &[String]) -> Result<ChainHead, ChainError> {
        verify_lines(lines.iter().map(|line| Ok(line.clone())))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let lines = chain(5);
        let head = check(&lines).unwrap();
        assert_eq!(head.seq, 5);
        assert!(lines[0].contains(&format!("\"prev_hash\":\"{GENESIS_HASH}\"")));
        assert_eq!(check(&[]).unwrap(), ChainHead::genesis());
    }

    #[test]
    fn card_numbers_are_masked_before_the_entry_is_cut_and_hashed() {
        let mut head = ChainHead::genesis();
        let mut event = AuditEvent::numbered_for_tests(1);
        event.resource = "GET /v1/transactions/4111111111111111".to_owned();
        event.origin = "4111 1111 1111 1111".to_owned();
        // A number across the cut: no part of it is left in clear.
        event.actor = format!("{}5105105105105100", "a".repeat(FIELD_CHARS_MAX - 8));
        let entry = head.append(event, "2026-11-22T21:30:00.000Z".to_owned());
        assert_eq!(entry.resource, "GET /v1/transactions/411111******1111");
        assert_eq!(entry.origin, "4111 11** **** 1111");
        assert!(entry.actor.ends_with("510510**"), "{}", entry.actor);
        let line = serde_json::to_string(&entry).unwrap();
        assert_eq!(check(&[line]).unwrap().seq, 1, "the masked entry verifies");
    }

    #[test]
    fn every_kind_of_tampering_is_named_with_its_line() {
        let lines = chain(5);

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("admin:root3", "admin:root9");
        assert_eq!(check(&edited), Err(ChainError::Edited { line: 3, seq: 3 }));

        let mut broken = lines.clone();
        broken[1] = broken[1].replacen('{', "[", 1);
        assert!(matches!(
            check(&broken),
            Err(ChainError::Unreadable { line: 2, .. })
        ));

        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(
            check(&deleted),
            Err(ChainError::Deleted {
                line: 2,
                expected: 2,
                found: 3
            })
        );
        assert!(
            check(&deleted)
                .unwrap_err()
                .to_string()
                .contains("entries 2 to 2 were deleted")
        );

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(
            check(&swapped),
            Err(ChainError::Reordered {
                line: 3,
                expected: 3,
                found: 4
            })
        );

        // An entry rewritten whole, with a correct hash of its own: the
        // chain from the previous entry is what gives it away.
        let mut replaced = lines.clone();
        let mut forged: AuditEntry = serde_json::from_str(&replaced[3]).unwrap();
        forged.actor = "admin:someone-else".to_owned();
        forged.prev_hash = GENESIS_HASH.to_owned();
        forged.hash = forged.expected_hash(&forged.prev_hash);
        replaced[3] = serde_json::to_string(&forged).unwrap();
        assert_eq!(
            check(&replaced),
            Err(ChainError::Unchained { line: 4, seq: 4 })
        );
    }
}
