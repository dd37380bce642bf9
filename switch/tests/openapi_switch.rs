//! The JSON API against its OpenAPI document (`docs/openapi.json`), seen
//! from outside: a real switch is driven through every route and every
//! status a test can provoke (success, idempotent replay, each error), and
//! each answer is checked against the document: its status is listed for
//! the route, its content type is the documented one, its body matches the
//! schema (JSON Schema 2020-12, OpenAPI 3.1's dialect, by `boon`) and its
//! documented headers are there and well formed. The served `/openapi.json`
//! is the file in the repository, byte for byte.
//!
//! Every status the document lists for a route is either provoked here or
//! named in [`NOT_PROVOKED`] with the reason, so a status added to the
//! document without a test fails, and so does a listed one that is no longer
//! out of reach. That every route of the router is documented (with its
//! roles) is a unit test beside the route (`ingress/http/openapi.rs`);
//! `scripts/check-openapi` validates the document itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use common::*;
use serde_json::Value;

const OPERATOR_KEY: &str = "dev-operator-key";
const WRONG_KEY: &str = "not-a-key-of-this-switch";

/// Documented statuses no test here provokes, and why. Each is a real
/// answer of the code; the reasons say what it would take.
const NOT_PROVOKED: &[(&str, &str, u16, &str)] = &[
    (
        "POST",
        "/v1/authorizations",
        409,
        "a retry while the first request with its key is being decided: a race (http_switch's concurrent idempotency test provokes it)",
    ),
    (
        "POST",
        "/v1/authorizations/{id}/reversal",
        422,
        "the id of a reversal: the HTTP API never answers one (ISO 8583 reversals have no id a client sees)",
    ),
    (
        "GET",
        "/v1/transactions/{id}",
        503,
        "the journal unreadable",
    ),
    ("GET", "/admin/audit", 503, "the audit log unreadable"),
    ("GET", "/admin/vault", 503, "the vault's store unreadable"),
    (
        "POST",
        "/admin/vault/reload",
        503,
        "the vault's store unreadable",
    ),
    (
        "POST",
        "/admin/vault/rewrap",
        503,
        "the vault's store unreadable",
    ),
    (
        "POST",
        "/admin/vault/verify",
        503,
        "the vault's store unreadable",
    ),
];

/// The test configuration with an operator, BISTRO00001 rate limited to a
/// burst of 3, and an origin locked out after 3 wrong keys.
fn config() -> String {
    let config = CONFIG.replace(
        "allowed_mccs = [\"5812\", \"5814\"]\n",
        "allowed_mccs = [\"5812\", \"5814\"]\nrate_per_second = 1\nrate_burst = 3\n",
    );
    assert!(config.contains("rate_burst = 3"));
    format!(
        r#"{config}
[operators.ops]
api_key_sha256 = "7eee78659ab50d4dd820f4242709d188809ca0249506edf83d70022973d5e2ca"

[security]
lockout_failures = 3
lockout_ms = 600000
"#
    )
}

/// An authorization body for `merchant`, with the MCC BISTRO00001 needs.
fn body(pan: &str, amount: u64, merchant: &str) -> String {
    let mcc = if merchant.starts_with("BISTRO") {
        r#","mcc":"5812""#
    } else {
        ""
    };
    format!(
        r#"{{"pan":"{pan}","expiry":"3012","amount":{amount},"currency":"EUR","merchant_id":"{merchant}","terminal_id":"WEB00001"{mcc}}}"#
    )
}

fn repository_document() -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// The document, its schemas compiled on first use, and every (method,
/// route, status) an answer was checked for.
struct Contract {
    document: Value,
    compiler: boon::Compiler,
    schemas: boon::Schemas,
    compiled: HashMap<String, boon::SchemaIndex>,
    checked: BTreeSet<(String, String, u16)>,
}

/// The document's URL for the schema compiler; nothing is fetched from it.
const DOCUMENT_URL: &str = "urn:switch:openapi.json";

/// One step of a JSON pointer, escaped for the pointer and for a URL
/// fragment.
fn pointer_token(token: &str) -> String {
    let escaped = token.replace('~', "~0").replace('/', "~1");
    let mut out = String::new();
    for byte in escaped.bytes() {
        if byte.is_ascii_alphanumeric() || b"~-_.".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Contract {
    fn new(text: &str) -> Contract {
        let document: Value = serde_json::from_str(text).unwrap();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler
            .add_resource(DOCUMENT_URL, document.clone())
            .unwrap();
        Contract {
            document,
            compiler,
            schemas: boon::Schemas::new(),
            compiled: HashMap::new(),
            checked: BTreeSet::new(),
        }
    }

    /// The value at `pointer` (tokens unescaped) and the pointer itself,
    /// following one `$ref` into the document's components.
    fn resolve(&self, mut pointer: Vec<String>) -> (Vec<String>, &Value) {
        let mut value = &self.document;
        for token in &pointer {
            value = &value[token.as_str()];
        }
        if let Some(reference) = value["$ref"].as_str() {
            pointer = reference
                .trim_start_matches("#/")
                .split('/')
                .map(|token| token.replace("~1", "/").replace("~0", "~"))
                .collect();
            value = &self.document;
            for token in &pointer {
                value = &value[token.as_str()];
            }
        }
        assert!(!value.is_null(), "nothing at /{}", pointer.join("/"));
        (pointer, value)
    }

    /// Validates `instance` against the schema at `pointer`.
    fn validate(&mut self, pointer: &[String], instance: &Value, what: &str) {
        let location = format!(
            "{DOCUMENT_URL}#/{}",
            pointer
                .iter()
                .map(|token| pointer_token(token))
                .collect::<Vec<_>>()
                .join("/")
        );
        let index = match self.compiled.get(&location) {
            Some(index) => *index,
            None => {
                let index = self
                    .compiler
                    .compile(&location, &mut self.schemas)
                    .unwrap_or_else(|error| panic!("{location} does not compile: {error:#}"));
                self.compiled.insert(location.clone(), index);
                index
            }
        };
        if let Err(error) = self.schemas.validate(instance, index) {
            panic!("{what} does not match {location}:\n{error:#}\n{instance:#}");
        }
    }

    /// Checks one answer of `method template` against the document and
    /// returns it.
    fn check(&mut self, method: &str, template: &str, reply: HttpReply) -> HttpReply {
        let what = format!("{method} {template} -> {}", reply.status);
        let operation = vec![
            "paths".to_owned(),
            template.to_owned(),
            method.to_ascii_lowercase(),
        ];
        assert!(
            self.resolve(operation.clone()).1.is_object(),
            "{method} {template} is not documented"
        );
        let mut pointer = operation;
        pointer.extend(["responses".to_owned(), reply.status.to_string()]);
        let listed = self.resolve(pointer[..pointer.len() - 1].to_vec()).1;
        assert!(
            listed.get(reply.status.to_string()).is_some(),
            "{what}: the document lists only {:?} for this route; body {}",
            listed.as_object().unwrap().keys().collect::<Vec<_>>(),
            reply.body
        );
        let (response, documented) = self.resolve(pointer);
        let documented = documented.clone();

        // Headers: the required ones there, and each one sent well formed.
        for name in documented["headers"]
            .as_object()
            .into_iter()
            .flat_map(|headers| headers.keys())
        {
            let mut at = response.clone();
            at.extend(["headers".to_owned(), name.clone()]);
            let (at, header) = self.resolve(at);
            let header = header.clone();
            match reply.header(name) {
                None => assert!(
                    header["required"] != true,
                    "{what}: no {name} header, which the document requires"
                ),
                Some(value) => {
                    let instance = if header["schema"]["type"] == "integer" {
                        value
                            .parse::<i64>()
                            .map_or_else(|_| Value::from(value), Value::from)
                    } else {
                        Value::from(value)
                    };
                    let mut schema = at;
                    schema.push("schema".to_owned());
                    self.validate(&schema, &instance, &format!("{what}: header {name}"));
                }
            }
        }

        // The body: of a documented media type, matching its schema.
        let content = documented["content"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let sent = reply
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let Some(media) = content
            .keys()
            .find(|media| media.to_ascii_lowercase() == sent)
        else {
            panic!(
                "{what}: content type {sent:?}, the document has {:?}",
                content.keys().collect::<Vec<_>>()
            );
        };
        let mut schema = response;
        schema.extend(["content".to_owned(), media.clone(), "schema".to_owned()]);
        let instance = if media.ends_with("json") {
            reply.json()
        } else {
            Value::from(reply.body.as_str())
        };
        self.validate(&schema, &instance, &format!("{what}: body"));

        self.checked
            .insert((method.to_owned(), template.to_owned(), reply.status));
        reply
    }

    /// Every (method, route, status) the document lists.
    fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    out.insert((
                        method.to_ascii_uppercase(),
                        path.clone(),
                        status.parse().unwrap(),
                    ));
                }
            }
        }
        out
    }
}

/// The switch under test (its HTTP address and configuration file) and
/// the contract its answers are held to.
struct Client {
    http: std::net::SocketAddr,
    config_file: PathBuf,
    contract: Contract,
}

impl Client {
    /// One request to `path` (an instance of `template`), its answer
    /// checked against the document, and its status against `expected`.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
        expected: u16,
    ) -> HttpReply {
        let reply = http_request(self.http, method, path, key, headers, body);
        assert_eq!(
            reply.status, expected,
            "{method} {path}: {} {}",
            reply.status, reply.body
        );
        self.contract.check(method, template, reply)
    }

    /// A problem+json answer of `kind`.
    #[allow(clippy::too_many_arguments)]
    fn problem(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
        expected: u16,
        kind: &str,
    ) -> HttpReply {
        let reply = self.call(method, template, path, key, headers, body, expected);
        assert_eq!(
            reply.json()["type"],
            format!("/problems/{kind}"),
            "{}",
            reply.body
        );
        reply
    }
}

const AUTHORIZATIONS: &str = "/v1/authorizations";
const REVERSAL: &str = "/v1/authorizations/{id}/reversal";
const TRANSACTION: &str = "/v1/transactions/{id}";

#[test]
fn every_route_answers_as_its_openapi_document_says() {
    let (path, text) = repository_document();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &config());
    let mut client = Client {
        http: switch.http,
        config_file: switch.config_file.clone(),
        contract: Contract::new(&text),
    };

    // The document, served as the repository holds it.
    let served = client.call("GET", "/openapi.json", "/openapi.json", None, &[], "", 200);
    assert!(
        served.body == text,
        "GET /openapi.json is not {} as it is now: rebuild the switch",
        path.display()
    );

    let reversible = payments(&mut client);
    ops(&mut client);
    vault(&mut client);
    // Last: it locks this test's address out of every keyed route.
    lockout(&mut client);
    // Killed: the rewrap job left running would hold a clean stop.
    switch.kill();

    starting(&mut client, dir.path(), &data_dir, &reversible);

    // Every documented status was provoked, or is named as out of reach.
    let contract = client.contract;
    let not_provoked: BTreeSet<(String, String, u16)> = NOT_PROVOKED
        .iter()
        .map(|(method, path, status, _)| ((*method).to_owned(), (*path).to_owned(), *status))
        .collect();
    let documented = contract.documented();
    for entry in &not_provoked {
        assert!(documented.contains(entry), "{entry:?} is not documented");
        assert!(
            !contract.checked.contains(entry),
            "{entry:?} was provoked: take it off NOT_PROVOKED"
        );
    }
    let missed: Vec<_> = documented
        .iter()
        .filter(|entry| !contract.checked.contains(*entry) && !not_provoked.contains(*entry))
        .collect();
    assert!(
        missed.is_empty(),
        "documented but neither provoked nor in NOT_PROVOKED: {missed:?}"
    );
}

/// Other cards' approvals of the hour before, for the restarted switch to
/// replay into card limits: enough that requests arrive while it does.
const PAST_APPROVALS: u64 = 20_000;

/// The switch restarted on a journal with an hour of traffic: while it
/// replays card limits, `/health/ready` and card requests are 503, and a
/// retry with the same `Idempotency-Key` is decided once it is done (a 503
/// binds no key).
fn starting(
    client: &mut Client,
    dir: &std::path::Path,
    data_dir: &std::path::Path,
    reversible: &str,
) {
    let config = std::fs::read_to_string(&client.config_file).unwrap();
    let newest_ms = journal::approvals(data_dir)
        .iter()
        .map(|row| row.at_ms)
        .max()
        .unwrap();
    journal::append(
        data_dir,
        (0..PAST_APPROVALS)
            .map(|n| journal::approval_of_another_card(newest_ms - 3_600_000 + n / 16, n))
            .collect(),
    );
    let switch = TestSwitch::start_replaying(dir, data_dir, &config);
    client.http = switch.http;
    let order = body("4012888888881881", 100, "ACME0000001");
    let key = [("Idempotency-Key", "order-while-starting")];
    let reversal = format!("/v1/authorizations/{reversible}/reversal");
    let waiting = switch::clock::Stopwatch::start();
    let mut refused = BTreeSet::new();
    let decided = loop {
        assert!(waiting.elapsed_us() < 60_000_000, "replay never ended");
        // In this order: replay only ever ends, so a 503 from the last
        // means the first two were asked during replay too.
        let ready = http_request(client.http, "GET", "/health/ready", None, &[], "");
        let ready = client.contract.check("GET", "/health/ready", ready);
        let reversed = http_request(client.http, "POST", &reversal, Some(BISTRO_KEY), &[], "");
        let reversed = client.contract.check("POST", REVERSAL, reversed);
        let reply = http_request(
            client.http,
            "POST",
            AUTHORIZATIONS,
            Some(ACME_KEY),
            &key,
            &order,
        );
        let reply = client.contract.check("POST", AUTHORIZATIONS, reply);
        if reply.status != 503 {
            break reply;
        }
        assert_eq!(
            reply.json()["type"],
            "/problems/unavailable",
            "{}",
            reply.body
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
        refused.insert(("ready", ready.status));
        refused.insert(("reversal", reversed.status));
    };
    assert_eq!(
        refused,
        BTreeSet::from([("ready", 503), ("reversal", 503)]),
        "the first request came after replay: no proof"
    );
    assert_eq!(decided.status, 201, "{}", decided.body);
    assert_eq!(
        decided.header("idempotent-replayed"),
        None,
        "a 503 bound the key"
    );
    client.call("GET", "/health/ready", "/health/ready", None, &[], "", 200);
}

/// The payment routes; returns the id of an approval left unreversed.
fn payments(client: &mut Client) -> String {
    let card = "4111111111111111";
    let order = body(card, 1250, "ACME0000001");
    let key = [("Idempotency-Key", "order-1")];

    // Decided, then replayed with the same key: the same answer, marked.
    let approved = client.call(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &key,
        &order,
        201,
    );
    let json = approved.json();
    assert_eq!(json["status"], "approved", "{}", approved.body);
    assert!(!approved.body.contains(card), "{}", approved.body);
    assert_eq!(approved.header("idempotent-replayed"), None);
    let replayed = client.call(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &key,
        &order,
        201,
    );
    assert_eq!(replayed.body, approved.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &key,
        &body(card, 1251, "ACME0000001"),
        422,
        "idempotency-key-reused",
    );
    // A decline is an answer: a blocked BIN, 57.
    let blocked = with_check_digit("400000123456789");
    let declined = client.call(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &[],
        &body(&blocked, 100, "ACME0000001"),
        201,
    );
    assert_eq!(declined.json()["status"], "declined");
    assert_eq!(declined.json()["response_code"], "57");
    assert_eq!(declined.json().get("auth_code"), None);

    // Each error of the route.
    for (bad, field) in [
        (order.replace("\"3012\"", "\"3013\""), "expiry"),
        (order.replace("\"terminal_id\"", "\"track2\""), "track2"),
        (order.replace(",\"amount\":1250", ""), "amount"),
    ] {
        let reply = client.problem(
            "POST",
            AUTHORIZATIONS,
            AUTHORIZATIONS,
            Some(ACME_KEY),
            &[],
            &bad,
            400,
            "invalid-field",
        );
        assert_eq!(reply.json()["field"], field, "{}", reply.body);
    }
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &[],
        "[1, 2]",
        400,
        "invalid-field",
    );
    let long_key = "k".repeat(256);
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &[("Idempotency-Key", &long_key)],
        &order,
        400,
        "invalid-header",
    );
    let unauthorized = client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        None,
        &[],
        &order,
        401,
        "unauthorized",
    );
    assert_eq!(unauthorized.header("www-authenticate"), Some("Bearer"));
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ADMIN_KEY),
        &[],
        &order,
        403,
        "forbidden",
    );
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &[],
        &body(card, 100, "BISTRO00001"),
        403,
        "forbidden",
    );
    let oversized = body(card, 100, &"A".repeat(5_000));
    client.problem(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(ACME_KEY),
        &[],
        &oversized,
        413,
        "body-too-large",
    );

    // Reading it back: the merchant, staff, and another merchant.
    let id = json["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/transactions/{id}");
    let read = client.call("GET", TRANSACTION, &path, Some(ACME_KEY), &[], "", 200);
    assert_eq!(read.json()["status"], "approved");
    assert_eq!(read.json()["token"], json["token"]);
    assert!(!read.body.contains(card), "{}", read.body);
    client.call("GET", TRANSACTION, &path, Some(OPERATOR_KEY), &[], "", 200);
    client.problem(
        "GET",
        TRANSACTION,
        &path,
        Some(BISTRO_KEY),
        &[],
        "",
        404,
        "not-found",
    );
    client.problem(
        "GET",
        TRANSACTION,
        "/v1/transactions/tx_nonsense",
        Some(ACME_KEY),
        &[],
        "",
        404,
        "not-found",
    );
    client.problem(
        "GET",
        TRANSACTION,
        &path,
        None,
        &[],
        "",
        401,
        "unauthorized",
    );

    // Reversals: part, then the rest with no body; each error.
    let reversal = format!("/v1/authorizations/{id}/reversal");
    for (amount, kind) in [("0", "invalid-field"), ("1251", "invalid-field")] {
        let reply = client.problem(
            "POST",
            REVERSAL,
            &reversal,
            Some(ACME_KEY),
            &[],
            &format!(r#"{{"amount":{amount}}}"#),
            400,
            kind,
        );
        assert_eq!(reply.json()["field"], "amount", "{}", reply.body);
    }
    client.problem(
        "POST",
        REVERSAL,
        &reversal,
        Some(ACME_KEY),
        &[],
        r#"{"pan":"4111111111111111"}"#,
        400,
        "invalid-field",
    );
    client.problem(
        "POST",
        REVERSAL,
        &reversal,
        Some(ACME_KEY),
        &[],
        &oversized,
        413,
        "body-too-large",
    );
    client.problem(
        "POST",
        REVERSAL,
        &reversal,
        None,
        &[],
        "",
        401,
        "unauthorized",
    );
    client.problem(
        "POST",
        REVERSAL,
        &reversal,
        Some(OPERATOR_KEY),
        &[],
        "",
        403,
        "forbidden",
    );
    client.problem(
        "POST",
        REVERSAL,
        &reversal,
        Some(BISTRO_KEY),
        &[],
        "",
        404,
        "not-found",
    );
    client.problem(
        "POST",
        REVERSAL,
        "/v1/authorizations/tx_00000000000000000000000000000000/reversal",
        Some(ACME_KEY),
        &[],
        "",
        404,
        "not-found",
    );
    let part = client.call(
        "POST",
        REVERSAL,
        &reversal,
        Some(ACME_KEY),
        &[],
        r#"{"amount":500,"reason":"one item back"}"#,
        200,
    );
    assert_eq!(part.json()["status"], "reversed", "{}", part.body);
    assert_eq!(part.json()["id"], id.as_str());
    client.call("POST", REVERSAL, &reversal, Some(ACME_KEY), &[], "", 200);

    // A merchant over its rate (BISTRO00001: a burst of 3, 1 a second),
    // on both rate-limited routes.
    let bistro = client.call(
        "POST",
        AUTHORIZATIONS,
        AUTHORIZATIONS,
        Some(BISTRO_KEY),
        &[],
        &body("5555555555554444", 100, "BISTRO00001"),
        201,
    );
    let bistro_path = format!("/v1/transactions/{}", bistro.json()["id"].as_str().unwrap());
    let again = body("5555555555554444", 100, "BISTRO00001");
    for (method, template, path, body) in [
        ("GET", TRANSACTION, bistro_path.as_str(), ""),
        ("POST", AUTHORIZATIONS, AUTHORIZATIONS, again.as_str()),
    ] {
        let limited = (0..10)
            .map(|_| http_request(client.http, method, path, Some(BISTRO_KEY), &[], body))
            .find(|reply| reply.status == 429)
            .unwrap_or_else(|| panic!("{method} {path}: BISTRO00001 was never over its rate"));
        let limited = client.contract.check(method, template, limited);
        assert_eq!(
            limited.json()["type"],
            "/problems/rate-limited",
            "{}",
            limited.body
        );
        assert!(limited.header("retry-after").is_some());
    }
    bistro.json()["id"].as_str().unwrap().to_owned()
}

fn ops(client: &mut Client) {
    for (path, expected) in [("/health/live", "live\n"), ("/health/ready", "ready\n")] {
        let reply = client.call("GET", path, path, None, &[], "", 200);
        assert_eq!(reply.body, expected);
    }
    let page = client.call("GET", "/admin", "/admin", None, &[], "", 200);
    assert!(
        page.body.contains("<html")
            || page.body.contains("<!doctype")
            || page.body.contains("<!DOCTYPE")
    );

    let metrics = client.call(
        "GET",
        "/metrics",
        "/metrics",
        Some(OPERATOR_KEY),
        &[],
        "",
        200,
    );
    assert!(metrics.body.contains("switch_"), "{}", metrics.body);
    client.problem(
        "GET",
        "/metrics",
        "/metrics",
        Some(ACME_KEY),
        &[],
        "",
        403,
        "forbidden",
    );
    client.problem(
        "GET",
        "/metrics",
        "/metrics",
        None,
        &[],
        "",
        401,
        "unauthorized",
    );

    let latency = client.call(
        "GET",
        "/admin/latency",
        "/admin/latency",
        Some(OPERATOR_KEY),
        &[],
        "",
        200,
    );
    assert!(!latency.json()["stages"].as_array().unwrap().is_empty());
    client.problem(
        "GET",
        "/admin/latency",
        "/admin/latency",
        Some(BISTRO_KEY),
        &[],
        "",
        403,
        "forbidden",
    );
    client.problem(
        "GET",
        "/admin/latency",
        "/admin/latency",
        None,
        &[],
        "",
        401,
        "unauthorized",
    );

    let audit = "/admin/audit";
    let tail = client.call(
        "GET",
        audit,
        "/admin/audit?limit=2",
        Some(ADMIN_KEY),
        &[],
        "",
        200,
    );
    assert_eq!(
        tail.json()["entries"].as_array().unwrap().len(),
        2,
        "{}",
        tail.body
    );
    client.call("GET", audit, audit, Some(ADMIN_KEY), &[], "", 200);
    let bad = client.problem(
        "GET",
        audit,
        "/admin/audit?limit=many",
        Some(ADMIN_KEY),
        &[],
        "",
        400,
        "invalid-query",
    );
    assert_eq!(bad.json()["field"], "limit");
    client.problem(
        "GET",
        audit,
        audit,
        Some(OPERATOR_KEY),
        &[],
        "",
        403,
        "forbidden",
    );
    client.problem("GET", audit, audit, None, &[], "", 401, "unauthorized");
}

fn vault(client: &mut Client) {
    let status = client.call(
        "GET",
        "/admin/vault",
        "/admin/vault",
        Some(ADMIN_KEY),
        &[],
        "",
        200,
    );
    assert_eq!(status.json()["active_key_id"], 1);
    client.call(
        "POST",
        "/admin/vault/verify",
        "/admin/vault/verify",
        Some(ADMIN_KEY),
        &[],
        "",
        200,
    );
    let unchanged = client.call(
        "POST",
        "/admin/vault/reload",
        "/admin/vault/reload",
        Some(ADMIN_KEY),
        &[],
        "",
        200,
    );
    assert_eq!(unchanged.json()["changed"], false);

    // A file whose active key is missing is refused; then key 2 is added
    // and made active, so the rewrap job has rows to move.
    let config_file = client.config_file.clone();
    let config = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(
        &config_file,
        config.replace("active_key_id = 1", "active_key_id = 2"),
    )
    .unwrap();
    client.problem(
        "POST",
        "/admin/vault/reload",
        "/admin/vault/reload",
        Some(ADMIN_KEY),
        &[],
        "",
        422,
        "vault-reload-refused",
    );
    std::fs::write(
        &config_file,
        config.replace("active_key_id = 1", "active_key_id = 2").replace(
            "[vault.encryption_keys]\n",
            "[vault.encryption_keys]\n2 = \"dev:404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\"\n",
        ),
    )
    .unwrap();
    let rotated = client.call(
        "POST",
        "/admin/vault/reload",
        "/admin/vault/reload",
        Some(ADMIN_KEY),
        &[],
        "",
        200,
    );
    assert_eq!(rotated.json()["changed"], true, "{}", rotated.body);

    let rewrap = "/admin/vault/rewrap";
    for (bad, kind) in [
        ("not json", "invalid-body"),
        (r#"{"batch_rows":0}"#, "invalid-field"),
        (r#"{"pause_ms":60001}"#, "invalid-field"),
    ] {
        client.problem("POST", rewrap, rewrap, Some(ADMIN_KEY), &[], bad, 400, kind);
    }
    let oversized = format!(r#"{{"batch_rows":1{}}}"#, " ".repeat(5_000));
    client.problem(
        "POST",
        rewrap,
        rewrap,
        Some(ADMIN_KEY),
        &[],
        &oversized,
        413,
        "body-too-large",
    );
    // One row a minute: the job is still running at the second call.
    let started = client.call(
        "POST",
        rewrap,
        rewrap,
        Some(ADMIN_KEY),
        &[],
        r#"{"batch_rows":1,"pause_ms":60000}"#,
        202,
    );
    assert_eq!(
        started.json()["rewrap"]["state"],
        "running",
        "{}",
        started.body
    );
    client.problem(
        "POST",
        rewrap,
        rewrap,
        Some(ADMIN_KEY),
        &[],
        "{}",
        409,
        "rewrap-running",
    );

    for (method, path) in [
        ("GET", "/admin/vault"),
        ("POST", "/admin/vault/reload"),
        ("POST", "/admin/vault/rewrap"),
        ("POST", "/admin/vault/verify"),
    ] {
        client.problem(
            method,
            path,
            path,
            Some(OPERATOR_KEY),
            &[],
            "",
            403,
            "forbidden",
        );
        client.problem(method, path, path, None, &[], "", 401, "unauthorized");
    }
}

/// Three wrong keys lock this address out: then every keyed route answers
/// 429 `locked-out`, right key or not.
fn lockout(client: &mut Client) {
    for _ in 0..3 {
        client.problem(
            "GET",
            "/metrics",
            "/metrics",
            Some(WRONG_KEY),
            &[],
            "",
            401,
            "unauthorized",
        );
    }
    let id = "tx_00000000000000000000000000000000";
    for (method, template, path, key) in [
        ("POST", AUTHORIZATIONS, AUTHORIZATIONS.to_owned(), ACME_KEY),
        (
            "POST",
            REVERSAL,
            format!("/v1/authorizations/{id}/reversal"),
            ACME_KEY,
        ),
        (
            "GET",
            TRANSACTION,
            format!("/v1/transactions/{id}"),
            ACME_KEY,
        ),
        ("GET", "/metrics", "/metrics".to_owned(), OPERATOR_KEY),
        (
            "GET",
            "/admin/latency",
            "/admin/latency".to_owned(),
            OPERATOR_KEY,
        ),
        ("GET", "/admin/audit", "/admin/audit".to_owned(), ADMIN_KEY),
        ("GET", "/admin/vault", "/admin/vault".to_owned(), ADMIN_KEY),
        (
            "POST",
            "/admin/vault/reload",
            "/admin/vault/reload".to_owned(),
            ADMIN_KEY,
        ),
        (
            "POST",
            "/admin/vault/rewrap",
            "/admin/vault/rewrap".to_owned(),
            ADMIN_KEY,
        ),
        (
            "POST",
            "/admin/vault/verify",
            "/admin/vault/verify".to_owned(),
            ADMIN_KEY,
        ),
    ] {
        let reply = client.problem(
            method,
            template,
            &path,
            Some(key),
            &[],
            "",
            429,
            "locked-out",
        );
        assert!(reply.header("retry-after").is_some(), "{path}");
    }
    // The open routes stay open.
    client.call("GET", "/health/ready", "/health/ready", None, &[], "", 200);
}
