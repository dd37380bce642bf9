//! The vault admin routes, admin only (see [`ROUTES`](super::access::ROUTES)):
//!
//! | route                         | what                                              |
//! |-------------------------------|---------------------------------------------------|
//! | `GET /admin/vault`            | key ids, active id, rows per key id, job progress |
//! | `POST /admin/vault/reload`    | re-read `[vault]` from the file (as SIGHUP does)  |
//! | `POST /admin/vault/rewrap`    | start the re-encryption job; 409 while one runs   |
//! | `POST /admin/vault/verify`    | open every row, report counts per key id          |
//!
//! Answers carry key ids and counts only: never a key, a PAN or a token. The
//! work itself is [`crate::ops::vault`]'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use storage::REWRAP_BATCH_ROWS_MAX;

use crate::ingress::http::problem::{RequestBody, json_response, problem};
use crate::ingress::http::state::HttpState;
use crate::ops::vault::{
    REWRAP_BATCH_ROWS_DEFAULT, REWRAP_PAUSE_MS_DEFAULT, REWRAP_PAUSE_MS_MAX, ReloadError,
};

fn storage_problem(error: &storage::StorageError) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "vault-unavailable",
        "The vault cannot be read",
        &error.to_string(),
        None,
    )
}

/// `GET /admin/vault`.
pub(super) async fn vault_status(State(http): State<Arc<HttpState>>) -> Response {
    match http.vault().status().await {
        Ok(status) => json_response(StatusCode::OK, status.to_string()),
        Err(error) => storage_problem(&error),
    }
}

/// `POST /admin/vault/reload`.
pub(super) async fn vault_reload(State(http): State<Arc<HttpState>>) -> Response {
    match http.vault().reload("admin route").await {
        Ok(change) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "changed": change.changed(),
                "key_ids": change.after.key_ids,
                "active_key_id": change.after.active_key_id,
                "key_ids_before": change.before.key_ids,
                "active_key_id_before": change.before.active_key_id,
            })
            .to_string(),
        ),
        Err(ReloadError::Count(error)) => storage_problem(&error),
        Err(error) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "vault-reload-refused",
            "The vault reload was refused; the running keys are unchanged",
            &error.to_string(),
            None,
        ),
    }
}

/// The optional body of `POST /admin/vault/rewrap`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewrapRequest {
    batch_rows: Option<u32>,
    pause_ms: Option<u64>,
}

/// `POST /admin/vault/rewrap`.
pub(super) async fn vault_rewrap(
    State(http): State<Arc<HttpState>>,
    RequestBody(body): RequestBody,
) -> Response {
    let request: RewrapRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RewrapRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-body",
                    "The body is not a rewrap request",
                    "send {} or {\"batch_rows\": N, \"pause_ms\": M}",
                    None,
                );
            }
        }
    };
    let batch_rows = request.batch_rows.unwrap_or(REWRAP_BATCH_ROWS_DEFAULT);
    if !(1..=REWRAP_BATCH_ROWS_MAX).contains(&batch_rows) {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "batch_rows is out of range",
            &format!("batch_rows must be 1 to {REWRAP_BATCH_ROWS_MAX}"),
            Some("batch_rows"),
        );
    }
    let pause_ms = request.pause_ms.unwrap_or(REWRAP_PAUSE_MS_DEFAULT);
    if pause_ms > REWRAP_PAUSE_MS_MAX {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "pause_ms is out of range",
            &format!("pause_ms must be at most {REWRAP_PAUSE_MS_MAX}"),
            Some("pause_ms"),
        );
    }
    if !http.vault_arc().start_rewrap(batch_rows, pause_ms) {
        return problem(
            StatusCode::CONFLICT,
            "rewrap-running",
            "A rewrap is already running",
            "wait for it to finish (GET /admin/vault) before starting another",
            None,
        );
    }
    match http.vault().status().await {
        Ok(status) => json_response(StatusCode::ACCEPTED, status.to_string()),
        Err(error) => storage_problem(&error),
    }
}

/// `POST /admin/vault/verify`.
pub(super) async fn vault_verify(State(http): State<Arc<HttpState>>) -> Response {
    match http.vault().verify().await {
        Ok(report) => {
            let counts = |pairs: &[(u32, u64)]| {
                pairs
                    .iter()
                    .map(|(key_id, rows)| (key_id.to_string(), serde_json::json!(rows)))
                    .collect::<serde_json::Map<String, serde_json::Value>>()
            };
            let failed: u64 = report.failed_per_key.iter().map(|(_, rows)| rows).sum();
            tracing::info!(failed, "vault verified");
            json_response(
                StatusCode::OK,
                serde_json::json!({
                    "opened_per_key_id": counts(&report.opened_per_key),
                    "failed_per_key_id": counts(&report.failed_per_key),
                    "failed": failed,
                })
                .to_string(),
            )
        }
        Err(error) => storage_problem(&error),
    }
}
