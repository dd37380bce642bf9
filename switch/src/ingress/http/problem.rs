//! The answers every HTTP handler shares: `application/problem+json` for
//! errors, `application/json` for results, the reading of a body within
//! `http.body_bytes_max` ([`RequestBody`]), and the parsing of a JSON body
//! into a request, naming the field at fault. A problem never repeats a
//! value from the request, so a PAN sent in the wrong field is not echoed.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::json::{FieldError, Problem};

/// A problem+json answer: `kind` becomes its type, `/problems/{kind}`.
pub(super) fn problem(
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

/// A JSON answer: `body` is JSON text already (a `String`, or a document
/// built into the binary).
pub(super) fn json_response(status: StatusCode, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The switch cannot take the request now (journal down, at capacity); the
/// client may retry in a second.
pub(super) fn unavailable(detail: &str) -> Response {
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

/// A request body, read whole. A body over `http.body_bytes_max` is refused
/// 413 as problem+json, like every other error of the API (axum's own
/// refusal is plain text).
#[derive(Debug)]
pub(super) struct RequestBody(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for RequestBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<RequestBody, Response> {
        Bytes::from_request(request, state)
            .await
            .map(RequestBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body-too-large",
                        "The body is too large",
                        "the body is longer than this switch takes (http.body_bytes_max)",
                        None,
                    )
                } else {
                    // The body stopped short or its chunks were malformed.
                    problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-body",
                        "The body could not be read",
                        "the body ended early or is not valid HTTP/1.1",
                        None,
                    )
                }
            })
    }
}

// The error is the finished response; handlers return it as is, so boxing it
// would only add an allocation to the error path.
#[allow(clippy::result_large_err)]
/// Parses a JSON body into `T`, naming the field at fault without quoting
/// anything the client sent.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
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
        } else if path == "." || path.starts_with('[') {
            // The body itself, or an element of a body that is an array.
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

/// A field that parsed but is not valid for the request.
pub(super) fn field_problem(error: &FieldError) -> Response {
    let body = Problem::invalid_field(error);
    problem(
        StatusCode::BAD_REQUEST,
        "invalid-field",
        &body.title,
        &body.detail,
        Some(error.field),
    )
}
