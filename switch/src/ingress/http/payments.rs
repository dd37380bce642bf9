//! The payment routes, for merchants' web clients (and staff reading
//! transactions): create an authorization, with idempotency keys; reverse
//! it; read a transaction. Each hands a domain request to the engine and
//! renders its outcome; none ever returns card data (a transaction shows its
//! token, BIN and last four only).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use protocol::domain::{
    Authorization, Channel, Decision, DeclineReason, OriginalRef, Reversal, ReversalKind,
    ReversedAmount, TransactionId, TransactionKind, pad,
};
use protocol::encoding::to_hex;
use protocol::json::{self, FieldError};
use storage::{DigestPurpose, StoreReader};

use crate::admission::{Class, Permit};
use crate::clock::Stopwatch;
use crate::engine::{
    CardOutcome, IdempotencyRequest, Idempotent, Policy, Received, ReversalOutcome, ReversalRefusal,
};
use crate::ingress::http::principal::Principal;
use crate::ingress::http::problem::{
    RequestBody, field_problem, json_response, parse_body, problem, unavailable,
};
use crate::ingress::http::state::HttpState;
use crate::ops::metrics::Stage;
use crate::ops::time::rfc3339;

/// Why a card request is answered 503 while the switch starts.
const STARTING: &str = "the switch is starting: card limits are being restored from the journal";

/// Why a request is answered 503 when shed: refused at the admission
/// limit, or out of time before its record was written.
const OVERLOADED: &str = "the switch is at capacity: nothing was decided";

/// The reply to an authorization, as stored for idempotent replays.
fn render_authorization(outcome: &CardOutcome) -> (u16, String) {
    let reply = json::AuthorizationResponse {
        id: outcome.id.to_string(),
        status: if outcome.decision.is_approved() {
            json::Status::Approved
        } else {
            json::Status::Declined
        },
        response_code: outcome.response_code().as_str().to_owned(),
        auth_code: outcome
            .decision
            .auth_code()
            .map(|code| code.as_str().to_owned()),
        token: outcome.token.map(|t| t.to_string()).unwrap_or_default(),
        last4: outcome.last4.clone(),
        amount: outcome.amount.minor(),
        currency: outcome.currency.alpha().to_owned(),
        created_at: rfc3339(outcome.created_at_ms),
    };
    (201, serde_json::to_string(&reply).unwrap_or_default())
}

/// `POST /v1/authorizations`: a merchant's authorization. With an
/// `Idempotency-Key`, the same key and body get the stored answer again.
///
/// The request is answered by a task of its own: a client that gives up (a
/// timeout, a closed connection) drops this handler, not the work, which
/// holds the key's in-flight guard and may already have its record on the
/// way to the journal. A retry gets 409 until that answer is stored, then
/// the stored answer: never a second decision for one key. (One spawn per
/// authorization, a few microseconds.)
pub(super) async fn create_authorization(
    State(state): State<Arc<HttpState>>,
    Extension(principal): Extension<Principal>,
    Extension(policy): Extension<Arc<Policy>>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    let started = Stopwatch::start();
    let admitted = Admitted { principal, policy };
    tokio::spawn(authorize_request(state, admitted, headers, body, started))
        .await
        .unwrap_or_else(|_| unavailable("the authorization could not be decided"))
}

/// Who a request is from and the configuration the door admitted it under,
/// which decides it.
struct Admitted {
    principal: Principal,
    policy: Arc<Policy>,
}

/// [`create_authorization`]'s work, whether or not its client still waits.
async fn authorize_request(
    state: Arc<HttpState>,
    Admitted { principal, policy }: Admitted,
    headers: HeaderMap,
    body: Bytes,
    started: Stopwatch,
) -> Response {
    let engine = &state.engine;
    let Principal::Merchant(merchant_id) = principal else {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only a merchant key can authorize",
            "use the merchant's API key",
            None,
        );
    };
    // At the door, before the body is read: over the limit, a refusal
    // costs no JSON parsing and no hashing.
    let _permit = match admit(&state, Class::Card, merchant_id.as_str()) {
        Ok(permit) => permit,
        Err(response) => return response,
    };
    let request: json::AuthorizationRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let checked = match request.check() {
        Ok(checked) => checked,
        Err(error) => return field_problem(&error),
    };
    if pad::<15>(&checked.merchant_id) != Some(merchant_id) {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This key acts for another merchant",
            "merchant_id must be the merchant of the API key",
            Some("merchant_id"),
        );
    }
    let Some(terminal_id) = pad::<8>(&checked.terminal_id) else {
        return field_problem(&FieldError {
            field: "terminal_id",
            reason: "must be 1 to 8 printable ASCII characters",
        });
    };
    let mcc = match checked
        .mcc
        .as_deref()
        .map(|mcc| protocol::ids::Text::<4>::parse(mcc.as_bytes()))
    {
        Some(None) => {
            return field_problem(&FieldError {
                field: "mcc",
                reason: "must be 4 digits",
            });
        }
        Some(Some(mcc)) => Some(mcc),
        None => None,
    };

    // Idempotency (the engine's step: `engine/idempotency.rs`): the same
    // key and request get the stored answer; another request, 422; while
    // the first is still being decided, on any node, 409. Both are kept and
    // matched only as keyed digests (`Vault::digest`): a client may
    // type a card number into the key, and the request holds the PAN, expiry
    // and CVV, which an unkeyed hash would give up to anyone trying every
    // card number against it. The request is digested in its canonical form,
    // so a retry with other whitespace or key order is the same request.
    let vault = engine.vault();
    let idempotency = match headers.get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => Some((
            to_hex(&vault.digest(DigestPurpose::IdempotencyKey, key.as_bytes())),
            vault.digest(DigestPurpose::IdempotencyRequest, &checked.canonical_form()),
        )),
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-header",
                "Idempotency-Key is invalid",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                Some("Idempotency-Key"),
            );
        }
    };
    let authorization = Authorization {
        channel: Channel::Http,
        kind: TransactionKind::Authorization,
        pan: checked.pan,
        expiry: Some(checked.expiry),
        amount: checked.amount,
        currency: checked.currency,
        merchant_id,
        terminal_id,
        mcc,
        keys: None,
    };
    let decode_us = started.elapsed_us();
    engine
        .metrics()
        .record(Channel::Http, Stage::Decode, decode_us);
    let received = Received {
        decode_us,
        deadline: Some(state.deadline_after(started)),
        policy: Some(policy),
        ..Received::default()
    };
    let outcome = match idempotency {
        None => engine.authorize(authorization, received).await,
        Some((key, request_hash)) => {
            let request = IdempotencyRequest {
                merchant_id: merchant_id.as_str().trim_end().to_owned(),
                key,
                request_hash,
                render: render_authorization,
            };
            match engine
                .authorize_idempotent(authorization, received, request)
                .await
            {
                Idempotent::Decided(outcome) => outcome,
                Idempotent::Replayed { status, body } => {
                    let mut response =
                        json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
                    response
                        .headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return response;
                }
                Idempotent::InProgress => {
                    return problem(
                        StatusCode::CONFLICT,
                        "idempotency-in-progress",
                        "A request with this Idempotency-Key is in progress",
                        "retry after it completes",
                        Some("Idempotency-Key"),
                    );
                }
                Idempotent::KeyReused => {
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency-key-reused",
                        "This Idempotency-Key was used with another request body",
                        "use a new Idempotency-Key for a new request",
                        Some("Idempotency-Key"),
                    );
                }
                Idempotent::Unavailable => {
                    return unavailable(
                        "the idempotency key could not be claimed; nothing was decided",
                    );
                }
            }
        }
    };
    engine
        .metrics()
        .count_response(Channel::Http, outcome.response_code());
    state.answered(started);
    match outcome.decision {
        Decision::Declined { reason } if reason.asks_for_retry() => unavailable(match reason {
            DeclineReason::JournalUnavailable => {
                "the journal could not record the transaction; nothing was approved"
            }
            DeclineReason::Starting => STARTING,
            _ => OVERLOADED,
        }),
        _ => {
            let (status, body) = render_authorization(&outcome);
            json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
                body,
            )
        }
    }
}

/// A permit from the admission limit for a request of `merchant`, or the
/// 503 it is shed with, counted.
#[allow(clippy::result_large_err)]
fn admit<'a>(state: &'a HttpState, class: Class, merchant: &str) -> Result<Permit<'a>, Response> {
    let metrics = state.engine.metrics();
    state
        .engine
        .load_limit()
        .admit(class, merchant.as_bytes(), None)
        .map_err(|refused| {
            metrics.count_shed(Channel::Http, refused.into());
            metrics.count_response(Channel::Http, DeclineReason::Overloaded.response_code());
            unavailable(OVERLOADED)
        })
}

fn transaction_json(stored: &storage::StoredTransaction) -> json::Transaction {
    let record = &stored.record;
    json::Transaction {
        id: record.id.to_string(),
        status: if stored.reversed_by.is_some() {
            json::TransactionStatus::Reversed
        } else if record.response_code.is_approved() {
            json::TransactionStatus::Approved
        } else {
            json::TransactionStatus::Declined
        },
        response_code: record.response_code.as_str().to_owned(),
        auth_code: record.auth_code.map(|code| code.as_str().to_owned()),
        token: record.token.map(|t| t.to_string()).unwrap_or_default(),
        bin: record.bin.clone().unwrap_or_default(),
        last4: record.last4.clone().unwrap_or_default(),
        amount: record.amount.minor(),
        currency: record.currency.alpha().to_owned(),
        merchant_id: record.merchant_id.as_str().trim_end().to_owned(),
        terminal_id: record.terminal_id.as_str().trim_end().to_owned(),
        created_at: rfc3339(record.created_at_ms),
        reversed_at: None,
        acquirer: record.acquirer.clone(),
    }
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such transaction",
        "no transaction with this id for this key",
        None,
    )
}

/// Loads a card transaction the principal may see; another merchant's is
/// "not found", so ids cannot be probed.
#[allow(clippy::result_large_err)]
async fn visible_transaction(
    state: &HttpState,
    principal: Principal,
    id: &str,
) -> Result<storage::StoredTransaction, Response> {
    let Some(id) = TransactionId::parse(id) else {
        return Err(not_found());
    };
    match state.engine.store().transaction(id).await {
        Ok(Some(stored)) => match principal {
            Principal::Admin | Principal::Operator => Ok(stored),
            Principal::Merchant(merchant) if stored.record.merchant_id == merchant => Ok(stored),
            Principal::Merchant(_) => Err(not_found()),
        },
        Ok(None) => Err(not_found()),
        Err(error) => {
            tracing::warn!(%error, "transaction lookup failed");
            Err(unavailable("the journal cannot be read"))
        }
    }
}

/// `GET /v1/transactions/{id}`: a merchant's own, or any for staff.
pub(super) async fn get_transaction(
    State(state): State<Arc<HttpState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match visible_transaction(&state, principal, &id).await {
        Ok(stored) => json_response(
            StatusCode::OK,
            serde_json::to_string(&transaction_json(&stored)).unwrap_or_default(),
        ),
        Err(response) => response,
    }
}

/// `POST /v1/authorizations/{id}/reversal`: the whole amount, or part of it
/// (`amount`), of a merchant's own authorization.
pub(super) async fn reverse_authorization(
    State(state): State<Arc<HttpState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Response {
    let started = Stopwatch::start();
    let Principal::Merchant(merchant_id) = principal else {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only a merchant key can reverse",
            "use the merchant's API key",
            None,
        );
    };
    let _permit = match admit(&state, Class::Reversal, merchant_id.as_str()) {
        Ok(permit) => permit,
        Err(response) => return response,
    };
    let request: json::ReversalRequest = if body.is_empty() {
        json::ReversalRequest::default()
    } else {
        match parse_body(&body) {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    let Some(id) = TransactionId::parse(&id) else {
        return not_found();
    };
    // The engine finds the original itself: this merchant's, reversible,
    // and the amount from 1 to its own, in that order.
    let reversal = Reversal {
        channel: Channel::Http,
        kind: ReversalKind::Reversal,
        original: OriginalRef::Id(id),
        amount: match request.amount {
            None => ReversedAmount::Whole,
            Some(minor) => protocol::Amount::from_minor(minor)
                .map_or(ReversedAmount::OverMaximum, ReversedAmount::Part),
        },
        currency: None,
        merchant_id,
        terminal_id: None,
        keys: None,
    };
    let deadline = state.deadline_after(started);
    let outcome = state
        .engine
        .reverse_within(reversal, None, Some(deadline))
        .await;
    let original = match outcome {
        ReversalOutcome::Recorded { original, .. } => original,
        ReversalOutcome::Refused(refusal) => match refusal {
            ReversalRefusal::UnknownOriginal => return not_found(),
            ReversalRefusal::LookupFailed => return unavailable("the journal cannot be read"),
            ReversalRefusal::Starting => return unavailable(STARTING),
            ReversalRefusal::Overloaded => return unavailable(OVERLOADED),
            ReversalRefusal::NotReversible => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not-reversible",
                    "Only an authorization can be reversed",
                    "this transaction is itself a reversal",
                    None,
                );
            }
            ReversalRefusal::AmountOutOfRange => {
                return field_problem(&FieldError {
                    field: "amount",
                    reason: "must be from 1 to the authorized amount",
                });
            }
            // The engine got as far as the journal: counted like any
            // answer, then 503. (HTTP names no acquirer, so a refusal for
            // one cannot happen here.)
            ReversalRefusal::JournalFailed | ReversalRefusal::AcquirerNotPermitted => None,
        },
    };
    state
        .engine
        .metrics()
        .count_response(Channel::Http, outcome.response_code());
    state.answered(started);
    let Some(original) = original else {
        return unavailable("the journal could not record the reversal");
    };
    match state.engine.store().transaction(original).await {
        Ok(Some(stored)) => json_response(
            StatusCode::OK,
            serde_json::to_string(&transaction_json(&stored)).unwrap_or_default(),
        ),
        _ => unavailable("the journal cannot be read"),
    }
}
