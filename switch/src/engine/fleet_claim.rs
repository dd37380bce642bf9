//! A request's acquirer keys claimed in the fleet's Redis, so a copy sent to
//! a second node waits for the first node's answer instead of being decided
//! twice, and the answers nodes leave there for each other. Used by
//! `fleet_settle.rs`, which claims, and `duplicates.rs`, which shares and
//! releases.

use std::time::Duration;

use protocol::Amount;
use protocol::domain::{Authorization, Decision, DeclineReason, Token, TransactionId};
use protocol::ids::AuthCode;

use crate::clock::Deadline;
use crate::engine::record::CardOutcome;
use crate::engine::world::World;
use crate::fleet::{Claim, FleetStore};

/// How long a node's claim on a request's keys may stay pending in Redis
/// (a node that dies mid-decision frees them after this).
pub(crate) const CLAIM_PENDING_MS: u64 = 10_000;
/// How long a copy of a request waits for another node's answer.
const CLAIM_WAIT_MS: u64 = 2_000;
/// How often a copy asks again while another node decides.
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// How a wait on another node's claim ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// That node answered the request: its answer.
    Answered(CardOutcome),
    /// The claim lapsed unanswered (that request ended without a record, or
    /// its node died) and this node holds it now. A copy waiting on it gets
    /// what a copy waiting on the same node gets, 96, and is not decided;
    /// the next retransmission is. Deciding it at once would approve a
    /// request its acquirer may be reversing right then, after the first
    /// one's failure, with the reversal finding no original.
    Claimed,
    /// A reversal found no original first (the claim lapsed and a reversal
    /// marked the keys meanwhile).
    Reversed,
}

/// Waits while another node decides the request whose keys are
/// `redis_key` (its claim was found pending), asking again every few
/// milliseconds. `Err(())` when Redis cannot tell (down, or the claim
/// still pending past this node's wait).
pub(crate) async fn wait_for_answer(
    world: &World,
    fleet: &dyn FleetStore,
    redis_key: &str,
    authorization: &Authorization,
) -> Result<Waited, ()> {
    let giving_up = Deadline::after(Duration::from_millis(CLAIM_WAIT_MS));
    loop {
        tokio::time::sleep(CLAIM_POLL).await;
        match fleet.claim(redis_key, CLAIM_PENDING_MS).await {
            Ok(claim) if claim.is_this_nodes() => return Ok(Waited::Claimed),
            Ok(Claim::Reversed) => return Ok(Waited::Reversed),
            Ok(Claim::Answered(text)) => {
                return read_answer(&text, authorization).map(Waited::Answered);
            }
            Ok(_) if !giving_up.has_passed() => {}
            Ok(_) => {
                tracing::warn!("redis: another node's claim stayed pending; not deciding twice");
                return Err(());
            }
            Err(error) => {
                world.count_fleet_error();
                tracing::warn!(%error, "redis: the request's keys could not be claimed");
                return Err(());
            }
        }
    }
}

/// Another node's answer, as it left it in Redis; `Err(())` when it cannot
/// be read (then nothing tells whether the request was answered).
pub(crate) fn read_answer(text: &str, authorization: &Authorization) -> Result<CardOutcome, ()> {
    decode_answer(text, authorization).ok_or_else(|| {
        tracing::warn!("redis: an answer in the fleet could not be read");
    })
}

/// Waits while a node of the fleet holds `redis_key`'s claim pending (it is
/// deciding that request), for a reversal that must find the request in the
/// journal. Keys no node holds are marked reversed meanwhile
/// ([`FleetStore::reversing`]), so an original that reaches a node only now
/// is not decided after its reversal found nothing. Bounded by the claim's pending time: a claim still pending then
/// lapses in Redis as well (its node is presumed dead), and the reversal
/// goes on to the journal as it stands, as it does when Redis cannot be
/// asked.
pub(crate) async fn wait_while_pending(world: &World, fleet: &dyn FleetStore, redis_key: &str) {
    let giving_up = Deadline::after(Duration::from_millis(CLAIM_PENDING_MS));
    loop {
        match fleet.reversing(redis_key).await {
            Ok(false) => return,
            Ok(true) if !giving_up.has_passed() => {
                tokio::time::sleep(CLAIM_POLL).await;
            }
            Ok(true) => {
                tracing::warn!(
                    "redis: the original of a reversal stayed pending on another node; matched against the journal as it stands"
                );
                return;
            }
            Err(error) => {
                world.count_fleet_error();
                tracing::warn!(%error, "redis: whether a reversal's original is in flight could not be asked");
                return;
            }
        }
    }
}

/// An answer as the fleet shares it in Redis: id, decision, auth code,
/// token, amount, time. No card data: the token stands for the card.
pub(crate) fn encode_answer(outcome: &CardOutcome) -> String {
    let (decision, auth_code) = match outcome.decision {
        Decision::Approved { auth_code } => ("approved", auth_code.as_str().to_owned()),
        Decision::Declined { reason } => (reason.as_str(), "-".to_owned()),
    };
    let token = outcome.token.map(|t| t.to_string()).unwrap_or_default();
    format!(
        "{}|{decision}|{auth_code}|{token}|{}|{}",
        outcome.id,
        outcome.amount.minor(),
        outcome.created_at_ms
    )
}

/// Reads an answer [`encode_answer`] wrote; the PAN's last four and the
/// currency are the retransmission's own (they are the same request).
fn decode_answer(text: &str, authorization: &Authorization) -> Option<CardOutcome> {
    let mut parts = text.split('|');
    let id = TransactionId::parse(parts.next()?)?;
    let decision = match (parts.next()?, parts.next()?) {
        ("approved", code) => Decision::Approved {
            auth_code: AuthCode::parse(code.as_bytes())?,
        },
        (reason, _) => Decision::Declined {
            reason: DeclineReason::from_name(reason)?,
        },
    };
    let token = Token::parse(parts.next()?)?;
    let amount = Amount::from_minor(parts.next()?.parse().ok()?)?;
    let created_at_ms = parts.next()?.parse().ok()?;
    Some(CardOutcome {
        id,
        decision,
        token: Some(token),
        last4: authorization.pan.last4().to_owned(),
        amount,
        currency: authorization.currency,
        created_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::domain::{Channel, TransactionKind};
    use protocol::ids::Text;

    #[test]
    fn answers_shared_in_the_fleet_read_back() {
        let authorization = Authorization {
            channel: Channel::Iso,
            kind: TransactionKind::Authorization,
            pan: protocol::Pan::parse(b"4111111111111111").unwrap(),
            expiry: None,
            amount: Amount::from_minor(1250).unwrap(),
            currency: protocol::Currency::parse("EUR").unwrap(),
            merchant_id: protocol::domain::pad("ACME0000001").unwrap(),
            terminal_id: Text::parse(b"TERM0001").unwrap(),
            mcc: None,
            keys: None,
        };
        for decision in [
            Decision::Approved {
                auth_code: AuthCode::parse(b"A1B2C3").unwrap(),
            },
            Decision::Declined {
                reason: DeclineReason::CardCountLimit,
            },
        ] {
            let outcome = CardOutcome {
                id: TransactionId::new(1_795_000_000_000, [9; 10]),
                decision,
                token: Some(Token::from_bytes([3; 16])),
                last4: "1111".to_owned(),
                amount: Amount::from_minor(1250).unwrap(),
                currency: protocol::Currency::parse("EUR").unwrap(),
                created_at_ms: 1_795_000_000_000,
            };
            let text = encode_answer(&outcome);
            assert!(!text.contains("4111111111111111"), "{text}");
            let read = decode_answer(&text, &authorization).unwrap();
            assert_eq!(
                (read.id, read.decision, read.token, read.amount),
                (outcome.id, outcome.decision, outcome.token, outcome.amount)
            );
            assert_eq!(read.created_at_ms, outcome.created_at_ms);
        }
        assert!(decode_answer("tx_1|approved", &authorization).is_none());
    }
}
