//! A request's acquirer keys claimed in the fleet's Redis, so a copy sent to
//! a second node waits for the first node's answer instead of being decided
//! twice, and the answers nodes leave there for each other. Used by
//! `duplicates.rs`, which decides when to claim, share and release.

use std::time::Duration;

use protocol::Amount;
use protocol::domain::{Authorization, Decision, DeclineReason, Token, TransactionId};
use protocol::ids::AuthCode;

use crate::clock::Stopwatch;
use crate::engine::record::CardOutcome;
use crate::engine::world::World;
use crate::fleet::{Claim, FleetStore};

/// How long a node's claim on a request's keys may stay pending in Redis
/// (a node that dies mid-decision frees them after this).
const CLAIM_PENDING_MS: u64 = 10_000;
/// How long a copy of a request waits for another node's answer.
const CLAIM_WAIT_MS: u64 = 2_000;
/// How often a copy asks again while another node decides.
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// Claims a request's acquirer keys in Redis: `Ok(None)` when this node
/// decides it, `Ok(Some(first))` when another node answered it, waiting
/// while that node decides; `Err(())` when Redis cannot tell (down, or a
/// claim pending past its deadline).
pub(crate) async fn claim_in_fleet(
    world: &World,
    fleet: &dyn FleetStore,
    redis_key: &str,
    authorization: &Authorization,
) -> Result<Option<CardOutcome>, ()> {
    let waiting = Stopwatch::start();
    loop {
        match fleet.claim(redis_key, CLAIM_PENDING_MS).await {
            Ok(Claim::Mine) => return Ok(None),
            Ok(Claim::Answered(text)) => {
                return decode_answer(&text, authorization)
                    .map(Some)
                    .ok_or_else(|| {
                        tracing::warn!("redis: an answer in the fleet could not be read");
                    });
            }
            Ok(Claim::Pending) if waiting.elapsed() < Duration::from_millis(CLAIM_WAIT_MS) => {
                tokio::time::sleep(CLAIM_POLL).await;
            }
            Ok(Claim::Pending) => {
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
