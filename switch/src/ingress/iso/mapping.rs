//! ISO 8583 requests to domain requests and the engine's outcomes back to
//! responses: a 0100/0200 becomes an `Authorization`, a 0400/0420 a
//! `Reversal` naming its original by DE90 (or its own keys), and network
//! management (0800) is answered here without the engine.

use protocol::domain::{
    AcquirerKeys, Authorization, Channel, OriginalRef, Reversal, ReversalKind, ReversedAmount,
    TransactionKind,
};
use protocol::ids::Text;
use protocol::iso::{
    self, CardRequest, NetworkCode, OriginalData, Request, RequestKind, ReversalRequest,
};
use protocol::{Message, ResponseCode};

use crate::clock::Deadline;
use crate::engine::acquirer::Acquirer;
use crate::engine::{Engine, Received};

/// Answers one decoded ISO 8583 request; `None` if it deserves no answer
/// (it is itself a response). `acquirer`: the acquirer a mutual-TLS
/// connection's client certificate named; `None` on plain TCP. `decode_us`:
/// the time decoding took, recorded with a card request. A reversal
/// reaches here only once the requests before it on its connection are
/// answered (`order`), so it finds an original pipelined just ahead of it.
pub(super) async fn answer(
    engine: &Engine,
    message: &Message,
    acquirer: Option<&Acquirer>,
    decode_us: u64,
    deadline: Deadline,
) -> Option<Message> {
    match Request::parse(message) {
        Ok(Request::Network(request)) => {
            let code = match request.code {
                NetworkCode::SignOn | NetworkCode::SignOff | NetworkCode::Echo => {
                    ResponseCode::Approved
                }
                NetworkCode::Other(_) => ResponseCode::InvalidTransaction,
            };
            iso::response(message, code, None)
        }
        Ok(Request::Card(request)) => {
            // A merchant over its rate is refused before the vault, the
            // actors and the journal, so its flood costs others nothing.
            // Not journaled, like a request shed at a full mailbox: under a
            // flood a record per refusal would put the flood's weight on the
            // journal the limit protects. It is counted instead
            // (switch_rate_limited_total), and a retransmission is decided
            // afresh.
            // The configuration is taken once: the rate admits the request
            // and the same configuration decides it.
            let policy = engine.policy();
            if policy.admission_rates.admit(request.merchant_id).is_err() {
                engine.metrics().count_rate_limited(Channel::Iso);
                return iso::response(message, ResponseCode::IssuerUnavailable, None);
            }
            // The parsed request is not kept across the wait: the answer
            // future of every request in flight would carry it.
            let (authorization, processing_code) = into_authorization(request);
            let received = Received {
                acquirer,
                processing_code: Some(processing_code),
                decode_us,
                deadline: Some(deadline),
                policy: Some(policy),
            };
            let outcome = engine.authorize(authorization, received).await;
            iso::response(
                message,
                outcome.response_code(),
                outcome.decision.auth_code(),
            )
        }
        Ok(Request::Reversal(request)) => {
            let reversal = reversal(&request);
            drop(request);
            let outcome = engine
                .reverse_within(reversal, acquirer, Some(deadline))
                .await;
            iso::response(message, outcome.response_code(), None)
        }
        Err(protocol::DecodeError::UnsupportedMti { .. }) => {
            iso::response(message, ResponseCode::InvalidTransaction, None)
        }
        Err(error) => {
            engine
                .metrics()
                .messages_malformed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(mti = %message.mti(), %error, "request with a bad field answered 30");
            iso::response(message, ResponseCode::FormatError, None)
        }
    }
}

/// The domain authorization a 0100 or 0200 (or its repeat) asks for, and
/// its DE3. Takes the request whole: its PAN moves rather than being
/// copied, and none of it outlives this call.
fn into_authorization(request: CardRequest) -> (Authorization, Text<6>) {
    let authorization = Authorization {
        channel: Channel::Iso,
        kind: match request.kind {
            RequestKind::Financial => TransactionKind::Purchase,
            _ => TransactionKind::Authorization,
        },
        pan: request.pan,
        expiry: request.expiry,
        amount: request.amount,
        currency: request.currency,
        merchant_id: request.merchant_id,
        terminal_id: request.terminal_id,
        mcc: request.mcc,
        keys: Some(AcquirerKeys {
            stan: request.stan,
            rrn: request.rrn,
            transmitted_at: request.transmitted_at,
            repeat: request.repeat,
        }),
    };
    (authorization, request.processing_code)
}

/// The domain reversal a 0400 or 0420 (or its repeat) asks for: its original
/// is named by DE90's STAN and transmission time at this terminal, or,
/// without DE90, by this message's own STAN and terminal; it reverses DE4,
/// less what DE95 says stands.
fn reversal(request: &ReversalRequest) -> Reversal {
    let (stan, transmitted_at) = match &request.original {
        Some(OriginalData {
            stan,
            transmitted_at,
            ..
        }) => (*stan, Some(*transmitted_at)),
        None => (request.stan, None),
    };
    Reversal {
        channel: Channel::Iso,
        kind: if request.kind == RequestKind::ReversalAdvice {
            ReversalKind::Advice
        } else {
            ReversalKind::Reversal
        },
        original: OriginalRef::Keys {
            terminal_id: request.terminal_id,
            stan,
            transmitted_at,
        },
        amount: ReversedAmount::Part(request.reversed_amount()),
        currency: Some(request.currency),
        merchant_id: request.merchant_id,
        terminal_id: Some(request.terminal_id),
        keys: Some(AcquirerKeys {
            stan: request.stan,
            rrn: request.rrn,
            transmitted_at: request.transmitted_at,
            repeat: request.repeat,
        }),
    }
}
