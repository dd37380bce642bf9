//! The routes operators and load balancers call: health, `/metrics`, the
//! admin latency view, the audit log's tail and the admin page. What they
//! show is the ops modules' (`crate::ops`); these only fetch and answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::domain::Channel;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::ingress::http::problem::{json_response, problem, unavailable};
use crate::ingress::http::state::HttpState;
use crate::ops::metrics::{Readings, Resolution, Stage};

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

/// What `/metrics` and the timeline read from the other components now:
/// the shards, the journal, the audit log, the lockout and admission.
async fn readings(state: &HttpState) -> Readings {
    let engine = &state.engine;
    let shards = engine.shards().stats().await;
    let journal = engine.journal().stats();
    Readings {
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
    }
}

/// `GET /metrics`: the Prometheus text, with what the shards, the journal,
/// the audit log and the lockout report now.
pub(super) async fn scrape_metrics(State(state): State<Arc<HttpState>>) -> Response {
    let readings = readings(&state).await;
    let mut response = (StatusCode::OK, state.engine.metrics().render(&readings)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Closes a timeline interval every second (see `ops::metrics`'s
/// `timeline.rs`) until `shutdown`. A late tick is not made up for: the
/// next interval is simply longer, and says so.
pub async fn close_timeline_intervals(state: Arc<HttpState>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TIMELINE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let readings = readings(&state).await;
        state
            .timeline
            .close_interval(state.engine.metrics(), state.clock.now_ms(), &readings);
    }
}

/// How often the timeline closes an interval: its finest resolution.
const TIMELINE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, serde::Deserialize)]
pub(super) struct TimelineQuery {
    resolution: Option<String>,
    /// Only intervals that started at or after this, ms since the epoch.
    since: Option<u64>,
}

/// `1s` (the default) or `1m`; anything else is a 400 naming `resolution`.
// The error is the finished response, as `problem::parse_body`'s is.
#[allow(clippy::result_large_err)]
fn resolution(asked: Option<&str>) -> Result<Resolution, Response> {
    match asked.unwrap_or("1s") {
        "1s" => Ok(Resolution::Second),
        "1m" => Ok(Resolution::Minute),
        _ => Err(bad_query("resolution", "is not one of 1s, 1m")),
    }
}

/// `GET /admin/timeline?resolution=1s|1m&since=<ms>`: the closed intervals,
/// oldest first, each with the percentiles of every stage and channel and
/// its counts (`1s` when no resolution is asked).
pub(super) async fn admin_timeline(
    State(state): State<Arc<HttpState>>,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return bad_query("since", "must be a whole number of ms since the epoch");
    };
    let resolution = match resolution(query.resolution.as_deref()) {
        Ok(resolution) => resolution,
        Err(refused) => return refused,
    };
    let body = state.timeline.json(resolution, query.since.unwrap_or(0));
    json_response(StatusCode::OK, body.to_string())
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct TimelineHlogQuery {
    resolution: Option<String>,
    stage: Option<String>,
    channel: Option<String>,
}

/// `GET /admin/timeline.hlog?stage=total&channel=iso&resolution=1s`: one
/// stage's and channel's intervals as an HdrHistogram interval log
/// (defaults: total, iso, 1s).
pub(super) async fn admin_timeline_hlog(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<TimelineHlogQuery>,
) -> Response {
    let stage_name = query.stage.as_deref().unwrap_or("total");
    let Some(stage) = Stage::from_name(stage_name) else {
        return bad_query("stage", "is not one of decode, decide, journal_wait, total");
    };
    let channel = match query.channel.as_deref().unwrap_or("iso") {
        "iso" => Channel::Iso,
        "http" => Channel::Http,
        _ => return bad_query("channel", "is not one of iso, http"),
    };
    let resolution = match resolution(query.resolution.as_deref()) {
        Ok(resolution) => resolution,
        Err(refused) => return refused,
    };
    // Decoding and encoding up to 300 histograms: off the request threads.
    let log =
        tokio::task::spawn_blocking(move || state.timeline.hlog(resolution, channel, stage)).await;
    match log {
        Ok(Ok(log)) => {
            let mut response = (StatusCode::OK, log).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "timeline interval log not written");
            unavailable("the interval log cannot be written")
        }
        Err(_) => unavailable("the interval log cannot be written"),
    }
}

/// `GET /admin/latency`: percentiles of every stage and channel.
pub(super) async fn admin_latency(State(state): State<Arc<HttpState>>) -> Response {
    let body = serde_json::json!({ "stages": state.engine.metrics().percentiles() });
    json_response(StatusCode::OK, body.to_string())
}

/// A 400 naming the query parameter at fault.
fn bad_query(parameter: &str, detail: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "invalid-field",
        "A query parameter is invalid",
        &format!("{parameter} {detail}"),
        Some(parameter),
    )
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
