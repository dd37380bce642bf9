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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const OPERATOR_KEY: &str = "dev-operator-key";
const WRONG_KEY: &str = "not-a-key-of-this-switch";

/// Documented statuses no test here provokes, and why. Each is a real
/// answer of the code; the reasons say what it would take.
const NOT_PROVOKED: &[(&str, &str, u16, &str)] = &[
    (
        "GET",
        "/admin/timeline.hlog",
        503,
        "a closed interval that cannot be decoded or encoded",
    ),
    (
        "GET",
        "/v1/transactions/{id}",
        503,
        "the journal unreadable",
    ),
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

/// Documented statuses only a race provokes: the race is run and every
/// answer checked, whichever way it falls.
const BY_CHANCE: &[(&str, &str, u16, &str)] = &[(
    "POST",
    "/v1/authorizations",
    409,
    "a retry while the first request with its key is being decided",
)];

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

/// A request: its method, the documented route it is an instance of, the
/// path sent, and the key, headers and body.
struct Ask<'a> {
    method: &'a str,
    template: &'a str,
    path: String,
    key: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

/// A request to a route without parameters.
fn ask<'a>(method: &'a str, route: &'a str) -> Ask<'a> {
    at(method, route, route.to_owned())
}

/// A request to `path`, an instance of `template`.
fn at<'a>(method: &'a str, template: &'a str, path: String) -> Ask<'a> {
    Ask {
        method,
        template,
        path,
        key: None,
        headers: Vec::new(),
        body: "",
    }
}

impl<'a> Ask<'a> {
    fn key(mut self, key: &'a str) -> Ask<'a> {
        self.key = Some(key);
        self
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Ask<'a> {
        self.headers.push((name, value));
        self
    }

    fn body(mut self, body: &'a str) -> Ask<'a> {
        self.body = body;
        self
    }
}

/// The switch under test (its HTTP address, configuration file and data
/// directory) and the contract its answers are held to.
struct Client {
    http: SocketAddr,
    config_file: PathBuf,
    data_dir: PathBuf,
    contract: Contract,
}

impl Client {
    /// Sends `ask` and checks its answer against the document.
    fn send(&mut self, ask: &Ask<'_>) -> HttpReply {
        let reply = http_request(
            self.http,
            ask.method,
            &ask.path,
            ask.key,
            &ask.headers,
            ask.body,
        );
        self.contract.check(ask.method, ask.template, reply)
    }

    /// [`Client::send`], and the status must be `expected`.
    fn expect(&mut self, ask: Ask<'_>, expected: u16) -> HttpReply {
        let reply = self.send(&ask);
        assert_eq!(
            reply.status, expected,
            "{} {}: {}",
            ask.method, ask.path, reply.body
        );
        reply
    }

    /// A problem+json answer with status `expected` and type `kind`.
    fn problem(&mut self, ask: Ask<'_>, expected: u16, kind: &str) -> HttpReply {
        let reply = self.expect(ask, expected);
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

fn reversal_of(id: &str) -> Ask<'static> {
    at(
        "POST",
        REVERSAL,
        format!("/v1/authorizations/{id}/reversal"),
    )
}

fn transaction(id: &str) -> Ask<'static> {
    at("GET", TRANSACTION, format!("/v1/transactions/{id}"))
}

#[test]
fn every_route_answers_as_its_openapi_document_says() {
    let (path, text) = repository_document();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let switch = TestSwitch::start_in(dir.path(), &data_dir, &config());
    let mut client = Client {
        http: switch.http,
        config_file: switch.config_file.clone(),
        data_dir: data_dir.clone(),
        contract: Contract::new(&text),
    };

    // The document, served as the repository holds it.
    let served = client.expect(ask("GET", "/openapi.json"), 200);
    assert!(
        served.body == text,
        "GET /openapi.json is not {} as it is now: rebuild the switch",
        path.display()
    );

    let unreversed = payments(&mut client);
    ops(&mut client);
    vault(&mut client);
    config_reload(&mut client);
    timeline(&mut client);
    // Last: it locks this test's address out of every keyed route.
    lockout(&mut client);
    // Killed: the rewrap job left running would hold a clean stop.
    switch.kill();
    starting(&mut client, dir.path(), &data_dir, &unreversed);

    // Every documented status was provoked, or is named as out of reach.
    let contract = client.contract;
    let listed = |list: &[(&str, &str, u16, &str)]| -> BTreeSet<(String, String, u16)> {
        list.iter()
            .map(|(method, path, status, _)| ((*method).to_owned(), (*path).to_owned(), *status))
            .collect()
    };
    let not_provoked = listed(NOT_PROVOKED);
    let by_chance = listed(BY_CHANCE);
    let documented = contract.documented();
    assert!(by_chance.is_subset(&documented), "{by_chance:?}");
    for entry in &not_provoked {
        assert!(documented.contains(entry), "{entry:?} is not documented");
        assert!(
            !contract.checked.contains(entry),
            "{entry:?} was provoked: take it off NOT_PROVOKED"
        );
    }
    let missed: Vec<_> = documented
        .iter()
        .filter(|entry| {
            !contract.checked.contains(*entry)
                && !not_provoked.contains(*entry)
                && !by_chance.contains(*entry)
        })
        .collect();
    assert!(
        missed.is_empty(),
        "documented but neither provoked nor in NOT_PROVOKED or BY_CHANCE: {missed:?}"
    );
}

/// The payment routes: decided, replayed, declined, read back, reversed,
/// raced, rate limited, and each error. Returns the id of an approval
/// (BISTRO00001's) left unreversed.
fn payments(client: &mut Client) -> String {
    let card = "4111111111111111";
    let order = body(card, 1250, "ACME0000001");
    let authorize = || ask("POST", AUTHORIZATIONS).key(ACME_KEY);

    // Decided, then replayed with the same key: the same answer, marked.
    let approved = client.expect(
        authorize()
            .header("Idempotency-Key", "order-1")
            .body(&order),
        201,
    );
    let json = approved.json();
    assert_eq!(json["status"], "approved", "{}", approved.body);
    assert!(!approved.body.contains(card), "{}", approved.body);
    assert_eq!(approved.header("idempotent-replayed"), None);
    let replayed = client.expect(
        authorize()
            .header("Idempotency-Key", "order-1")
            .body(&order),
        201,
    );
    assert_eq!(replayed.body, approved.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    let other = body(card, 1251, "ACME0000001");
    let reused = authorize()
        .header("Idempotency-Key", "order-1")
        .body(&other);
    client.problem(reused, 422, "idempotency-key-reused");

    // The same key from eight clients at once: one decision; the others
    // get it replayed, or 409 while it is being made.
    let raced = body("6011111111111117", 900, "ACME0000001");
    let replies: Vec<HttpReply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (http, raced) = (client.http, raced.as_str());
                let key = [("Idempotency-Key", "race-1")];
                scope.spawn(move || {
                    http_request(http, "POST", AUTHORIZATIONS, Some(ACME_KEY), &key, raced)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let mut ids = BTreeSet::new();
    for reply in replies {
        let reply = client.contract.check("POST", AUTHORIZATIONS, reply);
        match reply.status {
            201 => {
                ids.insert(reply.json()["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(reply.json()["type"], "/problems/idempotency-in-progress"),
            status => panic!("a raced key answered {status}: {}", reply.body),
        }
    }
    assert_eq!(ids.len(), 1, "one key, one transaction: {ids:?}");

    // A decline is an answer: a blocked BIN, 57, no auth code.
    let blocked = body(&with_check_digit("400000123456789"), 100, "ACME0000001");
    let declined = client.expect(authorize().body(&blocked), 201).json();
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["response_code"], "57");
    assert_eq!(declined.get("auth_code"), None);

    // Each error of the route.
    for (bad, field) in [
        (order.replace("\"3012\"", "\"3013\""), Some("expiry")),
        (
            order.replace("\"terminal_id\"", "\"track2\""),
            Some("track2"),
        ),
        (order.replace(",\"amount\":1250", ""), Some("amount")),
        ("[1, 2]".to_owned(), None),
        ("\"order\"".to_owned(), None),
    ] {
        let reply = client.problem(authorize().body(&bad), 400, "invalid-field");
        assert_eq!(
            reply.json().get("field").and_then(Value::as_str),
            field,
            "{}",
            reply.body
        );
    }
    let long_key = "k".repeat(256);
    let bad_key = authorize()
        .header("Idempotency-Key", &long_key)
        .body(&order);
    client.problem(bad_key, 400, "invalid-header");
    let unauthorized = client.problem(
        ask("POST", AUTHORIZATIONS).body(&order),
        401,
        "unauthorized",
    );
    assert_eq!(unauthorized.header("www-authenticate"), Some("Bearer"));
    let as_admin = ask("POST", AUTHORIZATIONS).key(ADMIN_KEY).body(&order);
    client.problem(as_admin, 403, "forbidden");
    let for_bistro = body(card, 100, "BISTRO00001");
    client.problem(authorize().body(&for_bistro), 403, "forbidden");
    let oversized = body(card, 100, &"A".repeat(5_000));
    client.problem(authorize().body(&oversized), 413, "body-too-large");

    // Read back by the merchant and by staff; another merchant's is 404.
    let id = json["id"].as_str().unwrap();
    let read = client.expect(transaction(id).key(ACME_KEY), 200).json();
    assert_eq!(read["status"], "approved");
    assert_eq!(read["token"], json["token"]);
    assert_eq!(read["last4"], "1111");
    client.expect(transaction(id).key(OPERATOR_KEY), 200);
    client.problem(transaction(id).key(BISTRO_KEY), 404, "not-found");
    client.problem(transaction("tx_nonsense").key(ACME_KEY), 404, "not-found");
    client.problem(transaction(id), 401, "unauthorized");

    // Reversals: each error, then part of it, then the rest with no body.
    for amount in [r#"{"amount":0}"#, r#"{"amount":1251}"#] {
        let reply = client.problem(
            reversal_of(id).key(ACME_KEY).body(amount),
            400,
            "invalid-field",
        );
        assert_eq!(reply.json()["field"], "amount", "{}", reply.body);
    }
    let unknown = r#"{"pan":"4111111111111111"}"#;
    let reply = client.problem(
        reversal_of(id).key(ACME_KEY).body(unknown),
        400,
        "invalid-field",
    );
    assert!(!reply.body.contains(card), "{}", reply.body);
    client.problem(
        reversal_of(id).key(ACME_KEY).body(&oversized),
        413,
        "body-too-large",
    );
    client.problem(reversal_of(id), 401, "unauthorized");
    client.problem(reversal_of(id).key(OPERATOR_KEY), 403, "forbidden");
    client.problem(reversal_of(id).key(BISTRO_KEY), 404, "not-found");
    let nowhere = "tx_00000000000000000000000000000000";
    client.problem(reversal_of(nowhere).key(ACME_KEY), 404, "not-found");
    let part = r#"{"amount":500,"reason":"one item back"}"#;
    let reversed = client
        .expect(reversal_of(id).key(ACME_KEY).body(part), 200)
        .json();
    assert_eq!(reversed["status"], "reversed");
    assert_eq!(reversed["id"], id);
    client.expect(reversal_of(id).key(ACME_KEY), 200);

    // A merchant over its rate (BISTRO00001: a burst of 3, 1 a second), on
    // both routes that have one.
    let bistro_order = body("5555555555554444", 100, "BISTRO00001");
    let bistro = ask("POST", AUTHORIZATIONS)
        .key(BISTRO_KEY)
        .body(&bistro_order);
    let bistro_id = client.expect(bistro, 201).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for limited in [
        transaction(&bistro_id).key(BISTRO_KEY),
        ask("POST", AUTHORIZATIONS)
            .key(BISTRO_KEY)
            .body(&bistro_order),
    ] {
        let reply = (0..10)
            .map(|_| client.send(&limited))
            .find(|reply| reply.status == 429)
            .unwrap_or_else(|| panic!("{}: BISTRO00001 was never over its rate", limited.path));
        assert_eq!(
            reply.json()["type"],
            "/problems/rate-limited",
            "{}",
            reply.body
        );
        assert!(reply.header("retry-after").is_some());
    }
    bistro_id
}

/// Health, the page, metrics, latency and the audit log.
fn ops(client: &mut Client) {
    for (route, expected) in [("/health/live", "live\n"), ("/health/ready", "ready\n")] {
        assert_eq!(client.expect(ask("GET", route), 200).body, expected);
    }
    let page = client.expect(ask("GET", "/admin"), 200);
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "{}",
        page.body
    );

    for route in ["/metrics", "/admin/latency"] {
        client.problem(ask("GET", route).key(ACME_KEY), 403, "forbidden");
        client.problem(ask("GET", route), 401, "unauthorized");
    }
    let metrics = client.expect(ask("GET", "/metrics").key(OPERATOR_KEY), 200);
    assert!(metrics.body.contains("switch_"), "{}", metrics.body);
    let latency = client
        .expect(ask("GET", "/admin/latency").key(OPERATOR_KEY), 200)
        .json();
    assert!(!latency["stages"].as_array().unwrap().is_empty());

    let audit = "/admin/audit";
    let two = at("GET", audit, format!("{audit}?limit=2")).key(ADMIN_KEY);
    let tail = client.expect(two, 200).json();
    assert_eq!(tail["entries"].as_array().unwrap().len(), 2, "{tail}");
    client.expect(ask("GET", audit).key(ADMIN_KEY), 200);
    let many = at("GET", audit, format!("{audit}?limit=many")).key(ADMIN_KEY);
    let bad = client.problem(many, 400, "invalid-query");
    assert_eq!(bad.json()["field"], "limit");
    // The log moved away under the switch: it cannot be read (the writer
    // keeps its open file, so nothing is lost).
    let log = client.data_dir.join("audit.log");
    let aside = client.data_dir.join("audit.log.aside");
    std::fs::rename(&log, &aside).unwrap();
    client.problem(ask("GET", audit).key(ADMIN_KEY), 503, "unavailable");
    std::fs::rename(&aside, &log).unwrap();
    client.problem(ask("GET", audit).key(OPERATOR_KEY), 403, "forbidden");
    client.problem(ask("GET", audit), 401, "unauthorized");
}

/// The vault routes: status, verify, a refused and an accepted reload, the
/// rewrap job started and refused while it runs, and each error.
fn vault(client: &mut Client) {
    for (method, route) in [
        ("GET", "/admin/vault"),
        ("POST", "/admin/vault/reload"),
        ("POST", "/admin/vault/rewrap"),
        ("POST", "/admin/vault/verify"),
    ] {
        client.problem(ask(method, route).key(OPERATOR_KEY), 403, "forbidden");
        client.problem(ask(method, route), 401, "unauthorized");
    }
    let status = client
        .expect(ask("GET", "/admin/vault").key(ADMIN_KEY), 200)
        .json();
    assert_eq!(status["active_key_id"], 1);
    let verified = client
        .expect(ask("POST", "/admin/vault/verify").key(ADMIN_KEY), 200)
        .json();
    assert_eq!(verified["failed"], 0);
    let reload = || ask("POST", "/admin/vault/reload").key(ADMIN_KEY);
    assert_eq!(client.expect(reload(), 200).json()["changed"], false);

    // A file whose active key is missing is refused; then key 2 is added
    // and made active, so the rewrap job has rows to move.
    let config = std::fs::read_to_string(&client.config_file).unwrap();
    let missing_key = config.replace("active_key_id = 1", "active_key_id = 2");
    std::fs::write(&client.config_file, &missing_key).unwrap();
    client.problem(reload(), 422, "vault-reload-refused");
    let key_2 = "2 = \"dev:404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\"\n";
    let rotated = missing_key.replace(
        "[vault.encryption_keys]\n",
        &format!("[vault.encryption_keys]\n{key_2}"),
    );
    assert_ne!(rotated, missing_key);
    std::fs::write(&client.config_file, rotated).unwrap();
    assert_eq!(client.expect(reload(), 200).json()["changed"], true);

    let rewrap = || ask("POST", "/admin/vault/rewrap").key(ADMIN_KEY);
    for (bad, kind) in [
        ("not json", "invalid-body"),
        (r#"{"batch_rows":0}"#, "invalid-field"),
        (r#"{"pause_ms":60001}"#, "invalid-field"),
    ] {
        client.problem(rewrap().body(bad), 400, kind);
    }
    let oversized = format!(r#"{{"batch_rows":1{}}}"#, " ".repeat(5_000));
    client.problem(rewrap().body(&oversized), 413, "body-too-large");
    // One row a minute: the job is still running at the second call.
    let slow = r#"{"batch_rows":1,"pause_ms":60000}"#;
    let started = client.expect(rewrap().body(slow), 202).json();
    assert_eq!(started["rewrap"]["state"], "running", "{started}");
    client.problem(rewrap().body("{}"), 409, "rewrap-running");
}

/// `POST /admin/reload`: the file as it is (applied, nothing changed), a
/// merchant's limit lowered (applied, named), a file with an unknown key
/// (refused, named), and the roles.
fn config_reload(client: &mut Client) {
    let reload = || ask("POST", "/admin/reload").key(OPERATOR_KEY);
    client.problem(ask("POST", "/admin/reload").key(ACME_KEY), 403, "forbidden");
    client.problem(ask("POST", "/admin/reload"), 401, "unauthorized");
    let unchanged = client.expect(reload(), 200).json();
    assert_eq!(
        unchanged["changed"]["sections"],
        serde_json::json!([]),
        "{unchanged}"
    );
    let config = std::fs::read_to_string(&client.config_file).unwrap();
    let lowered = config.replacen(
        "[rules]\namount_max = 1000000\n",
        "[rules]\namount_max = 500000\n",
        1,
    );
    let broken = config.replacen("[rules]\n", "[rules]\nno_such_rule = 1\n", 1);
    assert_ne!(lowered, config, "the test's config has a [rules] section");
    std::fs::write(&client.config_file, &broken).unwrap();
    let refused = client.problem(reload(), 422, "config-reload-refused");
    assert!(
        refused.json()["detail"]
            .to_string()
            .contains("no_such_rule"),
        "{}",
        refused.json()
    );
    std::fs::write(&client.config_file, &lowered).unwrap();
    let applied = client.expect(reload(), 200).json();
    assert_eq!(
        applied["changed"]["sections"],
        serde_json::json!(["rules"]),
        "{applied}"
    );
    std::fs::write(&client.config_file, &config).unwrap();
    client.expect(ask("POST", "/admin/reload").key(ADMIN_KEY), 200);
}

/// `/admin/timeline` and its `.hlog`: the intervals closed so far (the
/// switch has served a second and more by now), each parameter refused by
/// name, and the roles.
fn timeline(client: &mut Client) {
    for route in ["/admin/timeline", "/admin/timeline.hlog"] {
        client.problem(ask("GET", route).key(ACME_KEY), 403, "forbidden");
        client.problem(ask("GET", route), 401, "unauthorized");
    }
    // The first interval closes two ticks after start: wait for it, so
    // the schema of an interval is checked too.
    let mut json = serde_json::Value::Null;
    for _ in 0..40 {
        json = client
            .expect(ask("GET", "/admin/timeline").key(OPERATOR_KEY), 200)
            .json();
        if !json["intervals"].as_array().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !json["intervals"].as_array().unwrap().is_empty(),
        "no interval closed in 4 s: {json}"
    );
    let minutes = "/admin/timeline?resolution=1m&since=0".to_owned();
    client.expect(at("GET", "/admin/timeline", minutes).key(ADMIN_KEY), 200);
    let decide = "/admin/timeline.hlog?stage=decide&channel=http".to_owned();
    let log = client.expect(
        at("GET", "/admin/timeline.hlog", decide).key(OPERATOR_KEY),
        200,
    );
    assert!(log.body.contains("\n#[StartTime: "), "{}", log.body);
    for (route, query, field) in [
        ("/admin/timeline", "resolution=1h", "resolution"),
        ("/admin/timeline", "since=yesterday", "since"),
        ("/admin/timeline.hlog", "stage=queue", "stage"),
        ("/admin/timeline.hlog", "channel=ftp", "channel"),
        ("/admin/timeline.hlog", "resolution=2s", "resolution"),
    ] {
        let bad = at("GET", route, format!("{route}?{query}")).key(OPERATOR_KEY);
        let refused = client.problem(bad, 400, "invalid-field");
        assert_eq!(refused.json()["field"], field, "{route}?{query}");
    }
}

/// Three wrong keys lock this address out: then every keyed route answers
/// 429 `locked-out`, right key or not, and the open routes stay open.
fn lockout(client: &mut Client) {
    for _ in 0..3 {
        client.problem(ask("GET", "/metrics").key(WRONG_KEY), 401, "unauthorized");
    }
    let id = "tx_00000000000000000000000000000000";
    for locked in [
        ask("POST", AUTHORIZATIONS).key(ACME_KEY),
        reversal_of(id).key(ACME_KEY),
        transaction(id).key(ACME_KEY),
        ask("GET", "/metrics").key(OPERATOR_KEY),
        ask("GET", "/admin/latency").key(OPERATOR_KEY),
        ask("GET", "/admin/audit").key(ADMIN_KEY),
        ask("GET", "/admin/vault").key(ADMIN_KEY),
        ask("POST", "/admin/vault/reload").key(ADMIN_KEY),
        ask("POST", "/admin/vault/rewrap").key(ADMIN_KEY),
        ask("POST", "/admin/vault/verify").key(ADMIN_KEY),
        ask("POST", "/admin/reload").key(OPERATOR_KEY),
        ask("GET", "/admin/timeline").key(OPERATOR_KEY),
        ask("GET", "/admin/timeline.hlog").key(OPERATOR_KEY),
    ] {
        let path = locked.path.clone();
        let reply = client.problem(locked, 429, "locked-out");
        assert!(reply.header("retry-after").is_some(), "{path}");
    }
    client.expect(ask("GET", "/health/ready"), 200);
}

/// Other cards' approvals of the hour before, for the restarted switch to
/// replay into card limits: enough that requests arrive while it does.
const PAST_APPROVALS: u64 = 20_000;

/// The switch restarted on a journal with an hour of traffic: while it
/// replays card limits, `/health/ready`, authorizations and reversals are
/// 503, and a retry with the same `Idempotency-Key` is decided once it is
/// done (a 503 binds no key). Then a reversal's id, which cannot itself be
/// reversed.
fn starting(client: &mut Client, dir: &Path, data_dir: &Path, unreversed: &str) {
    let config = std::fs::read_to_string(&client.config_file).unwrap();
    let newest_ms = journal::approvals(data_dir)
        .iter()
        .map(|row| row.at_ms)
        .max()
        .unwrap();
    let mut past: Vec<_> = (0..PAST_APPROVALS)
        .map(|n| journal::approval_of_another_card(newest_ms - 3_600_000 + n / 16, n))
        .collect();
    // A reversal of one of them: an id a client may hold (from its
    // acquirer's records, say) but cannot reverse.
    let mut reversal = journal::approval_of_another_card(newest_ms - 60_000, PAST_APPROVALS);
    reversal.kind = storage::RecordKind::Reversal;
    reversal.mti = protocol::Mti::REVERSAL_REQUEST;
    reversal.auth_code = None;
    reversal.original_id = Some(past[0].id);
    let reversal_id = reversal.id.to_string();
    past.push(reversal);
    journal::append(data_dir, past);

    let switch = TestSwitch::start_replaying(dir, data_dir, &config);
    client.http = switch.http;
    let order = body("4012888888881881", 100, "ACME0000001");
    let authorize = ask("POST", AUTHORIZATIONS)
        .key(ACME_KEY)
        .header("Idempotency-Key", "order-while-starting")
        .body(&order);
    let reverse = reversal_of(unreversed).key(BISTRO_KEY);
    let waiting = switch::clock::Stopwatch::start();
    let mut refused = BTreeSet::new();
    let decided = loop {
        assert!(waiting.elapsed_us() < 60_000_000, "replay never ended");
        // In this order: replay only ever ends, so a 503 from the last
        // means the first two were asked during replay too.
        let ready = client.send(&ask("GET", "/health/ready"));
        let reversed = client.send(&reverse);
        let reply = client.send(&authorize);
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
    client.expect(ask("GET", "/health/ready"), 200);
    client.problem(
        reversal_of(&reversal_id).key(ACME_KEY),
        422,
        "not-reversible",
    );
}
