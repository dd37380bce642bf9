//! One turn of idempotency claims, decided once for every backend: given
//! what each key holds when the turn starts (its stored answer, its claim),
//! [`plan_claims`] applies the claims in order and says what each is
//! answered and which rows change. Each backend reads the keys and writes
//! the changes its own way (one statement per turn where it can), so SQLite,
//! PostgreSQL and the memory backend answer alike by construction.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use protocol::domain::TransactionId;

use crate::record::{ClaimOutcome, ClaimStep, IdempotencyEntry, KeyClaim};

/// A claim as its row holds it: the claiming request's digest, its holder
/// and when it was made.
pub(crate) type ClaimRow = ([u8; 32], TransactionId, u64);

/// What one key holds when the turn starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyHeld {
    pub(crate) answer: Option<IdempotencyEntry>,
    pub(crate) claim: Option<ClaimRow>,
}

/// A row to change, by merchant and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimWrite<'c> {
    /// No claim was there: insert this one.
    Insert(&'c str, &'c str, ClaimRow),
    /// The claim `was` held it: replace it with this one.
    Replace(&'c str, &'c str, ClaimRow, TransactionId),
    /// The claim `was` held it: remove it.
    Delete(&'c str, &'c str, TransactionId),
}

/// What a turn answers and writes.
#[derive(Debug)]
pub(crate) struct ClaimPlan<'c> {
    /// One per claim, in order.
    pub(crate) outcomes: Vec<ClaimOutcome>,
    pub(crate) writes: Vec<ClaimWrite<'c>>,
}

/// Applies `claims` in order to what their keys hold (`held`, one per
/// claim, in the same order; a key's later entries are not read): a key
/// answered gets its answer; a claim follows [`IdempotencyClaim::against`]
/// (crate::IdempotencyClaim::against) on the claim the key holds by then;
/// a release removes the claim only if it is the releaser's. Only each
/// key's final state is written.
pub(crate) fn plan_claims<'c>(claims: &'c [KeyClaim], held: Vec<KeyHeld>) -> ClaimPlan<'c> {
    // Each key: the claim it held at first, and what it holds now.
    let mut keys: HashMap<(&str, &str), (Option<ClaimRow>, KeyHeld)> = HashMap::new();
    let mut order = Vec::new();
    for (claim, held) in claims.iter().zip(held) {
        if let Entry::Vacant(first) = keys.entry(claim.key()) {
            order.push(claim.key());
            first.insert((held.claim, held));
        }
    }
    let mut outcomes = Vec::with_capacity(claims.len());
    for claim in claims {
        let Some((_, now)) = keys.get_mut(&claim.key()) else {
            // Every key was entered above.
            outcomes.push(ClaimOutcome::InFlight);
            continue;
        };
        outcomes.push(match claim {
            KeyClaim::Claim(claim) => match &now.answer {
                Some(entry) => ClaimOutcome::Answered(entry.clone()),
                None => {
                    let step = claim.against(now.claim.map(|(_, by, at)| (by, at)));
                    if matches!(step, ClaimStep::Insert | ClaimStep::TakeOver(_)) {
                        now.claim =
                            Some((claim.request_hash, claim.claimed_by, claim.claimed_at_ms));
                    }
                    step.outcome()
                }
            },
            KeyClaim::Release { claimed_by, .. } => {
                if now.claim.is_some_and(|(_, by, _)| by == *claimed_by) {
                    now.claim = None;
                }
                ClaimOutcome::Released
            }
        });
    }
    // In the order keys first came, so a backend writes in a fixed order.
    let writes = order
        .into_iter()
        .filter_map(|key| {
            let (first, now) = keys.get(&key)?;
            let (merchant_id, key) = key;
            match (first, now.claim) {
                (None, Some(row)) => Some(ClaimWrite::Insert(merchant_id, key, row)),
                (Some(was), Some(row)) if *was != row => {
                    Some(ClaimWrite::Replace(merchant_id, key, row, was.1))
                }
                (Some(was), None) => Some(ClaimWrite::Delete(merchant_id, key, was.1)),
                _ => None,
            }
        })
        .collect();
    ClaimPlan { outcomes, writes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::IdempotencyClaim;

    fn id(n: u64) -> TransactionId {
        TransactionId::new(n, [0; 10])
    }

    fn claim(key: &str, by: u64, at_ms: u64, stale_before_ms: u64) -> KeyClaim {
        KeyClaim::Claim(IdempotencyClaim {
            merchant_id: "M".to_owned(),
            key: key.to_owned(),
            request_hash: [1; 32],
            claimed_by: id(by),
            claimed_at_ms: at_ms,
            stale_before_ms,
        })
    }

    #[test]
    fn a_key_claimed_twice_in_one_turn_goes_to_the_first() {
        let claims = [claim("k", 1, 10, 0), claim("k", 2, 10, 0)];
        let plan = plan_claims(&claims, vec![KeyHeld::default(), KeyHeld::default()]);
        assert_eq!(
            plan.outcomes,
            [
                ClaimOutcome::Claimed { took_over: None },
                ClaimOutcome::InFlight
            ]
        );
        assert_eq!(
            plan.writes,
            [ClaimWrite::Insert("M", "k", ([1; 32], id(1), 10))]
        );
    }

    #[test]
    fn a_stale_claim_is_replaced_and_a_release_of_another_keeps_it() {
        let held = KeyHeld {
            answer: None,
            claim: Some(([1; 32], id(1), 10)),
        };
        let claims = [
            claim("k", 2, 100, 50),
            KeyClaim::Release {
                merchant_id: "M".to_owned(),
                key: "k".to_owned(),
                claimed_by: id(1),
            },
        ];
        let plan = plan_claims(&claims, vec![held.clone(), held]);
        assert_eq!(
            plan.outcomes,
            [
                ClaimOutcome::Claimed {
                    took_over: Some(id(1))
                },
                ClaimOutcome::Released
            ]
        );
        assert_eq!(
            plan.writes,
            [ClaimWrite::Replace("M", "k", ([1; 32], id(2), 100), id(1))]
        );
    }
}
