//! `POST /admin/reload`, operators and admins (see
//! [`ROUTES`](super::access::ROUTES)): reads the configuration file again,
//! as SIGHUP does, and answers what changed (200) or why the file was
//! refused (422, problem+json naming the key). The work, the audit record
//! and the count are [`crate::ops::reload`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Extension, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::ingress::http::principal::StaffName;
use crate::ingress::http::problem::{json_response, problem};
use crate::ingress::http::state::HttpState;
use crate::ops::reload::ReloadBy;

/// `POST /admin/reload`. The answer names what changed (sections,
/// merchants, staff), never a key or its digest.
pub(super) async fn config_reload(
    State(http): State<Arc<HttpState>>,
    Extension(StaffName(actor)): Extension<StaffName>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let by = ReloadBy {
        actor,
        origin: peer.map_or_else(
            || "unknown".to_owned(),
            |Extension(ConnectInfo(peer))| peer.to_string(),
        ),
    };
    match http.config_control().reload(&by).await {
        Ok(applied) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "applied": true,
                "generation": applied.generation,
                "changed": applied.changes,
                "summary": applied.changes.summary(),
            })
            .to_string(),
        ),
        Err(error) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config-reload-refused",
            "The configuration was refused; the running configuration is unchanged",
            &error.to_string(),
            error.key().as_deref(),
        ),
    }
}
