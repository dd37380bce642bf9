//! `GET /openapi.json`: the JSON API's OpenAPI 3.1 document, served as it is
//! kept in the repository (`docs/openapi.json`), so a web client's engineers
//! can generate a client from the switch they talk to. The document is built
//! into the binary: what a switch serves is the document of its own version.
//!
//! The tests below hold the document to [`ROUTES`]: every route the router
//! serves is documented with the roles that may call it, and nothing else
//! is, so a new route without its documentation fails the build's tests.
//! `scripts/check-openapi` validates the document itself, and
//! `switch/tests/openapi_switch.rs` checks real answers against it.

use axum::http::StatusCode;
use axum::response::Response;

use crate::ingress::http::problem::json_response;

/// The document, as `docs/openapi.json` holds it.
pub(super) const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// `GET /openapi.json`: open, like the health routes: it holds no secret.
pub(super) async fn openapi_document() -> Response {
    json_response(StatusCode::OK, DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::http::access::{Access, ROUTES};
    use crate::ingress::http::principal::Role;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).unwrap()
    }

    /// The security scheme of a role's key.
    fn scheme(role: Role) -> &'static str {
        match role {
            Role::Merchant => "merchantKey",
            Role::Operator => "operatorKey",
            Role::Admin => "adminKey",
        }
    }

    /// The security schemes an operation accepts, sorted.
    fn schemes(operation: &serde_json::Value) -> Vec<String> {
        let mut schemes: Vec<String> = operation["security"]
            .as_array()
            .unwrap_or_else(|| panic!("no security list: {operation}"))
            .iter()
            .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
            .collect();
        schemes.sort();
        schemes
    }

    /// The problem types an operation's response `status` may carry.
    fn problem_types(
        document: &serde_json::Value,
        operation: &serde_json::Value,
        status: &str,
    ) -> Vec<String> {
        let mut response = &operation["responses"][status];
        if let Some(reference) = response["$ref"].as_str() {
            let name = reference.trim_start_matches("#/components/responses/");
            response = &document["components"]["responses"][name];
        }
        response["content"]["application/problem+json"]["schema"]["properties"]["type"]["enum"]
            .as_array()
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|kind| kind.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn every_route_is_documented_with_its_roles_and_nothing_else_is() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        for route in ROUTES {
            let method = route.method.to_ascii_lowercase();
            let operation = &paths
                .get(route.path)
                .unwrap_or_else(|| panic!("{} is served but not in docs/openapi.json", route.path))
                [&method];
            assert!(
                operation.is_object(),
                "{} {} is served but not in docs/openapi.json",
                route.method,
                route.path
            );
            let documented = schemes(operation);
            let responses = operation["responses"].as_object().unwrap();
            match route.access {
                Access::Open => {
                    assert!(
                        documented.is_empty(),
                        "{}: open, but documented {documented:?}",
                        route.path
                    );
                    for status in ["401", "403", "429"] {
                        assert!(
                            !responses.contains_key(status),
                            "{}: open, but documents {status}",
                            route.path
                        );
                    }
                }
                Access::Roles(roles) => {
                    let mut expected: Vec<String> =
                        roles.iter().map(|role| scheme(*role).to_owned()).collect();
                    expected.sort();
                    assert_eq!(
                        documented, expected,
                        "{} {}: the roles of ROUTES",
                        route.method, route.path
                    );
                    // Every keyed route can refuse a key, and a locked-out origin.
                    assert!(responses.contains_key("401"), "{}: no 401", route.path);
                    let kinds = problem_types(&document, operation, "429");
                    assert!(
                        kinds.contains(&"/problems/locked-out".to_owned()),
                        "{}: {kinds:?}",
                        route.path
                    );
                    // A merchant's rate limit is documented where it applies.
                    assert_eq!(
                        kinds.contains(&"/problems/rate-limited".to_owned()),
                        route.rate_limited && roles.contains(&Role::Merchant),
                        "{}: rate-limited in {kinds:?}",
                        route.path
                    );
                    // A route some role may not call says so.
                    if roles.len() < 3 {
                        let kinds = problem_types(&document, operation, "403");
                        assert!(
                            kinds.contains(&"/problems/forbidden".to_owned()),
                            "{}: no 403",
                            route.path
                        );
                    }
                }
            }
        }
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ROUTES.iter().any(
                        |route| route.path == path && route.method.eq_ignore_ascii_case(method)
                    ),
                    "{method} {path} is documented but not served"
                );
            }
        }
    }

    #[test]
    fn the_document_is_of_this_version_and_openapi_3_1() {
        let document = document();
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            document["info"]["license"]["identifier"],
            env!("CARGO_PKG_LICENSE")
        );
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
    }
}
