//! The JSON/HTTP API for web clients, and the ops endpoints.
//!
//! Who may call what is one table, [`ROUTES`], from which the router is
//! built; every route that needs a key gets `check_access` in front of its
//! handler. Roles follow a payments platform's permission model:
//!
//! | route                                     | merchant | operator | admin | rate limited |
//! |-------------------------------------------|----------|----------|-------|--------------|
//! | `POST /v1/authorizations`                 | yes      |          |       | yes          |
//! | `POST /v1/authorizations/{id}/reversal`   | own only |          |       |              |
//! | `GET /v1/transactions/{id}`               | own only | yes      | yes   | yes          |
//! | `GET /metrics`                            |          | yes      | yes   |              |
//! | `GET /admin/latency`                      |          | yes      | yes   |              |
//! | `GET /admin/timeline`, `/admin/timeline.hlog` |      | yes      | yes   |              |
//! | `GET /admin/audit`                        |          |          | yes   |              |
//! | `POST /admin/reload`                      |          | yes      | yes   |              |
//! | `GET /admin/vault`, `POST /admin/vault/{reload,rewrap,verify}` | | | yes |     |
//! | `GET /admin`, `/health/live`, `/health/ready` | open (no key; the page asks for one) |
//! | `GET /openapi.json`                       | open: this table and every schema, as OpenAPI 3.1 |
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
//!
//! A request's path through the files:
//!
//! - this file: the accept loop ([`serve`], plain or TLS), each connection's TLS
//!   handshake and hyper connection (`accept_http_connection`,
//!   `serve_http_connection`), and the [`router`] built from [`ROUTES`].
//! - `access.rs`: [`ROUTES`] and the door in front of keyed routes,
//!   `check_access`: lockout, key, role, admission rate, audit.
//! - `principal.rs`: roles, the principal a key stands for, the configured
//!   keys and the constant-time match against them.
//! - `payments.rs`: create an authorization (with idempotency keys), reverse
//!   it, read a transaction.
//! - `ops.rs`: health, `/metrics`, admin latency, the audit tail, the admin
//!   page. `vault.rs`: the vault admin routes. `reload.rs`: the
//!   configuration reload route.
//! - `openapi.rs`: the OpenAPI document (`docs/openapi.json`), served and
//!   held to [`ROUTES`] by its tests.
//! - `problem.rs`: problem+json and JSON answers, body parsing and field
//!   problems. `state.rs`: [`HttpState`], what all of them share.

mod access;
mod openapi;
mod ops;
mod payments;
mod principal;
mod problem;
mod reload;
mod state;
mod vault;
mod write_deadline;

pub use access::{Access, ROUTES, RouteAccess};
pub use ops::close_timeline_intervals;
pub use principal::Role;
pub use state::HttpState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::ingress::tls::{self, TlsListener};
use crate::ops::audit::{Audit, AuditEvent, events};
use crate::ops::metrics::{Listener, Metrics};
use write_deadline::WriteDeadline;

/// The router: every route of [`ROUTES`], each keyed one behind
/// `check_access`, a problem+json 404 for any other path, and the body limit.
pub fn router(state: Arc<HttpState>, config: &HttpConfig) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let handler = (route.handler)();
        let handler = match route.access {
            Access::Open => handler,
            Access::Roles(_) => handler.route_layer(from_fn_with_state(
                (Arc::clone(&state), route),
                access::check_access,
            )),
        };
        router = router.route(route.path, handler);
    }
    router
        .fallback(|| async {
            problem::problem(
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
/// that opens a connection and sends nothing is cut off, and at most
/// `http.connections_max` connections at once: one more is closed as soon as
/// it is accepted, and counted, so clients cannot take file descriptors and
/// tasks without bound. With `tls`, every connection is HTTPS: its handshake
/// runs in the connection's own task and must finish within the same header
/// read timeout.
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
    let timeouts = Timeouts {
        header_read: Duration::from_millis(config.header_read_timeout_ms),
        request: Duration::from_millis(config.request_timeout_ms),
        write: Duration::from_millis(config.write_timeout_ms),
    };
    let connections = Arc::new(Semaphore::new(config.connections_max));
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
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
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.count_connection_refused(Listener::Http);
            tracing::warn!(%peer, limit = config.connections_max, "HTTP connection refused at the limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = accept_http_connection(
            stream,
            peer,
            router.clone(),
            tls.clone(),
            Arc::clone(&metrics),
            audit.clone(),
            timeouts,
            shutdown.clone(),
        );
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
}

/// The timeouts of a connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// For the request head, and for the TLS handshake before it.
    header_read: Duration,
    /// For a request in progress to finish once shutdown begins.
    request: Duration,
    /// For a write of replies (or of the handshake) to make progress.
    write: Duration,
}

/// One accepted connection, in its own task: the TLS handshake when the
/// listener has TLS (a refusal counted, audited and logged), then HTTP.
// The connection's parts, each handed on once.
#[allow(clippy::too_many_arguments)]
async fn accept_http_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    audit: Audit,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let service = with_peer(router, peer);
    // Under TLS too: a stalled TLS record is a stalled socket write.
    let stream = WriteDeadline::new(stream, timeouts.write, Arc::clone(&metrics));
    let Some(acceptor) = tls else {
        serve_http_connection(stream, service, timeouts, shutdown).await;
        return;
    };
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tls::handshake(&acceptor, stream, timeouts.header_read) => handshake,
    };
    match handshake {
        Ok(stream) => {
            metrics.count_tls_handshake(TlsListener::Http);
            serve_http_connection(stream, service, timeouts, shutdown).await;
        }
        Err((reason, detail)) => {
            metrics.count_tls_refused(TlsListener::Http, reason);
            // Successes are not audited here: the API key that follows is.
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
async fn serve_http_connection<S, Svc>(
    stream: S,
    service: Svc,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(timeouts.request, connection).await;
        }
    }
}
