//! Who may call what, and the door in front of every keyed route.
//!
//! [`ROUTES`] is the one place access is decided: each route with the roles
//! that may call it, whether a merchant's call is rate limited, and its
//! handler; the router is built from it, so a route cannot exist without a
//! rule. [`check_access`] stands in front of every route that needs a key
//! and does, in order: lockout, key, role, admission rate, audit; then it
//! hands the request on with its [`Principal`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};

use crate::admission::{LockoutFailure, LockoutStanding, RetryAfter};
use crate::ingress::http::openapi;
use crate::ingress::http::ops;
use crate::ingress::http::payments;
use crate::ingress::http::principal::{Credential, Principal, Role, StaffName};
use crate::ingress::http::problem::problem;
use crate::ingress::http::reload;
use crate::ingress::http::state::HttpState;
use crate::ingress::http::vault;
use crate::ops::audit::{AuditEvent, events};
use crate::ops::metrics::Refusal;

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
    /// Whether a merchant's call takes a token from its admission rate.
    pub rate_limited: bool,
    pub(super) handler: fn() -> MethodRouter<Arc<HttpState>>,
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
        handler: || post(payments::create_authorization),
    },
    RouteAccess {
        method: "POST",
        path: "/v1/authorizations/{id}/reversal",
        access: Access::Roles(MERCHANT),
        rate_limited: false,
        handler: || post(payments::reverse_authorization),
    },
    RouteAccess {
        method: "GET",
        path: "/v1/transactions/{id}",
        access: Access::Roles(ANY_ROLE),
        rate_limited: true,
        handler: || get(payments::get_transaction),
    },
    RouteAccess {
        method: "GET",
        path: "/metrics",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(ops::scrape_metrics),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/latency",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(ops::admin_latency),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/timeline",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(ops::admin_timeline),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/timeline.hlog",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || get(ops::admin_timeline_hlog),
    },
    RouteAccess {
        method: "GET",
        path: "/admin/audit",
        access: Access::Roles(ADMIN),
        rate_limited: false,
        handler: || get(ops::admin_audit),
    },
    RouteAccess {
        method: "POST",
        path: "/admin/reload",
        access: Access::Roles(STAFF),
        rate_limited: false,
        handler: || post(reload::config_reload),
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
        handler: || get(ops::admin_page),
    },
    RouteAccess {
        method: "GET",
        path: "/health/live",
        access: Access::Open,
        rate_limited: false,
        handler: || get(ops::health_live),
    },
    RouteAccess {
        method: "GET",
        path: "/health/ready",
        access: Access::Open,
        rate_limited: false,
        handler: || get(ops::health_ready),
    },
    RouteAccess {
        method: "GET",
        path: "/openapi.json",
        access: Access::Open,
        rate_limited: false,
        handler: || get(openapi::openapi_document),
    },
];

/// Set once a request without its peer address was seen.
static PEERLESS_WARNED: AtomicBool = AtomicBool::new(false);

/// The peer's address, as the accept loop attached it to the request.
fn peer_address(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// Stands in front of every route that needs a key: lockout, key, role,
/// admission rate, audit; then hands the request on with its [`Principal`].
pub(super) async fn check_access(
    State((state, route)): State<(Arc<HttpState>, &'static RouteAccess)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Access::Roles(roles) = route.access else {
        return next.run(request).await;
    };
    let refuse = |reason: Refusal| state.engine.metrics().count_refusal(reason);
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
        && let LockoutStanding::LockedOut(retry) = state.lockout.check(origin_ip)
    {
        refuse(Refusal::LockedOut);
        return locked_out(retry);
    }
    // One configuration for the whole request: its keys here, its policy
    // for the handler (see `state.rs`).
    let live = state.live.load_full();
    let index = match live.keys.credential(request.headers()) {
        Credential::Matched(index) => index,
        Credential::Missing => {
            // Not a guess at a key: counted, neither audited nor held
            // against the origin.
            refuse(Refusal::NoKey);
            return unauthorized();
        }
        Credential::Wrong => {
            refuse(Refusal::BadKey);
            audit("unknown", events::AUTH_FAILURE, "bad_key");
            match origin_ip.map(|origin_ip| state.lockout.fail(origin_ip)) {
                Some(LockoutFailure::LockedOut) => {
                    tracing::warn!(origin = %origin(), "origin locked out after failed authentications");
                    audit("unknown", events::AUTH_LOCKOUT, "locked_out");
                }
                Some(LockoutFailure::Untracked) | None => {
                    state.engine.metrics().count_lockout_untracked();
                }
                Some(LockoutFailure::Counted) => {}
            }
            return unauthorized();
        }
    };
    let Some(key) = live.keys.get(index) else {
        return unauthorized();
    };
    let principal = key.principal;
    if !roles.contains(&principal.role()) {
        refuse(Refusal::ForbiddenRole);
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
            if merchant_success_due(
                &state,
                (live.policy.generation, index),
                origin_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ) {
                audit(&key.actor, events::AUTH_SUCCESS, "ok");
            }
            if route.rate_limited
                && let Err(retry) = live.policy.admission_rates.admit(merchant)
            {
                refuse(Refusal::RateLimited);
                return rate_limited(retry);
            }
        }
        Principal::Operator | Principal::Admin => {
            audit(&key.actor, events::ACCESS_ALLOWED, "allowed");
            request
                .extensions_mut()
                .insert(StaffName(key.actor.clone()));
        }
    }
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(Arc::clone(&live.policy));
    next.run(request).await
}

/// A merchant key's successes are recorded once per origin per interval;
/// at most this many (key, origin) pairs are remembered for it.
const SUCCESS_ORIGINS_MAX: usize = 4_096;

/// Whether a merchant key's success from `origin` is due an audit record;
/// `key`: the configuration's generation and the key's index in it.
fn merchant_success_due(state: &HttpState, key: (u64, usize), origin: IpAddr) -> bool {
    let now_ms = state.clock.now_ms();
    let Ok(mut recorded) = state.successes_recorded.lock() else {
        return false;
    };
    match recorded.get(&(key.0, key.1, origin)) {
        Some(&at_ms) if now_ms.saturating_sub(at_ms) < state.success_interval_ms => false,
        _ => {
            if recorded.len() >= SUCCESS_ORIGINS_MAX {
                // Forgetting only means the next success is recorded again.
                recorded.clear();
            }
            recorded.insert((key.0, key.1, origin), now_ms);
            true
        }
    }
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
    too_many_requests(
        "locked-out",
        "Too many failed authentications from this address",
        "this address is refused for a while; try again after Retry-After seconds",
        retry,
    )
}

/// A merchant over its admission rate.
fn rate_limited(retry: RetryAfter) -> Response {
    too_many_requests(
        "rate-limited",
        "This merchant is over its request rate",
        "slow down; try again after Retry-After seconds",
        retry,
    )
}

/// 429 with `Retry-After` in whole seconds.
fn too_many_requests(kind: &str, title: &str, detail: &str, retry: RetryAfter) -> Response {
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, kind, title, detail, None);
    if let Ok(value) = HeaderValue::from_str(&retry.seconds().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

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
