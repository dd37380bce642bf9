//! The JSON/HTTP API for web clients, and the ops endpoints.
//!
//! Who may call what is one table, [`ROUTES`], from which the router is
//! built; every route that needs a key gets [`check_access`] in front of
//! its handler. Roles follow a payments platform's permission model:
//!
//! | route                                     | merchant | operator | admin | rate limited |
//! |-------------------------------------------|----------|----------|-------|--------------|
//! | `POST /v1/authorizations`                 | yes      |          |       | yes          |
//! | `POST /v1/authorizations/{id}/reversal`   | own only |          |       |              |
//! | `GET /v1/transactions/{id}`               | own only | yes      | yes   | yes          |
//! | `GET /metrics`                            |          | yes      | yes   |              |
//! | `GET /admin/latency`                      |          | yes      | yes   |              |
//! | `GET /admin/audit`                        |          |          | yes   |              |
//! | `GET /admin/vault`, `POST /admin/vault/{reload,rewrap,verify}` | | | yes |     |
//! | `GET /admin`, `/health/live`, `/health/ready` | open (no key; the page asks for one) |
//!
//! Another merchant's transaction is "not found" (404), never "forbidden",
//! so ids cannot be probed. No route ever returns card data: a transaction
//! shows its token, BIN and last four only.
//!
//! API keys are compared as SHA-256 digests in constant time, against every
//! configured key, so timing tells nothing about which key was close. A
//! client origin (peer IP) that sends `security.lockout_failures` wrong
//! keys within `security.lockout_ms` is refused (429, `locked-out`) for
//! `lockout_ms`, right key or not. Every refusal is counted by reason in
//! `switch_http_refusals_total` and authentication is recorded in the audit
//! log. Errors are `application/problem+json` naming the field; they never
//! repeat a value from the request, so a PAN sent in the wrong field is not
//! echoed.

mod vault;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::Clock;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use protocol::domain::{
    Authorization, Channel, Decision, DeclineReason, OriginalRef, Reversal, ReversalKind,
    ReversedAmount, TransactionId, TransactionKind, pad,
};
use protocol::json::{self, FieldError, Problem};
use sha2::{Digest, Sha256};
use storage::StoreReader;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Failure, Lockout, RetryAfter, Standing};
use crate::config::{Config, HttpConfig};
use crate::engine::{
    CardOutcome, Engine, IdempotencyRequest, Received, ReversalOutcome, ReversalRefusal,
};
use crate::ingress::tls::{self, TlsListener};
use crate::ops::audit::{Audit, AuditEvent, events};
use crate::ops::metrics::{Metrics, Refusal, Stage};
use crate::ops::time::rfc3339;
use crate::ops::vault::VaultControl;
use tokio_rustls::TlsAcceptor;

/// A role, as a payments platform grants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its own authorizations and transactions only.
    Merchant,
    /// Reads every transaction and the metrics; never card data.
    Operator,
    /// Configuration, key rotation, the audit log.
    Admin,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the listener; no key asked.
    Open,
    /// A key of one of these roles.
    Roles(&'static [Role]),
}

/// One route and who may call it.
#[derive(Debug)]
pub struct RouteAccess {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// Whether a merchant's call takes a token from its rate limit.
    pub rate_limited: bool,
    handler: fn() -> MethodRouter<Arc<HttpState>>,
}

const MERCHANT: &[Role] = &[Role::Merchant];
const ANY_ROLE: &[Role] = &[Role::Merchant, Role::Operator, Role::Admin];
const STAFF: &[Role] = &[Role::Operator, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

/// Every route and who may call it: the one place access is decided. The
/// router is built from it, so a route cannot exist without a rule. A
/// reversal is not rate limited: refusing one would leave the cardholder's
/// funds held while the merchant retries.
pub const ROUTES: &[RouteAccess] = &[
    RouteAccess {
        method: "POST",
        path: "/v1/authorizations",
        access: Access::Roles(MERCHANT),
        rate_limited: true,
        handler: || post(create_authorization),
    },
    RouteAccess {
        method: "POST",
        path: "/v1/authorizations/{id}/reversal",
        access: Access::Roles(MERCHANT),
        rate_limited: false,
        handler: || post(reverse_authorization),
    },
    RouteAccess {
        method: "GET",
        path: "/v1/transactions/{id}",
        access: Access::Roles(ANY_ROLE),
        rate_limited: true,
        handler: || get(get_transaction),
    },
    RouteAccess {
        method: "GET",
        path: "/metrics",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(metrics),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/latency",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(admin_latency),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/audit",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || get(admin_audit),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/vault",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || get(vault::vault_status),
    },
    RouteAccess {
        method: "POST",
        path: "/admin/vault/reload",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || post(vault::vault_reload),
    },
    RouteAccess {
        method: "POST",
        path: "/admin/vault/rewrap",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || post(vault::vault_rewrap),
    },
    RouteAccess {
        method: "POST",
        path: "/admin/vault/verify",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || post(vault::vault_verify),
    },
    RouteAccess {
        method: "GET",
        path: "/admin",
        access: Access::Open,
        rate_limited: false,
        handler: || get(admin_page),
    },
    RouteAccess {
        method: "GET",
        path: "/health/live",
        access: Access::Open,
        rate_limited: false,
        handler: || get(|| async { "live\n" }),
    },
    RouteAccess {
        method: "GET",
        path: "/health/ready",
        access: Access::Open,
        rate_limited: false,
        handler: || get(ready),
    },
];

/// Who a request is from, once its key matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Merchant(protocol::iso::MerchantId),
    Operator,
    Admin,
}

impl Principal {
    fn role(self) -> Role {
        match self {
            Principal::Merchant(_) => Role::Merchant,
            Principal::Operator => Role::Operator,
            Principal::Admin => Role::Admin,
        }
    }
}

/// A configured key: its digest, whose it is, and the name the audit log
/// shows (`merchant:ID`, `operator:NAME`, `admin:NAME`), never the key.
struct Key {
    sha256: [u8; 32],
    principal: Principal,
    actor: String,
}

/// A merchant key's successes are recorded once per origin per interval;
/// at most this many (key, origin) pairs are remembered for it.
const SUCCESS_ORIGINS_MAX: usize = 4_096;

/// Shared state of the HTTP handlers.
pub struct HttpState {
    engine: Arc<Engine>,
    keys: Vec<Key>,
    /// Idempotency keys whose first request is still being decided.
    idempotency_in_flight: Mutex<HashSet<(protocol::iso::MerchantId, String)>>,
    audit: Audit,
    lockout: Lockout,
    clock: Arc<dyn Clock>,
    success_interval_ms: u64,
    /// (key index, origin) -> when its success was last recorded.
    successes_recorded: Mutex<HashMap<(usize, IpAddr), u64>>,
    /// Origins locked out since start.
    lockouts: AtomicU64,
    /// Vault key reloads and the rewrap job (`/admin/vault*`).
    vault: Arc<VaultControl>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// What a request's `Authorization` header held.
enum Credential {
    Missing,
    Wrong,
    Matched(usize),
}

impl HttpState {
    pub fn new(
        engine: Arc<Engine>,
        config: &Config,
        audit: Audit,
        clock: Arc<dyn Clock>,
        vault: Arc<VaultControl>,
    ) -> HttpState {
        let mut keys: Vec<Key> = config
            .merchants
            .iter()
            .filter_map(|m| {
                m.api_key_sha256.map(|sha256| Key {
                    sha256,
                    principal: Principal::Merchant(m.id),
                    actor: format!("merchant:{}", m.id.as_str().trim_end()),
                })
            })
            .collect();
        keys.extend(config.operators.iter().map(|o| Key {
            sha256: o.api_key_sha256,
            principal: Principal::Operator,
            actor: format!("operator:{}", o.name),
        }));
        keys.extend(config.admins.iter().map(|a| Key {
            sha256: a.api_key_sha256,
            principal: Principal::Admin,
            actor: format!("admin:{}", a.name),
        }));
        HttpState {
            engine,
            keys,
            idempotency_in_flight: Mutex::new(HashSet::new()),
            audit,
            lockout: Lockout::new(config.security, Arc::clone(&clock)),
            clock,
            success_interval_ms: config.audit.success_interval_ms,
            successes_recorded: Mutex::new(HashMap::new()),
            lockouts: AtomicU64::new(0),
            vault,
        }
    }

    /// The vault's reload and rewrap control.
    pub(crate) fn vault(&self) -> &VaultControl {
        &self.vault
    }

    /// The same, shared (the rewrap job keeps it while it runs).
    pub(crate) fn vault_arc(&self) -> &Arc<VaultControl> {
        &self.vault
    }

    fn credential(&self, headers: &HeaderMap) -> Credential {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credential::Missing;
        };
        let Some(key) = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Credential::Wrong;
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured key is compared, whatever matched first.
        let mut found = None;
        for (index, configured) in self.keys.iter().enumerate() {
            if bool::from(configured.sha256.ct_eq(&digest)) {
                found = Some(index);
            }
        }
        found.map_or(Credential::Wrong, Credential::Matched)
    }

    fn refuse(&self, reason: Refusal) {
        self.engine.metrics().count_refusal(reason);
    }

    /// Whether a merchant key's success from `origin` is due a record.
    fn success_due(&self, key: usize, origin: IpAddr) -> bool {
        let now_ms = self.clock.now_ms();
        let Ok(mut recorded) = self.successes_recorded.lock() else {
            return false;
        };
        match recorded.get(&(key, origin)) {
            Some(&at_ms) if now_ms.saturating_sub(at_ms) < self.success_interval_ms => false,
            _ => {
                if recorded.len() >= SUCCESS_ORIGINS_MAX {
                    // Forgetting only means the next success is recorded again.
                    recorded.clear();
                }
                recorded.insert((key, origin), now_ms);
                true
            }
        }
    }
}

/// Set once a request without its peer address was seen.
static PEERLESS_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The peer's address, as [`serve`] attached it to the request.
fn peer_address(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// Stands in front of every route that needs a key: lockout, key, role,
/// rate limit, audit; then hands the request on with its [`Principal`].
async fn check_access(
    State((state, route)): State<(Arc<HttpState>, &'static RouteAccess)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Access::Roles(roles) = route.access else {
        return next.run(request).await;
    };
    let peer = peer_address(&request);
    // Without the peer (a listener that does not attach it) there is no
    // origin to hold failures against: lumping every such client into one
    // origin would let one guesser lock all of them out, so those failures
    // are left untracked and the gap is logged once.
    let origin_ip = peer.map(|peer| peer.ip());
    if origin_ip.is_none() && !PEERLESS_WARNED.swap(true, Ordering::Relaxed) {
        tracing::error!("a request came without its peer address; lockout cannot track it");
    }
    let origin = || peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
    // Cheap clones (a shared buffer): the audit texts are built only when an
    // entry is written, not for every merchant request.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let audit = |actor: &str, event: &str, outcome: &str| {
        state.audit.record(AuditEvent {
            actor: actor.to_owned(),
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            origin: origin(),
            resource: format!("{method} {}", uri.path()),
        });
    };

    if let Some(origin_ip) = origin_ip
        && let Standing::LockedOut(retry) = state.lockout.check(origin_ip)
    {
        state.refuse(Refusal::LockedOut);
        return locked_out(retry);
    }
    let index = match state.credential(request.headers()) {
        Credential::Matched(index) => index,
        Credential::Missing => {
            // Not a guess at a key: counted, neither audited nor held
            // against the origin.
            state.refuse(Refusal::NoKey);
            return unauthorized();
        }
        Credential::Wrong => {
            state.refuse(Refusal::BadKey);
            audit("unknown", events::AUTH_FAILURE, "bad_key");
            match origin_ip.map(|origin_ip| state.lockout.fail(origin_ip)) {
                Some(Failure::LockedOut) => {
                    state.lockouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(origin = %origin(), "origin locked out after failed authentications");
                    audit("unknown", events::AUTH_LOCKOUT, "locked_out");
                }
                Some(Failure::Untracked) | None => {
                    state.engine.metrics().count_lockout_untracked();
                }
                Some(Failure::Counted) => {}
            }
            return unauthorized();
        }
    };
    let Some(key) = state.keys.get(index) else {
        return unauthorized();
    };
    let principal = key.principal;
    if !roles.contains(&principal.role()) {
        state.refuse(Refusal::ForbiddenRole);
        audit(&key.actor, events::ACCESS_DENIED, "denied");
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This key's role may not use this route",
            "see the roles of each route in the API documentation",
            None,
        );
    }
    match principal {
        Principal::Merchant(merchant) => {
            // Merchant requests come by the thousand a second: their
            // successes are recorded once per key and origin per interval.
            if state.success_due(
                index,
                origin_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ) {
                audit(&key.actor, events::AUTH_SUCCESS, "ok");
            }
            if route.rate_limited
                && let Err(retry) = state.engine.limits().admit(merchant)
            {
                state.refuse(Refusal::RateLimited);
                return rate_limited(retry);
            }
        }
        Principal::Operator | Principal::Admin => {
            audit(&key.actor, events::ACCESS_ALLOWED, "allowed");
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

pub fn router(state: Arc<HttpState>, config: &HttpConfig) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let handler = (route.handler)();
        let handler = match route.access {
            Access::Open => handler,
            Access::Roles(_) => handler.route_layer(from_fn_with_state(
                (Arc::clone(&state), route),
                check_access,
            )),
        };
        router = router.route(route.path, handler);
    }
    router
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
// The listener's parts, each used once by the accept loop.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    audit: Audit,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
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
        let service = with_peer(router.clone(), peer);
        let shutdown = shutdown.clone();
        let header_read_timeout = Duration::from_millis(config.header_read_timeout_ms);
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let tls = tls.clone();
        let metrics = Arc::clone(&metrics);
        let audit = audit.clone();
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
                    metrics.count_tls_refused(TlsListener::Http, reason);
                    // Successes are not audited here: the API key that
                    // follows is.
                    audit.record(AuditEvent {
                        actor: "unknown".to_owned(),
                        event: events::TLS_HANDSHAKE.to_owned(),
                        outcome: reason.as_str().to_owned(),
                        origin: peer.to_string(),
                        resource: "https".to_owned(),
                    });
                    tracing::info!(%peer, reason = reason.as_str(), error = %detail, "HTTPS handshake refused");
                }
            }
        });
    }
}

/// The router for one connection, with the peer's address attached to each
/// request (as axum's `ConnectInfo`), for lockout and the audit log.
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> hyper_util::service::TowerToHyperService<
    tower::util::MapRequest<
        Router,
        impl FnMut(Request<hyper::body::Incoming>) -> Request<hyper::body::Incoming> + Clone,
    >,
> {
    use tower::ServiceExt as _;
    hyper_util::service::TowerToHyperService::new(router.map_request(
        move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ))
}

/// One HTTP/1.1 connection, plain or TLS, until it ends or `shutdown`.
async fn serve_connection<S, Svc>(
    stream: S,
    service: Svc,
    header_read_timeout: Duration,
    request_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
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

pub(crate) fn problem(
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

/// An origin locked out after failed authentications. The same answer
/// whether this request's key was right or not.
fn locked_out(retry: RetryAfter) -> Response {
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "locked-out",
        "Too many failed authentications from this address",
        "this address is refused for a while; try again after Retry-After seconds",
        None,
    );
    if let Ok(value) = HeaderValue::from_str(&retry.seconds().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A merchant over its rate.
fn rate_limited(retry: RetryAfter) -> Response {
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "This merchant is over its request rate",
        "slow down; try again after Retry-After seconds",
        None,
    );
    if let Ok(value) = HeaderValue::from_str(&retry.seconds().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
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
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
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
    let decode_us = started.elapsed().as_micros() as u64;
    engine
        .metrics()
        .record(Channel::Http, Stage::Decode, decode_us);
    let idempotency = idempotency_key.map(|key| IdempotencyRequest {
        merchant_id: merchant_id.as_str().trim_end().to_owned(),
        key,
        request_hash,
        render: render_authorization,
    });
    let received = Received {
        idempotency,
        decode_us,
        ..Received::default()
    };
    let outcome = engine.authorize(authorization, received).await;
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

async fn get_transaction(
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

async fn reverse_authorization(
    State(state): State<Arc<HttpState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let Principal::Merchant(merchant_id) = principal else {
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
    let outcome = state.engine.reverse(reversal, None).await;
    let original = match outcome {
        ReversalOutcome::Recorded { original, .. } => original,
        ReversalOutcome::Refused(refusal) => match refusal {
            ReversalRefusal::UnknownOriginal => return not_found(),
            ReversalRefusal::LookupFailed => return unavailable("the journal cannot be read"),
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
    state.engine.metrics().record(
        Channel::Http,
        Stage::Total,
        started.elapsed().as_micros() as u64,
    );
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
    let mut text = engine.metrics().render(&[
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
    crate::ops::metrics::render_counters(
        &mut text,
        &[
            (
                "switch_audit_entries_total",
                "Audit log entries written and synced.",
                state.audit.written(),
            ),
            (
                "switch_audit_dropped_total",
                "Audit events dropped at a full audit queue.",
                state.audit.dropped(),
            ),
            (
                "switch_audit_write_failures_total",
                "Audit batches that could not be written or synced.",
                state.audit.write_failures(),
            ),
            (
                "switch_http_lockouts_total",
                "Client origins locked out after failed authentications.",
                state.lockouts.load(Ordering::Relaxed),
            ),
        ],
    );
    crate::ops::metrics::render_gauges(
        &mut text,
        &[(
            "switch_http_lockout_origins",
            "Client origins with failed authentications or a lockout, tracked now.",
            state.lockout.origins() as u64,
        )],
    );
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn admin_latency(State(state): State<Arc<HttpState>>) -> Response {
    let body = serde_json::json!({ "stages": state.engine.metrics().percentiles() });
    json_response(StatusCode::OK, body.to_string())
}

/// Entries `GET /admin/audit` returns when no `limit` is asked, and at most.
const AUDIT_TAIL_DEFAULT: usize = 100;
const AUDIT_TAIL_MAX: usize = 1_000;

#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

/// The newest audit entries on disk, oldest first: `{"entries": [...]}`.
async fn admin_audit(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let limit = query
        .limit
        .unwrap_or(AUDIT_TAIL_DEFAULT)
        .clamp(1, AUDIT_TAIL_MAX);
    let audit = state.audit.clone();
    let lines = tokio::task::spawn_blocking(move || audit.tail(limit)).await;
    match lines {
        Ok(Ok(lines)) => {
            let entries: Vec<serde_json::Value> = lines
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            json_response(
                StatusCode::OK,
                serde_json::json!({ "entries": entries }).to_string(),
            )
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "audit log cannot be read");
            unavailable("the audit log cannot be read")
        }
        Err(_) => unavailable("the audit log cannot be read"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_rule_and_keyed_routes_name_their_roles() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES
                    .iter()
                    .skip(i + 1)
                    .all(|other| (other.method, other.path) != (route.method, route.path)),
                "{} {} has two rules",
                route.method,
                route.path
            );
            if let Access::Roles(roles) = route.access {
                assert!(!roles.is_empty(), "{} names no role", route.path);
            } else {
                assert!(
                    !route.rate_limited,
                    "{}: open routes have no merchant",
                    route.path
                );
            }
            // Staff routes are never open, whatever else changes.
            if route.path.starts_with("/admin/") || route.path == "/metrics" {
                assert!(
                    matches!(route.access, Access::Roles(roles) if !roles.contains(&Role::Merchant)),
                    "{}",
                    route.path
                );
            }
        }
        // The audit log is for admins only.
        let audit = ROUTES.iter().find(|r| r.path == "/admin/audit").unwrap();
        assert_eq!(audit.access, Access::Roles(&[Role::Admin]));
    }
}
