//! The routes operators and load balancers call: health, `/metrics`, the
//! admin latency view, the audit log's tail and the admin page. What they
//! show is the ops modules' (`crate::ops`); these only fetch and answer.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ingress::http::problem::{json_response, problem, unavailable};
use crate::ingress::http::state::HttpState;
use crate::ops::metrics::Readings;

/// `GET /health/live`: the process answers.
pub(super) async fn health_live() -> &'static str {
    "live\n"
}

/// `GET /health/ready`: the journal is open and replay is done.
pub(super) async fn health_ready(State(state): State<Arc<HttpState>>) -> Response {
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

/// `GET /metrics`: the Prometheus text, with what the shards, the journal,
/// the audit log and the lockout report now.
pub(super) async fn scrape_metrics(State(state): State<Arc<HttpState>>) -> Response {
    let engine = &state.engine;
    let shards = engine.shards().stats().await;
    let journal = engine.journal().stats();
    let readings = Readings {
        shard_mailbox_depth: u64::try_from(
            shards
                .shards
                .iter()
                .map(|shard| shard.mailbox_depth)
                .sum::<usize>(),
        )
        .unwrap_or(u64::MAX),
        shard_shed_total: shards.shed_total,
        journal,
        ready: engine.is_ready(),
        audit_entries_total: state.audit.written(),
        audit_dropped_total: state.audit.dropped(),
        audit_write_failures_total: state.audit.write_failures(),
        http_lockouts_total: state.lockout.lockouts_total(),
        http_lockout_origins: u64::try_from(state.lockout.origins()).unwrap_or(u64::MAX),
        admission_limit: u64::from(engine.load_limit().limit()),
        admission_in_flight: u64::from(engine.load_limit().in_flight()),
    };
    let mut response = (StatusCode::OK, engine.metrics().render(&readings)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /admin/latency`: percentiles of every stage and channel.
pub(super) async fn admin_latency(State(state): State<Arc<HttpState>>) -> Response {
    let body = serde_json::json!({ "stages": state.engine.metrics().percentiles() });
    json_response(StatusCode::OK, body.to_string())
}

/// Entries `GET /admin/audit` returns when no `limit` is asked, and at most.
const AUDIT_TAIL_DEFAULT: usize = 100;
const AUDIT_TAIL_MAX: usize = 1_000;

#[derive(Debug, serde::Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /admin/audit`: the newest audit entries on disk, oldest first:
/// `{"entries": [...]}`. A `limit` that is not a whole number is a
/// problem+json 400 (axum's own refusal is plain text).
pub(super) async fn admin_audit(
    State(state): State<Arc<HttpState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "The query is invalid",
            "limit must be a whole number",
            Some("limit"),
        );
    };
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

/// `GET /admin`: the admin page, open; it asks for a key itself.
pub(super) async fn admin_page() -> Response {
    let mut response = (StatusCode::OK, ADMIN_PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

const ADMIN_PAGE: &str = include_str!("admin.html");
