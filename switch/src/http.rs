//! The JSON/HTTP API for web clients, and the ops endpoints.
//!
//! | route                                     | who           |
//! |-------------------------------------------|---------------|
//! | `POST /v1/authorizations`                 | merchant key  |
//! | `POST /v1/authorizations/{id}/reversal`   | merchant key  |
//! | `GET /v1/transactions/{id}`               | merchant key (own only) or admin |
//! | `GET /metrics`, `/health/live`, `/health/ready` | anyone on the listener |
//! | `GET /admin/latency`                      | admin key     |
//! | `GET /admin`                              | the page; it asks for the admin key |
//!
//! API keys are compared as SHA-256 digests in constant time, against every
//! configured key, so timing tells nothing about which key was close. Errors
//! are `application/problem+json` naming the field; they never repeat a
//! value from the request, so a PAN sent in the wrong field is not echoed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::Mti;
use protocol::domain::{
    Authorization, Channel, Decision, DeclineReason, TransactionId, TransactionKind, pad,
};
use protocol::json::{self, FieldError, Problem};
use sha2::{Digest, Sha256};
use storage::{RecordKind, StoreReader};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HttpConfig, MerchantConfig};
use crate::engine::{CardOutcome, Engine, IdempotencyRequest};
use crate::metrics::{Metrics, Stage};
use crate::tls::{self, TlsListener};
use tokio_rustls::TlsAcceptor;

/// Who a request is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Merchant(protocol::iso::MerchantId),
    Admin,
}

/// Shared state of the HTTP handlers.
pub struct HttpState {
    engine: Arc<Engine>,
    keys: Vec<([u8; 32], Principal)>,
    /// Idempotency keys whose first request is still being decided.
    idempotency_in_flight: Mutex<HashSet<(protocol::iso::MerchantId, String)>>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl HttpState {
    pub fn new(
        engine: Arc<Engine>,
        merchants: &[MerchantConfig],
        admin_key_sha256: Option<[u8; 32]>,
    ) -> HttpState {
        let mut keys: Vec<([u8; 32], Principal)> = merchants
            .iter()
            .filter_map(|m| {
                m.api_key_sha256
                    .map(|digest| (digest, Principal::Merchant(m.id)))
            })
            .collect();
        if let Some(digest) = admin_key_sha256 {
            keys.push((digest, Principal::Admin));
        }
        HttpState {
            engine,
            keys,
            idempotency_in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        let key = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured key is compared, whatever matched first.
        let mut found = None;
        for (configured, principal) in &self.keys {
            if bool::from(configured.ct_eq(&digest)) {
                found = Some(*principal);
            }
        }
        found
    }
}

pub fn router(state: Arc<HttpState>, config: &HttpConfig) -> Router {
    Router::new()
        .route("/v1/authorizations", post(create_authorization))
        .route(
            "/v1/authorizations/{id}/reversal",
            post(reverse_authorization),
        )
        .route("/v1/transactions/{id}", get(get_transaction))
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/admin/latency", get(admin_latency))
        .route("/admin", get(admin_page))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such route",
                "no route matches this path",
                None,
            )
        })
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .with_state(state)
}

/// Serves HTTP/1.1 until `shutdown`, with a header read timeout, so a client
/// that opens a connection and sends nothing is cut off. With `tls`, every
/// connection is HTTPS: its handshake runs in the connection's own task and
/// must finish within the same header read timeout.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let shutdown = shutdown.clone();
        let header_read_timeout = Duration::from_millis(config.header_read_timeout_ms);
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let tls = tls.clone();
        let metrics = Arc::clone(&metrics);
        tracker.spawn(async move {
            let Some(acceptor) = tls else {
                serve_connection(stream, service, header_read_timeout, request_timeout, shutdown)
                    .await;
                return;
            };
            let handshake = tokio::select! {
                () = shutdown.cancelled() => return,
                handshake = tls::handshake(&acceptor, stream, header_read_timeout) => handshake,
            };
            match handshake {
                Ok(stream) => {
                    metrics.count_tls_handshake(TlsListener::Http);
                    serve_connection(
                        stream,
                        service,
                        header_read_timeout,
                        request_timeout,
                        shutdown,
                    )
                    .await;
                }
                Err((reason, detail)) => {
                    // AUDIT: a refused HTTPS handshake (peer, reason).
                    metrics.count_tls_refused(TlsListener::Http, reason);
                    tracing::info!(%peer, reason = reason.as_str(), error = %detail, "HTTPS handshake refused");
                }
            }
        });
    }
}

/// One HTTP/1.1 connection, plain or TLS, until it ends or `shutdown`.
async fn serve_connection<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<Router>,
    header_read_timeout: Duration,
    request_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(request_timeout, connection).await;
        }
    }
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    field: Option<&str>,
) -> Response {
    let body = Problem {
        kind: format!("/problems/{kind}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        field: field.map(str::to_owned),
    };
    let mut response = (status, serde_json::to_string(&body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(Problem::CONTENT_TYPE),
    );
    response
}

fn unauthorized() -> Response {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "An API key is needed",
        "send `Authorization: Bearer <api key>`",
        None,
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// The error is the finished response; handlers return it as is, so boxing it
// would only add an allocation to the error path.
#[allow(clippy::result_large_err)]
/// Parses a JSON body into `T`, naming the field at fault without quoting
/// anything the client sent.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let (field, detail) = if let Some(name) = between_backticks(&message, "missing field `") {
            (name.clone(), format!("{name} is required"))
        } else if let Some(name) = between_backticks(&message, "unknown field `") {
            (
                name.clone(),
                format!("{name} is not a field of this request"),
            )
        } else if error.inner().is_syntax() || error.inner().is_eof() {
            (String::new(), "the body is not valid JSON".to_owned())
        } else if path == "." {
            (String::new(), "the body must be a JSON object".to_owned())
        } else if path == "pan" || path == "cvv" {
            // Their own deserializers word these messages without the value.
            (
                path.clone(),
                message
                    .split(" at line")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            )
        } else {
            (path.clone(), format!("{path} has the wrong type or value"))
        };
        let field = (!field.is_empty()).then_some(field);
        problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "A field of the request is invalid",
            &detail,
            field.as_deref(),
        )
    })
}

fn between_backticks(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split(prefix).nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

fn field_problem(error: &FieldError) -> Response {
    let body = Problem::invalid_field(error);
    problem(
        StatusCode::BAD_REQUEST,
        "invalid-field",
        &body.title,
        &body.detail,
        Some(error.field),
    )
}

fn rfc3339(unix_ms: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let seconds = unix_ms / 1000;
    let days = (seconds / 86_400) as i64;
    let time = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60,
        unix_ms % 1000
    )
}

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

fn unavailable(detail: &str) -> Response {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The switch cannot take this request now",
        detail,
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn create_authorization(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let engine = &state.engine;
    let Some(principal) = state.principal(&headers) else {
        return unauthorized();
    };
    let Principal::Merchant(merchant_id) = principal else {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only a merchant key can authorize",
            "use the merchant's API key",
            None,
        );
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
        .map(|mcc| protocol::iso::Text::<4>::parse(mcc.as_bytes()))
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

    // Idempotency: same key and body gets the stored answer; another body, 422;
    // while the first is still being decided, 409.
    let idempotency_key = match headers.get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => Some(key.to_owned()),
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
    let request_hash: [u8; 32] = Sha256::digest(&body).into();
    let mut in_flight_guard = None;
    if let Some(key) = &idempotency_key {
        let entry = (merchant_id, key.clone());
        let inserted = state
            .idempotency_in_flight
            .lock()
            .map(|mut set| set.insert(entry.clone()))
            .unwrap_or(false);
        if !inserted {
            return problem(
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "A request with this Idempotency-Key is in progress",
                "retry after it completes",
                Some("Idempotency-Key"),
            );
        }
        in_flight_guard = Some(InFlightGuard {
            state: &state,
            entry,
        });
        match engine
            .store()
            .idempotent_response(merchant_id.as_str().trim_end(), key)
            .await
        {
            Ok(Some(stored)) if stored.request_hash == request_hash => {
                let mut response = json_response(
                    StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                    stored.response_json,
                );
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Ok(Some(_)) => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "This Idempotency-Key was used with another request body",
                    "use a new Idempotency-Key for a new request",
                    Some("Idempotency-Key"),
                );
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "idempotency lookup failed");
                return unavailable("the journal cannot be read");
            }
        }
    }

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
    engine.metrics().record(
        Channel::Http,
        Stage::Decode,
        started.elapsed().as_micros() as u64,
    );
    let idempotency = idempotency_key.map(|key| IdempotencyRequest {
        merchant_id: merchant_id.as_str().trim_end().to_owned(),
        key,
        request_hash,
        render: render_authorization,
    });
    let outcome = engine
        .authorize(
            authorization,
            Mti::AUTHORIZATION_REQUEST,
            None,
            idempotency,
            None,
        )
        .await;
    drop(in_flight_guard);
    engine
        .metrics()
        .count_response(Channel::Http, outcome.response_code());
    engine.metrics().record(
        Channel::Http,
        Stage::Total,
        started.elapsed().as_micros() as u64,
    );
    match outcome.decision {
        Decision::Declined {
            reason: DeclineReason::JournalUnavailable,
        } => unavailable("the journal could not record the transaction; nothing was approved"),
        Decision::Declined {
            reason: DeclineReason::Overloaded,
        } => unavailable("the switch is at capacity"),
        _ => {
            let (status, body) = render_authorization(&outcome);
            json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
                body,
            )
        }
    }
}

/// Releases an idempotency key from the in-flight set, also on early return.
struct InFlightGuard<'a> {
    state: &'a HttpState,
    entry: (protocol::iso::MerchantId, String),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.state.idempotency_in_flight.lock() {
            set.remove(&self.entry);
        }
    }
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
            Principal::Admin => Ok(stored),
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

async fn get_transaction(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(principal) = state.principal(&headers) else {
        return unauthorized();
    };
    match visible_transaction(&state, principal, &id).await {
        Ok(stored) => json_response(
            StatusCode::OK,
            serde_json::to_string(&transaction_json(&stored)).unwrap_or_default(),
        ),
        Err(response) => response,
    }
}

async fn reverse_authorization(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let Some(principal) = state.principal(&headers) else {
        return unauthorized();
    };
    let Principal::Merchant(_) = principal else {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only a merchant key can reverse",
            "use the merchant's API key",
            None,
        );
    };
    let request: json::ReversalRequest = if body.is_empty() {
        json::ReversalRequest::default()
    } else {
        match parse_body(&body) {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    let stored = match visible_transaction(&state, principal, &id).await {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    let original = stored.record.clone();
    if !matches!(
        original.kind,
        RecordKind::Authorization | RecordKind::Purchase
    ) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-reversible",
            "Only an authorization can be reversed",
            "this transaction is itself a reversal",
            None,
        );
    }
    let amount = match request.amount {
        None => original.amount,
        Some(minor) => match protocol::Amount::from_minor(minor)
            .filter(|a| *a <= original.amount && minor > 0)
        {
            Some(amount) => amount,
            None => {
                return field_problem(&FieldError {
                    field: "amount",
                    reason: "must be from 1 to the authorized amount",
                });
            }
        },
    };
    let outcome = state
        .engine
        .reverse(
            Some(original.clone()),
            RecordKind::Reversal,
            Mti::REVERSAL_REQUEST,
            Channel::Http,
            amount,
            original.currency,
            original.merchant_id,
            original.terminal_id,
            None,
            None,
        )
        .await;
    state
        .engine
        .metrics()
        .count_response(Channel::Http, outcome.code);
    state.engine.metrics().record(
        Channel::Http,
        Stage::Total,
        started.elapsed().as_micros() as u64,
    );
    if !outcome.code.is_approved() {
        return unavailable("the journal could not record the reversal");
    }
    match state.engine.store().transaction(original.id).await {
        Ok(Some(stored)) => json_response(
            StatusCode::OK,
            serde_json::to_string(&transaction_json(&stored)).unwrap_or_default(),
        ),
        _ => unavailable("the journal cannot be read"),
    }
}

async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    if state.engine.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting (journal replay) or the journal writer has stopped\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let engine = &state.engine;
    let stats = engine.shards().stats().await;
    let depth: u64 = stats
        .shards
        .iter()
        .map(|shard| shard.mailbox_depth as u64)
        .sum();
    let journal = engine.journal().stats();
    let text = engine.metrics().render(&[
        (
            "switch_shard_mailbox_depth",
            "Messages waiting in all shard mailboxes.",
            depth,
        ),
        (
            "switch_shard_shed_total",
            "Requests shed at a full shard mailbox.",
            stats.shed_total,
        ),
        (
            "switch_journal_batches_total",
            "Journal batches committed.",
            journal.batches,
        ),
        (
            "switch_journal_records_total",
            "Journal records committed.",
            journal.records,
        ),
        (
            "switch_journal_batch_size_last",
            "Records in the last journal batch.",
            journal.batch_rows_last,
        ),
        (
            "switch_journal_queue_depth",
            "Records waiting for the journal writer.",
            journal.queue_depth,
        ),
        (
            "switch_ready",
            "1 once the journal is open and replay is done.",
            u64::from(engine.is_ready()),
        ),
    ]);
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn admin_latency(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    match state.principal(&headers) {
        Some(Principal::Admin) => {}
        Some(Principal::Merchant(_)) => {
            return problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Admin only",
                "this route needs the admin credential",
                None,
            );
        }
        None => return unauthorized(),
    }
    let body = serde_json::json!({ "stages": state.engine.metrics().percentiles() });
    json_response(StatusCode::OK, body.to_string())
}

async fn admin_page() -> Response {
    let mut response = (StatusCode::OK, ADMIN_PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

const ADMIN_PAGE: &str = include_str!("admin.html");
